# The Secret Manager secrets behind the Kubernetes Secret shopstream-secrets: the secrets
# only, never their values (a value in Terraform would sit in its state). The operator adds
# versions with gcloud and copies them into the cluster (deploy/README.md); no workload reads
# Secret Manager itself, so no role is granted access here.

resource "google_secret_manager_secret" "secret" {
  for_each = var.secrets

  project   = var.project_id
  secret_id = each.key
  labels    = var.labels
  annotations = {
    description = each.value
  }

  replication {
    auto {}
  }
}
