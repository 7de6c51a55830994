//! The EC2 fixture in moto: one VPC with a subnet per lab subnet, and one instance per
//! lab host with the host's address as its primary private IP, so the controller finds the
//! same addresses through EC2 that the namespaces really have. IPv6 addresses are assigned
//! to the instances' primary network interfaces afterwards ([`Ec2Fixture::assign_ipv6`]),
//! where real EC2 keeps them too.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{Instance, InstanceAttributeName, InstanceType, Tag};

use crate::LabError;
use crate::moto::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};

/// An AMI id from moto's built-in catalogue; moto does not boot it.
const IMAGE_ID: &str = "ami-03cf127a";

/// An EC2 client for moto at `endpoint`, configured explicitly so nothing in this
/// process's environment or home directory changes where it goes.
pub fn client(endpoint: &str) -> Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "teefleet-lab"))
        .build();
    Client::from_conf(config)
}

fn ec2_error(operation: &str, e: impl std::error::Error) -> LabError {
    // The SDK's Display is just "service error"; the chain carries moto's message.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    LabError::Ec2 { operation: operation.to_owned(), message }
}

/// The VPC, subnet and instances made for one lab.
#[derive(Debug, Clone)]
pub struct Ec2Fixture {
    client: Client,
    pub vpc_id: String,
    /// The first subnet.
    pub subnet_id: String,
    /// Every subnet, in the order they were asked for.
    pub subnet_ids: Vec<String>,
    /// Lab host name → instance id.
    pub instances: BTreeMap<String, String>,
}

impl Ec2Fixture {
    /// Creates a VPC and one subnet for `cidr` (a /16 to /28) and one running instance per
    /// `(host name, private IP)`.
    pub async fn create(client: Client, cidr: &str, hosts: &[(String, Ipv4Addr)]) -> Result<Ec2Fixture, LabError> {
        let hosts: Vec<_> = hosts.iter().map(|(name, ip)| (name.clone(), 0, *ip)).collect();
        Ec2Fixture::create_vpc(client, cidr, &[cidr.to_owned()], &hosts).await
    }

    /// Creates a VPC for `vpc_cidr` with one subnet per entry of `subnets`, and one running
    /// instance per `(host name, subnet index, private IP)`.
    pub async fn create_vpc(
        client: Client,
        vpc_cidr: &str,
        subnets: &[String],
        hosts: &[(String, usize, Ipv4Addr)],
    ) -> Result<Ec2Fixture, LabError> {
        let vpc = client.create_vpc().cidr_block(vpc_cidr).send().await.map_err(|e| ec2_error("CreateVpc", e))?;
        let vpc_id = vpc
            .vpc()
            .and_then(|v| v.vpc_id())
            .ok_or_else(|| ec2_error_text("CreateVpc", "no VPC id in the answer"))?
            .to_owned();
        let mut subnet_ids = Vec::new();
        for cidr in subnets {
            let subnet = client
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(cidr)
                .send()
                .await
                .map_err(|e| ec2_error("CreateSubnet", e))?;
            let id = subnet
                .subnet()
                .and_then(|s| s.subnet_id())
                .ok_or_else(|| ec2_error_text("CreateSubnet", "no subnet id in the answer"))?;
            subnet_ids.push(id.to_owned());
        }
        let mut instances = BTreeMap::new();
        for (name, subnet, ip) in hosts {
            let subnet_id = subnet_ids
                .get(*subnet)
                .ok_or_else(|| LabError::Invalid(format!("host {name} is in subnet {subnet}, which is not made")))?;
            let run = client
                .run_instances()
                .image_id(IMAGE_ID)
                .instance_type(InstanceType::T3Micro)
                .min_count(1)
                .max_count(1)
                .subnet_id(subnet_id)
                .private_ip_address(ip.to_string())
                .send()
                .await
                .map_err(|e| ec2_error("RunInstances", e))?;
            let id = run
                .instances()
                .first()
                .and_then(|i| i.instance_id())
                .ok_or_else(|| ec2_error_text("RunInstances", "no instance in the answer"))?
                .to_owned();
            tracing::info!(host = %name, %ip, instance_id = %id, subnet_id, "EC2 instance created");
            instances.insert(name.clone(), id);
        }
        let subnet_id = subnet_ids.first().cloned().unwrap_or_default();
        Ok(Ec2Fixture { client, vpc_id, subnet_id, subnet_ids, instances })
    }

    /// The instance id of a lab host.
    pub fn instance_id(&self, host: &str) -> Result<&str, LabError> {
        self.instances
            .get(host)
            .map(String::as_str)
            .ok_or_else(|| LabError::Invalid(format!("no EC2 instance for lab host {host:?}")))
    }

    /// The EC2 client the fixture was made with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Source/Dest Check of an instance, read with DescribeInstanceAttribute.
    pub async fn source_dest_check(&self, instance_id: &str) -> Result<bool, LabError> {
        source_dest_check(&self.client, instance_id).await
    }

