output "bucket" {
  value = google_storage_bucket.dataflow.name
}

output "temp_location" {
  value = "gs://${google_storage_bucket.dataflow.name}/temp"
}

output "staging_location" {
  value = "gs://${google_storage_bucket.dataflow.name}/staging"
}
