//! Sessions as the admin API and /metrics show them: each record with its status and its
//! delivery, from one read of the counter samples of every host involved.

use chrono::Utc;
use teefleet_model::HostId;

use crate::{
    delivery::{SessionFacts, Window, session_delivery},
    status::{StatusView, session_status},
    store::{Result, SessionRecord, Store},
};

/// Each record's status, delivery included.
pub async fn views(store: &Store, records: &[SessionRecord], window: Window) -> Result<Vec<StatusView>> {
    let now = Utc::now();
    let mut hosts: Vec<HostId> = records
        .iter()
        .flat_map(|r| r.sources.iter().map(|s| s.host_id.clone()).chain([HostId::from(r.spec.collector())]))
        .collect();
    hosts.sort();
    hosts.dedup();
    let samples = store.counter_samples(&hosts, now - window.lookback()).await?;
    Ok(records
        .iter()
        .map(|r| {
            let sources: Vec<HostId> = r.sources.iter().map(|s| s.host_id.clone()).collect();
            let collector = HostId::from(r.spec.collector());
            let facts = SessionFacts {
                name: r.spec.name(),
                collector: &collector,
                encap: r.collector_encap,
                sources: &sources,
                max_loss: r.spec.max_loss(),
                collector_agent: r.collector_agent,
            };
            session_status(r).with_delivery(session_delivery(&facts, &samples, window, now))
        })
        .collect())
}
