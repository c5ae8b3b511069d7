variable "project_id" {
  description = "The Google Cloud project of this environment."
  type        = string
}

variable "environment" {
  description = "The environment's name (in resource names and labels)."
  type        = string
}

variable "region" {
  description = "Region of the cluster, network, registry, Dataflow bucket and Cloud SQL."
  type        = string
}

variable "bigquery_location" {
  description = "BigQuery location of the datasets (the warehouse URL's ?location=): a multi-region (EU, US) or the region."
  type        = string
}

variable "nodes_cidr" {
  description = "The GKE subnet's primary range."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "The pods' secondary range."
  type        = string
  default     = "10.20.0.0/14"
}

variable "services_cidr" {
  description = "The services' secondary range."
  type        = string
  default     = "10.24.0.0/20"
}

variable "master_cidr" {
  description = "The GKE control plane's /28."
  type        = string
  default     = "172.16.0.0/28"
}

variable "master_authorized_networks" {
  description = "Who may reach the control plane (operators' and CI's addresses)."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
}

variable "release_channel" {
  description = "GKE release channel."
  type        = string
  default     = "REGULAR"
}

variable "general_machine_type" {
  description = "General pool's machine type."
  type        = string
  default     = "e2-standard-4"
}

variable "general_min_nodes" {
  description = "General pool: fewest nodes (all zones)."
  type        = number
  default     = 3
}

variable "general_max_nodes" {
  description = "General pool: most nodes (all zones)."
  type        = number
  default     = 9
}

variable "pipeline_machine_type" {
  description = "Spot pipeline pool's machine type."
  type        = string
  default     = "e2-standard-4"
}

variable "pipeline_max_nodes" {
  description = "Spot pipeline pool: most nodes (all zones)."
  type        = number
  default     = 6
}

variable "datasets" {
  description = "The four datasets and each one's default partition expiration (days); see modules/bigquery before lowering raw's."
  type = map(object({
    description               = string
    partition_expiration_days = number
  }))
  default = {
    raw = {
      description               = "Raw events, changes, dead letters and source schemas, as landed (append-only)."
      partition_expiration_days = 3650
    }
    staging = {
      description               = "Cleaned, typed and deduplicated raw data (dbt)."
      partition_expiration_days = 3650
    }
    mart = {
      description               = "Facts, dimensions and aggregates for the shop's reports (dbt)."
      partition_expiration_days = 3650
    }
    monitoring = {
      description               = "Quality check results, pipeline runs and freshness (quality checks, dbt)."
      partition_expiration_days = 400
    }
  }
}

variable "topic_prefix" {
  description = "transport.topic_prefix (SHOPSTREAM_TRANSPORT__TOPIC_PREFIX in the pods)."
  type        = string
  default     = "shopstream"
}

variable "cdc_schema" {
  description = "cdc.schema_name: the shop database's captured schema."
  type        = string
  default     = "public"
}

variable "captured_tables" {
  description = "The captured tables (cdc.tables); the shop's by default (shopstream.generators.shop.SHOP_TABLES)."
  type        = list(string)
  default     = ["users", "products", "orders", "order_items", "payments"]
}

variable "max_delivery_attempts" {
  description = "pubsub.max_delivery_attempts."
  type        = number
  default     = 5
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/<project>/notificationChannels/<id>) for the Pub/Sub backlog and dead-letter alerts; empty: incidents show in the console only."
  type        = list(string)
  default     = []
}

variable "backlog_age_seconds" {
  description = "Alert when a loader subscription's oldest unacknowledged message is older than this for 10 minutes."
  type        = number
  default     = 600
}

variable "backlog_messages" {
  description = "Alert when a loader subscription holds more undelivered messages than this for 10 minutes."
  type        = number
  default     = 100000
}

variable "beam_enabled" {
  description = "Create the Beam pipeline's Pub/Sub subscriptions (run the Dataflow job)."
  type        = bool
  default     = true
}

variable "cloudsql_enabled" {
  description = "Create the shop's PostgreSQL on Cloud SQL, with logical decoding on."
  type        = bool
  default     = false
}

variable "cloudsql_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-2-7680"
}

variable "cloudsql_availability_type" {
  description = "Cloud SQL REGIONAL or ZONAL."
  type        = string
  default     = "REGIONAL"
}

variable "deletion_protection" {
  description = "Protect the cluster, raw tables and database from deletion (false before tearing down)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Extra labels on every resource that takes them."
  type        = map(string)
  default     = {}
}
