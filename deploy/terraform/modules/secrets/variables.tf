variable "project_id" {
  description = "The Google Cloud project."
  type        = string
}

variable "secrets" {
  description = "Secret id -> what it holds (the key of shopstream-secrets it becomes)."
  type        = map(string)
  default = {
    shopstream-write-keys    = "write-keys: SHOPSTREAM_WRITE_KEYS, the collector's write keys"
    shopstream-postgres-dsn  = "postgres-dsn: SHOPSTREAM_POSTGRES_DSN, the shop database (a replication user)"
    shopstream-email-salt    = "email-salt: SHOPSTREAM_TRANSFORM__EMAIL_SALT, the salt of hashed e-mails"
    shopstream-genai-api-key = "genai-api-key: SHOPSTREAM_GENAI__API_KEY (optional)"
  }
}

variable "labels" {
  description = "Labels on the secrets."
  type        = map(string)
  default     = {}
}
