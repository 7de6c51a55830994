//! Wire values the renderers' tests share: a session over named sources, one over tags,
//! a host with everything reported, a token, and the instant tokens are judged at.

use teefleet_proto::v1;

pub fn proto_session() -> v1::Session {
    v1::Session {
        name: "web".into(),
        sources: vec!["i-src1".into(), "i-src2".into()],
        collector: "i-col".into(),
        filter: Some(v1::Filter {
            direction: v1::Direction::Ingress as i32,
            protocol: v1::Protocol::Tcp as i32,
            ports: Some(v1::PortRange { first: 80, last: 90 }),
            cidrs: vec!["10.0.0.0/8".into()],
            ..Default::default()
        }),
        state: v1::SessionState::Degraded as i32,
        hosts: vec![
            v1::SessionHostStatus {
                host_id: "i-src1".into(),
                applied: true,
                connected: true,
                error: String::new(),
                desired_version: 3,
                applied_version: 3,
                packets: 1000,
                bytes: 1536 * 1024,
                packets_per_second: 2.5,
                bytes_per_second: 2048.0,
                from_tags: false,
                source_dest_check: String::new(),
                sent_packets: Some(1000),
                delivered_packets: Some(700),
                loss_ratio: Some(0.3),
                delivery_unknown: String::new(),
            },
            v1::SessionHostStatus {
                host_id: "i-src2".into(),
                applied: false,
                connected: false,
                error: "iptables-restore: TEE target not supported".into(),
                desired_version: 2,
                applied_version: 1,
                delivery_unknown: "i-src2 has not reported for 45 s".into(),
                ..Default::default()
            },
        ],
        problems: vec!["ec2: ModifyInstanceAttribute throttled".into()],
        created_at: "2025-01-02T03:04:05Z".into(),
        expires_at: String::new(),
        source_tags: vec![],
        allow_routed: false,
        vni: 42,
        encap: "vxlan".into(),
        disable_source_check: false,
        packets: 1000,
        bytes: 1536 * 1024,
        packets_per_second: 2.5,
        bytes_per_second: 2048.0,
        sent_packets: Some(1000),
        delivered_packets: Some(700),
        loss_ratio: Some(0.3),
        window_seconds: 60,
        max_loss: 0.01,
        delivery_unknown: "the total covers 1 of 2 sources; the others' delivery is unknown".into(),
    }
}

pub fn proto_host() -> v1::Host {
    v1::Host {
        host_id: "i-src1".into(),
        agent_version: "0.1.0".into(),
        addresses: vec!["10.0.0.2".into()],
        connected: true,
        desired_version: 4,
        applied_version: 4,
        rule_count: 2,
        dataplane: Some(v1::Dataplane {
            backend: "nft".into(),
            iptables_version: "iptables v1.8.9 (nf_tables)".into(),
            ipv6: true,
            problems: vec!["TEE target missing for ip6tables".into()],
        }),
        drift_repairs: 3,
        events: vec![v1::HostEvent {
            kind: "drift_repaired".into(),
            message: "jump from PREROUTING was removed".into(),
            at_unix_ms: 1_700_000_000_123,
        }],
        counters: vec![v1::SessionCounters {
            session: "web".into(),
            packets: 12,
            bytes: 3000,
            packets_per_second: 0.5,
            bytes_per_second: 100.0,
        }],
        ..Default::default()
    }
}

/// `web` over role=web (two hosts) and a named host.
pub fn proto_tag_session() -> v1::Session {
    let mut p = proto_session();
    p.sources = vec!["i-named".into(), "i-web1".into(), "i-web2".into()];
    p.source_tags = vec!["env=prod".into(), "role=web".into()];
    p.allow_routed = true;
    let host = |id: &str, from_tags| v1::SessionHostStatus {
        host_id: id.into(),
        applied: true,
        connected: true,
        desired_version: 2,
        applied_version: 2,
        from_tags,
        ..Default::default()
    };
    p.hosts = vec![host("i-named", false), host("i-web1", true), host("i-web2", true)];
    // Its collector runs no agent: nothing counts what arrives.
    let absent = "collector i-col has no agent: nothing counts what arrives there";
    for h in &mut p.hosts {
        h.delivery_unknown = absent.into();
    }
    (p.sent_packets, p.delivered_packets, p.loss_ratio) = (None, None, None);
    p.delivery_unknown = absent.into();
    p
}

pub fn proto_token(id: &str, role: &str) -> v1::Token {
    v1::Token {
        id: id.into(),
        role: role.into(),
        expires_at: "2026-06-01T00:00:00+00:00".into(),
        uses_left: None,
        created_at: "2026-05-01T00:00:00+00:00".into(),
        created_by: "token:0a1b2c3d4e5f (admin)".into(),
        revoked_at: String::new(),
        host_id: String::new(),
    }
}

pub fn may_2026() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-05-15T00:00:00Z").expect("time").to_utc()
}
