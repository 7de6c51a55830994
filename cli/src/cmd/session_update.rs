//! `fleetctl session update NAME`: a session's throttle, filter, sources, tags or lifetime
//! changed in place, as one change.

use std::io::Write;

use clap::Args;
use serde::Serialize;
use teefleet_model::{Direction, MaxLoss, MaxPps, Protocol, Sample, Ttl, ValidationError};
use teefleet_proto::v1;
use teefleet_proto::v1::session_service_client::SessionServiceClient;

use super::session::{
    SessionOut, parse_max_loss, parse_max_pps, parse_port, parse_sample, parse_source_tag, parse_ttl,
};
use crate::error::CliError;
use crate::render::{Format, Render, emit};
use crate::transport::Transport;

/// `--cidr any`: every peer.
const ANY: &str = "any";

/// A flag's value, or `None` for the word (`any`, `all`, `off`) that takes the session
/// back to the default. A newtype: clap reads `Option<Option<T>>` as a flag whose value
/// may be left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrDefault<T>(pub Option<T>);

fn or_default<T>(text: &str, word: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<OrDefault<T>, String> {
    if text == word { Ok(OrDefault(None)) } else { parse(text).map(|v| OrDefault(Some(v))) }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args([
    "direction", "protocol", "port", "cidrs", "sample", "max_pps", "add_sources", "remove_sources",
    "add_source_tags", "remove_source_tags", "ttl", "max_loss",
])))]
pub struct UpdateArgs {
    /// The session's name.
    pub name: String,
    /// Mirror this traffic of the sources instead.
    #[arg(long, value_enum)]
    pub direction: Option<Direction>,
    /// Mirror this protocol instead.
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// The host's service port, `N` or `N-M`, or `any`.
    #[arg(long, value_name = "N|N-M|any", value_parser = parse_port_or_any)]
    pub port: Option<OrDefault<v1::PortRange>>,
    /// The peer networks to mirror, replacing the session's (repeatable), or `any`.
    #[arg(long = "cidr", value_name = "CIDR|any")]
    pub cidrs: Vec<String>,
    /// Clone only this fraction of the matching packets (0.01 or 1%), or `all`.
    #[arg(long, value_name = "F|all", value_parser = parse_sample_or_all)]
    pub sample: Option<OrDefault<Sample>>,
    /// Clone at most this many packets per second per host and family, or `off`.
    #[arg(long, value_name = "N|off", value_parser = parse_max_pps_or_off)]
    pub max_pps: Option<OrDefault<MaxPps>>,
    /// Add a named source (repeatable).
    #[arg(long = "add-source", value_name = "INSTANCE_ID")]
    pub add_sources: Vec<String>,
    /// Remove a named source (repeatable). The session must keep a source or a tag.
    #[arg(long = "remove-source", value_name = "INSTANCE_ID")]
    pub remove_sources: Vec<String>,
    /// Add a source tag (repeatable); removals come first, so a key can change its value.
    #[arg(long = "add-source-tag", value_name = "KEY=VALUE", value_parser = parse_source_tag)]
    pub add_source_tags: Vec<String>,
    /// Remove a source tag (repeatable).
    #[arg(long = "remove-source-tag", value_name = "KEY=VALUE", value_parser = parse_source_tag)]
    pub remove_source_tags: Vec<String>,
    /// The session deletes itself this long from now (1m to 30d), or `off`: it lives until
    /// deleted.
    #[arg(long, value_name = "DURATION|off", value_parser = parse_ttl_or_off)]
    pub ttl: Option<OrDefault<Ttl>>,
    /// Degrade the session above this share of lost clones instead: 1% or 0.01.
    #[arg(long, value_name = "SHARE", value_parser = parse_max_loss)]
    pub max_loss: Option<MaxLoss>,
}

/// `any`, or a port as `session create` takes it.
pub fn parse_port_or_any(text: &str) -> Result<OrDefault<v1::PortRange>, String> {
    or_default(text, ANY, parse_port)
}

/// `all`, or a sample as `session create` takes it.
pub fn parse_sample_or_all(text: &str) -> Result<OrDefault<Sample>, String> {
    or_default(text, "all", parse_sample)
}

/// `off`, or a cap as `session create` takes it.
pub fn parse_max_pps_or_off(text: &str) -> Result<OrDefault<MaxPps>, String> {
    or_default(text, "off", parse_max_pps)
}

/// `off`, or a lifetime as `session create --ttl` takes it.
pub fn parse_ttl_or_off(text: &str) -> Result<OrDefault<Ttl>, String> {
    or_default(text, "off", parse_ttl)
}

