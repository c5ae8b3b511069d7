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
