//! The EC2 edge: the two things teefleet asks of the cloud, behind a trait so the
//! reconciler's logic does not depend on the SDK.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use aws_sdk_ec2::{
    error::{ProvideErrorMetadata, SdkError},
    types::{AttributeBooleanValue, Instance},
};
use futures::future::BoxFuture;
use teefleet_model::InstanceId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub private_ip: Option<IpAddr>,
    /// The instance's first IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    pub subnet_id: Option<String>,
    pub source_dest_check: Option<bool>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    #[error("EC2 instance {0} does not exist")]
    NotFound(String),
    #[error("the EC2 API could not be reached: {0}")]
    Unavailable(String),
    #[error("EC2 refused the call: {0}")]
    Refused(String),
}

pub trait Cloud: Send + Sync + 'static {
    fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>>;
    fn set_source_dest_check<'a>(&'a self, id: &'a InstanceId, enabled: bool) -> BoxFuture<'a, Result<(), CloudError>>;
}

/// EC2 through aws-sdk-ec2, configured by the standard chain (environment, profile,
/// instance role; `AWS_ENDPOINT_URL` points it at another endpoint such as moto).
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
}

impl Ec2 {
    pub async fn from_env() -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await;
        Self { client: aws_sdk_ec2::Client::new(&config) }
    }
}

fn classify<E, R>(id: &InstanceId, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            match e.code() {
                Some("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed") => {
                    CloudError::NotFound(id.to_string())
                }
                Some("RequestLimitExceeded" | "Unavailable" | "InternalError" | "ServiceUnavailable") => {
                    CloudError::Unavailable(format!(
                        "{}: {}",
                        e.code().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    ))
                }
                code => CloudError::Refused(format!(
                    "{}: {}",
                    code.unwrap_or("unknown error"),
                    e.message().unwrap_or("no message")
                )),
            }
        }
        SdkError::ConstructionFailure(_) => {
            CloudError::Refused(format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&err)))
        }
        _ => CloudError::Unavailable(format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&err))),
    }
}

/// The instance's primary IPv6 address if EC2 names one, else the first IPv6 address of
/// its interfaces in device order (the primary interface first), so the choice does not
/// depend on the order EC2 lists them in.
fn first_ipv6(instance: &Instance) -> Option<Ipv6Addr> {
    let mut interfaces: Vec<_> = instance.network_interfaces().iter().collect();
    interfaces.sort_by_key(|n| n.attachment().and_then(|a| a.device_index()).unwrap_or(i32::MAX));
    instance
        .ipv6_address()
        .into_iter()
        .chain(interfaces.iter().flat_map(|n| n.ipv6_addresses()).filter_map(|a| a.ipv6_address()))
        .find_map(|ip| ip.parse().ok())
}

impl Cloud for Ec2 {
    fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>> {
        Box::pin(async move {
            let out =
                self.client.describe_instances().instance_ids(id.as_str()).send().await.map_err(|e| classify(id, e))?;
            let instance = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| i.instance_id() == Some(id.as_str()))
                .ok_or_else(|| CloudError::NotFound(id.to_string()))?;
            Ok(InstanceInfo {
                private_ip: instance.private_ip_address().and_then(|ip| ip.parse().ok()),
                ipv6: first_ipv6(instance),
                subnet_id: instance.subnet_id().map(str::to_owned),
                source_dest_check: instance.source_dest_check(),
            })
        })
    }

    fn set_source_dest_check<'a>(&'a self, id: &'a InstanceId, enabled: bool) -> BoxFuture<'a, Result<(), CloudError>> {
        Box::pin(async move {
            self.client
                .modify_instance_attribute()
                .instance_id(id.as_str())
                .source_dest_check(AttributeBooleanValue::builder().value(enabled).build())
                .send()
                .await
                .map_err(|e| classify(id, e))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{InstanceIpv6Address, InstanceNetworkInterface, InstanceNetworkInterfaceAttachment};

    use super::*;

    fn interface(index: i32, ips: &[&str]) -> InstanceNetworkInterface {
        let mut b = InstanceNetworkInterface::builder()
            .attachment(InstanceNetworkInterfaceAttachment::builder().device_index(index).build());
        for ip in ips {
            b = b.ipv6_addresses(InstanceIpv6Address::builder().ipv6_address(*ip).build());
        }
        b.build()
    }

    #[test]
    fn ipv6_comes_from_the_primary_interface_first() {
        let none = Instance::builder().network_interfaces(interface(0, &[])).build();
        assert_eq!(first_ipv6(&none), None);
        let listed_out_of_order = Instance::builder()
            .network_interfaces(interface(1, &["fd00::2"]))
            .network_interfaces(interface(0, &["not an ip", "fd00::1"]))
            .build();
        assert_eq!(first_ipv6(&listed_out_of_order), "fd00::1".parse().ok());
        let named = Instance::builder().ipv6_address("fd00::9").network_interfaces(interface(0, &["fd00::1"])).build();
        assert_eq!(first_ipv6(&named), "fd00::9".parse().ok());
    }
}
