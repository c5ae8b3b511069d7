# One Google service account per role, and the few roles that only exist at project level.
# Everything that can be granted on the resource itself is granted there, in the module that
# owns the resource (pubsub: topics and subscriptions; bigquery: datasets; storage: the
# Dataflow bucket; registry: the image repository), never here.
#
# - shopstream-collector, -cdc, -loader, -quality, -transform: the Kubernetes workloads,
#   through Workload Identity (the Kubernetes ServiceAccount shopstream/shopstream-<role>
#   may act as the Google one; deploy/k8s annotates each with iam.gke.io/gcp-service-account);
#   Airflow's task pods run as shopstream-transform.
# - shopstream-dataflow: the Beam pipeline's Dataflow workers.
# - shopstream-nodes: the GKE nodes (logs, metrics, image pulls), never the Compute Engine
#   default account with its project-wide editor role.

locals {
  workloads = toset(["collector", "cdc", "loader", "quality", "transform"])
  accounts = {
    collector = "The event collector (publishes events to Pub/Sub)."
    cdc       = "The CDC reader (publishes the shop database's changes to Pub/Sub)."
    loader    = "The loader (Pub/Sub into BigQuery raw)."
    quality   = "The quality checks (read every layer, write monitoring)."
    transform = "The dbt transforms and Airflow's task pods (raw into staging, mart, monitoring)."
    dataflow  = "The Beam pipeline's Dataflow workers."
    nodes     = "The GKE nodes (logging, monitoring, image pulls only)."
  }

  # Roles that have no narrower home than the project. bigquery.jobUser lets a role run
  # query jobs (billed to the project); what a query may read or write is the datasets'
  # grants. Only the roles that query have it: transform (dbt) and quality (the checks'
  # queries and dry runs). The loader and the Dataflow workers never query: they append
  # through the Storage Write API (bigquery.tables.updateData, from dataEditor on the
  # dataset) and look tables up (tables.get) or make them (tables.create). pubsub.viewer lets the loader list topics (it finds newly captured tables'
  # topics under the prefix; listing is a project permission); it reads no message.
  project_roles = {
    "loader/roles/pubsub.viewer"                      = { account = "loader", role = "roles/pubsub.viewer" }
    "transform/roles/bigquery.jobUser"                = { account = "transform", role = "roles/bigquery.jobUser" }
    "quality/roles/bigquery.jobUser"                  = { account = "quality", role = "roles/bigquery.jobUser" }
    "dataflow/roles/dataflow.worker"                  = { account = "dataflow", role = "roles/dataflow.worker" }
    "nodes/roles/logging.logWriter"                   = { account = "nodes", role = "roles/logging.logWriter" }
    "nodes/roles/monitoring.metricWriter"             = { account = "nodes", role = "roles/monitoring.metricWriter" }
    "nodes/roles/monitoring.viewer"                   = { account = "nodes", role = "roles/monitoring.viewer" }
    "nodes/roles/stackdriver.resourceMetadata.writer" = { account = "nodes", role = "roles/stackdriver.resourceMetadata.writer" }
    "nodes/roles/autoscaling.metricsWriter"           = { account = "nodes", role = "roles/autoscaling.metricsWriter" }
    "nodes/roles/serviceusage.serviceUsageConsumer"   = { account = "nodes", role = "roles/serviceusage.serviceUsageConsumer" }
  }
}

resource "google_service_account" "role" {
  for_each = local.accounts

  project      = var.project_id
  account_id   = "shopstream-${each.key}"
  display_name = "shopstream ${each.key}"
  description  = each.value
}

resource "google_project_iam_member" "role" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.role[each.value.account].member
}

# Workload Identity: the Kubernetes ServiceAccount shopstream-<role> in namespace
# var.namespace may act as the Google service account shopstream-<role>.
resource "google_service_account_iam_member" "workload_identity" {
  for_each = local.workloads

  service_account_id = google_service_account.role[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.workload_pool}[${var.namespace}/shopstream-${each.key}]"
}
