# Renders the cloud-init user-data that installs fleet-agent with deploy/bootstrap.sh. No
# provider: the module only renders text, for an aws_instance (user_data) or a launch
# template (user_data_base64).

locals {
  settings = {
    FLEET_CONTROLLER       = join(",", var.controller_urls)
    FLEET_CA_PIN           = var.ca_pin
    FLEET_JOIN_METHOD      = var.join_method
    FLEET_RELEASE_URL      = trimsuffix(var.release_url, "/")
    FLEET_VERSION          = var.agent_version
    FLEET_DEB_SHA256       = var.deb_sha256
    FLEET_TARBALL_SHA256   = var.tarball_sha256
    FLEET_IPTABLES_BACKEND = var.iptables_backend
    FLEET_HOST_ID          = var.host_id
    FLEET_IMDS_ENDPOINT    = var.imds_endpoint
    FLEET_METRICS_LISTEN   = var.metrics_listen
    FLEET_READY_TIMEOUT    = var.ready_timeout
  }
  exports = { for k, v in local.settings : k => v if v != null }
  template = {
    bootstrap = file("${path.module}/../../bootstrap.sh")
    exports   = local.exports
  }
  # Rendered twice so that with instance-identity nothing derived from the sensitive
  # join_token is in the output at all, and Terraform shows it in plans.
  without_token = templatefile("${path.module}/user-data.sh.tftpl", merge(local.template, { join_token = "" }))
  with_token    = var.join_method == "token" ? templatefile("${path.module}/user-data.sh.tftpl", merge(local.template, { join_token = var.join_token == null ? "" : var.join_token })) : null
}
