//! Re-resolution of session tags: every period, each session with tags gets as its
//! tag-matched sources exactly the running and pending instances that carry all of them,
//! so a session over a tier follows the tier as instances appear and go away. Sources a
//! session names are never added or removed here.
//!
//! `plan` (which matched instances a session may use) is pure and shared with session
//! creation; `resolve_once` is one pass over every session; `run` repeats it. Only one
//! replica should run it, the leader: two would not corrupt anything (each change runs
//! under the compile lock and re-reads what it changes), but would ask EC2 twice as often.

use std::{collections::HashMap, sync::Arc, time::Duration};

use teefleet_model::{CollectorId, HostId, InstanceId, TagSelector, limits::MAX_SESSION_HOSTS};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    cloud::{Cloud, CloudError, TaggedInstance},
    store::{AuditEntry, Store, StoreError},
};

/// The shortest period `run` accepts: a shorter one would only spend EC2's request budget.
const MIN_PERIOD: Duration = Duration::from_secs(1);

/// How many skipped instances a message names; the rest are counted.
const NAMED_IN_MESSAGE: usize = 5;

/// The matched instances a session may use, and those it may not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Sorted by id.
    pub sources: Vec<HostId>,
    /// In another subnet than the collector: TEE sends clones to the collector as an
    /// on-link gateway, so clones from these would be dropped.
    pub off_link: Vec<TaggedInstance>,
    /// Registered collectors (other than the session's own): a collector is never a
    /// source, since it would mirror the clones it receives.
    pub collectors: Vec<InstanceId>,
}

/// Which matched instances a session may use: never its collector (it would mirror its
/// own traffic to itself), and unless the operator allowed routed sources, none that EC2
/// places in another subnet than the collector. A collector or instance without a known
/// subnet is not checked, as with named sources.
pub fn plan(
    found: Vec<TaggedInstance>,
    collector: &CollectorId,
    collector_subnet: &str,
    allow_routed: bool,
    collectors: &[InstanceId],
) -> Resolution {
    let mut out = Resolution::default();
    for instance in found {
        if instance.id.as_str() == collector.as_str() {
            continue;
        }
        if collectors.contains(&instance.id) {
            out.collectors.push(instance.id);
            continue;
        }
        let off_link = !allow_routed
            && !collector_subnet.is_empty()
            && instance.subnet_id.as_deref().is_some_and(|s| s != collector_subnet);
        if off_link {
            out.off_link.push(instance);
        } else {
            out.sources.push(instance.id.into());
        }
    }
    out.sources.sort();
    out.sources.dedup();
    out
}

