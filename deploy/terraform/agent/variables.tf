# Every value ends up in a shell script (single-quoted) and in a systemd environment file
# (unquoted), so each is checked against a character set that neither can misread: no
# quotes, spaces, backslashes, dollars or newlines. bootstrap.sh checks them again.

variable "controller_urls" {
  description = "The controller's URLs as agents reach them (https://HOST:7300): the load balancer's, or every replica's. The agent streams with one and moves to the next when it fails."
  type        = list(string)
  validation {
    condition     = length(var.controller_urls) > 0 && alltrue([for u in var.controller_urls : can(regex("^https://[][A-Za-z0-9._~%:/@-]+$", u))])
    error_message = "controller_urls must be one or more https:// URLs made of letters, digits and ._~%:/@-[] only (no quotes, spaces or commas)."
  }
}

variable "ca_pin" {
  description = "sha256:HEX pin of the controller's CA (`fleet-controller ca pin`): how the agent trusts the controller on first contact."
  type        = string
  validation {
    condition     = can(regex("^sha256:[0-9a-f]{64}$", var.ca_pin))
    error_message = "ca_pin must be sha256: followed by 64 lowercase hex digits."
  }
}

variable "join_method" {
  description = "How the agent enrolls: instance-identity (its signed EC2 identity document; no secret in user-data) or token (a join token)."
  type        = string
  default     = "instance-identity"
  validation {
    condition     = contains(["instance-identity", "token"], var.join_method)
    error_message = "join_method must be instance-identity or token."
  }
}

variable "join_token" {
  description = "A short-lived join token (fleetctl token create --role agent --ttl 1h --uses N), only with join_method = token. It is readable by any process on the instance through its metadata; prefer instance-identity."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.join_token == null || can(regex("^[A-Za-z0-9._~+/=-]{1,512}$", var.join_token))
    error_message = "join_token may hold letters, digits and ._~+/=- only."
  }
}

variable "release_url" {
  description = "The directory (http:// or https://) holding scripts/package's artifacts: the .deb, the tarball and SHA256SUMS."
  type        = string
  validation {
    condition     = can(regex("^https?://[][A-Za-z0-9._~%:/@+-]+$", var.release_url))
    error_message = "release_url must be an http(s):// URL made of letters, digits and ._~%:/@+-[] only (no quotes, spaces or query)."
  }
}

variable "agent_version" {
  description = "The fleet-agent version to install, e.g. 0.1.0. Changing it (with the checksums) and re-running the bootstrap on a host upgrades it."
  type        = string
  validation {
    condition     = can(regex("^[0-9A-Za-z.+~-]{1,64}$", var.agent_version))
    error_message = "agent_version must look like 0.1.0."
  }
}

variable "deb_sha256" {
  description = "sha256 of fleet-agent_VERSION_amd64.deb (from SHA256SUMS); needed for Debian and Ubuntu instances."
  type        = string
  default     = null
  validation {
    condition     = var.deb_sha256 == null || can(regex("^[0-9a-f]{64}$", var.deb_sha256))
    error_message = "deb_sha256 must be 64 lowercase hex digits."
  }
}

variable "tarball_sha256" {
  description = "sha256 of fleet-agent-VERSION-x86_64-linux.tar.gz (from SHA256SUMS); needed for other distributions (Amazon Linux, RHEL)."
  type        = string
  default     = null
  validation {
    condition     = var.tarball_sha256 == null || can(regex("^[0-9a-f]{64}$", var.tarball_sha256))
    error_message = "tarball_sha256 must be 64 lowercase hex digits."
  }
}

variable "iptables_backend" {
  description = "auto, nft or legacy; null lets the agent detect it."
  type        = string
  default     = null
  validation {
    condition     = var.iptables_backend == null || contains(["auto", "nft", "legacy"], coalesce(var.iptables_backend, "auto"))
    error_message = "iptables_backend must be auto, nft or legacy."
  }
}

variable "host_id" {
  description = "The agent's host id; null (the default, and the only sensible value in a launch template) uses the EC2 instance id."
  type        = string
  default     = null
  validation {
    condition     = var.host_id == null || can(regex("^[A-Za-z0-9._:-]{1,128}$", coalesce(var.host_id, "x")))
    error_message = "host_id may hold letters, digits and ._:- only."
  }
}

variable "imds_endpoint" {
  description = "The instance metadata endpoint; null is EC2's (http://169.254.169.254)."
  type        = string
  default     = null
  validation {
    condition     = var.imds_endpoint == null || can(regex("^https?://[][A-Za-z0-9._~%:/-]+$", coalesce(var.imds_endpoint, "http://x")))
    error_message = "imds_endpoint must be an http(s):// URL without quotes or spaces."
  }
}

variable "metrics_listen" {
  description = "Where the agent serves /healthz, /readyz and /metrics (ADDR:PORT or off); null is 127.0.0.1:9477. The bootstrap waits on /readyz there."
  type        = string
  default     = null
  validation {
    condition     = var.metrics_listen == null || can(regex("^(off|[A-Za-z0-9.-]+:[0-9]{1,5}|\\[[0-9A-Fa-f:.]+\\]:[0-9]{1,5})$", coalesce(var.metrics_listen, "off")))
    error_message = "metrics_listen must be ADDR:PORT or off."
  }
}

variable "ready_timeout" {
  description = "How long the bootstrap waits for the agent's /readyz before it fails the boot (90s, 5m)."
  type        = string
  default     = "120s"
  validation {
    condition     = can(regex("^[0-9]+(s|m|h)?$", var.ready_timeout))
    error_message = "ready_timeout must be a duration such as 120s or 5m."
  }
}
