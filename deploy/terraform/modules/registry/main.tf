# The one image of every role (deploy/docker/Dockerfile):
# <region>-docker.pkg.dev/<project>/shopstream/shopstream:<tag>; the Beam workers' image
# (deploy/beam/Dockerfile) goes beside it as .../shopstream/shopstream-beam:<tag>.

resource "google_artifact_registry_repository" "images" {
  # checkov:skip=CKV_GCP_84: Google-managed encryption; set kms_key_name where policy requires CMEK.
  project       = var.project_id
  location      = var.region
  repository_id = var.repository_id
  format        = "DOCKER"
  description   = "shopstream images (one for every role, and the Beam workers')."
  labels        = var.labels

  docker_config {
    # A tag names one image for good: a rollback to tag N gets what ran as tag N.
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "1209600s"
    }
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_versions
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "reader" {
  for_each = var.readers

  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = each.value
}
