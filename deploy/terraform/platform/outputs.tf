output "cluster_name" {
  value = module.gke.name
}

output "cluster_location" {
  value = module.gke.location
}

output "image" {
  description = "Tag it and push: <this>:<tag>."
  value       = module.registry.image
}

output "service_accounts" {
  description = "role -> e-mail: the annotations deploy/k8s's ServiceAccounts carry."
  value       = module.iam.emails
}

output "warehouse_url" {
  description = "SHOPSTREAM_WAREHOUSE_URL for the pods."
  value       = "bigquery://${var.project_id}?location=${var.bigquery_location}"
}

output "sink_url" {
  description = "SHOPSTREAM_SINK_URL for the collector and the CDC reader; the loader reads `shopstream load --from` it."
  value       = "pubsub://${var.project_id}"
}

output "topics" {
  value = module.pubsub.topics
}

output "loader_subscriptions" {
  value = module.pubsub.loader_subscriptions
}

output "dataflow_temp_location" {
  description = "SHOPSTREAM_BEAM__TEMP_LOCATION for the Dataflow job."
  value       = module.storage.temp_location
}

output "cloudsql_connection_name" {
  value = module.cloudsql.connection_name
}

output "pipeline_pool" {
  description = "The Spot pool's taint and label, which the batch roles' tolerations and affinity match."
  value = {
    taint = module.gke.pipeline_pool_taint
    label = module.gke.pipeline_pool_label
  }
}

output "backlog_alert_policies" {
  description = "Loader subscription -> its Cloud Monitoring backlog alert policy (deploy/README.md step 13)."
  value       = module.pubsub.backlog_alert_policies
}
