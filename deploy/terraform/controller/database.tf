# With create_database: one RDS PostgreSQL instance reachable from the controllers only. Its
# master password never passes through Terraform: RDS keeps it in Secrets Manager
# (manage_master_user_password) and each controller reads it at boot.

resource "aws_security_group" "database" {
  count       = var.create_database ? 1 : 0
  name_prefix = "${var.name}-database-"
  description = "teefleet database: 5432 from the controllers"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-database" })
}

resource "aws_security_group_rule" "database_from_controllers" {
  count                    = var.create_database ? 1 : 0
  security_group_id        = aws_security_group.database[0].id
  type                     = "ingress"
  protocol                 = "tcp"
  from_port                = 5432
  to_port                  = 5432
  source_security_group_id = aws_security_group.controller.id
  description              = "the controllers"
}

resource "aws_db_subnet_group" "this" {
  count       = var.create_database ? 1 : 0
  name_prefix = "${lower(var.name)}-"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

# fleet-controller's Postgres client is built without TLS (sqlx without a TLS feature), and
# RDS for PostgreSQL 15 and later forces TLS by default: this parameter group lets it in
# without. The traffic stays in the VPC, between the controller and database groups.
resource "aws_db_parameter_group" "this" {
  count       = var.create_database ? 1 : 0
  name_prefix = "${lower(var.name)}-"
  family      = "postgres16"
  parameter {
    name  = "rds.force_ssl"
    value = "0"
  }
  tags = var.tags
}

resource "aws_db_instance" "this" {
  count                       = var.create_database ? 1 : 0
  identifier_prefix           = "${lower(var.name)}-"
  engine                      = "postgres"
  engine_version              = "16"
  instance_class              = var.database_instance_class
  allocated_storage           = 20
  storage_encrypted           = true
  db_name                     = "teefleet"
  username                    = "teefleet"
  manage_master_user_password = true
  db_subnet_group_name        = aws_db_subnet_group.this[0].name
  parameter_group_name        = aws_db_parameter_group.this[0].name
  vpc_security_group_ids      = [aws_security_group.database[0].id]
  multi_az                    = var.database_multi_az
  backup_retention_period     = 7
  deletion_protection         = var.database_deletion_protection
  skip_final_snapshot         = var.database_skip_final_snapshot
  final_snapshot_identifier   = var.database_skip_final_snapshot ? null : "${lower(var.name)}-final"
  tags                        = var.tags
}
