//! moto starts and the EC2 fixture gives each lab host an instance with its address, and
//! Source/Dest Check reads back through DescribeInstanceAttribute; an IPv6 address assigned
//! to an instance shows on its network interface. No root needed.

use std::net::{Ipv4Addr, Ipv6Addr};

use aws_sdk_ec2::types::AttributeBooleanValue;
use teefleet_lab::{Ec2Fixture, Moto, ec2};

#[tokio::test]
async fn fixture_creates_instances_with_lab_addresses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let moto = Moto::start(dir.path()).await.expect("moto starts");
    let hosts = vec![
        ("source1".to_owned(), Ipv4Addr::new(10, 213, 250, 11)),
        ("collector".to_owned(), Ipv4Addr::new(10, 213, 250, 20)),
    ];
    let fixture = Ec2Fixture::create(ec2::client(&moto.endpoint()), "10.213.250.0/24", &hosts).await.expect("fixture");
    assert!(fixture.subnet_id.starts_with("subnet-"));
    let collector = fixture.instance_id("collector").expect("collector instance").to_owned();
    assert!(collector.starts_with("i-"));
    assert_eq!(fixture.private_ip(&collector).await.expect("ip"), "10.213.250.20");
    assert!(fixture.source_dest_check(&collector).await.expect("read check"));

    let ip6: Ipv6Addr = "fd00:213:250::20".parse().expect("ip");
    assert!(fixture.ipv6_addresses(&collector).await.expect("ipv6").is_empty());
    fixture.assign_ipv6("collector", ip6).await.expect("assign ipv6");
    assert_eq!(fixture.ipv6_addresses(&collector).await.expect("ipv6"), [ip6]);
    let source1 = fixture.instance_id("source1").expect("source1 instance").to_owned();
    assert!(fixture.ipv6_addresses(&source1).await.expect("ipv6").is_empty());

    fixture
        .client()
        .modify_instance_attribute()
        .instance_id(&collector)
        .source_dest_check(AttributeBooleanValue::builder().value(false).build())
        .send()
        .await
        .expect("modify");
    assert!(!fixture.source_dest_check(&collector).await.expect("read check"));
    assert!(fixture.instance_id("nope").is_err());
    assert!(moto.env().iter().any(|(k, v)| *k == "AWS_ENDPOINT_URL" && *v == moto.endpoint()));
}
