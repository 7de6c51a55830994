output "controller_urls" {
  description = "For fleetctl config set --controller."
  value       = module.controller.controller_urls
}

output "controller_instance_ids" {
  description = "Where to run fleet-controller ca pin (SSM Session Manager)."
  value       = module.controller.instance_ids
}

output "source_instance_ids" {
  description = "The two sources (fleetctl session create --source)."
  value       = aws_instance.source[*].id
}

output "collector_instance_id" {
  description = "The collector (fleetctl collector add)."
  value       = aws_instance.collector.id
}
