variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "region" {
  description = "Region of the subnet, router and NAT (the cluster's region)."
  type        = string
}

variable "name" {
  description = "The VPC's name; the subnet, router and NAT are named after it."
  type        = string
  default     = "shopstream"
}

variable "nodes_cidr" {
  description = "The subnet's primary range (GKE nodes)."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range `pods` (VPC-native pod addresses)."
  type        = string
  default     = "10.20.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range `services` (ClusterIP addresses)."
  type        = string
  default     = "10.24.0.0/20"
}

variable "flow_log_sampling" {
  description = "Share of flows the subnet's VPC flow logs keep (0 to 1)."
  type        = number
  default     = 0.5
}
