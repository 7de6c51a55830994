//! The only rule text the agent may hand to `iptables-restore`, written as a whitelist:
//! a checker that accepts exactly the token sequences the renderer is allowed to produce
//! and reads back what the line says, so a test can compare it with the rule it came
//! from. It is deliberately written apart from the renderer (no regular expressions, no
//! shared code): a renderer bug that lets text through must also fool this.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::IpAddr;

use teefleet_agent::firewall::Family;
use teefleet_model::{Cidr, SessionName};

/// What one rule line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLine {
    pub ingress: bool,
    pub peer: Option<Cidr>,
    pub protocol: Option<&'static str>,
    pub ports: Option<(u16, u16)>,
    /// The address both directions never mirror, if any.
    pub excluded: Option<IpAddr>,
    /// TEE's gateway, and its `--oif` for a tunnelled rule.
    pub gateway: IpAddr,
    pub oif: Option<String>,
    /// `! -o tfvx+`: an egress rule that does not see clones leaving through a tunnel.
    pub skips_tunnels: bool,
    pub sample_ppm: Option<u32>,
    pub max_pps: Option<u32>,
    pub session: SessionName,
}

/// Characters a shell or iptables' own parser would read as syntax. `!` and `"` have
/// their one allowed place each, checked token by token.
const META: &str = "\t\n\r;&|$`\\<>(){}[]*?'#~=,@^";

/// A cursor over the space-separated tokens of a line. An empty token (two spaces, a
/// leading or trailing space) matches nothing, so it fails the line.
struct Tokens<'a> {
    tokens: Vec<&'a str>,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn next(&mut self, what: &str) -> Result<&'a str, String> {
        let token = self.tokens.get(self.at).ok_or_else(|| format!("line ends where {what} should be"))?;
        self.at += 1;
        Ok(token)
    }

    /// Consumes `words` if they come next.
    fn take(&mut self, words: &[&str]) -> bool {
        let matches = self.tokens.get(self.at..self.at + words.len()) == Some(words);
        if matches {
            self.at += words.len();
        }
        matches
    }

    fn expect(&mut self, words: &[&str]) -> Result<(), String> {
        if self.take(words) {
            Ok(())
        } else {
            Err(format!("expected {:?} at token {}, found {:?}", words.join(" "), self.at, &self.tokens[self.at..]))
        }
    }
}

