//! The exact bytes every command prints, table and JSON, for one representative value
//! each. The JSON is a contract scripts parse and the tables are what operators read, so
//! a change to either shows up here as a diff of the golden text, not as a surprise.

use teefleet_proto::v1;

use crate::cmd::audit::AuditOut;
use crate::cmd::collector::CollectorOut;
use crate::cmd::config::ConfigOut;
use crate::cmd::host::{HostOut, HostRevokedOut};
use crate::cmd::preflight::PreflightOut;
use crate::cmd::session::SessionOut;
use crate::cmd::session_update::UpdatedOut;
use crate::cmd::token::{NewTokenOut, RevokedOut, TokenOut};
use crate::config::{Setting, Settings, Source};
use crate::fixtures::{may_2026, proto_host, proto_session, proto_tag_session, proto_token};
use crate::render::{DeletedOut, Format, Render, emit};

/// JSON text as a value, to compare objects printed at different depths.
fn value(json: &str) -> serde_json::Value {
    serde_json::from_str(json).expect("JSON")
}

/// What `value` prints with `-o table` and with `-o json`.
fn shown<T: Render + ?Sized>(value: &T) -> (String, String) {
    let print = |format| {
        let mut out = Vec::new();
        emit(&mut out, format, value).expect("writes to memory");
        String::from_utf8(out).expect("utf-8")
    };
    (print(Format::Table), print(Format::Json))
}

/// The shared session with a throttle, two peers and the time as the controller writes it.
fn session() -> v1::Session {
    let mut s = proto_session();
    let filter = s.filter.get_or_insert_default();
    filter.cidrs.push("192.168.0.0/16".into());
    (filter.sample, filter.max_pps) = (0.01, 500);
    s.created_at = "2025-01-02T03:04:05.678901+00:00".into();
    s
}

/// The shared tag session made raw, its sources' checks turned off; the newest tagged
/// source has not applied it yet.
fn tag_session() -> v1::Session {
    let mut s = proto_tag_session();
    (s.name, s.collector, s.encap, s.vni) = ("db".into(), "i-raw".into(), "none".into(), 7);
    s.disable_source_check = true;
    s.state = v1::SessionState::Pending as i32;
    s.filter = None;
    s.problems.clear();
    s.created_at = "2025-01-02T03:04:05+00:00".into();
    s.expires_at = "2025-01-02T05:04:05.250+00:00".into();
    (s.packets, s.bytes, s.packets_per_second, s.bytes_per_second) = (9, 540, 0.0, 0.0);
    let seen = [(3, 180, "disabled"), (6, 360, "disabled"), (0, 0, "")];
    for (host, (packets, bytes, check)) in s.hosts.iter_mut().zip(seen) {
        (host.desired_version, host.applied_version) = (7, 7);
        (host.packets, host.bytes, host.source_dest_check) = (packets, bytes, check.into());
    }
    if let Some(newest) = s.hosts.last_mut() {
        (newest.applied, newest.connected, newest.applied_version) = (false, false, 0);
    }
    s
}

fn collectors() -> Vec<CollectorOut> {
    [
        v1::Collector {
            instance_id: "i-raw".into(),
            ip: "10.0.0.9".into(),
            subnet_id: "subnet-1".into(),
            session_count: 1,
            source_dest_check: "disabled".into(),
            original_source_dest_check: true,
            encap: "none".into(),
            ..Default::default()
        },
        v1::Collector {
            instance_id: "ids-lb".into(),
            ip: "10.1.0.5".into(),
            ipv6: "fd00::5".into(),
            encap: "vxlan".into(),
            ec2_error: "DescribeInstances: throttled".into(),
            ..Default::default()
        },
    ]
    .iter()
    .map(CollectorOut::from)
    .collect()
}

/// The shared host, behind on its version, with an error, a second event and counter.
fn host() -> v1::Host {
    let mut h = proto_host();
    h.addresses.push("fd00::2".into());
    h.applied_version = 3;
    h.last_error = "iptables-restore: exit status 1".into();
    h.last_seen = "2025-01-02T03:04:05.678901+00:00".into();
    h.events.push(v1::HostEvent { kind: "applied".into(), message: "version 3".into(), at_unix_ms: 1_699_999_990_000 });
    h.counters.push(v1::SessionCounters { session: "db".into(), ..Default::default() });
    h
}

/// The shared token with the times as the controller writes them.
fn token(id: &str, role: &str) -> v1::Token {
    v1::Token {
        expires_at: "2026-06-01T00:00:00.123456+00:00".into(),
        created_at: "2026-05-01T12:30:00.5+00:00".into(),
        ..proto_token(id, role)
    }
}

fn settings() -> Settings {
    Settings {
        controller: Setting { value: "https://ctl:7300".into(), source: Source::File("/c.toml".into()) },
        token: Some(Setting { value: "tf1.0a1b2c3d4e5f.secret".into(), source: Source::Env("FLEET_TOKEN") }),
        ca_cert: Some(Setting { value: "/etc/teefleet/ca.pem".into(), source: Source::Flag("--ca-cert") }),
        insecure: Setting { value: false, source: Source::Default },
        file: Some("/c.toml".into()),
    }
}

