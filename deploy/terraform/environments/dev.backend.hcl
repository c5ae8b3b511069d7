# The dev environment's Terraform state (deploy/README.md step 3 creates the bucket):
#   cd deploy/terraform/platform
#   terraform init -reconfigure -backend-config=../environments/dev.backend.hcl
bucket = "my-shop-dev-tfstate"
prefix = "shopstream/dev"
