output "datasets" {
  value = { for name, dataset in google_bigquery_dataset.layer : name => dataset.id }
}

output "raw_tables" {
  value = sort(keys(google_bigquery_table.raw))
}