fn audit() -> Vec<AuditOut> {
    [
        v1::AuditRecord {
            id: 1,
            at: "2026-11-25T10:00:00.250+00:00".into(),
            actor: "token:0a1b2c3d4e5f (admin)".into(),
            peer: "[fd00::5]:40000".into(),
            action: "collector.add".into(),
            target: "i-raw".into(),
            result: "ok".into(),
        },
        v1::AuditRecord {
            id: 9,
            at: "2026-11-25T10:00:05+00:00".into(),
            result: "PermissionDenied: token 999999999999 has role viewer".into(),
            actor: "token:999999999999 (viewer)".into(),
            action: "session.delete".into(),
            target: "web".into(),
            peer: String::new(),
        },
    ]
    .iter()
    .map(AuditOut::from)
    .collect()
}

fn tokens() -> Vec<TokenOut> {
    let now = may_2026();
    vec![
        TokenOut::new(&token("aaaaaaaaaaaa", "operator"), now),
        TokenOut::new(&v1::Token { uses_left: Some(2), host_id: "i-0a".into(), ..token("bbbbbbbbbbbb", "agent") }, now),
        TokenOut::new(
            &v1::Token { revoked_at: "2026-05-02T08:00:00.75+00:00".into(), ..token("eeeeeeeeeeee", "admin") },
            now,
        ),
        TokenOut::new(
            &v1::Token { expires_at: String::new(), created_by: String::new(), ..token("ffffffffffff", "admin") },
            now,
        ),
    ]
}

fn sessions() -> Vec<SessionOut> {
    [session(), tag_session()].iter().map(SessionOut::from).collect()
}

fn hosts() -> Vec<HostOut> {
    [host(), v1::Host { host_id: "i-new".into(), ..Default::default() }].iter().map(HostOut::from).collect()
}

fn new_token() -> NewTokenOut {
    NewTokenOut::from(&v1::CreateTokenResponse {
        token: Some(v1::Token { uses_left: Some(1), host_id: "i-0a".into(), ..token("0a1b2c3d4e5f", "agent") }),
        secret: "tf1.0a1b2c3d4e5f.cafe".into(),
    })
}

const NO_CA: &str = "https://ctl:7300 (from config file /c.toml) uses TLS and needs the controller's CA certificate";

