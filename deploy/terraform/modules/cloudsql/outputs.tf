output "connection_name" {
  value = var.enabled ? google_sql_database_instance.shop[0].connection_name : null
}

output "private_ip" {
  value = var.enabled ? google_sql_database_instance.shop[0].private_ip_address : null
}
