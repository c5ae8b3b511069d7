# The prod environment's Terraform state (deploy/README.md step 3 creates the bucket):
#   cd deploy/terraform/platform
#   terraform init -reconfigure -backend-config=../environments/prod.backend.hcl
bucket = "my-shop-prod-tfstate"
prefix = "shopstream/prod"
