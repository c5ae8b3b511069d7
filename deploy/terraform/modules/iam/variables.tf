variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "workload_pool" {
  description = "The cluster's Workload Identity pool, <project>.svc.id.goog (module gke's output, so that the pool exists first)."
  type        = string
}

variable "namespace" {
  description = "The Kubernetes namespace of the workloads (deploy/k8s)."
  type        = string
  default     = "shopstream"
}
