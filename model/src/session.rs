use serde::{Deserialize, Serialize};

use crate::{Filter, HostId, InstanceId, SessionName, ValidationError, limits};

/// A mirroring session as an operator declares it: copy the traffic of `sources` that
/// matches `filter` to `collector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    name: SessionName,
    sources: Vec<HostId>,
    collector: InstanceId,
    filter: Filter,
}

impl SessionSpec {
    /// Sources are de-duplicated; there must be at least one, and the collector cannot be
    /// one of them (it would mirror its own traffic to itself).
    pub fn new(
        name: SessionName,
        mut sources: Vec<HostId>,
        collector: InstanceId,
        filter: Filter,
    ) -> Result<Self, ValidationError> {
        if sources.is_empty() {
            return Err(ValidationError::new("sources", "a session needs at least one source"));
        }
        if sources.len() > limits::MAX_SOURCES {
            return Err(ValidationError::new(
                "sources",
                format!("at most {} sources per session", limits::MAX_SOURCES),
            ));
        }
        sources.sort();
        sources.dedup();
        if sources.iter().any(|s| s.as_str() == collector.as_str()) {
            return Err(ValidationError::new(
                "sources",
                format!("{collector} is this session's collector and cannot also be one of its sources"),
            ));
        }
        Ok(Self { name, sources, collector, filter })
    }

    pub fn name(&self) -> &SessionName {
        &self.name
    }

    pub fn sources(&self) -> &[HostId] {
        &self.sources
    }

    pub fn collector(&self) -> &InstanceId {
        &self.collector
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_cannot_be_a_source() {
        let c: InstanceId = "i-0123456789abcdef0".parse().expect("id");
        let err =
            SessionSpec::new("s".parse().expect("name"), vec![c.clone().into()], c, Filter::default()).unwrap_err();
        assert_eq!(err.field, "sources");
    }

    #[test]
    fn sources_required_and_deduplicated() {
        let c: InstanceId = "i-0123456789abcdef0".parse().expect("id");
        assert!(SessionSpec::new("s".parse().expect("name"), vec![], c.clone(), Filter::default()).is_err());
        let h: HostId = "h1".parse().expect("host");
        let s = SessionSpec::new("s".parse().expect("name"), vec![h.clone(), h], c, Filter::default()).expect("valid");
        assert_eq!(s.sources().len(), 1);
    }
}
