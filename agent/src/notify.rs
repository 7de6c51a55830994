//! What the agent tells systemd (`Type=notify`): `READY=1` once, when it has started, and
//! `STOPPING=1` on a signal. Outside systemd (`NOTIFY_SOCKET` unset) nothing is sent.
//!
//! "Started" means the kernel holds what the agent will keep there: the saved rule set, or
//! on a first boot the controller's first push (or the controller's word that there is
//! nothing to push). A controller that cannot be reached must not fail the unit, since the
//! agent keeps retrying and mirroring never waits for it, so the agent also says it has
//! started [`READY_WAIT`] after start; `/readyz` tells the rest.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sd_notify::NotifyState;
use tracing::{info, warn};

/// The longest the agent stays "activating" for systemd; the unit's `TimeoutStartSec`
/// (90 s) leaves room for what comes before this clock starts.
pub const READY_WAIT: Duration = Duration::from_secs(30);

/// After the stream opens, how long a silent controller means "nothing to push": it sends
/// the current set at once when the agent does not have it.
pub const SETTLE: Duration = Duration::from_secs(2);

/// `READY=1`, sent at most once.
#[derive(Debug, Default)]
pub struct Started(AtomicBool);

impl Started {
    /// Tells systemd the agent has started, `why` shown in `systemctl status`; only the
    /// first call sends anything.
    pub fn started(&self, why: &str) {
        if self.0.swap(true, Ordering::SeqCst) {
            return;
        }
        info!(why, "started");
        send(&[NotifyState::Ready, NotifyState::Status(why)]);
    }

    pub fn is_started(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `STOPPING=1`: the agent got a signal and is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping; the applied rules stay in place")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    }
}