/// The sessions as `session list` prints them.
#[test]
fn session_list() {
    let (table, json) = shown(&sessions());
    assert_eq!(
        table,
        r#"NAME  STATE     SOURCES                                    COLLECTOR  FILTER                                                                          APPLIED  PACKETS  BYTES    PKT/S  BYTES/S    CREATED               EXPIRES
web   degraded  i-src1,i-src2                              i-col      ingress tcp port=80-90 peers=10.0.0.0/8,192.168.0.0/16 sample=0.01 max-pps=500  1/2      1000     1.5 MiB  2.5    2.0 KiB/s  2025-01-02T03:04:05Z  -
db    pending   i-named + tags env=prod,role=web: 2 hosts  i-raw      both all port=any peers=any                                                     2/3      9        540 B    0.0    0 B/s      2025-01-02T03:04:05Z  2025-01-02T05:04:05Z
"#
    );
    assert_eq!(
        json,
        r#"[
  {
    "name": "web",
    "sources": [
      "i-src1",
      "i-src2"
    ],
    "source_tags": [],
    "allow_routed": false,
    "collector": "i-col",
    "vni": 42,
    "encap": "vxlan",
    "disable_source_check": false,
    "direction": "ingress",
    "protocol": "tcp",
    "port": "80-90",
    "cidrs": [
      "10.0.0.0/8",
      "192.168.0.0/16"
    ],
    "sample": 0.01,
    "max_pps": 500,
    "state": "degraded",
    "hosts": [
      {
        "host_id": "i-src1",
        "applied": true,
        "connected": true,
        "error": null,
        "desired_version": 3,
        "applied_version": 3,
        "packets": 1000,
        "bytes": 1572864,
        "packets_per_second": 2.5,
        "bytes_per_second": 2048.0,
        "from_tags": false,
        "source_dest_check": null,
        "sent_packets": 1000,
        "delivered_packets": 700,
        "loss_ratio": 0.3,
        "delivery_unknown": null
      },
      {
        "host_id": "i-src2",
        "applied": false,
        "connected": false,
        "error": "iptables-restore: TEE target not supported",
        "desired_version": 2,
        "applied_version": 1,
        "packets": 0,
        "bytes": 0,
        "packets_per_second": 0.0,
        "bytes_per_second": 0.0,
        "from_tags": false,
        "source_dest_check": null,
        "sent_packets": null,
        "delivered_packets": null,
        "loss_ratio": null,
        "delivery_unknown": "i-src2 has not reported for 45 s"
      }
    ],
    "problems": [
      "ec2: ModifyInstanceAttribute throttled"
    ],
    "created_at": "2025-01-02T03:04:05.678901+00:00",
    "expires_at": null,
    "packets": 1000,
    "bytes": 1572864,
    "packets_per_second": 2.5,
    "bytes_per_second": 2048.0,
    "sent_packets": 1000,
    "delivered_packets": 700,
    "loss_ratio": 0.3,
    "window_seconds": 60,
    "max_loss": 0.01,
    "delivery_unknown": "the total covers 1 of 2 sources; the others' delivery is unknown"
  },
  {
    "name": "db",
    "sources": [
      "i-named",
      "i-web1",
      "i-web2"
    ],
    "source_tags": [
      "env=prod",
      "role=web"
    ],
    "allow_routed": true,
    "collector": "i-raw",
    "vni": 7,
    "encap": "none",
    "disable_source_check": true,
    "direction": "both",
    "protocol": "all",
    "port": null,
    "cidrs": [],
    "sample": null,
    "max_pps": null,
    "state": "pending",
    "hosts": [
      {
        "host_id": "i-named",
        "applied": true,
        "connected": true,
        "error": null,
        "desired_version": 7,
        "applied_version": 7,
        "packets": 3,
        "bytes": 180,
        "packets_per_second": 0.0,
        "bytes_per_second": 0.0,
        "from_tags": false,
        "source_dest_check": "disabled",
        "sent_packets": null,
        "delivered_packets": null,
        "loss_ratio": null,
        "delivery_unknown": "collector i-col has no agent: nothing counts what arrives there"
      },
      {
        "host_id": "i-web1",
        "applied": true,
        "connected": true,
        "error": null,
        "desired_version": 7,
        "applied_version": 7,
        "packets": 6,
        "bytes": 360,
        "packets_per_second": 0.0,
        "bytes_per_second": 0.0,
        "from_tags": true,
        "source_dest_check": "disabled",
        "sent_packets": null,
        "delivered_packets": null,
        "loss_ratio": null,
        "delivery_unknown": "collector i-col has no agent: nothing counts what arrives there"
      },
      {
        "host_id": "i-web2",
        "applied": false,
        "connected": false,
        "error": null,
        "desired_version": 7,
        "applied_version": 0,
        "packets": 0,
        "bytes": 0,
        "packets_per_second": 0.0,
        "bytes_per_second": 0.0,
        "from_tags": true,
        "source_dest_check": null,
        "sent_packets": null,
        "delivered_packets": null,
        "loss_ratio": null,
        "delivery_unknown": "collector i-col has no agent: nothing counts what arrives there"
      }
    ],
    "problems": [],
    "created_at": "2025-01-02T03:04:05+00:00",
    "expires_at": "2025-01-02T05:04:05.250+00:00",
    "packets": 9,
    "bytes": 540,
    "packets_per_second": 0.0,
    "bytes_per_second": 0.0,
    "sent_packets": null,
    "delivered_packets": null,
    "loss_ratio": null,
    "window_seconds": 60,
    "max_loss": 0.01,
    "delivery_unknown": "collector i-col has no agent: nothing counts what arrives there"
  }
]
"#
    );
}

/// A session over named sources with a throttle, traffic, an error and a problem, as `session get` and `session create` print it.
#[test]
fn session_get() {
    let (table, json) = shown(&sessions()[0]);
    assert_eq!(
        table,
        r#"Name:      web
State:     degraded
Sources:   i-src1, i-src2
Collector: i-col
Delivery:  vxlan, VNI 42
Direction: ingress
Protocol:  tcp
Port:      80-90
Peers:     10.0.0.0/8, 192.168.0.0/16
Sample:    0.01
Max pps:   500
Verified:  clones delivered over the last 60 s, degraded above 1% lost; the total covers 1 of 2 sources; the others' delivery is unknown
Created:   2025-01-02T03:04:05Z
Expires:   never

HOST    APPLIED  CONNECTED  DESIRED  HOST-VERSION  PACKETS  BYTES    PKT/S  BYTES/S    DELIVERED            ERROR
i-src1  yes      yes        3        3             1000     1.5 MiB  2.5    2.0 KiB/s  700/1000 (30% lost)  -
i-src2  no       no         2        1             0        0 B      0.0    0 B/s      unknown              iptables-restore: TEE target not supported
TOTAL                                              1000     1.5 MiB  2.5    2.0 KiB/s  700/1000 (30% lost)

Delivery unknown:
  - i-src2 has not reported for 45 s

Problems:
  - ec2: ModifyInstanceAttribute throttled
"#
    );
    assert_eq!(value(&json), value(&shown(&sessions()).1)[0], "the object is the list's element");
}

