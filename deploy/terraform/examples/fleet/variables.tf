variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "aws_endpoint" {
  description = "An EC2-compatible API to use instead of AWS for every service the example calls (moto in the tests: http://127.0.0.1:PORT). Null is AWS."
  type        = string
  default     = null
}

variable "ami_id" {
  description = "AMI for every instance; null looks up the newest Debian 12 (amd64) image."
  type        = string
  default     = null
}

variable "release_url" {
  description = "The directory holding scripts/package's artifacts, reachable from the instances."
  type        = string
}

variable "fleet_version" {
  description = "The teefleet version to install on every instance."
  type        = string
  default     = "0.1.0"
}

variable "agent_deb_sha256" {
  description = "sha256 of fleet-agent_VERSION_amd64.deb (from SHA256SUMS)."
  type        = string
}

variable "controller_deb_sha256" {
  description = "sha256 of fleet-controller_VERSION_amd64.deb (from SHA256SUMS)."
  type        = string
}

variable "ca_pin" {
  description = "The controller's CA pin (fleet-controller ca pin on a controller, after the first apply with -target=module.controller)."
  type        = string
}

variable "controller_dns_name" {
  description = "A name you point at the controllers' load balancer (a Route 53 alias, say) for agents and fleetctl to use; null uses the balancer's own DNS name."
  type        = string
  default     = null
}

variable "create_database" {
  description = "Create an RDS PostgreSQL instance (true) or read the database URL from database_url_parameter (false)."
  type        = bool
  default     = true
}

variable "database_url_parameter" {
  description = "With create_database = false: the SSM SecureString holding the database URL."
  type        = string
  default     = null
}

variable "bootstrap_token_parameter" {
  description = "The SSM SecureString holding the first admin token, so it is never written to a log."
  type        = string
  default     = null
}

variable "operator_cidrs" {
  description = "Where operators run fleetctl from."
  type        = list(string)
  default     = []
}
