use serde::{Deserialize, Serialize};

use crate::{CollectorId, Filter, HostId, MaxLoss, SessionName, TagSelector, ValidationError, Vni, limits};

/// A mirroring session as an operator declares it: copy the traffic of its sources that
/// matches `filter` to `collector`. Sources are named (`sources`), chosen by EC2 tag
/// (`selectors`, which the controller resolves and keeps current), or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    name: SessionName,
    sources: Vec<HostId>,
    #[serde(default)]
    selectors: Vec<TagSelector>,
    collector: CollectorId,
    filter: Filter,
    #[serde(default)]
    allow_routed: bool,
    /// The VNI the operator asked for; `None` lets the controller allocate one.
    #[serde(default)]
    vni: Option<Vni>,
    /// For raw delivery: the sources' Source/Dest Check goes off while the session lives,
    /// so that clones of inbound packets (which carry the peer's address) leave them.
    #[serde(default)]
    disable_source_check: bool,
    /// More loss than this over the delivery window degrades the session.
    #[serde(default)]
    max_loss: MaxLoss,
}

impl SessionSpec {
    /// A session of named sources only.
    pub fn new(
        name: SessionName,
        sources: Vec<HostId>,
        collector: CollectorId,
        filter: Filter,
    ) -> Result<Self, ValidationError> {
        Self::selecting(name, sources, Vec::new(), collector, filter)
    }

    /// Sources and selectors are sorted and de-duplicated. There must be a source or a
    /// selector; the collector cannot be a named source (it would mirror its own traffic
    /// to itself), and no tag key may be selected with two values, since an instance has
    /// one value per key and no instance could match.
    pub fn selecting(
        name: SessionName,
        mut sources: Vec<HostId>,
        mut selectors: Vec<TagSelector>,
        collector: CollectorId,
        filter: Filter,
    ) -> Result<Self, ValidationError> {
        if sources.is_empty() && selectors.is_empty() {
            return Err(ValidationError::new(
                "sources",
                "a session needs at least one source: name a host, or select instances by tag",
            ));
        }
        if sources.len() > limits::MAX_SOURCES {
            return Err(ValidationError::new(
                "sources",
                format!("at most {} sources per session", limits::MAX_SOURCES),
            ));
        }
        if selectors.len() > limits::MAX_SELECTORS {
            return Err(ValidationError::new(
                "source_tags",
                format!("at most {} tags per session; an instance must carry all of them", limits::MAX_SELECTORS),
            ));
        }
        sources.sort();
        sources.dedup();
        selectors.sort();
        selectors.dedup();
        if sources.iter().any(|s| s.as_str() == collector.as_str()) {
            return Err(ValidationError::new(
                "sources",
                format!("{collector} is this session's collector and cannot also be one of its sources"),
            ));
        }
        if let Some(pair) = selectors.windows(2).find(|w| w[0].key() == w[1].key()) {
            return Err(ValidationError::new(
                "source_tags",
                format!(
                    "tag key {:?} is given twice ({} and {}); an instance has one value per key, so none would match",
                    pair[0].key(),
                    pair[0],
                    pair[1]
                ),
            ));
        }
        Ok(Self {
            name,
            sources,
            selectors,
            collector,
            filter,
            allow_routed: false,
            vni: None,
            disable_source_check: false,
            max_loss: MaxLoss::DEFAULT,
        })
    }

    /// The same session, accepting (or not) sources in another subnet than the collector.
    /// Kept with the session because its selectors are re-resolved later, when the check
    /// applies again to instances that appear.
    pub fn with_allow_routed(self, allow_routed: bool) -> Self {
        Self { allow_routed, ..self }
    }

    /// The same session over other sources and tags, checked as at creation; everything
    /// else stays.
    pub fn with_sources(self, sources: Vec<HostId>, selectors: Vec<TagSelector>) -> Result<Self, ValidationError> {
        let checked =
            Self::selecting(self.name.clone(), sources, selectors, self.collector.clone(), Filter::default())?;
        Ok(Self { sources: checked.sources, selectors: checked.selectors, ..self })
    }

