# The dev environment: every value of deploy/terraform/platform that differs here.
# Set project_id (and the backend's bucket in dev.backend.hcl) to your project, then
#   terraform plan -var-file=../environments/dev.tfvars -out dev.tfplan
project_id        = "my-shop-dev"
environment       = "dev"
region            = "europe-west1"
bigquery_location = "EU"

master_authorized_networks = [
  { cidr_block = "203.0.113.0/24", display_name = "operators" },
]

# Smaller and cheaper; easy to tear down.
release_channel       = "REGULAR"
general_machine_type  = "e2-standard-2"
general_min_nodes     = 1
general_max_nodes     = 3
pipeline_machine_type = "e2-standard-2"
pipeline_max_nodes    = 2
deletion_protection   = false
beam_enabled          = false

# Shorter partition expiry in dev (costs, not history, matter here).
datasets = {
  raw        = { description = "Raw (dev).", partition_expiration_days = 60 }
  staging    = { description = "Staging (dev).", partition_expiration_days = 60 }
  mart       = { description = "Mart (dev).", partition_expiration_days = 60 }
  monitoring = { description = "Monitoring (dev).", partition_expiration_days = 30 }
}

cloudsql_enabled           = true
cloudsql_tier              = "db-custom-1-3840"
cloudsql_availability_type = "ZONAL"
