# fleet-controller replicas behind a network load balancer (TCP passthrough on 7300: the
# controller terminates TLS itself), with their role, security groups and optionally their
# database. See README.md.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition     = data.aws_partition.current.partition
  region        = data.aws_region.current.name
  account       = data.aws_caller_identity.current.account_id
  join_accounts = length(var.join_accounts) > 0 ? var.join_accounts : [local.account]
  # The name agents and operators dial: the operator's own (a Route 53 alias of the
  # balancer, say) when given, which outlives a replaced balancer; else the balancer's.
  url = "https://${coalesce(var.dns_name, aws_lb.controller.dns_name)}:7300"

  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    release_url    = trimsuffix(var.release_url, "/")
    version        = var.controller_version
    deb_sha256     = coalesce(var.deb_sha256, "-")
    tarball_sha256 = coalesce(var.tarball_sha256, "-")
    region         = local.region
    tls_sans       = join(",", distinct(concat([aws_lb.controller.dns_name], compact([var.dns_name]), var.tls_sans)))
    join_accounts  = join(",", local.join_accounts)
    join_tags      = join(",", [for k, v in var.join_tags : "${k}=${v}"])
    # Where the database URL comes from, in order of preference.
    db_secret_arn       = var.create_database ? aws_db_instance.this[0].master_user_secret[0].secret_arn : ""
    db_address          = var.create_database ? "${aws_db_instance.this[0].address}:${aws_db_instance.this[0].port}" : ""
    db_url_parameter    = coalesce(var.database_url_parameter, "-")
    db_url              = var.database_url == null ? "" : var.database_url
    ca_key_parameter    = coalesce(var.ca_key_secret_parameter, "-")
    bootstrap_parameter = coalesce(var.bootstrap_token_parameter, "-")
  })
}

resource "aws_lb" "controller" {
  name                             = "${var.name}-controller"
  load_balancer_type               = "network"
  internal                         = var.internal
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  tags                             = var.tags
}

resource "aws_lb_target_group" "controller" {
  name_prefix          = "tfctl-"
  port                 = 7300
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  health_check {
    protocol = "TCP"
    port     = "traffic-port"
  }
  tags = var.tags
}

resource "aws_lb_listener" "controller" {
  load_balancer_arn = aws_lb.controller.arn
  port              = 7300
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.controller.arn
  }
  tags = var.tags
}

resource "aws_instance" "controller" {
  count                  = var.controller_count
  ami                    = var.ami_id
  instance_type          = var.instance_type
  key_name               = var.key_name
  subnet_id              = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids = [aws_security_group.controller.id]
  iam_instance_profile   = aws_iam_instance_profile.controller.name
  user_data              = local.user_data
  # cloud-init runs user-data once per instance, so a new version (or any other setting)
  # takes new instances: they start against the same database before the old ones go.
  user_data_replace_on_change = true
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  tags = merge(var.tags, { Name = "${var.name}-controller-${count.index}" })

  lifecycle {
    create_before_destroy = true
    precondition {
      condition     = length([for s in [var.create_database, var.database_url_parameter != null, var.database_url != null] : s if s]) == 1
      error_message = "Give exactly one of create_database = true, database_url_parameter or database_url."
    }
    precondition {
      condition     = var.deb_sha256 != null || var.tarball_sha256 != null
      error_message = "Give deb_sha256 (Debian/Ubuntu AMIs), tarball_sha256 (others), or both."
    }
  }
}

resource "aws_lb_target_group_attachment" "controller" {
  count            = var.controller_count
  target_group_arn = aws_lb_target_group.controller.arn
  target_id        = aws_instance.controller[count.index].id
  port             = 7300
}