/// A raw session over a named and two tagged sources, with their checks off, one still pending.
#[test]
fn session_get_by_tag() {
    let (table, json) = shown(&sessions()[1]);
    assert_eq!(
        table,
        r#"Name:        db
State:       pending
Sources:     i-named
Source tags: env=prod, role=web (2 hosts)
Routed:      allowed: sources may be in another subnet than the collector
Collector:   i-raw
Delivery:    raw TEE (encap none), sources' Source/Dest Check off
Direction:   both
Protocol:    all
Port:        any
Peers:       any
Sample:      all packets
Max pps:     no cap
Verified:    clones delivered over the last 60 s, degraded above 1% lost; collector i-col has no agent: nothing counts what arrives there
Created:     2025-01-02T03:04:05Z
Expires:     2025-01-02T05:04:05Z

HOST     ORIGIN  APPLIED  CONNECTED  DESIRED  HOST-VERSION  SRC/DST-CHECK  PACKETS  BYTES  PKT/S  BYTES/S  DELIVERED  ERROR
i-named  named   yes      yes        7        7             disabled       3        180 B  0.0    0 B/s    unknown    -
i-web1   tag     yes      yes        7        7             disabled       6        360 B  0.0    0 B/s    unknown    -
i-web2   tag     no       no         7        0             -              0        0 B    0.0    0 B/s    unknown    -
TOTAL                                                                      9        540 B  0.0    0 B/s    unknown

Delivery unknown:
  - collector i-col has no agent: nothing counts what arrives there
"#
    );
    assert_eq!(value(&json), value(&shown(&sessions()).1)[1], "the object is the list's element");
}

/// An EC2 raw collector and a named VXLAN one with an EC2 error.
#[test]
fn collector_list() {
    let (table, json) = shown(&collectors());
    assert_eq!(
        table,
        r#"INSTANCE  IP        IPV6     SUBNET    ENCAP  SESSIONS  SRC/DST-CHECK  ORIGINAL  EC2-ERROR
i-raw     10.0.0.9  -        subnet-1  none   1         disabled       enabled   -
ids-lb    10.1.0.5  fd00::5  -         vxlan  0         -              disabled  DescribeInstances: throttled
"#
    );
    assert_eq!(
        json,
        r#"[
  {
    "instance_id": "i-raw",
    "ip": "10.0.0.9",
    "ipv6": null,
    "subnet_id": "subnet-1",
    "encap": "none",
    "session_count": 1,
    "source_dest_check": "disabled",
    "original_source_dest_check": true,
    "ec2_error": null
  },
  {
    "instance_id": "ids-lb",
    "ip": "10.1.0.5",
    "ipv6": "fd00::5",
    "subnet_id": "",
    "encap": "vxlan",
    "session_count": 0,
    "source_dest_check": "",
    "original_source_dest_check": false,
    "ec2_error": "DescribeInstances: throttled"
  }
]
"#
    );
}

/// `collector add` prints the one row of the table, and the object.
#[test]
fn collector_add() {
    let (table, json) = shown(&collectors()[0]);
    assert_eq!(
        table,
        r#"INSTANCE  IP        IPV6  SUBNET    ENCAP  SESSIONS  SRC/DST-CHECK  ORIGINAL  EC2-ERROR
i-raw     10.0.0.9  -     subnet-1  none   1         disabled       enabled   -
"#
    );
    assert_eq!(value(&json), value(&shown(&collectors()).1)[0], "the object is the list's element");
}

/// A host with everything reported and one that never connected.
#[test]
fn host_list() {
    let (table, json) = shown(&hosts());
    assert_eq!(
        table,
        r#"HOST    CONNECTED  APPLIED/DESIRED  RULES  LAST-SEEN             AGENT  ADDRESSES         ERROR
i-src1  yes        3/4              2      2025-01-02T03:04:05Z  0.1.0  10.0.0.2,fd00::2  iptables-restore: exit status 1
i-new   no         0/0              0      never                 -      -                 -
"#
    );
    assert_eq!(
        json,
        r#"[
  {
    "host_id": "i-src1",
    "agent_version": "0.1.0",
    "addresses": [
      "10.0.0.2",
      "fd00::2"
    ],
    "connected": true,
    "desired_version": 4,
    "applied_version": 3,
    "last_error": "iptables-restore: exit status 1",
    "last_seen": "2025-01-02T03:04:05.678901+00:00",
    "rule_count": 2,
    "dataplane": {
      "backend": "nft",
      "iptables_version": "iptables v1.8.9 (nf_tables)",
      "ipv6": true,
      "problems": [
        "TEE target missing for ip6tables"
      ]
    },
    "drift_repairs": 3,
    "counters": [
      {
        "session": "web",
        "packets": 12,
        "bytes": 3000,
        "packets_per_second": 0.5,
        "bytes_per_second": 100.0
      },
      {
        "session": "db",
        "packets": 0,
        "bytes": 0,
        "packets_per_second": 0.0,
        "bytes_per_second": 0.0
      }
    ],
    "events": [
      {
        "kind": "drift_repaired",
        "message": "jump from PREROUTING was removed",
        "at_unix_ms": 1700000000123,
        "at": "2023-11-14T22:13:20.123Z"
      },
      {
        "kind": "applied",
        "message": "version 3",
        "at_unix_ms": 1699999990000,
        "at": "2023-11-14T22:13:10.000Z"
      }
    ]
  },
  {
    "host_id": "i-new",
    "agent_version": "",
    "addresses": [],
    "connected": false,
    "desired_version": 0,
    "applied_version": 0,
    "last_error": null,
    "last_seen": null,
    "rule_count": 0,
    "dataplane": null,
    "drift_repairs": 0,
    "counters": [],
    "events": []
  }
]
"#
    );
}

