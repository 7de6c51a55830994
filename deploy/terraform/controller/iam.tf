# The controllers' instance role: what the controller itself calls (DescribeInstances,
# ModifyInstanceAttribute for Source/Dest Check) and the boot step's reads of its secrets.
# Nothing more. README.md explains each statement.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

locals {
  ssm_parameters = compact([var.database_url_parameter, var.ca_key_secret_parameter, var.bootstrap_token_parameter])
  ssm_arns = [
    for p in local.ssm_parameters : "arn:${local.partition}:ssm:${local.region}:${local.account}:parameter/${trimprefix(p, "/")}"
  ]
}

data "aws_iam_policy_document" "controller" {
  # DescribeInstances supports no resource-level permissions: "*" is the only resource it
  # takes. It is held to this region.
  statement {
    sid       = "DescribeInstances"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [local.region]
    }
  }

  # Source/Dest Check on this account's instances in this region (optionally only those
  # with modify_tag). Changing security groups through this action would also need the
  # security-group resource, which is not granted.
  statement {
    sid       = "SourceDestCheck"
    actions   = ["ec2:ModifyInstanceAttribute"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:instance/*"]
    dynamic "condition" {
      for_each = var.modify_tag == null ? [] : [var.modify_tag]
      content {
        test     = "StringEquals"
        variable = "aws:ResourceTag/${condition.value.key}"
        values   = [condition.value.value]
      }
    }
  }

  # Any other attribute is refused wherever EC2 names it in the request context
  # (ec2:Attribute). The condition is false when the key is absent, so this can only take
  # away, never break the statement above.
  statement {
    sid       = "NoOtherAttribute"
    effect    = "Deny"
    actions   = ["ec2:ModifyInstanceAttribute"]
    resources = ["*"]
    condition {
      test     = "StringNotEqualsIgnoreCase"
      variable = "ec2:Attribute"
      values   = ["sourceDestCheck"]
    }
  }

  dynamic "statement" {
    for_each = length(local.ssm_arns) > 0 ? [1] : []
    content {
      sid       = "BootSecretsFromParameterStore"
      actions   = ["ssm:GetParameter"]
      resources = local.ssm_arns
    }
  }

  dynamic "statement" {
    for_each = var.create_database ? [1] : []
    content {
      sid       = "DatabasePasswordFromSecretsManager"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [aws_db_instance.this[0].master_user_secret[0].secret_arn]
    }
  }
}

resource "aws_iam_role" "controller" {
  name_prefix        = "${var.name}-controller-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "controller" {
  name   = "fleet-controller"
  role   = aws_iam_role.controller.id
  policy = data.aws_iam_policy_document.controller.json
}

resource "aws_iam_instance_profile" "controller" {
  name_prefix = "${var.name}-controller-"
  role        = aws_iam_role.controller.name
  tags        = var.tags
}
