//! The wire's enums and the model's. proto3 sends a field never set as its zero value, so
//! each decoder says what zero means; a number the schema does not know is refused.

use teefleet_model::{Direction, IpFamily, Protocol, RuleDirection, ValidationError};

use crate::v1 as pb;

/// A session's direction; unset means both.
pub fn direction(value: i32) -> Result<Direction, ValidationError> {
    match pb::Direction::try_from(value) {
        Ok(pb::Direction::Unspecified | pb::Direction::Both) => Ok(Direction::Both),
        Ok(pb::Direction::Ingress) => Ok(Direction::Ingress),
        Ok(pb::Direction::Egress) => Ok(Direction::Egress),
        Err(_) => Err(ValidationError::new("direction", format!("unknown direction {value}"))),
    }
}

/// A rule's direction: the compiler splits BOTH into two rules, so anything else is a
/// controller bug.
pub fn rule_direction(value: i32) -> Result<RuleDirection, ValidationError> {
    match pb::Direction::try_from(value) {
        Ok(pb::Direction::Ingress) => Ok(RuleDirection::Ingress),
        Ok(pb::Direction::Egress) => Ok(RuleDirection::Egress),
        _ => Err(ValidationError::new("direction", format!("{value} is not INGRESS or EGRESS"))),
    }
}

/// A protocol; unset means all, as it does in a filter.
pub fn protocol(value: i32) -> Result<Protocol, ValidationError> {
    match pb::Protocol::try_from(value) {
        Ok(pb::Protocol::Unspecified | pb::Protocol::All) => Ok(Protocol::All),
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        Ok(pb::Protocol::Icmp) => Ok(Protocol::Icmp),
        Err(_) => Err(ValidationError::new("protocol", format!("unknown protocol {value}"))),
    }
}

/// A tunnelled rule's family, which has no default.
pub fn family(value: i32) -> Result<IpFamily, ValidationError> {
    match pb::IpFamily::try_from(value) {
        Ok(pb::IpFamily::Ipv4) => Ok(IpFamily::Ipv4),
        Ok(pb::IpFamily::Ipv6) => Ok(IpFamily::Ipv6),
        _ => Err(ValidationError::new("family", format!("{value} is not IPV4 or IPV6"))),
    }
}

impl From<Direction> for pb::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Ingress => pb::Direction::Ingress,
            Direction::Egress => pb::Direction::Egress,
            Direction::Both => pb::Direction::Both,
        }
    }
}

impl From<RuleDirection> for pb::Direction {
    fn from(d: RuleDirection) -> Self {
        match d {
            RuleDirection::Ingress => pb::Direction::Ingress,
            RuleDirection::Egress => pb::Direction::Egress,
        }
    }
}

impl From<Protocol> for pb::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::All => pb::Protocol::All,
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
            Protocol::Icmp => pb::Protocol::Icmp,
        }
    }
}

impl From<IpFamily> for pb::IpFamily {
    fn from(f: IpFamily) -> Self {
        match f {
            IpFamily::Ipv4 => pb::IpFamily::Ipv4,
            IpFamily::Ipv6 => pb::IpFamily::Ipv6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_value_comes_back() {
        for d in [Direction::Ingress, Direction::Egress, Direction::Both] {
            assert_eq!(direction(pb::Direction::from(d).into()), Ok(d));
        }
        for d in [RuleDirection::Ingress, RuleDirection::Egress] {
            assert_eq!(rule_direction(pb::Direction::from(d).into()), Ok(d));
        }
        for p in [Protocol::All, Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            assert_eq!(protocol(pb::Protocol::from(p).into()), Ok(p));
        }
        for f in [IpFamily::Ipv4, IpFamily::Ipv6] {
            assert_eq!(family(pb::IpFamily::from(f).into()), Ok(f));
        }
    }

    #[test]
    fn zero_means_the_default_where_there_is_one() {
        assert_eq!((direction(0), protocol(0)), (Ok(Direction::Both), Ok(Protocol::All)));
        assert_eq!(rule_direction(0).unwrap_err().field, "direction");
        assert_eq!(family(0).unwrap_err().to_string(), "family: 0 is not IPV4 or IPV6");
        assert_eq!(protocol(99).unwrap_err().to_string(), "protocol: unknown protocol 99");
        assert_eq!(direction(-1).unwrap_err().to_string(), "direction: unknown direction -1");
    }
}
