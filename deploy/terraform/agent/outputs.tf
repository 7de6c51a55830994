output "user_data" {
  description = "The cloud-init user-data as text (a shell script that installs, starts and waits for fleet-agent), to read or to pass on elsewhere. It is larger than the 16 KB aws_instance.user_data takes: give instances user_data_base64. Marked sensitive because with join_method = token it holds the token; with instance-identity it holds no secret."
  value       = var.join_method == "token" ? local.with_token : local.without_token
  sensitive   = true
  precondition {
    condition     = (var.join_method == "token") == (var.join_token != null)
    error_message = "join_token is needed with join_method = token, and refused with instance-identity (which needs no secret)."
  }
  precondition {
    condition     = var.deb_sha256 != null || var.tarball_sha256 != null
    error_message = "Give deb_sha256 (Debian/Ubuntu instances), tarball_sha256 (others), or both."
  }
}

output "user_data_base64" {
  description = "The same user-data gzip-compressed and base64-encoded (cloud-init unpacks it), for aws_instance.user_data_base64 and aws_launch_template.user_data."
  value       = base64gzip(var.join_method == "token" ? local.with_token : local.without_token)
  sensitive   = true
}
