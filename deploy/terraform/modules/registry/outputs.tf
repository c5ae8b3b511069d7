output "image" {
  description = "The image's name without a tag."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/shopstream"
}
