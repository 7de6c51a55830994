# Four groups. Agents (sources and collectors) carry `agent`; collectors also carry
# `collector`. The load balancer carries `lb`, the controllers `controller`, and the
# database (with create_database) `database`.

resource "aws_security_group" "agent" {
  name_prefix = "${var.name}-agent-"
  description = "teefleet agents (sources and collectors): may reach the controllers on 7300"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-agent" })
}

# Agents download their package and reach the controllers; nothing is asked of what they
# serve.
resource "aws_security_group_rule" "agent_egress" {
  security_group_id = aws_security_group.agent.id
  type              = "egress"
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
  description       = "packages, the controllers, mirrored traffic"
}

resource "aws_security_group" "collector" {
  name_prefix = "${var.name}-collector-"
  description = "teefleet collectors: VXLAN (udp 4789) from sources"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-collector" })
}

resource "aws_security_group_rule" "collector_vxlan" {
  security_group_id        = aws_security_group.collector.id
  type                     = "ingress"
  protocol                 = "udp"
  from_port                = 4789
  to_port                  = 4789
  source_security_group_id = aws_security_group.agent.id
  description              = "mirrored packets (VXLAN) from sources"
}

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-lb-"
  description = "teefleet controller load balancer: 7300 from agents and operators"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-lb" })
}

resource "aws_security_group_rule" "lb_from_agents" {
  security_group_id        = aws_security_group.lb.id
  type                     = "ingress"
  protocol                 = "tcp"
  from_port                = 7300
  to_port                  = 7300
  source_security_group_id = aws_security_group.agent.id
  description              = "agents"
}

resource "aws_security_group_rule" "lb_from_operators" {
  count             = length(var.operator_cidrs) > 0 ? 1 : 0
  security_group_id = aws_security_group.lb.id
  type              = "ingress"
  protocol          = "tcp"
  from_port         = 7300
  to_port           = 7300
  cidr_blocks       = var.operator_cidrs
  description       = "operators (fleetctl)"
}

resource "aws_security_group_rule" "lb_to_controllers" {
  security_group_id        = aws_security_group.lb.id
  type                     = "egress"
  protocol                 = "tcp"
  from_port                = 7300
  to_port                  = 7300
  source_security_group_id = aws_security_group.controller.id
  description              = "to the controllers (and their health checks)"
}

resource "aws_security_group" "controller" {
  name_prefix = "${var.name}-controller-"
  description = "teefleet controllers: 7300 from the load balancer"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-controller" })
}

resource "aws_security_group_rule" "controller_from_lb" {
  security_group_id        = aws_security_group.controller.id
  type                     = "ingress"
  protocol                 = "tcp"
  from_port                = 7300
  to_port                  = 7300
  source_security_group_id = aws_security_group.lb.id
  description              = "agents and operators through the load balancer"
}

# The EC2 API, the database, SSM and the package server.
resource "aws_security_group_rule" "controller_egress" {
  security_group_id = aws_security_group.controller.id
  type              = "egress"
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
  description       = "EC2 API, database, SSM, packages"
}
