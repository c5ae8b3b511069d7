# Cloud Monitoring alerts on the loader's Pub/Sub backlog. The loader reports its consumer lag
# (shopstream_loader_lag_messages, the LoaderConsumerLagHigh Prometheus alert) only where the
# transport can tell it (Kafka); on Pub/Sub the subscriptions' own metrics are the lag:
#
# - every loader subscription: its oldest unacknowledged message older than
#   var.backlog_age_seconds, or more than var.backlog_messages undelivered, for
#   var.backlog_duration (the loader is down, stuck or too slow);
# - dead-letter growth: more than var.dead_letter_messages that Pub/Sub itself moved from the
#   loader's subscriptions to the dead-letter topic within var.backlog_duration (a message
#   the loader failed max_delivery_attempts times). The dead letters the code writes itself
#   (refused events, poison messages) are counted by shopstream_dead_letters_total and
#   alerted on in Prometheus (DeadLetterGrowth); these it cannot see.
#
# Each policy notifies var.notification_channels (none: the incidents show in the console
# only) and points at the LoaderConsumerLagHigh runbook.

resource "google_monitoring_alert_policy" "loader_backlog" {
  for_each = local.loader_subscriptions

  project               = var.project_id
  display_name          = "shopstream loader backlog: ${each.value}"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "WARNING"
  user_labels           = var.labels

  conditions {
    display_name = "oldest unacked message older than ${var.backlog_age_seconds} s"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${each.value}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.backlog_age_seconds
      duration        = var.backlog_duration
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "more than ${var.backlog_messages} undelivered messages"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${each.value}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.backlog_messages
      duration        = var.backlog_duration
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "The loader's subscription ${each.value} is falling behind: raw lags the collector and the CDC reader. What to do: ${var.runbook_url}#loaderconsumerlaghigh"
    mime_type = "text/markdown"
  }

  # The subscription must exist before its metric can be filtered on by name.
  depends_on = [google_pubsub_subscription.loader]
}

resource "google_monitoring_alert_policy" "dead_letter_growth" {
  project               = var.project_id
  display_name          = "shopstream loader dead letters: ${local.dead_letter}"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "WARNING"
  user_labels           = var.labels

  conditions {
    display_name = "more than ${var.dead_letter_messages} messages moved to ${local.dead_letter} in ${var.backlog_duration}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = ends_with(\".${var.loader_subscription}\") AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.dead_letter_messages
      duration        = "0s"
      aggregations {
        alignment_period     = var.backlog_duration
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "Pub/Sub moved messages the loader failed ${var.max_delivery_attempts} times to ${local.dead_letter} (the loader lands them in raw.dead_letter: query it by reason; its logs say why it failed). What to do: ${var.runbook_url}#loaderconsumerlaghigh"
    mime_type = "text/markdown"
  }

  depends_on = [google_pubsub_subscription.loader]
}
