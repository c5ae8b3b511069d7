# The shopstream platform, one root module for every environment: network, GKE, BigQuery,
# Pub/Sub (and its backlog alerts), Artifact Registry, the Dataflow bucket, Secret Manager
# secrets, the service accounts and their grants, and optionally the shop's database on Cloud
# SQL. An environment is only its variables (../environments/<env>.tfvars) and its state
# (../environments/<env>.backend.hcl); deploy/README.md walks through applying it.

locals {
  labels = merge(var.labels, {
    environment = var.environment
    part-of     = "shopstream"
  })
}

module "network" {
  source = "../modules/network"

  project_id    = var.project_id
  region        = var.region
  name          = "shopstream-${var.environment}"
  nodes_cidr    = var.nodes_cidr
  pods_cidr     = var.pods_cidr
  services_cidr = var.services_cidr
}

module "iam" {
  source = "../modules/iam"

  project_id    = var.project_id
  workload_pool = module.gke.workload_pool
  namespace     = "shopstream"
}

module "gke" {
  source = "../modules/gke"

  project_id                 = var.project_id
  region                     = var.region
  name                       = "shopstream-${var.environment}"
  network_id                 = module.network.network_id
  subnet_id                  = module.network.subnet_id
  pods_range_name            = module.network.pods_range_name
  services_range_name        = module.network.services_range_name
  master_cidr                = var.master_cidr
  master_authorized_networks = var.master_authorized_networks
  release_channel            = var.release_channel
  node_service_account       = module.iam.emails["nodes"]
  general_machine_type       = var.general_machine_type
  general_min_nodes          = var.general_min_nodes
  general_max_nodes          = var.general_max_nodes
  pipeline_machine_type      = var.pipeline_machine_type
  pipeline_max_nodes         = var.pipeline_max_nodes
  deletion_protection        = var.deletion_protection
  labels                     = local.labels
}

module "bigquery" {
  source = "../modules/bigquery"

  project_id          = var.project_id
  location            = var.bigquery_location
  datasets            = var.datasets
  cdc_schema          = var.cdc_schema
  captured_tables     = var.captured_tables
  deletion_protection = var.deletion_protection
  labels              = local.labels

  # Least privilege per dataset: who writes a layer, who only reads it.
  dataset_access = {
    raw = {
      "roles/bigquery.dataEditor" = { loader = module.iam.members["loader"], dataflow = module.iam.members["dataflow"] }
      "roles/bigquery.dataViewer" = { transform = module.iam.members["transform"], quality = module.iam.members["quality"] }
    }
    staging = {
      "roles/bigquery.dataEditor" = { transform = module.iam.members["transform"] }
      "roles/bigquery.dataViewer" = { quality = module.iam.members["quality"] }
    }
    mart = {
      "roles/bigquery.dataEditor" = { transform = module.iam.members["transform"], dataflow = module.iam.members["dataflow"] }
      "roles/bigquery.dataViewer" = { quality = module.iam.members["quality"] }
    }
    monitoring = {
      # dbt builds monitoring views (transform); the quality checks write their results.
      "roles/bigquery.dataEditor" = { quality = module.iam.members["quality"], transform = module.iam.members["transform"] }
    }
  }

}

module "pubsub" {
  source = "../modules/pubsub"

  project_id            = var.project_id
  topic_prefix          = var.topic_prefix
  cdc_schema            = var.cdc_schema
  captured_tables       = var.captured_tables
  beam_subscriptions    = var.beam_enabled
  max_delivery_attempts = var.max_delivery_attempts
  labels                = local.labels

  # Cloud Monitoring alerts on the loader subscriptions' backlog and dead-letter growth.
  notification_channels = var.notification_channels
  backlog_age_seconds   = var.backlog_age_seconds
  backlog_messages      = var.backlog_messages

  members = {
    collector = module.iam.members["collector"]
    cdc       = module.iam.members["cdc"]
    loader    = module.iam.members["loader"]
    dataflow  = module.iam.members["dataflow"]
  }
}

module "registry" {
  source = "../modules/registry"

  project_id = var.project_id
  region     = var.region
  readers    = { nodes = module.iam.members["nodes"], dataflow = module.iam.members["dataflow"] }
  labels     = local.labels
}

module "storage" {
  source = "../modules/storage"

  project_id    = var.project_id
  bucket_name   = "${var.project_id}-shopstream-dataflow"
  location      = var.region
  object_admins = { dataflow = module.iam.members["dataflow"] }
  force_destroy = !var.deletion_protection
  labels        = local.labels
}

module "secrets" {
  source = "../modules/secrets"

  project_id = var.project_id
  labels     = local.labels
}

module "cloudsql" {
  source = "../modules/cloudsql"

  enabled             = var.cloudsql_enabled
  project_id          = var.project_id
  region              = var.region
  network_id          = module.network.network_id
  name                = "shopstream-shop-${var.environment}"
  tier                = var.cloudsql_tier
  availability_type   = var.cloudsql_availability_type
  deletion_protection = var.deletion_protection
  labels              = local.labels
}