    /// Sets Source/Dest Check of an instance (ModifyInstanceAttribute).
    pub async fn set_source_dest_check(&self, instance_id: &str, on: bool) -> Result<(), LabError> {
        self.client
            .modify_instance_attribute()
            .instance_id(instance_id)
            .source_dest_check(aws_sdk_ec2::types::AttributeBooleanValue::builder().value(on).build())
            .send()
            .await
            .map_err(|e| ec2_error("ModifyInstanceAttribute", e))?;
        Ok(())
    }

    /// Assigns `ip6` to the primary network interface of a lab host's instance
    /// (AssignIpv6Addresses), as EC2 does for an instance in a dual-stack subnet.
    ///
    /// DescribeInstances then lists it under `NetworkInterfaces[].Ipv6Addresses`; moto
    /// leaves the instance-level `Ipv6Address` empty, so readers must look at the interfaces.
    /// moto checks neither the subnet's IPv6 CIDR (it cannot associate a chosen ULA block
    /// with a VPC) nor uniqueness, so the lab's own addresses can be used as they are.
    pub async fn assign_ipv6(&self, host: &str, ip6: Ipv6Addr) -> Result<(), LabError> {
        let instance_id = self.instance_id(host)?;
        let eni = self.primary_interface(instance_id).await?;
        self.client
            .assign_ipv6_addresses()
            .network_interface_id(&eni)
            .ipv6_addresses(ip6.to_string())
            .send()
            .await
            .map_err(|e| ec2_error("AssignIpv6Addresses", e))?;
        tracing::info!(host, %ip6, instance_id, eni, "EC2 IPv6 address assigned");
        Ok(())
    }

    /// Sets the tag `key` to `value` on a lab host's instance (CreateTags), replacing any
    /// value it had, as an operator retagging an instance would.
    pub async fn tag(&self, host: &str, key: &str, value: &str) -> Result<(), LabError> {
        let instance_id = self.instance_id(host)?;
        self.client
            .create_tags()
            .resources(instance_id)
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
            .map_err(|e| ec2_error("CreateTags", e))?;
        tracing::info!(host, instance_id, key, value, "EC2 tag set");
        Ok(())
    }

    /// Removes the tag `key` from a lab host's instance (DeleteTags), whatever its value.
    pub async fn untag(&self, host: &str, key: &str) -> Result<(), LabError> {
        let instance_id = self.instance_id(host)?;
        // A tag given without a value deletes the key whatever its value; with one, EC2
        // would delete it only if the value matched.
        self.client
            .delete_tags()
            .resources(instance_id)
            .tags(Tag::builder().key(key).build())
            .send()
            .await
            .map_err(|e| ec2_error("DeleteTags", e))?;
        tracing::info!(host, instance_id, key, "EC2 tag removed");
        Ok(())
    }

    /// One instance as DescribeInstances shows it.
    async fn describe(&self, instance_id: &str) -> Result<Vec<Instance>, LabError> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| ec2_error("DescribeInstances", e))?;
        Ok(out.reservations().iter().flat_map(|r| r.instances()).cloned().collect())
    }

    /// The IPv6 addresses of an instance's network interfaces, as DescribeInstances shows them.
    pub async fn ipv6_addresses(&self, instance_id: &str) -> Result<Vec<Ipv6Addr>, LabError> {
        Ok(self
            .describe(instance_id)
            .await?
            .iter()
            .flat_map(|i| i.network_interfaces())
            .flat_map(|n| n.ipv6_addresses())
            .filter_map(|a| a.ipv6_address()?.parse().ok())
            .collect())
    }

    /// The id of an instance's network interface at device index 0.
    async fn primary_interface(&self, instance_id: &str) -> Result<String, LabError> {
        let instances = self.describe(instance_id).await?;
        let interfaces: Vec<_> = instances.iter().flat_map(|i| i.network_interfaces()).collect();
        interfaces
            .iter()
            .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
            .or(interfaces.first())
            .and_then(|n| n.network_interface_id())
            .map(str::to_owned)
            .ok_or_else(|| ec2_error_text("DescribeInstances", "instance has no network interface"))
    }

    /// The primary private IP EC2 reports for an instance.
    pub async fn private_ip(&self, instance_id: &str) -> Result<String, LabError> {
        self.describe(instance_id)
            .await?
            .iter()
            .find_map(|i| i.private_ip_address())
            .map(str::to_owned)
            .ok_or_else(|| ec2_error_text("DescribeInstances", "instance has no private IP"))
    }
}

/// Source/Dest Check of an instance, read with DescribeInstanceAttribute.
pub async fn source_dest_check(client: &Client, instance_id: &str) -> Result<bool, LabError> {
    let out = client
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(InstanceAttributeName::SourceDestCheck)
        .send()
        .await
        .map_err(|e| ec2_error("DescribeInstanceAttribute", e))?;
    out.source_dest_check()
        .and_then(|v| v.value())
        .ok_or_else(|| ec2_error_text("DescribeInstanceAttribute", "no sourceDestCheck value"))
}

fn ec2_error_text(operation: &str, message: &str) -> LabError {
    LabError::Ec2 { operation: operation.to_owned(), message: message.to_owned() }
}
