# Optional: the shop's PostgreSQL on Cloud SQL, ready for the CDC reader's logical
# replication (cloudsql.logical_decoding=on is Cloud SQL's wal_level=logical; pglogical is
# not needed: the reader speaks pgoutput). Private IP only, in the platform's VPC through
# private services access. Skip the module (var.enabled = false) when the shop's database
# lives elsewhere; the CDC reader then reaches it through Cloud NAT or a peering.
#
# The database user is not created here (its password would sit in Terraform's state): the
# operator creates it and grants it REPLICATION (deploy/README.md).

resource "google_compute_global_address" "private_services" {
  count = var.enabled ? 1 : 0

  project       = var.project_id
  name          = "${var.name}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = var.network_id
}

resource "google_service_networking_connection" "private_services" {
  count = var.enabled ? 1 : 0

  network                 = var.network_id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services[0].name]
}

resource "google_sql_database_instance" "shop" {
  # checkov:skip=CKV2_GCP_13: log_duration=on writes a log line for every statement of the shop's OLTP traffic (cost, noise); slow statements are found with Query Insights instead.
  count = var.enabled ? 1 : 0

  project             = var.project_id
  name                = var.name
  region              = var.region
  database_version    = var.database_version
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.tier
    availability_type = var.availability_type
    disk_autoresize   = true
    user_labels       = var.labels

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network_id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
    }

    # Logical decoding for the CDC reader (wal_level=logical).
    database_flags {
      name  = "cloudsql.logical_decoding"
      value = "on"
    }
    # Room for the reader's slot and a spare (a second reader, a backfill).
    database_flags {
      name  = "max_replication_slots"
      value = "10"
    }
    database_flags {
      name  = "max_wal_senders"
      value = "10"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_error_verbosity"
      value = "default"
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "shop" {
  count = var.enabled ? 1 : 0

  project  = var.project_id
  name     = var.database_name
  instance = google_sql_database_instance.shop[0].name
}
