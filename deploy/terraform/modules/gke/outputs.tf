output "name" {
  value = google_container_cluster.cluster.name
}

output "location" {
  value = google_container_cluster.cluster.location
}

output "endpoint" {
  value     = google_container_cluster.cluster.endpoint
  sensitive = true
}

output "workload_pool" {
  description = "<project>.svc.id.goog, once the cluster (which creates the pool) exists."
  value       = google_container_cluster.cluster.workload_identity_config[0].workload_pool
}

output "pipeline_pool_taint" {
  value = "cloud.google.com/gke-spot=true:NoSchedule"
}

output "pipeline_pool_label" {
  value = "shopstream.io/pool=pipeline"
}
