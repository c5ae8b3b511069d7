terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }

  # State in a GCS bucket (versioned; created once by hand, deploy/README.md). The bucket is
  # given at init, so that one file serves every project:
  #   terraform init -backend-config="bucket=<project>-tfstate"
  backend "gcs" {
    prefix = "shopstream/prod"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
  default_labels = {
    managed-by = "terraform"
  }
}
