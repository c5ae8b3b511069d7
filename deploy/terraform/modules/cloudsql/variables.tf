variable "enabled" {
  description = "Create the shop's database on Cloud SQL."
  type        = bool
  default     = false
}

variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "region" {
  description = "The instance's region."
  type        = string
}

variable "network_id" {
  description = "The VPC the instance gets its private address in (module network)."
  type        = string
}

variable "name" {
  description = "The instance's name."
  type        = string
  default     = "shopstream-shop"
}

variable "database_name" {
  description = "The shop's database."
  type        = string
  default     = "shop"
}

variable "database_version" {
  description = "Cloud SQL PostgreSQL version."
  type        = string
  default     = "POSTGRES_16"
}

variable "tier" {
  description = "Machine tier."
  type        = string
  default     = "db-custom-2-7680"
}

variable "availability_type" {
  description = "REGIONAL (a standby in another zone) or ZONAL."
  type        = string
  default     = "REGIONAL"
}

variable "deletion_protection" {
  description = "Refuse to delete the instance."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the instance."
  type        = map(string)
  default     = {}
}