/// A host with its dataplane, counters and events.
#[test]
fn host_get() {
    let (table, json) = shown(&hosts()[0]);
    assert_eq!(
        table,
        r#"Host:          i-src1
Connected:     yes
Agent:         0.1.0
Addresses:     10.0.0.2, fd00::2
Versions:      applied 3 of desired 4
Rules:         2
Last seen:     2025-01-02T03:04:05Z
Last error:    iptables-restore: exit status 1
Backend:       nft
iptables:      iptables v1.8.9 (nf_tables)
IPv6:          yes
Drift repairs: 3

Dataplane problems:
  - TEE target missing for ip6tables

SESSION  PACKETS  BYTES    PKT/S  BYTES/S
web      12       2.9 KiB  0.5    100 B/s
db       0        0 B      0.0    0 B/s

Recent events:
AT                    KIND            MESSAGE
2023-11-14T22:13:20Z  drift_repaired  jump from PREROUTING was removed
2023-11-14T22:13:10Z  applied         version 3
"#
    );
    assert_eq!(value(&json), value(&shown(&hosts()).1)[0], "the object is the list's element");
}

/// A host that reported nothing yet.
#[test]
fn host_get_bare() {
    let (table, json) = shown(&hosts()[1]);
    assert_eq!(
        table,
        r#"Host:          i-new
Connected:     no
Agent:         -
Addresses:     -
Versions:      applied 0 of desired 0
Rules:         0
Last seen:     never
Last error:    -
Backend:       not reported
Drift repairs: 0

No counters reported.

No recent events.
"#
    );
    assert_eq!(value(&json), value(&shown(&hosts()).1)[1], "the object is the list's element");
}

/// `host revoke`.
#[test]
fn host_revoke() {
    let (table, json) = shown(&HostRevokedOut::new(
        "i-1".into(),
        &v1::RevokeHostResponse { revoked_certificates: 1, disconnected: false },
    ));
    assert_eq!(
        table,
        r#"host i-1 revoked: 1 certificate revoked, it was not connected
"#
    );
    assert_eq!(
        json,
        r#"{
  "host_id": "i-1",
  "revoked_certificates": 1,
  "disconnected": false
}
"#
    );
}

/// Tokens in several states.
#[test]
fn token_list() {
    let (table, json) = shown(&tokens());
    assert_eq!(
        table,
        r#"ID            ROLE      STATE    EXPIRES               USES-LEFT  HOST  CREATED               CREATED-BY
aaaaaaaaaaaa  operator  active   2026-06-01T00:00:00Z  -          -     2026-05-01T12:30:00Z  token:0a1b2c3d4e5f (admin)
bbbbbbbbbbbb  agent     active   2026-06-01T00:00:00Z  2          i-0a  2026-05-01T12:30:00Z  token:0a1b2c3d4e5f (admin)
eeeeeeeeeeee  admin     revoked  2026-06-01T00:00:00Z  -          -     2026-05-01T12:30:00Z  token:0a1b2c3d4e5f (admin)
ffffffffffff  admin     active   never                 -          -     2026-05-01T12:30:00Z  -
"#
    );
    assert_eq!(
        json,
        r#"[
  {
    "id": "aaaaaaaaaaaa",
    "role": "operator",
    "state": "active",
    "expires_at": "2026-06-01T00:00:00.123456+00:00",
    "uses_left": null,
    "created_at": "2026-05-01T12:30:00.5+00:00",
    "created_by": "token:0a1b2c3d4e5f (admin)",
    "revoked_at": null,
    "host_id": null
  },
  {
    "id": "bbbbbbbbbbbb",
    "role": "agent",
    "state": "active",
    "expires_at": "2026-06-01T00:00:00.123456+00:00",
    "uses_left": 2,
    "created_at": "2026-05-01T12:30:00.5+00:00",
    "created_by": "token:0a1b2c3d4e5f (admin)",
    "revoked_at": null,
    "host_id": "i-0a"
  },
  {
    "id": "eeeeeeeeeeee",
    "role": "admin",
    "state": "revoked",
    "expires_at": "2026-06-01T00:00:00.123456+00:00",
    "uses_left": null,
    "created_at": "2026-05-01T12:30:00.5+00:00",
    "created_by": "token:0a1b2c3d4e5f (admin)",
    "revoked_at": "2026-05-02T08:00:00.75+00:00",
    "host_id": null
  },
  {
    "id": "ffffffffffff",
    "role": "admin",
    "state": "active",
    "expires_at": null,
    "uses_left": null,
    "created_at": "2026-05-01T12:30:00.5+00:00",
    "created_by": "",
    "revoked_at": null,
    "host_id": null
  }
]
"#
    );
}

