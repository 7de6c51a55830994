output "controller_urls" {
  description = "What agents (the agent module's controller_urls) and fleetctl use: dns_name, or the load balancer's, on 7300."
  value       = [local.url]
}

output "lb_dns_name" {
  description = "The load balancer's DNS name (in every controller's TLS certificate)."
  value       = aws_lb.controller.dns_name
}

output "agent_security_group_id" {
  description = "Give this group to every source and collector: it lets them reach the controllers."
  value       = aws_security_group.agent.id
}

output "collector_security_group_id" {
  description = "Give this group to every collector as well: it lets VXLAN (udp 4789) in from the sources."
  value       = aws_security_group.collector.id
}

output "controller_security_group_id" {
  description = "The controllers' group."
  value       = aws_security_group.controller.id
}

output "lb_security_group_id" {
  description = "The load balancer's group (7300 from agents and operator_cidrs)."
  value       = aws_security_group.lb.id
}

output "instance_ids" {
  description = "The controller instances."
  value       = aws_instance.controller[*].id
}

output "role_name" {
  description = "The controllers' IAM role."
  value       = aws_iam_role.controller.name
}

output "instance_profile_name" {
  description = "The controllers' instance profile."
  value       = aws_iam_instance_profile.controller.name
}

output "iam_policy_json" {
  description = "The controllers' policy, as applied."
  value       = data.aws_iam_policy_document.controller.json
}

output "database_address" {
  description = "The RDS instance's address with create_database, else null."
  value       = var.create_database ? aws_db_instance.this[0].address : null
}
