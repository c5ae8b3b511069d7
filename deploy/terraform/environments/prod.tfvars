# The prod environment: every value of deploy/terraform/platform that differs here.
# Set project_id (and the backend's bucket in prod.backend.hcl) to your project, then
#   terraform plan -var-file=../environments/prod.tfvars -out prod.tfplan
project_id        = "my-shop-prod"
environment       = "prod"
region            = "europe-west1"
bigquery_location = "EU"

# Who may reach the GKE control plane: the operators' and CI's public addresses.
master_authorized_networks = [
  { cidr_block = "203.0.113.0/24", display_name = "operators" },
]

release_channel     = "STABLE"
general_min_nodes   = 3
general_max_nodes   = 9
pipeline_max_nodes  = 6
deletion_protection = true

# The shop database on Cloud SQL (logical decoding on); false if it lives elsewhere.
cloudsql_enabled           = true
cloudsql_tier              = "db-custom-2-7680"
cloudsql_availability_type = "REGIONAL"

# Where the Pub/Sub backlog and dead-letter alerts go (gcloud beta monitoring channels list).
notification_channels = []