/// A join token for one host, with its secret.
#[test]
fn token_create() {
    let (table, json) = shown(&new_token());
    assert_eq!(
        table,
        r#"ID:      0a1b2c3d4e5f
Role:    agent
Expires: 2026-06-01T00:00:00Z
Uses:    1
Host:    i-0a only (it may replace the host's certificate)
Token:   tf1.0a1b2c3d4e5f.cafe

Save the token now: it cannot be shown again (the controller keeps only its hash).
"#
    );
    assert_eq!(
        json,
        r#"{
  "id": "0a1b2c3d4e5f",
  "token": "tf1.0a1b2c3d4e5f.cafe",
  "role": "agent",
  "expires_at": "2026-06-01T00:00:00.123456+00:00",
  "uses_left": 1,
  "host_id": "i-0a"
}
"#
    );
}

/// `token revoke`.
#[test]
fn token_revoke() {
    let (table, json) = shown(&RevokedOut { kind: "token", id: "0a1b2c3d4e5f".into(), revoked: true });
    assert_eq!(
        table,
        r#"token 0a1b2c3d4e5f revoked
"#
    );
    assert_eq!(
        json,
        r#"{
  "kind": "token",
  "id": "0a1b2c3d4e5f",
  "revoked": true
}
"#
    );
}

/// Two audit records, one refused.
#[test]
fn audit_list() {
    let (table, json) = shown(&audit());
    assert_eq!(
        table,
        r#"AT                    ACTOR                        ACTION          TARGET  RESULT                                                PEER
2026-11-25T10:00:00Z  token:0a1b2c3d4e5f (admin)   collector.add   i-raw   ok                                                    [fd00::5]:40000
2026-11-25T10:00:05Z  token:999999999999 (viewer)  session.delete  web     PermissionDenied: token 999999999999 has role viewer  -
"#
    );
    assert_eq!(
        json,
        r#"[
  {
    "id": 1,
    "at": "2026-11-25T10:00:00.250+00:00",
    "actor": "token:0a1b2c3d4e5f (admin)",
    "peer": "[fd00::5]:40000",
    "action": "collector.add",
    "target": "i-raw",
    "result": "ok"
  },
  {
    "id": 9,
    "at": "2026-11-25T10:00:05+00:00",
    "actor": "token:999999999999 (viewer)",
    "peer": "",
    "action": "session.delete",
    "target": "web",
    "result": "PermissionDenied: token 999999999999 has role viewer"
  }
]
"#
    );
}

/// The settings in force and where each came from.
#[test]
fn config_show() {
    let (table, json) = shown(&ConfigOut::new(&settings(), true, None));
    assert_eq!(
        table,
        r#"Config file: /c.toml

SETTING     VALUE                        SOURCE
controller  https://ctl:7300             config file
token       tf1.0a1b2c3d4e5f.<redacted>  env FLEET_TOKEN
ca_cert     /etc/teefleet/ca.pem         --ca-cert
insecure    false                        default
"#
    );
    assert_eq!(
        json,
        r#"{
  "file": "/c.toml",
  "file_exists": true,
  "controller": {
    "value": "https://ctl:7300",
    "source": "config file"
  },
  "token": {
    "value": "tf1.0a1b2c3d4e5f.<redacted>",
    "source": "env FLEET_TOKEN"
  },
  "ca_cert": {
    "value": "/etc/teefleet/ca.pem",
    "source": "--ca-cert"
  },
  "insecure": {
    "value": false,
    "source": "default"
  },
  "problem": null
}
"#
    );
}

/// Settings that would not connect, with an absent file.
#[test]
fn config_show_problem() {
    let (table, json) = shown(&ConfigOut::new(&Settings { ca_cert: None, ..settings() }, false, Some(NO_CA.into())));
    assert_eq!(
        table,
        r#"Config file: /c.toml (absent)

SETTING     VALUE                        SOURCE
controller  https://ctl:7300             config file
token       tf1.0a1b2c3d4e5f.<redacted>  env FLEET_TOKEN
ca_cert     -                            unset
insecure    false                        default

Problem: https://ctl:7300 (from config file /c.toml) uses TLS and needs the controller's CA certificate
"#
    );
    let v = value(&json);
    assert_eq!(
        (&v["file_exists"], &v["ca_cert"], &v["problem"]),
        (&false.into(), &serde_json::json!({"value": null, "source": "unset"}), &NO_CA.into())
    );
}

