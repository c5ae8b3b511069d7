terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }

  # State in a GCS bucket (versioned; created once by hand, deploy/README.md). Which bucket
  # and prefix is the environment's: environments/<env>.backend.hcl, given at init:
  #   terraform init -reconfigure -backend-config=../environments/<env>.backend.hcl
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
  default_labels = {
    managed-by = "terraform"
  }
}
