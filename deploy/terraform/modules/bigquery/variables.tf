variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "location" {
  description = "BigQuery location of every dataset (the warehouse URL's ?location=)."
  type        = string
}

variable "datasets" {
  # Partition expiry bounds cost; it is not a retention policy to lower lightly: the daily
  # full refresh rebuilds staging and mart from raw, so a raw partition that expired is a
  # change (a user's creation, a product's price) those rebuilds no longer see.
  description = "The warehouse's layers (shopstream.warehouse.base.LAYERS) and each one's default partition expiration in days (raw: keep at least the shop's whole history)."
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
  validation {
    condition     = alltrue([for name in ["raw", "staging", "mart", "monitoring"] : contains(keys(var.datasets), name)])
    error_message = "datasets must hold raw, staging, mart and monitoring."
  }
  validation {
    condition     = alltrue([for d in values(var.datasets) : d.partition_expiration_days > 0])
    error_message = "Every dataset's partition_expiration_days is positive."
  }
}

variable "cdc_schema" {
  description = "The PostgreSQL schema whose tables are captured (cdc.schema_name)."
  type        = string
  default     = "public"
  validation {
    condition     = can(regex("^[a-z0-9]+(_[a-z0-9]+)*$", var.cdc_schema)) && length(var.cdc_schema) <= 20
    error_message = "A plain lower-case schema name (a-z, 0-9, single underscores), at most 20 characters."
  }
}

variable "captured_tables" {
  description = "The captured tables (each gets raw.cdc_<table>); the shop's by default (shopstream.generators.shop.SHOP_TABLES)."
  type        = list(string)
  default     = ["users", "products", "orders", "order_items", "payments"]
  validation {
    condition     = alltrue([for t in var.captured_tables : can(regex("^[a-z0-9]+(_[a-z0-9]+)*$", t)) && length(t) <= 36])
    error_message = "Plain lower-case table names (a-z, 0-9, single underscores), at most 36 characters: other names get hashed raw table names that Terraform does not derive."
  }
}

variable "dataset_access" {
  description = "dataset -> role -> {name -> member (\"serviceAccount:...\")}: grants on the dataset only."
  type        = map(map(map(string)))
  default     = {}
  validation {
    condition     = alltrue(flatten([for roles in values(var.dataset_access) : [for role in keys(roles) : !contains(["roles/owner", "roles/editor", "roles/bigquery.admin"], role)]]))
    error_message = "No owner, editor or bigquery.admin on a dataset: grant dataEditor or dataViewer."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the raw tables (set false before tearing down)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the datasets and tables."
  type        = map(string)
  default     = {}
}