/// `session update`: what changed, then the session as `session get` shows it.
#[test]
fn session_update() {
    let reply = v1::UpdateSessionResponse { session: Some(session()), changed: true, hosts_changed: 2 };
    let (table, json) = shown(&UpdatedOut::from(&reply));
    let (get, _) = shown(&sessions()[0]);
    assert_eq!(table, format!("session web updated: 2 hosts get a new rule set\n\n{get}"));
    let json = value(&json);
    assert_eq!((&json["changed"], &json["hosts_changed"]), (&true.into(), &2.into()));
    assert_eq!(json["session"], value(&shown(&sessions()).1)[0], "the session is the list's element");

    let same = v1::UpdateSessionResponse { session: Some(tag_session()), changed: false, hosts_changed: 0 };
    let (table, _) = shown(&UpdatedOut::from(&same));
    assert!(table.starts_with("session db already is so: nothing changed\n\nName:        db\n"), "{table}");
}

/// `session create --dry-run` of a raw session: a source that would work, one whose agent
/// is gone, a tagged one in another subnet, and a collector named as a source.
#[test]
fn session_create_dry_run() {
    let source = |host: &str, from_tags, subnet: &str, agent: &str, check: &str| v1::PreflightSource {
        host_id: host.into(),
        from_tags,
        subnet_id: subnet.into(),
        agent: agent.into(),
        encap: "none".into(),
        gateways: vec!["10.0.0.9".into(), "fd00::9".into()],
        source_dest_check: check.into(),
        rule_count: 4,
    };
    let problem = |host: &str, message: &str, refuses| v1::PreflightProblem {
        host_id: host.into(),
        message: message.into(),
        refuses,
    };
    let plan = v1::SessionPreflight {
        name: "db".into(),
        collector: "i-raw".into(),
        encap: "none".into(),
        vni: 3,
        collector_subnet_id: "subnet-1".into(),
        collector_agent: "none".into(),
        collector_source_dest_check: "enabled -> disabled".into(),
        sources: vec![
            source("i-a", false, "subnet-1", "connected", "enabled -> disabled"),
            source("i-b", false, "subnet-1", "disconnected", ""),
            source("i-web1", true, "subnet-2", "none", "unknown -> disabled"),
            v1::PreflightSource { rule_count: 0, gateways: vec![], ..source("i-col2", false, "", "connected", "") },
        ],
        problems: vec![
            problem("i-b", "its agent is not connected: it gets the rules when it reconnects", false),
            problem("i-col2", "a registered collector, and a collector is never a source", true),
            problem("", "collector i-raw has no agent: delivery will be unknown", false),
        ],
        would_create: false,
    };
    let (table, json) = shown(&PreflightOut::from(&plan));
    assert_eq!(
        table,
        r#"Dry run: nothing was changed. Session db would be refused.

Collector:                     i-raw (encap none, subnet subnet-1, agent none)
VNI:                           3
Collector's Source/Dest Check: enabled -> disabled

HOST    ORIGIN  SUBNET    AGENT         DELIVERY                   SRC/DST-CHECK        RULES
i-a     named   subnet-1  connected     tee via 10.0.0.9, fd00::9  enabled -> disabled  4
i-b     named   subnet-1  disconnected  tee via 10.0.0.9, fd00::9  -                    4
i-web1  tag     subnet-2  none          tee via 10.0.0.9, fd00::9  unknown -> disabled  4
i-col2  named   -         connected     -                          -                    0

Problems:
  - refuses: i-col2: a registered collector, and a collector is never a source
  - i-b: its agent is not connected: it gets the rules when it reconnects
  - collector i-raw has no agent: delivery will be unknown
"#
    );
    assert_eq!(
        json,
        r#"{
  "name": "db",
  "would_create": false,
  "collector": "i-raw",
  "encap": "none",
  "vni": 3,
  "collector_subnet_id": "subnet-1",
  "collector_agent": "none",
  "collector_source_dest_check": "enabled -> disabled",
  "sources": [
    {
      "host_id": "i-a",
      "from_tags": false,
      "subnet_id": "subnet-1",
      "agent": "connected",
      "encap": "none",
      "gateways": [
        "10.0.0.9",
        "fd00::9"
      ],
      "source_dest_check": "enabled -> disabled",
      "rule_count": 4
    },
    {
      "host_id": "i-b",
      "from_tags": false,
      "subnet_id": "subnet-1",
      "agent": "disconnected",
      "encap": "none",
      "gateways": [
        "10.0.0.9",
        "fd00::9"
      ],
      "source_dest_check": null,
      "rule_count": 4
    },
    {
      "host_id": "i-web1",
      "from_tags": true,
      "subnet_id": "subnet-2",
      "agent": "none",
      "encap": "none",
      "gateways": [
        "10.0.0.9",
        "fd00::9"
      ],
      "source_dest_check": "unknown -> disabled",
      "rule_count": 4
    },
    {
      "host_id": "i-col2",
      "from_tags": false,
      "subnet_id": null,
      "agent": "connected",
      "encap": "none",
      "gateways": [],
      "source_dest_check": null,
      "rule_count": 0
    }
  ],
  "problems": [
    {
      "host_id": "i-b",
      "message": "its agent is not connected: it gets the rules when it reconnects",
      "refuses": false
    },
    {
      "host_id": "i-col2",
      "message": "a registered collector, and a collector is never a source",
      "refuses": true
    },
    {
      "host_id": null,
      "message": "collector i-raw has no agent: delivery will be unknown",
      "refuses": false
    }
  ]
}
"#
    );
    let vxlan = v1::SessionPreflight {
        encap: "vxlan".into(),
        collector_source_dest_check: String::new(),
        sources: vec![v1::PreflightSource {
            encap: "vxlan".into(),
            gateways: vec!["10.0.0.9".into()],
            ..plan.sources[0].clone()
        }],
        problems: vec![],
        would_create: true,
        ..plan
    };
    let (table, _) = shown(&PreflightOut::from(&vxlan));
    assert!(table.starts_with("Dry run: nothing was changed. Session db would be created.\n"), "{table}");
    assert!(table.contains("Collector's Source/Dest Check: unchanged\n"), "{table}");
    assert!(table.contains("  vxlan VNI 3 to 10.0.0.9  "), "{table}");
    assert!(!table.contains("Problems"), "{table}");
}

