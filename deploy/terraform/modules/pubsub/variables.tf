variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "topic_prefix" {
  description = "transport.topic_prefix: every topic is named under it."
  type        = string
  default     = "shopstream"
  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_-]{2,100}$", var.topic_prefix))
    error_message = "As transport.topic_prefix: a letter, then 2 to 100 of A-Z a-z 0-9 _ -."
  }
}

variable "cdc_schema" {
  description = "The PostgreSQL schema whose tables are captured (cdc.schema_name)."
  type        = string
  default     = "public"
  validation {
    condition     = can(regex("^[a-z0-9]+(_[a-z0-9]+)*$", var.cdc_schema)) && length(var.cdc_schema) <= 20
    error_message = "A plain lower-case schema name, at most 20 characters."
  }
}

variable "captured_tables" {
  description = "The captured tables, each with topic <prefix>.<schema>.<table>; the shop's by default (shopstream.generators.shop.SHOP_TABLES)."
  type        = list(string)
  default     = ["users", "products", "orders", "order_items", "payments"]
  validation {
    condition     = alltrue([for t in var.captured_tables : can(regex("^[a-z0-9]+(_[a-z0-9]+)*$", t)) && length(t) <= 36])
    error_message = "Plain lower-case table names, at most 36 characters (their topics are then named as Debezium names them, uncut)."
  }
}

variable "loader_subscription" {
  description = "pubsub.subscription: the loader's subscription on each topic is <topic>.<this>."
  type        = string
  default     = "shopstream-loader"
}

variable "beam_subscriptions" {
  description = "Create the Beam pipeline's subscriptions (run the Dataflow job)."
  type        = bool
  default     = true
}

variable "beam_subscription" {
  description = "beam.subscription: the Beam pipeline's subscription on each topic is <topic>.<this>."
  type        = string
  default     = "shopstream-beam"
}

variable "ack_deadline_seconds" {
  description = "pubsub.ack_deadline_seconds (the loader extends it while a load takes longer)."
  type        = number
  default     = 60
  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "10 to 600 seconds."
  }
}

variable "max_delivery_attempts" {
  description = "pubsub.max_delivery_attempts: deliveries before a message goes to <prefix>.dead_letter."
  type        = number
  default     = 5
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "Pub/Sub allows 5 to 100."
  }
}

variable "topic_retention" {
  description = "How long topics keep messages (lets a subscription seek back, e.g. after a bad deploy); null: not retained."
  type        = string
  default     = "604800s"
}

variable "kms_key_name" {
  description = "Cloud KMS key for the topics (null: Google-managed encryption)."
  type        = string
  default     = null
}

variable "members" {
  description = "IAM members of the roles that use Pub/Sub: collector, cdc, loader, dataflow (\"serviceAccount:...\")."
  type = object({
    collector = string
    cdc       = string
    loader    = string
    dataflow  = string
  })
}

variable "labels" {
  description = "Labels on topics and subscriptions."
  type        = map(string)
  default     = {}
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/<p>/notificationChannels/<id>) the backlog and dead-letter alerts notify; empty: incidents show in the console only."
  type        = list(string)
  default     = []
}

variable "backlog_age_seconds" {
  description = "Alert when a loader subscription's oldest unacknowledged message is older than this (seconds)."
  type        = number
  default     = 600
}

variable "backlog_messages" {
  description = "Alert when a loader subscription holds more undelivered messages than this (as the LoaderConsumerLagHigh Prometheus alert)."
  type        = number
  default     = 100000
}

variable "backlog_duration" {
  description = "How long a backlog condition must hold before it alerts; also the dead-letter alert's window."
  type        = string
  default     = "600s"
}

variable "dead_letter_messages" {
  description = "Alert when Pub/Sub moves more messages than this from the loader's subscriptions to the dead-letter topic within backlog_duration."
  type        = number
  default     = 0
}

variable "runbook_url" {
  description = "Where deploy/monitoring/runbooks.md is read (the alerts link its #loaderconsumerlaghigh section)."
  type        = string
  default     = "deploy/monitoring/runbooks.md"
}
