output "topics" {
  value = sort(tolist(local.topics))
}

output "dead_letter_topic" {
  value = local.dead_letter
}

output "loader_subscriptions" {
  value = sort(values(local.loader_subscriptions))
}

output "beam_subscriptions" {
  value = sort(values(local.beam_subscriptions))
}

output "backlog_alert_policies" {
  description = "loader subscription -> its backlog alert policy."
  value       = { for topic, name in local.loader_subscriptions : name => google_monitoring_alert_policy.loader_backlog[topic].name }
}