/// `session delete`.
#[test]
fn session_delete() {
    let (table, json) = shown(&DeletedOut { kind: "session", name: "web".into(), deleted: true });
    assert_eq!(
        table,
        r#"session web deleted
"#
    );
    assert_eq!(
        json,
        r#"{
  "kind": "session",
  "name": "web",
  "deleted": true
}
"#
    );
}

/// `collector remove`.
#[test]
fn collector_remove() {
    let (table, json) = shown(&DeletedOut { kind: "collector", name: "i-raw".into(), deleted: true });
    assert_eq!(
        table,
        r#"collector i-raw deleted
"#
    );
    assert_eq!(
        json,
        r#"{
  "kind": "collector",
  "name": "i-raw",
  "deleted": true
}
"#
    );
}

/// What `value` prints with `-o yaml`.
fn yaml<T: Render + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    emit(&mut out, Format::Yaml, value).expect("writes to memory");
    String::from_utf8(out).expect("utf-8")
}

/// `-o yaml` carries the JSON's fields, in its order, nested the same way.
#[test]
fn host_list_yaml() {
    assert_eq!(
        yaml(&hosts()),
        r#"- host_id: i-src1
  agent_version: "0.1.0"
  addresses:
  - "10.0.0.2"
  - fd00::2
  connected: true
  desired_version: 4
  applied_version: 3
  last_error: "iptables-restore: exit status 1"
  last_seen: "2025-01-02T03:04:05.678901+00:00"
  rule_count: 2
  dataplane:
    backend: nft
    iptables_version: iptables v1.8.9 (nf_tables)
    ipv6: true
    problems:
    - TEE target missing for ip6tables
  drift_repairs: 3
  counters:
  - session: web
    packets: 12
    bytes: 3000
    packets_per_second: 0.5
    bytes_per_second: 100.0
  - session: db
    packets: 0
    bytes: 0
    packets_per_second: 0.0
    bytes_per_second: 0.0
  events:
  - kind: drift_repaired
    message: jump from PREROUTING was removed
    at_unix_ms: 1700000000123
    at: "2023-11-14T22:13:20.123Z"
  - kind: applied
    message: version 3
    at_unix_ms: 1699999990000
    at: "2023-11-14T22:13:10.000Z"
- host_id: i-new
  agent_version: ""
  addresses: []
  connected: false
  desired_version: 0
  applied_version: 0
  last_error: null
  last_seen: null
  rule_count: 0
  dataplane: null
  drift_repairs: 0
  counters: []
  events: []
"#
    );
}

#[test]
fn config_show_yaml() {
    assert_eq!(
        yaml(&ConfigOut::new(&settings(), true, None)),
        r#"file: /c.toml
file_exists: true
controller:
  value: https://ctl:7300
  source: config file
token:
  value: tf1.0a1b2c3d4e5f.<redacted>
  source: env FLEET_TOKEN
ca_cert:
  value: /etc/teefleet/ca.pem
  source: --ca-cert
insecure:
  value: false
  source: default
problem: null
"#
    );
}

/// Strings that YAML would read as another type are quoted, and what a terminal would
/// act on is escaped, as JSON escapes it.
#[test]
fn yaml_quotes_and_escapes_what_it_must() {
    let mut host = hosts()[1].clone();
    host.last_error = Some("a\u{1b}]0;owned\u{7}\nforged: #x".into());
    host.agent_version = "null".into();
    host.addresses = vec!["yes".into(), "1.0".into(), " lead".into(), "~".into(), "fd00::5".into()];
    let text = yaml(&host);
    assert!(text.contains("agent_version: \"null\"\n"), "{text}");
    assert!(text.contains("addresses:\n- \"yes\"\n- \"1.0\"\n- \" lead\"\n- \"~\"\n- fd00::5\n"), "{text}");
    assert!(text.contains("last_error: \"a\\e]0;owned\\a\\nforged: #x\"\n"), "{text}");
    assert_eq!(yaml(&Vec::<SessionOut>::new()), "[]\n");
}