impl UpdateArgs {
    /// The request; flags not given stay unset, which keeps the session's value.
    pub fn to_request(&self) -> v1::UpdateSessionRequest {
        let any_peer = self.cidrs.iter().any(|c| c == ANY);
        v1::UpdateSessionRequest {
            name: self.name.clone(),
            direction: self.direction.map(|d| v1::Direction::from(d).into()),
            protocol: self.protocol.map(|p| v1::Protocol::from(p).into()),
            port: self.port.map(|OrDefault(ports)| v1::PortsUpdate { ports }),
            cidrs: (!self.cidrs.is_empty())
                .then(|| v1::CidrsUpdate { cidrs: if any_peer { Vec::new() } else { self.cidrs.clone() } }),
            sample: self.sample.map(|OrDefault(s)| s.map_or(0.0, Sample::fraction)),
            max_pps: self.max_pps.map(|OrDefault(m)| m.map_or(0, MaxPps::get)),
            add_sources: self.add_sources.clone(),
            remove_sources: self.remove_sources.clone(),
            add_source_tags: self.add_source_tags.clone(),
            remove_source_tags: self.remove_source_tags.clone(),
            ttl_seconds: self.ttl.map(|OrDefault(t)| t.map_or(0, Ttl::secs)),
            max_loss: self.max_loss.map(MaxLoss::get),
        }
    }

    /// What the controller would refuse, and `--cidr any` beside a network, which would
    /// say two things at once.
    pub fn problems(&self) -> Vec<ValidationError> {
        let mut problems = teefleet_proto::update_session_problems(&self.to_request());
        if self.cidrs.len() > 1 && self.cidrs.iter().any(|c| c == ANY) {
            problems.push(ValidationError::new("cidr", "`any` replaces every peer network; give it alone"));
        }
        problems
    }
}

pub async fn run(
    client: &mut SessionServiceClient<Transport>,
    args: &UpdateArgs,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let reply = client.update_session(args.to_request()).await?.into_inner();
    Ok(emit(out, format, &UpdatedOut::from(&reply))?)
}

/// The answer to `session update`: whether anything changed, and the session now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdatedOut {
    /// False when the session already was what the update asked for: nothing was written.
    pub changed: bool,
    /// The hosts that got a new rule set.
    pub hosts_changed: u32,
    pub session: Option<SessionOut>,
}

impl From<&v1::UpdateSessionResponse> for UpdatedOut {
    fn from(r: &v1::UpdateSessionResponse) -> Self {
        UpdatedOut { changed: r.changed, hosts_changed: r.hosts_changed, session: r.session.as_ref().map(Into::into) }
    }
}

impl Render for UpdatedOut {
    /// A line saying what changed, then the session as `session get` shows it.
    fn text(&self) -> String {
        let name = self.session.as_ref().map_or("", |s| s.name.as_str());
        let name = teefleet_model::text::escaped(name);
        let mut out = match (self.changed, self.hosts_changed) {
            (false, _) => format!("session {name} already is so: nothing changed\n"),
            (true, 1) => format!("session {name} updated: 1 host gets a new rule set\n"),
            (true, n) => format!("session {name} updated: {n} hosts get a new rule set\n"),
        };
        if let Some(session) = &self.session {
            out.push('\n');
            out.push_str(&session.text());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn parse(args: &[&str]) -> Result<UpdateArgs, clap::Error> {
        Cli::try_parse_from([&["update", "web"], args].concat()).map(|c| c.args)
    }

    #[test]
    fn only_the_flags_given_are_sent() {
        let req = parse(&["--max-pps", "100"]).expect("parses").to_request();
        assert_eq!(req, v1::UpdateSessionRequest { name: "web".into(), max_pps: Some(100), ..Default::default() });
        let req = parse(&["--port", "any", "--cidr", "any", "--sample", "all", "--max-pps", "off", "--ttl", "off"])
            .expect("parses")
            .to_request();
        assert_eq!(req.port, Some(v1::PortsUpdate { ports: None }));
        assert_eq!(req.cidrs, Some(v1::CidrsUpdate { cidrs: vec![] }));
        assert_eq!((req.sample, req.max_pps, req.ttl_seconds), (Some(0.0), Some(0), Some(0)));
        let req = parse(&["--ttl", "2h", "--add-source", "i-a", "--remove-source-tag", "role=web", "--port", "80-90"])
            .expect("parses")
            .to_request();
        assert_eq!(
            (req.ttl_seconds, req.add_sources, req.remove_source_tags),
            (Some(7_200), vec!["i-a".to_owned()], vec!["role=web".to_owned()])
        );
        assert_eq!(req.port, Some(v1::PortsUpdate { ports: Some(v1::PortRange { first: 80, last: 90 }) }));
    }

    #[test]
    fn an_update_names_a_change_and_valid_values() {
        assert!(parse(&[]).is_err(), "nothing to change");
        for bad in
            [&["--ttl", "30s"][..], &["--ttl", "2"], &["--sample", "2"], &["--max-pps", "none"], &["--port", "x"]]
        {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let args = parse(&["--cidr", "any", "--cidr", "10.0.0.0/8", "--add-source", "bad host!"]).expect("parses");
        let fields: Vec<_> = args.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["add_sources[0]", "cidr"]);
    }
}
