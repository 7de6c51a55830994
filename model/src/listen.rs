//! Where a daemon serves a local HTTP endpoint, if anywhere: `ADDR:PORT` or `off`.

use std::{fmt, net::SocketAddr, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    On(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Listen::Off);
        }
        s.parse().map(Listen::On).map_err(|_| format!("{s:?} is not ADDR:PORT (e.g. 127.0.0.1:9477) or off"))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::On(addr) => write!(f, "{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_or_off() {
        assert_eq!("off".parse(), Ok(Listen::Off));
        assert_eq!("127.0.0.1:9478".parse(), Ok(Listen::On(([127, 0, 0, 1], 9478).into())));
        assert_eq!("[::1]:9".parse::<Listen>().map(|l| l.to_string()), Ok("[::1]:9".to_owned()));
        for bad in ["", "Off", "9478", "localhost:9478"] {
            assert!(bad.parse::<Listen>().is_err(), "{bad}");
        }
    }
}
