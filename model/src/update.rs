//! A change to a live session: its throttle, its filter, its sources and tags, its
//! expiry. Applied to the session as stored, so two updates made at once each change only
//! what they name.

use crate::{
    Cidr, Direction, Filter, HostId, MaxLoss, MaxPps, PortRange, Protocol, Sample, SessionName, SessionSpec,
    TagSelector, Throttle, TtlChange, ValidationError,
};

/// What an update does to the filter: each `Some` replaces the session's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterChange {
    pub direction: Option<Direction>,
    pub protocol: Option<Protocol>,
    /// `Some(None)`: any port.
    pub ports: Option<Option<PortRange>>,
    /// `Some` of an empty list: any peer.
    pub cidrs: Option<Vec<Cidr>>,
    /// `Some(None)`: every matching packet.
    pub sample: Option<Option<Sample>>,
    /// `Some(None)`: no cap.
    pub max_pps: Option<Option<MaxPps>>,
}

impl FilterChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The filter with these changes; a port with a protocol that has none is refused as
    /// at creation.
    pub fn apply(&self, old: &Filter) -> Result<Filter, ValidationError> {
        let throttle = old.throttle();
        let filter = Filter::new(
            self.direction.unwrap_or(old.direction()),
            self.protocol.unwrap_or(old.protocol()),
            self.ports.unwrap_or(old.ports()),
            self.cidrs.clone().unwrap_or_else(|| old.cidrs().to_vec()),
        )?;
        Ok(filter.with_throttle(Throttle::new(
            self.sample.unwrap_or(throttle.sample),
            self.max_pps.unwrap_or(throttle.max_pps),
        )))
    }
}

/// A change to one session. Sources and tags are removed before they are added, so a tag
/// key can move to another value in one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUpdate {
    pub name: SessionName,
    pub filter: FilterChange,
    pub add_sources: Vec<HostId>,
    pub remove_sources: Vec<HostId>,
    pub add_tags: Vec<TagSelector>,
    pub remove_tags: Vec<TagSelector>,
    pub ttl: TtlChange,
    /// A new limit of lost clones.
    pub max_loss: Option<MaxLoss>,
}

impl SessionUpdate {
    /// An update of `name` that changes nothing yet.
    pub fn new(name: SessionName) -> Self {
        Self {
            name,
            filter: FilterChange::default(),
            add_sources: Vec::new(),
            remove_sources: Vec::new(),
            add_tags: Vec::new(),
            remove_tags: Vec::new(),
            ttl: TtlChange::Keep,
            max_loss: None,
        }
    }

    /// The update names no change at all.
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
            && !self.changes_sources()
            && !self.changes_tags()
            && self.ttl == TtlChange::Keep
            && self.max_loss.is_none()
    }

    pub fn changes_sources(&self) -> bool {
        !self.add_sources.is_empty() || !self.remove_sources.is_empty()
    }

    pub fn changes_tags(&self) -> bool {
        !self.add_tags.is_empty() || !self.remove_tags.is_empty()
    }

    /// The session as it would be after the update. Refused: removing a source or tag the
    /// session does not have, adding and removing the same one, and leaving the session
    /// with neither a source nor a tag.
    pub fn apply(&self, spec: &SessionSpec) -> Result<SessionSpec, ValidationError> {
        let name = spec.name();
        let sources = changed_list("sources", spec.sources(), &self.add_sources, &self.remove_sources, || {
            format!(
                "is not a source session {name} names (one its tags match leaves when it loses the tag, or with \
                 --remove-source-tag)"
            )
        })?;
        let tags = changed_list("source_tags", spec.selectors(), &self.add_tags, &self.remove_tags, || {
            format!("is not a tag of session {name}")
        })?;
        if sources.is_empty() && tags.is_empty() {
            let field = if self.remove_tags.is_empty() { "remove_sources" } else { "remove_source_tags" };
            return Err(ValidationError::new(
                field,
                format!(
                    "session {name} would be left without a source: it would name no host and select none by \
                     tag. Add one in the same update, or delete the session (fleetctl session delete {name})"
                ),
            ));
        }
        let filter = self.filter.apply(spec.filter())?;
        let max_loss = self.max_loss.unwrap_or(spec.max_loss());
        Ok(spec.clone().with_sources(sources, tags)?.with_filter(filter).with_max_loss(max_loss))
    }
}

