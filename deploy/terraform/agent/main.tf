# Renders the user-data that installs fleet-agent on a source instance at first boot.
#
#   module "teefleet_agent" {
#     source              = "./deploy/terraform/agent"
#     controller_url      = "https://controller.internal:7300"   # or every replica:
#                           # "https://controller-a.internal:7300,https://controller-b.internal:7300"
#     ca_pin              = "sha256:..."   # fleet-controller ca pin
#     join_token          = "tf1...."      # fleetctl token create --role agent --ttl 1h --uses N
#     agent_binary_url    = "https://artifacts.example.com/fleet-agent-0.1.0"
#     agent_binary_sha256 = "..."
#   }
#   resource "aws_instance" "web" { user_data = module.teefleet_agent.user_data ... }

terraform {
  required_version = ">= 1.3"
}

variable "controller_url" {
  description = "URL of fleet-controller as seen from the instance. With several controller replicas, all their URLs, comma-separated and all https://; the agent streams with one and moves to the next when it fails."
  type        = string
}

variable "ca_pin" {
  description = "sha256:HEX pin of the controller's CA (fleet-controller ca pin); how the agent trusts the controller on first contact."
  type        = string
  validation {
    condition     = can(regex("^sha256:[0-9a-f]{64}$", var.ca_pin))
    error_message = "ca_pin must be sha256: followed by 64 lowercase hex digits."
  }
}

variable "join_token" {
  description = "A short-lived join token (fleetctl token create --role agent --ttl 1h --uses N). Used once, at first boot; the agent then holds its own certificate, so the token in user-data expires harmlessly."
  type        = string
  sensitive   = true
}

variable "agent_binary_url" {
  description = "Where the instance downloads the fleet-agent binary."
  type        = string
}

variable "agent_binary_sha256" {
  description = "sha256 of the fleet-agent binary; the install fails on a mismatch."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.agent_binary_sha256))
    error_message = "agent_binary_sha256 must be 64 lowercase hex digits."
  }
}

output "user_data" {
  description = "cloud-init user-data that installs and starts fleet-agent."
  value = templatefile("${path.module}/user-data.sh.tftpl", {
    controller_url      = var.controller_url
    ca_pin              = var.ca_pin
    join_token          = var.join_token
    agent_binary_url    = var.agent_binary_url
    agent_binary_sha256 = var.agent_binary_sha256
    bootstrap           = file("${path.module}/../../bootstrap.sh")
    unit                = file("${path.module}/../../systemd/fleet-agent.service")
  })
}
