variable "name" {
  description = "Prefix of every resource's name (letters, digits and -; at most 20 characters, so the load balancer's name fits)."
  type        = string
  default     = "teefleet"
  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9-]{0,19}$", var.name))
    error_message = "name must start with a letter and hold at most 20 letters, digits or -."
  }
}

variable "vpc_id" {
  description = "The VPC of the controllers, the load balancer and the agents."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the controllers and the load balancer (one per availability zone; two or more for RDS). Controllers are spread over them in turn."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "Give at least one subnet."
  }
}

variable "controller_count" {
  description = "How many fleet-controller replicas (they share the database; one holds the leader lock)."
  type        = number
  default     = 2
  validation {
    condition     = var.controller_count >= 1 && floor(var.controller_count) == var.controller_count
    error_message = "controller_count must be a whole number, at least 1."
  }
}

variable "ami_id" {
  description = "AMI of the controllers: Debian or Ubuntu (the .deb is installed) or another systemd distribution (the tarball). It needs curl, and the AWS CLI when a secret comes from SSM or Secrets Manager."
  type        = string
}

variable "instance_type" {
  description = "Instance type of the controllers."
  type        = string
  default     = "t3.small"
}

variable "key_name" {
  description = "An EC2 key pair for SSH, or null (use SSM Session Manager)."
  type        = string
  default     = null
}

variable "internal" {
  description = "Whether the load balancer is internal (reachable in the VPC only)."
  type        = bool
  default     = true
}

variable "operator_cidrs" {
  description = "Networks from which operators (fleetctl) reach the controllers on 7300."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.operator_cidrs : can(cidrhost(c, 0))])
    error_message = "operator_cidrs must be CIDR blocks."
  }
}

variable "dns_name" {
  description = "The name agents and operators use for the controllers, such as a Route 53 alias of the load balancer; null uses the balancer's DNS name. It goes into controller_urls and the certificates."
  type        = string
  default     = null
  validation {
    condition     = var.dns_name == null || can(regex("^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", var.dns_name))
    error_message = "dns_name must be a DNS name."
  }
}

variable "tls_sans" {
  description = "Names the controllers' TLS certificates must carry besides the load balancer's DNS name (e.g. a Route 53 alias agents and operators use)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for n in var.tls_sans : can(regex("^[A-Za-z0-9.:-]+$", n))])
    error_message = "tls_sans must be DNS names or IP addresses."
  }
}

variable "release_url" {
  description = "The directory (http:// or https://) holding scripts/package's artifacts."
  type        = string
  validation {
    condition     = can(regex("^https?://[][A-Za-z0-9._~%:/@+-]+$", var.release_url))
    error_message = "release_url must be an http(s):// URL made of letters, digits and ._~%:/@+-[] only."
  }
}

variable "controller_version" {
  description = "The fleet-controller version to install, e.g. 0.1.0."
  type        = string
  validation {
    condition     = can(regex("^[0-9A-Za-z.+~-]{1,64}$", var.controller_version))
    error_message = "controller_version must look like 0.1.0."
  }
}

variable "deb_sha256" {
  description = "sha256 of fleet-controller_VERSION_amd64.deb (Debian/Ubuntu AMIs)."
  type        = string
  default     = null
  validation {
    condition     = var.deb_sha256 == null || can(regex("^[0-9a-f]{64}$", coalesce(var.deb_sha256, "0")))
    error_message = "deb_sha256 must be 64 lowercase hex digits."
  }
}

variable "tarball_sha256" {
  description = "sha256 of fleet-controller-VERSION-x86_64-linux.tar.gz (other AMIs)."
  type        = string
  default     = null
  validation {
    condition     = var.tarball_sha256 == null || can(regex("^[0-9a-f]{64}$", coalesce(var.tarball_sha256, "0")))
    error_message = "tarball_sha256 must be 64 lowercase hex digits."
  }
}

variable "create_database" {
  description = "Create an RDS PostgreSQL instance for the controllers. Its master password is managed by RDS in Secrets Manager, and the controllers build their database URL from that secret at boot."
  type        = bool
  default     = false
}

variable "database_url_parameter" {
  description = "Name of an SSM Parameter Store SecureString holding the database URL (postgres://...), read by each controller at boot. Preferred when create_database is false."
  type        = string
  default     = null
  validation {
    condition     = var.database_url_parameter == null || can(regex("^/?[A-Za-z0-9_.\\-/]+$", coalesce(var.database_url_parameter, "x")))
    error_message = "database_url_parameter must be an SSM parameter name."
  }
}

variable "database_url" {
  description = "The database URL itself. It ends up in the controllers' user-data, which any process on them can read from instance metadata: prefer database_url_parameter or create_database."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.database_url == null || can(regex("^postgres(ql)?://[A-Za-z0-9._~%:/@?&=+-]+$", coalesce(var.database_url, "postgres://x")))
    error_message = "database_url must be a postgres:// URL without quotes or spaces (percent-encode the password)."
  }
}

variable "database_instance_class" {
  description = "RDS instance class, with create_database."
  type        = string
  default     = "db.t4g.small"
}

variable "database_multi_az" {
  description = "Whether the RDS instance is Multi-AZ, with create_database."
  type        = bool
  default     = false
}

variable "database_deletion_protection" {
  description = "RDS deletion protection, with create_database; turn it off before destroying."
  type        = bool
  default     = true
}

variable "database_skip_final_snapshot" {
  description = "Destroy the RDS instance without a final snapshot (tests only)."
  type        = bool
  default     = false
}

variable "ca_key_secret_parameter" {
  description = "Name of an SSM SecureString whose value seals the fleet CA's key in the database (FLEET_CA_KEY_SECRET), or null for an unsealed key."
  type        = string
  default     = null
}

variable "bootstrap_token_parameter" {
  description = "Name of an SSM SecureString holding the first admin token (FLEET_BOOTSTRAP_TOKEN). Without it the controller makes one at its first start and writes it to its log."
  type        = string
  default     = null
}

variable "join_accounts" {
  description = "AWS accounts whose instances may enroll by instance identity; empty means this account."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.join_accounts : can(regex("^[0-9]{12}$", a))])
    error_message = "join_accounts must be 12-digit account ids."
  }
}

variable "join_tags" {
  description = "Tags an instance must carry to enroll by instance identity (key = value)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.join_tags : can(regex("^[A-Za-z0-9_.:/+@-]+$", k)) && can(regex("^[A-Za-z0-9_.:/+@-]*$", v))])
    error_message = "join_tags keys and values may hold letters, digits and _.:/+@- only."
  }
}

variable "modify_tag" {
  description = "If set, the controllers may change Source/Dest Check only on instances carrying this tag (give it to every source and collector)."
  type = object({
    key   = string
    value = string
  })
  default = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