/// `old` less `remove`, plus `add`; every removed item must be in `old`, and none may be
/// both added and removed. Errors name the item as `remove_<what>[i]` or `add_<what>[i]`.
fn changed_list<T: Clone + PartialEq + std::fmt::Display>(
    what: &str,
    old: &[T],
    add: &[T],
    remove: &[T],
    not_there: impl Fn() -> String,
) -> Result<Vec<T>, ValidationError> {
    if let Some((i, item)) = remove.iter().enumerate().find(|(_, r)| !old.contains(r)) {
        return Err(ValidationError::new(format!("remove_{what}[{i}]"), format!("{item} {}", not_there())));
    }
    if let Some((i, item)) = add.iter().enumerate().find(|(_, a)| remove.contains(a)) {
        return Err(ValidationError::new(
            format!("add_{what}[{i}]"),
            format!("{item} is both added and removed; say one or the other"),
        ));
    }
    Ok(old.iter().filter(|o| !remove.contains(o)).chain(add).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CollectorId, Ttl};

    fn host(id: &str) -> HostId {
        id.parse().expect("host")
    }

    fn tag(text: &str) -> TagSelector {
        text.parse().expect("tag")
    }

    fn spec(sources: &[&str], tags: &[&str]) -> SessionSpec {
        let collector: CollectorId = "i-0c0000000000000c1".parse().expect("collector");
        SessionSpec::selecting(
            "web".parse().expect("name"),
            sources.iter().map(|s| host(s)).collect(),
            tags.iter().map(|t| tag(t)).collect(),
            collector,
            Filter::default(),
        )
        .expect("spec")
        .with_allow_routed(true)
    }

    fn update() -> SessionUpdate {
        SessionUpdate::new("web".parse().expect("name"))
    }

    #[test]
    fn sources_and_tags_are_added_and_removed() {
        let old = spec(&["h1", "h2"], &["role=web"]);
        let change = SessionUpdate {
            add_sources: vec![host("h3"), host("h1")],
            remove_sources: vec![host("h2")],
            add_tags: vec![tag("role=db")],
            remove_tags: vec![tag("role=web")],
            ..update()
        };
        let new = change.apply(&old).expect("applies");
        assert_eq!(new.sources(), [host("h1"), host("h3")], "sorted, a source added again is one source");
        assert_eq!(new.selectors(), [tag("role=db")], "a key moves to another value in one update");
        assert!(new.allow_routed(), "what the update does not name stays");
        assert!(!change.is_empty() && change.changes_sources() && change.changes_tags());
        assert!(update().is_empty());
        assert_eq!(update().apply(&old), Ok(old));
    }

    #[test]
    fn the_filter_changes_only_where_asked() {
        let old = spec(&["h1"], &[]).with_filter(
            Filter::new(Direction::Ingress, Protocol::Tcp, Some(PortRange::new(80, 80).expect("port")), vec![])
                .expect("filter")
                .with_throttle(Throttle::new(None, Some(MaxPps::new(100).expect("pps")))),
        );
        let sample = Sample::from_fraction(0.5).expect("sample");
        let change = SessionUpdate {
            filter: FilterChange { sample: Some(Some(sample)), max_pps: Some(None), ..FilterChange::default() },
            ..update()
        };
        let new = change.apply(&old).expect("applies");
        assert_eq!((new.filter().direction(), new.filter().ports()), (Direction::Ingress, old.filter().ports()));
        assert_eq!(new.filter().throttle(), Throttle::new(Some(sample), None));

        let icmp = FilterChange { protocol: Some(Protocol::Icmp), ..FilterChange::default() };
        let err = SessionUpdate { filter: icmp.clone(), ..update() }.apply(&old).unwrap_err();
        assert_eq!(err.to_string(), "port: a port needs protocol tcp or udp, not icmp");
        let any_port = FilterChange { ports: Some(None), ..icmp };
        let new = SessionUpdate { filter: any_port, ..update() }.apply(&old).expect("icmp on any port");
        assert_eq!((new.filter().protocol(), new.filter().ports()), (Protocol::Icmp, None));
    }

    #[test]
    fn refusals_name_the_entry() {
        let old = spec(&["h1"], &["role=web"]);
        let missing = SessionUpdate { remove_sources: vec![host("h1"), host("h9")], ..update() };
        let err = missing.apply(&old).unwrap_err();
        assert_eq!(err.field, "remove_sources[1]");
        assert!(err.reason.starts_with("h9 is not a source session web names"), "{err}");
        let err = SessionUpdate { remove_tags: vec![tag("env=prod")], ..update() }.apply(&old).unwrap_err();
        assert_eq!(err.to_string(), "remove_source_tags[0]: env=prod is not a tag of session web");
        let both = SessionUpdate { add_sources: vec![host("h2")], remove_sources: vec![host("h2")], ..update() };
        assert_eq!(both.apply(&spec(&["h1", "h2"], &[])).unwrap_err().field, "add_sources[0]");
        let collector = SessionUpdate { add_sources: vec![host("i-0c0000000000000c1")], ..update() };
        assert_eq!(collector.apply(&old).unwrap_err().field, "sources");
    }

    #[test]
    fn the_last_source_stays_unless_tags_remain() {
        let tagged = spec(&["h1"], &["role=web"]);
        let last = SessionUpdate { remove_sources: vec![host("h1")], ..update() };
        assert!(last.apply(&tagged).expect("tags remain").sources().is_empty());
        let err = last.apply(&spec(&["h1"], &[])).unwrap_err();
        assert_eq!(err.field, "remove_sources");
        assert!(err.reason.starts_with("session web would be left without a source"), "{err}");
        let no_tags = SessionUpdate { remove_tags: vec![tag("role=web")], ..update() };
        assert_eq!(no_tags.apply(&spec(&[], &["role=web"])).unwrap_err().field, "remove_source_tags");
        let replaced = SessionUpdate { add_sources: vec![host("h2")], ..last };
        assert_eq!(replaced.apply(&spec(&["h1"], &[])).expect("replaced").sources(), [host("h2")]);
        let ttl = SessionUpdate { ttl: TtlChange::Set(Ttl::from_secs(60).expect("ttl")), ..update() };
        assert!(!ttl.is_empty());
    }
}
