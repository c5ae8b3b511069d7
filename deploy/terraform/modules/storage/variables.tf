variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "bucket_name" {
  description = "The Dataflow bucket's globally unique name (e.g. <project>-shopstream-dataflow)."
  type        = string
}

variable "location" {
  description = "The bucket's location (Dataflow's region)."
  type        = string
}

variable "temp_days" {
  description = "Days before a file under temp/ is deleted."
  type        = number
  default     = 7
}

variable "noncurrent_days" {
  description = "Days an overwritten or deleted object's old version is kept."
  type        = number
  default     = 30
}

variable "object_admins" {
  description = "name -> member that reads and writes the bucket's objects (the Dataflow workers)."
  type        = map(string)
  default     = {}
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels on the bucket."
  type        = map(string)
  default     = {}
}
