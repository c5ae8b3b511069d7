# The warehouse's four datasets and the raw tables, created ahead of the pipeline with the
# exact layout the package gives them (src/shopstream/warehouse/bigquery/tables.py:
# columns, day partitioning, clustering), read from schemas/*.json that render_schemas.py
# writes from the package (tests/deploy/test_terraform.py fails when they drift).
#
# Staging, mart and monitoring tables and views are dbt's (shopstream transform); the
# monitoring dataset's quality tables are the quality checks'. Access is granted per
# dataset, never project-wide (dataset_access below).

locals {
  layouts = jsondecode(file("${path.module}/schemas/layouts.json"))

  # raw.<table> -> which schema file describes it. A captured table's raw table is
  # cdc_<table> (schema public) or cdc_<schema>__<table>, as
  # shopstream.events.raw.cdc_table_name names plain lower-case names (the only kind the
  # variable's validation lets in).
  cdc_tables = {
    for table in var.captured_tables :
    (var.cdc_schema == "public" ? "cdc_${table}" : "cdc_${var.cdc_schema}__${table}") => "cdc"
  }
  raw_tables = merge(
    {
      events         = "events"
      dead_letter    = "dead_letter"
      source_schemas = "source_schemas"
    },
    local.cdc_tables,
  )

  # (dataset, role, member) for every grant of dataset_access, keyed by names known at plan
  # time (the members' e-mails are not, before the accounts exist).
  grants = merge([
    for dataset, roles in var.dataset_access : merge([
      for role, members in roles : {
        for name, member in members : "${dataset}/${role}/${name}" => {
          dataset = dataset
          role    = role
          member  = member
        }
      }
    ]...)
  ]...)
}

resource "google_bigquery_dataset" "layer" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; set default_encryption_configuration with a Cloud KMS key where policy requires CMEK.
  for_each = var.datasets

  project     = var.project_id
  dataset_id  = each.key
  location    = var.location
  description = each.value.description

  default_partition_expiration_ms = each.value.partition_expiration_days * 86400000

  # `terraform destroy` fails while a dataset still holds tables: data is never dropped by
  # removing a dataset from this file.
  delete_contents_on_destroy = false

  labels = var.labels
}

resource "google_bigquery_table" "raw" {
  # checkov:skip=CKV_GCP_80: Google-managed encryption, as the datasets (CKV_GCP_81).
  for_each = local.raw_tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.layer["raw"].dataset_id
  table_id            = each.key
  deletion_protection = var.deletion_protection
  schema              = file("${path.module}/schemas/${each.value}.json")

  time_partitioning {
    type          = "DAY"
    field         = local.layouts[each.value].partition_by
    expiration_ms = var.datasets["raw"].partition_expiration_days * 86400000
  }

  clustering = local.layouts[each.value].cluster_by

  labels = var.labels
}

resource "google_bigquery_dataset_iam_member" "access" {
  for_each = local.grants

  project    = var.project_id
  dataset_id = google_bigquery_dataset.layer[each.value.dataset].dataset_id
  role       = each.value.role
  member     = each.value.member
}
