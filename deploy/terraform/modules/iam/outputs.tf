output "emails" {
  description = "role -> the service account's e-mail (shopstream-<role>@<project>.iam.gserviceaccount.com)."
  value       = { for role, account in google_service_account.role : role => account.email }
}

output "members" {
  description = "role -> \"serviceAccount:<e-mail>\", for IAM bindings."
  value       = { for role, account in google_service_account.role : role => account.member }
}
