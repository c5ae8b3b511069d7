variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "region" {
  description = "The cluster's region (a regional cluster: control plane and nodes in every zone)."
  type        = string
}

variable "name" {
  description = "The cluster's name."
  type        = string
  default     = "shopstream"
}

variable "network_id" {
  description = "The VPC (module network)."
  type        = string
}

variable "subnet_id" {
  description = "The subnet with the pods and services secondary ranges (module network)."
  type        = string
}

variable "pods_range_name" {
  description = "Secondary range name for pods."
  type        = string
}

variable "services_range_name" {
  description = "Secondary range name for services."
  type        = string
}

variable "master_cidr" {
  description = "The control plane's /28 (must not overlap the VPC's ranges)."
  type        = string
  default     = "172.16.0.0/28"
}

variable "private_endpoint" {
  description = "Control plane reachable only on its private address (then kubectl runs from inside the VPC: a bastion or Cloud Shell with a VPN)."
  type        = bool
  default     = false
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the control plane (operators, CI)."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
}

variable "webhook_ports" {
  description = "Node ports the control plane may reach besides 443 and 10250 (APIService and admission webhooks)."
  type        = list(string)
  default     = ["6443", "8443", "9443"]
}

variable "release_channel" {
  description = "GKE release channel: RAPID, REGULAR or STABLE."
  type        = string
  default     = "REGULAR"
  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel is RAPID, REGULAR or STABLE."
  }
}

variable "node_service_account" {
  description = "E-mail of the nodes' service account (shopstream-nodes, module iam)."
  type        = string
}

variable "general_machine_type" {
  description = "Machine type of the general pool (collector, cdc, loader)."
  type        = string
  default     = "e2-standard-4"
}

variable "general_min_nodes" {
  description = "General pool: fewest nodes in all zones together."
  type        = number
  default     = 3
}

variable "general_max_nodes" {
  description = "General pool: most nodes in all zones together."
  type        = number
  default     = 9
}

variable "pipeline_machine_type" {
  description = "Machine type of the Spot pipeline pool (transform, quality, Airflow tasks)."
  type        = string
  default     = "e2-standard-4"
}

variable "pipeline_min_nodes" {
  description = "Pipeline pool: fewest nodes in all zones together (0: scales to zero between runs)."
  type        = number
  default     = 0
}

variable "pipeline_max_nodes" {
  description = "Pipeline pool: most nodes in all zones together."
  type        = number
  default     = 6
}

variable "disk_size_gb" {
  description = "Boot disk of every node."
  type        = number
  default     = 100
}

variable "maintenance_start_time" {
  description = "Daily maintenance window start (UTC, HH:MM)."
  type        = string
  default     = "03:00"
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the cluster (set false before tearing down)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the cluster and its nodes."
  type        = map(string)
  default     = {}
}
