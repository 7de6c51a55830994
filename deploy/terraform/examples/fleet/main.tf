# A small fleet: one controller (with its load balancer and database), two sources and a
# collector, in a new VPC. Agents join by instance identity: no secret in their user-data.
# With aws_endpoint set, every call goes there instead (the tests use moto).

provider "aws" {
  region                      = var.region
  skip_credentials_validation = var.aws_endpoint != null
  skip_requesting_account_id  = var.aws_endpoint != null
  skip_metadata_api_check     = var.aws_endpoint != null

  dynamic "endpoints" {
    for_each = var.aws_endpoint == null ? [] : [var.aws_endpoint]
    content {
      ec2            = endpoints.value
      elbv2          = endpoints.value
      iam            = endpoints.value
      rds            = endpoints.value
      secretsmanager = endpoints.value
      ssm            = endpoints.value
      sts            = endpoints.value
    }
  }
}

data "aws_ami" "debian" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
}

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  ami  = var.ami_id != null ? var.ami_id : data.aws_ami.debian[0].id
  tags = { fleet = "example" }
}

resource "aws_vpc" "fleet" {
  cidr_block           = "10.42.0.0/16"
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = "teefleet-example" })
}

resource "aws_internet_gateway" "fleet" {
  vpc_id = aws_vpc.fleet.id
  tags   = local.tags
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.fleet.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.fleet.id
  }
  tags = local.tags
}

# Two zones: the load balancer and RDS want two.
resource "aws_subnet" "public" {
  count                   = 2
  vpc_id                  = aws_vpc.fleet.id
  cidr_block              = cidrsubnet(aws_vpc.fleet.cidr_block, 8, count.index)
  availability_zone       = data.aws_availability_zones.available.names[count.index]
  map_public_ip_on_launch = true
  tags                    = merge(local.tags, { Name = "teefleet-example-${count.index}" })
}

resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

module "controller" {
  source                       = "../../controller"
  name                         = "teefleet-ex"
  vpc_id                       = aws_vpc.fleet.id
  subnet_ids                   = aws_subnet.public[*].id
  controller_count             = 1
  ami_id                       = local.ami
  release_url                  = var.release_url
  controller_version           = var.fleet_version
  deb_sha256                   = var.controller_deb_sha256
  create_database              = var.create_database
  database_url_parameter       = var.database_url_parameter
  database_deletion_protection = false
  database_skip_final_snapshot = true
  bootstrap_token_parameter    = var.bootstrap_token_parameter
  operator_cidrs               = var.operator_cidrs
  dns_name                     = var.controller_dns_name
  join_tags                    = { "teefleet" = "agent" }
  modify_tag                   = { key = "teefleet", value = "agent" }
  tags                         = local.tags
}

module "agent" {
  source          = "../../agent"
  controller_urls = module.controller.controller_urls
  ca_pin          = var.ca_pin
  join_method     = "instance-identity"
  release_url     = var.release_url
  agent_version   = var.fleet_version
  deb_sha256      = var.agent_deb_sha256
}

resource "aws_instance" "source" {
  count                  = 2
  ami                    = local.ami
  instance_type          = "t3.micro"
  subnet_id              = aws_subnet.public[count.index].id
  vpc_security_group_ids = [module.controller.agent_security_group_id]
  user_data_base64       = module.agent.user_data_base64
  metadata_options {
    http_tokens = "required"
  }
  tags = merge(local.tags, { Name = "teefleet-source-${count.index}", teefleet = "agent", role = "web" })

  # The bootstrap runs once per instance: changing the agent's settings here reaches new
  # instances; running hosts are upgraded in place with teefleet-bootstrap, not stopped.
  lifecycle {
    ignore_changes = [user_data_base64]
  }
}

resource "aws_instance" "collector" {
  ami                    = local.ami
  instance_type          = "t3.small"
  subnet_id              = aws_subnet.public[0].id
  vpc_security_group_ids = [module.controller.agent_security_group_id, module.controller.collector_security_group_id]
  user_data_base64       = module.agent.user_data_base64
  metadata_options {
    http_tokens = "required"
  }
  tags = merge(local.tags, { Name = "teefleet-collector", teefleet = "agent", role = "collector" })

  # The bootstrap runs once per instance: changing the agent's settings here reaches new
  # instances; running hosts are upgraded in place with teefleet-bootstrap, not stopped.
  lifecycle {
    ignore_changes = [user_data_base64]
  }
}
