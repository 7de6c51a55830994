//! A small IMDSv2 stand-in in a host's namespace, at `169.254.169.254:80` as on EC2: a token
//! from `PUT /latest/api/token`, then, with it, the instance id, the instance identity
//! document and its RSA-2048 signature (made by [`IidSigner`]). What it serves can be
//! replaced while it runs, so a test can hand an agent another document.
//!
//! The socket is bound inside the namespace by a thread that enters it, then served by the
//! lab's runtime like any other: a socket stays in the namespace it was made in.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::{get, put},
};
use tokio::task::JoinHandle;

use crate::sync::lock;
use crate::{LabError, cmd};

/// Where EC2's instance metadata service answers.
pub const IMDS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The account the lab's documents name: moto's default owner of every instance.
pub const LAB_ACCOUNT: &str = "123456789012";

/// What the stand-in serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub document: String,
    /// Base64 of the PKCS#7 SignedData, broken into lines as IMDS serves it.
    pub signature: String,
}

struct Served {
    identity: Mutex<Identity>,
    token: String,
}

/// A running stand-in; stops on drop.
pub struct Imds {
    served: Arc<Served>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Imds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imds").field("identity", &*lock(&self.served.identity)).finish_non_exhaustive()
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Imds {
    /// Serves `identity` at 169.254.169.254:80 inside `netns` (the address is added to its
    /// loopback device).
    pub async fn start(netns: &str, identity: Identity) -> Result<Imds, LabError> {
        cmd::run(cmd::command("ip", ["-n", netns, "addr", "replace", "169.254.169.254/32", "dev", "lo"])).await?;
        let path = PathBuf::from("/run/netns").join(netns);
        // A thread of its own enters the namespace and ends: a pooled thread left there
        // would run later work (a child process, a lookup) in the wrong namespace.
        let binder = tokio::task::spawn_blocking(move || std::thread::spawn(move || bind_in(&path)).join());
        let listener = binder
            .await
            .map_err(|e| LabError::Invalid(format!("the IMDS binder thread failed: {e}")))?
            .map_err(|_| LabError::Invalid("the IMDS binder thread panicked".into()))??;
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| LabError::io("serving the IMDS stand-in", e))?;
        let token = format!("lab-imds-{}", std::process::id());
        let served = Arc::new(Served { identity: Mutex::new(identity), token });
        let app = Router::new()
            .route("/latest/api/token", put(new_token))
            .route("/latest/meta-data/instance-id", get(|s, h| answer(s, h, |i| i.instance_id.clone())))
            .route("/latest/dynamic/instance-identity/document", get(|s, h| answer(s, h, |i| i.document.clone())))
            .route("/latest/dynamic/instance-identity/rsa2048", get(|s, h| answer(s, h, |i| i.signature.clone())))
            .with_state(Arc::clone(&served));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the IMDS stand-in stopped");
            }
        });
        Ok(Imds { served, task })
    }

    /// What it serves now.
    pub fn identity(&self) -> Identity {
        lock(&self.served.identity).clone()
    }

    /// Serves `identity` from now on.
    pub fn serve(&self, identity: Identity) {
        *lock(&self.served.identity) = identity;
    }
}

/// A listener on 169.254.169.254:80 made inside the namespace at `path`, by a thread that
/// enters the namespace for good.
fn bind_in(path: &Path) -> Result<std::net::TcpListener, LabError> {
    let namespace = std::fs::File::open(path).map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
    rustix::thread::move_into_link_name_space(namespace.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(|e| LabError::io(format!("entering {}", path.display()), e.into()))?;
    let listener = std::net::TcpListener::bind(SocketAddr::from((IMDS_ADDR, 80)))
        .map_err(|e| LabError::io("binding 169.254.169.254:80", e))?;
    listener.set_nonblocking(true).map_err(|e| LabError::io("binding 169.254.169.254:80", e))?;
    Ok(listener)
}

async fn new_token(State(served): State<Arc<Served>>, headers: HeaderMap) -> (StatusCode, String) {
    if headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
        (StatusCode::OK, served.token.clone())
    } else {
        (StatusCode::BAD_REQUEST, String::new())
    }
}

/// IMDSv2: nothing without the token.
async fn answer(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    pick: impl Fn(&Identity) -> String,
) -> (StatusCode, String) {
    match headers.get("x-aws-ec2-metadata-token") {
        Some(token) if token.as_bytes() == served.token.as_bytes() => (StatusCode::OK, pick(&lock(&served.identity))),
        _ => (StatusCode::UNAUTHORIZED, String::new()),
    }
}