    /// The same session mirroring other traffic.
    pub fn with_filter(self, filter: Filter) -> Self {
        Self { filter, ..self }
    }

    /// The same session with the VXLAN VNI the operator chose.
    pub fn with_vni(self, vni: Option<Vni>) -> Self {
        Self { vni, ..self }
    }

    pub fn vni(&self) -> Option<Vni> {
        self.vni
    }

    /// The same session, turning its sources' Source/Dest Check off (or not).
    pub fn with_disable_source_check(self, disable_source_check: bool) -> Self {
        Self { disable_source_check, ..self }
    }

    pub fn disable_source_check(&self) -> bool {
        self.disable_source_check
    }

    /// The same session, degraded above another share of lost clones.
    pub fn with_max_loss(self, max_loss: MaxLoss) -> Self {
        Self { max_loss, ..self }
    }

    pub fn max_loss(&self) -> MaxLoss {
        self.max_loss
    }

    pub fn name(&self) -> &SessionName {
        &self.name
    }

    /// The named sources; the ones its selectors match are resolved by the controller.
    pub fn sources(&self) -> &[HostId] {
        &self.sources
    }

    pub fn selectors(&self) -> &[TagSelector] {
        &self.selectors
    }

    pub fn collector(&self) -> &CollectorId {
        &self.collector
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    pub fn allow_routed(&self) -> bool {
        self.allow_routed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> SessionName {
        "s".parse().expect("name")
    }

    fn collector() -> CollectorId {
        "i-0123456789abcdef0".parse().expect("id")
    }

    fn tags(list: &[&str]) -> Vec<TagSelector> {
        list.iter().map(|t| t.parse().expect("tag")).collect()
    }

    #[test]
    fn collector_cannot_be_a_source() {
        let c = collector();
        let err = SessionSpec::new(name(), vec![c.as_str().parse().expect("host")], c, Filter::default()).unwrap_err();
        assert_eq!(err.field, "sources");
    }

    #[test]
    fn sources_required_and_deduplicated() {
        assert!(SessionSpec::new(name(), vec![], collector(), Filter::default()).is_err());
        let h: HostId = "h1".parse().expect("host");
        let s = SessionSpec::new(name(), vec![h.clone(), h], collector(), Filter::default()).expect("valid");
        assert_eq!(s.sources().len(), 1);
        assert!(s.selectors().is_empty() && !s.allow_routed());
    }

    #[test]
    fn tags_alone_are_enough() {
        let selectors = tags(&["role=web", "env=prod", "role=web"]);
        let s = SessionSpec::selecting(name(), vec![], selectors, collector(), Filter::default()).expect("valid");
        let shown: Vec<String> = s.selectors().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["env=prod", "role=web"], "sorted, duplicates dropped");
        assert!(s.sources().is_empty());
        assert!(s.with_allow_routed(true).allow_routed());
    }

    #[test]
    fn neither_sources_nor_tags_is_refused() {
        let err = SessionSpec::selecting(name(), vec![], vec![], collector(), Filter::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sources: a session needs at least one source: name a host, or select instances by tag"
        );
    }

    #[test]
    fn selectors_are_bounded_and_one_value_per_key() {
        let many: Vec<String> = (0..=limits::MAX_SELECTORS).map(|i| format!("k{i}=v")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = SessionSpec::selecting(name(), vec![], tags(&many), collector(), Filter::default()).unwrap_err();
        assert_eq!(err.field, "source_tags");
        assert!(SessionSpec::selecting(name(), vec![], tags(&many[1..]), collector(), Filter::default()).is_ok());
        let err =
            SessionSpec::selecting(name(), vec![], tags(&["role=web", "role=db"]), collector(), Filter::default())
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "source_tags: tag key \"role\" is given twice (role=db and role=web); an instance has one value per \
             key, so none would match"
        );
    }
}
