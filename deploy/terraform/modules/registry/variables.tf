variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "region" {
  description = "The repository's region (<region>-docker.pkg.dev)."
  type        = string
}

variable "repository_id" {
  description = "The repository's name."
  type        = string
  default     = "shopstream"
}

variable "keep_versions" {
  description = "Most recent image versions the cleanup policy always keeps (rollback targets)."
  type        = number
  default     = 20
}

variable "readers" {
  description = "name -> member that pulls images (the nodes' and the Dataflow workers' service accounts); names key the grants at plan time."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels on the repository."
  type        = map(string)
  default     = {}
}