/// A number as Rust prints it: no sign, no leading zero, no padding.
fn number(token: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, String> {
    let n: u32 = token.parse().map_err(|_| format!("{token:?} is not a number"))?;
    if n.to_string() != token || !range.contains(&n) {
        return Err(format!("{token:?} is not a canonical number in {range:?}"));
    }
    Ok(n)
}

fn address(token: &str, family: Family) -> Result<IpAddr, String> {
    let ip: IpAddr = token.parse().map_err(|_| format!("{token:?} is not an address"))?;
    if ip.to_string() != token || Family::of(ip) != family {
        return Err(format!("{token:?} is not a canonical {} address", family.label()));
    }
    Ok(ip)
}

/// Checks one line of `render_rule` output for `family` and reads it back.
pub fn check_rule_line(line: &str, family: Family) -> Result<RuleLine, String> {
    if let Some(c) = line.chars().find(|c| !(' '..='~').contains(c) || META.contains(*c)) {
        return Err(format!("{c:?} in {line:?}"));
    }
    let mut t = Tokens { tokens: line.split(' ').collect(), at: 0 };
    if let Some(bad) = t.tokens.iter().find(|tok| (tok.contains('!') && **tok != "!") || tok.contains('"')) {
        // The comment is the one token with quotes; it is checked where it belongs.
        if !bad.starts_with("\"teefleet:") {
            return Err(format!("{bad:?} in {line:?}"));
        }
    }
    t.expect(&["-A"])?;
    let ingress = match t.next("a chain")? {
        "TEEFLEET-PRE" => true,
        "TEEFLEET-POST" => false,
        other => return Err(format!("{other:?} is not one of our chains")),
    };
    let peer = if t.take(&[if ingress { "-s" } else { "-d" }]) {
        let token = t.next("a peer network")?;
        let cidr: Cidr = token.parse().map_err(|e| format!("{token:?}: {e}"))?;
        if cidr.to_string() != token || Family::of(cidr.addr()) != family || cidr.prefix() == 0 {
            return Err(format!("{token:?} is not a canonical non-empty {} network", family.label()));
        }
        Some(cidr)
    } else {
        None
    };
    let skips_tunnels = !ingress && t.take(&["!", "-o", "tfvx+"]);
    let protocol = if t.take(&["-p"]) {
        Some(match (t.next("a protocol")?, family) {
            ("tcp", _) => "tcp",
            ("udp", _) => "udp",
            ("icmp", Family::V4) => "icmp",
            ("ipv6-icmp", Family::V6) => "ipv6-icmp",
            (other, _) => return Err(format!("{other:?} is not a protocol for {}", family.label())),
        })
    } else {
        None
    };
    let port_flag = if ingress { "--dport" } else { "--sport" };
    let ports = match protocol {
        Some(p @ ("tcp" | "udp")) if t.take(&["-m", p, port_flag]) => {
            let token = t.next("ports")?;
            Some(match token.split_once(':') {
                Some((a, b)) => {
                    let (a, b) = (number(a, 1..=65535)?, number(b, 1..=65535)?);
                    if a >= b {
                        return Err(format!("{token:?} is not an ascending range"));
                    }
                    (a as u16, b as u16)
                }
                None => {
                    let p = number(token, 1..=65535)? as u16;
                    (p, p)
                }
            })
        }
        _ => None,
    };
    if ingress {
        t.expect(&["-m", "pkttype", "--pkt-type", "unicast"])?;
    }
    let range = |token: &str| -> Result<IpAddr, String> {
        let (a, b) = token.split_once('-').ok_or_else(|| format!("{token:?} is not a range"))?;
        let (a, b) = (address(a, family)?, address(b, family)?);
        if a != b {
            return Err(format!("{token:?} is not a single address"));
        }
        Ok(a)
    };
    let excluded = if t.take(&["-m", "iprange", "!", "--src-range"]) {
        let excluded = range(t.next("the source range")?)?;
        t.expect(&["!", "--dst-range"])?;
        if range(t.next("the destination range")?)? != excluded {
            return Err("the exclusions name different addresses".to_owned());
        }
        Some(excluded)
    } else {
        None
    };
    let sample_ppm = if t.take(&["-m", "statistic", "--mode", "random", "--probability"]) {
        let token = t.next("a probability")?;
        let digits = token.strip_prefix("0.").filter(|d| d.len() == 6 && d.bytes().all(|c| c.is_ascii_digit()));
        let ppm = digits.and_then(|d| d.parse::<u32>().ok()).filter(|&ppm| ppm > 0);
        Some(ppm.ok_or_else(|| format!("{token:?} is not 0.NNNNNN above zero"))?)
    } else {
        None
    };
    let max_pps = if t.take(&["-m", "hashlimit", "--hashlimit-upto"]) {
        let token = t.next("a rate")?;
        let pps = number(token.strip_suffix("/sec").ok_or_else(|| format!("{token:?} is not N/sec"))?, 1..=1_000_000)?;
        t.expect(&["--hashlimit-burst", &pps.to_string(), "--hashlimit-name"])?;
        let name = t.next("a hashlimit name")?;
        let hex = name
            .strip_prefix("tf")
            .filter(|h| h.len() == 13 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        if hex.is_none() {
            return Err(format!("{name:?} is not tf and 13 lowercase hex digits"));
        }
        Some(pps)
    } else {
        None
    };
    t.expect(&["-m", "comment", "--comment"])?;
    let comment = t.next("the comment")?;
    let name = comment
        .strip_prefix("\"teefleet:")
        .and_then(|c| c.strip_suffix('"'))
        .ok_or_else(|| format!("{comment:?} is not \"teefleet:NAME\""))?;
    let session: SessionName = name.parse().map_err(|e| format!("{name:?}: {e}"))?;
    t.expect(&["-j", "TEE", "--gateway"])?;
    let gateway = address(t.next("the gateway")?, family)?;
    let oif = if t.take(&["--oif"]) {
        let device = t.next("a device")?;
        let digits = device.strip_prefix("tfvx").filter(|d| !d.is_empty() && !d.starts_with('0'));
        if digits.is_none_or(|d| !d.bytes().all(|c| c.is_ascii_digit()) || d.len() > 8) {
            return Err(format!("{device:?} is not tfvx and a VNI"));
        }
        Some(device.to_owned())
    } else {
        // Raw TEE sends to the collector, whose own traffic is never mirrored.
        if excluded != Some(gateway) {
            return Err(format!("raw TEE to {gateway} without excluding it"));
        }
        None
    };
    if t.at != t.tokens.len() {
        return Err(format!("trailing tokens {:?}", &t.tokens[t.at..]));
    }
    if skips_tunnels && oif.is_none() {
        return Err("a raw rule skips tunnels".to_owned());
    }
    Ok(RuleLine { ingress, peer, protocol, ports, excluded, gateway, oif, skips_tunnels, sample_ppm, max_pps, session })
}
