# Topics and subscriptions exactly as the code would create them with pubsub.create on
# (src/shopstream/sinks/pubsub_admin.py, src/shopstream/events/messages.py Topics); in the
# cluster pubsub.create is off and these are the only ones there are.
#
# - topics: <prefix>.events, <prefix>.dead_letter, <prefix>.source_schemas and one
#   <prefix>.<schema>.<table> per captured table;
# - the loader's subscription on each: <topic>.<pubsub.subscription>, ack deadline
#   pubsub.ack_deadline_seconds, dead-lettered to <prefix>.dead_letter after
#   pubsub.max_delivery_attempts deliveries, except the dead-letter topic's own (it would
#   loop); not ordered (see pubsub_admin's docstring);
# - the Beam pipeline's subscription on each: <topic>.<beam.subscription>, without a
#   dead-letter policy, as shopstream.beam.sources.ensure_subscriptions creates it: Dataflow
#   acknowledges after its own checkpoint and sends what it cannot load to raw.dead_letter
#   itself (Dataflow does not support Pub/Sub dead-letter topics well: a message Dataflow
#   still holds could be moved away).
#
# Topic and subscription names stay short of Pub/Sub's 255 characters through the
# variables' validation, so the code's fit_name never cuts them.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  fixed_topics = {
    events         = "${var.topic_prefix}.events"
    dead_letter    = "${var.topic_prefix}.dead_letter"
    source_schemas = "${var.topic_prefix}.source_schemas"
  }
  change_topics = { for table in var.captured_tables : table => "${var.topic_prefix}.${var.cdc_schema}.${table}" }
  topics        = toset(concat(values(local.fixed_topics), values(local.change_topics)))
  dead_letter   = local.fixed_topics.dead_letter

  loader_subscriptions = { for topic in local.topics : topic => "${topic}.${var.loader_subscription}" }
  beam_subscriptions   = var.beam_subscriptions ? { for topic in local.topics : topic => "${topic}.${var.beam_subscription}" } : {}

  # Pub/Sub's own service agent moves dead letters: it publishes to the dead-letter topic
  # and acknowledges on the source subscription.
  service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Who publishes where (every writer also publishes the dead letters it makes).
  publishers = merge(
    { for topic in [local.fixed_topics.events, local.dead_letter] : "collector/${topic}" => { topic = topic, member = var.members.collector } },
    { for topic in concat(values(local.change_topics), [local.fixed_topics.source_schemas, local.dead_letter]) : "cdc/${topic}" => { topic = topic, member = var.members.cdc } },
    { "loader/${local.dead_letter}" = { topic = local.dead_letter, member = var.members.loader } },
    { "pubsub-agent/${local.dead_letter}" = { topic = local.dead_letter, member = local.service_agent } },
  )

  # Who reads which subscriptions: subscriber to pull and acknowledge, viewer to look a
  # subscription up (the loader checks each exists before reading it).
  readers = merge(
    merge([for topic, name in local.loader_subscriptions : {
      for role in ["roles/pubsub.subscriber", "roles/pubsub.viewer"] : "loader/${name}/${role}" => { subscription = name, role = role, member = var.members.loader }
    }]...),
    merge([for topic, name in local.beam_subscriptions : {
      for role in ["roles/pubsub.subscriber", "roles/pubsub.viewer"] : "dataflow/${name}/${role}" => { subscription = name, role = role, member = var.members.dataflow }
    }]...),
    { for topic, name in local.loader_subscriptions : "pubsub-agent/${name}" => { subscription = name, role = "roles/pubsub.subscriber", member = local.service_agent } if topic != local.dead_letter },
  )
}

resource "google_pubsub_topic" "topic" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption by default; pass kms_key_name where policy requires CMEK (the Pub/Sub service agent then needs encrypter/decrypter on the key).
  for_each = local.topics

  project                    = var.project_id
  name                       = each.value
  kms_key_name               = var.kms_key_name
  message_retention_duration = var.topic_retention
  labels                     = var.labels
}

resource "google_pubsub_subscription" "loader" {
  for_each = local.loader_subscriptions

  project              = var.project_id
  name                 = each.value
  topic                = google_pubsub_topic.topic[each.key].id
  ack_deadline_seconds = var.ack_deadline_seconds
  labels               = var.labels

  # A subscription without traffic for 31 days is deleted by default: never for these.
  expiration_policy {
    ttl = ""
  }

  dynamic "dead_letter_policy" {
    for_each = each.key == local.dead_letter ? [] : [local.dead_letter]
    content {
      dead_letter_topic     = google_pubsub_topic.topic[dead_letter_policy.value].id
      max_delivery_attempts = var.max_delivery_attempts
    }
  }
}

resource "google_pubsub_subscription" "beam" {
  for_each = local.beam_subscriptions

  project = var.project_id
  name    = each.value
  topic   = google_pubsub_topic.topic[each.key].id
  labels  = var.labels

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = local.publishers

  project = var.project_id
  topic   = google_pubsub_topic.topic[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = each.value.member
}

resource "google_pubsub_subscription_iam_member" "reader" {
  for_each = local.readers

  project      = var.project_id
  subscription = each.value.subscription
  role         = each.value.role
  member       = each.value.member

  # Named by string (the key says whose it is): the subscriptions must exist first.
  depends_on = [google_pubsub_subscription.loader, google_pubsub_subscription.beam]
}