/// What a session's tag resolution skipped, for a person; `None` if nothing.
pub fn skipped_problem(resolution: &Resolution, tags: &str, collector: &CollectorId, subnet: &str) -> Option<String> {
    let mut parts = Vec::new();
    if !resolution.off_link.is_empty() {
        parts.push(format!(
            "skipped {}: they carry {tags} but are in another subnet than collector {collector} ({subnet}), and raw \
             TEE's clones from there would be dropped. Register the collector with --encap vxlan, or create the \
             session with --allow-routed if the collector is reachable on-link",
            describe_off_link(&resolution.off_link),
        ));
    }
    if !resolution.collectors.is_empty() {
        let mut ids: Vec<String> =
            resolution.collectors.iter().take(NAMED_IN_MESSAGE).map(ToString::to_string).collect();
        if resolution.collectors.len() > NAMED_IN_MESSAGE {
            ids.push(format!("{} more", resolution.collectors.len() - NAMED_IN_MESSAGE));
        }
        parts.push(format!(
            "skipped {}: they carry {tags} but are registered collectors, and a collector is never a source",
            ids.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `i-1 (subnet-2), i-2 (subnet-3) and 4 more`.
pub fn describe_off_link(off_link: &[TaggedInstance]) -> String {
    let mut text = off_link
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|i| format!("{} ({})", i.id, i.subnet_id.as_deref().unwrap_or("no subnet")))
        .collect::<Vec<_>>()
        .join(", ");
    if off_link.len() > NAMED_IN_MESSAGE {
        text.push_str(&format!(" and {} more", off_link.len() - NAMED_IN_MESSAGE));
    }
    text
}

/// `role=web and env=prod`.
pub fn describe_tags(tags: &[TagSelector]) -> String {
    tags.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Sessions with tags.
    pub sessions: usize,
    /// Sessions whose sources were kept because their tags could not be resolved.
    pub kept: usize,
    /// Hosts whose rule set changed; their agents are told through the store.
    pub changed: Vec<HostId>,
}

/// Resolves every session's tags once and applies what changed. An EC2 failure keeps the
/// session's current sources (an unreachable API must not empty a tier) and shows on the
/// session; so does a resolution that matched more instances than a session may cover.
/// Sessions with the same tags share one EC2 query. Fails only if the store does.
pub async fn resolve_once(store: &Store, cloud: &dyn Cloud) -> Result<Pass, StoreError> {
    let sessions = store.tag_sessions().await?;
    let collectors: Vec<InstanceId> =
        store.list_collectors().await?.into_iter().filter_map(|c| c.instance_id.instance()).collect();
    let mut pass = Pass { sessions: sessions.len(), ..Pass::default() };
    let mut answers: HashMap<Vec<TagSelector>, Result<Vec<TaggedInstance>, CloudError>> = HashMap::new();
    for session in &sessions {
        let limit = MAX_SESSION_HOSTS.saturating_sub(session.named);
        let found = match answers.get(&session.selectors) {
            Some(answer) => answer.clone(),
            None => {
                // One more than a session may cover, and one for the collector, tells
                // "too many" from "just enough".
                let answer = cloud.instances_with_tags(&session.selectors, MAX_SESSION_HOSTS + 1).await;
                answers.insert(session.selectors.clone(), answer.clone());
                answer
            }
        };
        let tags = describe_tags(&session.selectors);
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                warn!(session = %session.name, tags = %tags, error = %e, "cannot resolve the session's tags; keeping its sources");
                let problem = format!("not resolved ({e}); the sources found before are kept");
                store.set_resolve_problem(session, Some(&problem)).await?;
                pass.kept += 1;
                continue;
            }
        };
        let resolution = plan(found, &session.collector, &session.collector_subnet, session.allow_routed, &collectors);
        if resolution.sources.len() > limit {
            warn!(
                session = %session.name, tags = %tags, matched = resolution.sources.len(), limit,
                "the session's tags match more instances than a session may cover; keeping its sources"
            );
            let problem = format!(
                "more than {limit} instances carry {tags}, but a session covers at most {MAX_SESSION_HOSTS} hosts, \
                 named ones included; the sources found before are kept. Narrow the tags"
            );
            store.set_resolve_problem(session, Some(&problem)).await?;
            pass.kept += 1;
            continue;
        }
        let problem = skipped_problem(&resolution, &tags, &session.collector, &session.collector_subnet);
        if let Some(problem) = &problem {
            warn!(session = %session.name, %problem, "skipping matched instances");
        }
        let audit = AuditEntry::new("controller", "local", "session.resolve", session.name.as_str());
        match store.set_tag_sources(session, &resolution.sources, problem.as_deref(), &audit).await? {
            Some(change) if !change.is_empty() => {
                info!(
                    session = %session.name, tags = %tags, added = change.added.len(), removed = change.removed.len(),
                    hosts_changed = change.changed.len(), "the session's sources follow its tags"
                );
                debug!(session = %session.name, added = ?change.added, removed = ?change.removed, "tag sources");
                pass.changed.extend(change.changed);
            }
            Some(_) => {}
            None => debug!(session = %session.name, "session deleted while its tags were resolved"),
        }
    }
    Ok(pass)
}

/// Resolves every `period`, the first time at once, until `shutdown`. Shutdown (or a lost
/// lead) interrupts a pass: its open transaction is rolled back, and the next leader's
/// first pass redoes it.
pub async fn run(store: Store, cloud: Arc<dyn Cloud>, period: Duration, shutdown: CancellationToken) {
    crate::leader::every(period.max(MIN_PERIOD), &shutdown, || async {
        match resolve_once(&store, cloud.as_ref()).await {
            Ok(pass) => {
                debug!(sessions = pass.sessions, kept = pass.kept, hosts_changed = pass.changed.len(), "tags resolved")
            }
            Err(e) => warn!(error = %e, "cannot resolve session tags; retrying next period"),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(id: &str, subnet: Option<&str>) -> TaggedInstance {
        TaggedInstance { id: id.parse().expect("id"), subnet_id: subnet.map(str::to_owned) }
    }

    const COLLECTOR: &str = "i-0c0000000000000c1";

    #[test]
    fn plans() {
        let all = || {
            vec![
                found("i-05000000000000002", Some("subnet-1")),
                found(COLLECTOR, Some("subnet-1")),
                found("i-05000000000000001", Some("subnet-2")),
                found("i-05000000000000003", None),
            ]
        };
        let collector: CollectorId = COLLECTOR.parse().expect("id");
        let ids = |r: &Resolution| r.sources.iter().map(ToString::to_string).collect::<Vec<_>>();

        let on_link = plan(all(), &collector, "subnet-1", false, &[]);
        assert_eq!(ids(&on_link), ["i-05000000000000002", "i-05000000000000003"], "never the collector");
        assert_eq!(on_link.off_link, [found("i-05000000000000001", Some("subnet-2"))]);

        let routed = plan(all(), &collector, "subnet-1", true, &[]);
        assert_eq!(ids(&routed).len(), 3);
        assert!(routed.off_link.is_empty());

        let unknown_subnet = plan(all(), &collector, "", false, &[]);
        assert_eq!((ids(&unknown_subnet).len(), unknown_subnet.off_link.len()), (3, 0));

        // Another registered collector is skipped, and said so.
        let other: InstanceId = "i-05000000000000003".parse().expect("id");
        let own: InstanceId = COLLECTOR.parse().expect("id");
        let skipped = plan(all(), &collector, "subnet-1", true, &[own, other.clone()]);
        assert_eq!(ids(&skipped).len(), 2);
        assert_eq!(skipped.collectors, [other]);
        let problem = skipped_problem(&skipped, "role=web", &collector, "subnet-1").expect("a problem");
        assert!(problem.contains("i-05000000000000003") && problem.contains("never a source"), "{problem}");
        assert_eq!(skipped_problem(&routed, "role=web", &collector, "subnet-1"), None);
    }

    #[test]
    fn messages_are_bounded() {
        let many: Vec<_> = (0..8).map(|i| found(&format!("i-0500000000000000{i}"), Some("subnet-2"))).collect();
        let text = describe_off_link(&many);
        assert!(text.starts_with("i-05000000000000000 (subnet-2), i-05000000000000001 (subnet-2)"), "{text}");
        assert!(text.ends_with(" and 3 more"), "{text}");
        let tags = vec!["env=prod".parse().expect("tag"), "role=web".parse().expect("tag")];
        assert_eq!(describe_tags(&tags), "env=prod and role=web");
    }
}
