# Dataflow's staging and temp files for the Beam pipeline (beam.temp_location =
# gs://<bucket>/temp, --staging_location gs://<bucket>/staging). Nothing here is data of
# record: temp files expire, old object versions too.

resource "google_storage_bucket" "dataflow" {
  # checkov:skip=CKV_GCP_62: access logs of a bucket of Dataflow's own temp files would be noise; Cloud Audit Logs record administrative access.
  project                     = var.project_id
  name                        = var.bucket_name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age            = var.temp_days
      matches_prefix = ["temp/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  soft_delete_policy {
    retention_duration_seconds = 604800
  }
}

resource "google_storage_bucket_iam_member" "object_admin" {
  for_each = var.object_admins

  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectAdmin"
  member = each.value
}
