//! The connections the gRPC server is handed: bounded in number overall and per address,
//! and each given a deadline to finish its TLS handshake and send the HTTP/2 preface.
//! Anyone can open a TCP connection; without this, idle ones pile up until the process
//! runs out of file descriptors, and then no operator can connect.
//!
//! The accept loop only counts and spawns; handshakes run in their own tasks, so a slow
//! or silent client delays nobody else. A connection over a cap is closed at once.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tracing::{info, warn};

use crate::{
    budget::{Budget, Take},
    metrics::Metrics,
};

/// The HTTP/2 connection preface every gRPC client sends first (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// File descriptors kept for everything but client connections: the database pool, the
/// metrics endpoint, logs, EC2 calls.
const RESERVED_FILES: u64 = 256;
/// How long to wait after the process ran out of file descriptors before accepting again.
const FULL_PAUSE: Duration = Duration::from_millis(100);
/// Refusals of one kind logged: one line, then one per this interval with the count since.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Connections that finished their handshake, waiting for the server to take them.
const READY_QUEUE: usize = 128;

/// The caps and the deadline, as configured.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub per_address: usize,
    /// For the TLS handshake and the HTTP/2 preface together.
    pub setup: Duration,
}

impl Limits {
    /// The caps the process can hold: the global one is kept below the open-file limit
    /// (`None`: unlimited), which would otherwise be reached first.
    pub fn within(self, open_files: Option<u64>) -> Self {
        let fits =
            open_files.map_or(usize::MAX, |n| usize::try_from(n.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX));
        Self { max: self.max.min(fits).max(1), ..self }
    }
}

/// Raises the open-file soft limit to the hard limit; returns the soft limit now in force
/// (`None`: unlimited). The default soft limit of 1024 would cap the controller near a
/// thousand agents.
pub fn raise_open_files() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(error = %e, soft = ?limit.current, hard = ?limit.maximum, "could not raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Open connections, overall and per address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's place under the caps, given back when it is dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    address: IpAddr,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.address);
            }
        }
        self.metrics.connection_closed();
    }
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Every update is a pair of counter changes made together; a panicked holder leaves
    // them as consistent as any.
    counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A place under the caps for a connection from `address`, or the cap it is over.
fn take(
    counts: &Arc<Mutex<Counts>>,
    address: IpAddr,
    limits: &Limits,
    metrics: &Arc<Metrics>,
) -> Result<Slot, &'static str> {
    let mut c = lock(counts);
    if c.total >= limits.max {
        return Err("global_cap");
    }
    let mine = c.by_address.entry(address).or_default();
    if *mine >= limits.per_address {
        return Err("address_cap");
    }
    *mine += 1;
    c.total += 1;
    metrics.connection_opened();
    Ok(Slot { counts: counts.clone(), address, metrics: metrics.clone() })
}

/// A connection that finished its setup: the preface it sent is read again first.
pub struct Conn<IO> {
    io: IO,
    preface_left: usize,
    _slot: Slot,
}

impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.preface_left > 0 {
            let start = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(buf.remaining());
            buf.put_slice(&PREFACE[start..start + n]);
            self.preface_left -= n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

type Ready<IO> = ReceiverStream<Result<Conn<IO>, io::Error>>;

/// Plaintext connections for the server, until `shutdown` or until the server drops the
/// stream.
pub fn plain(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Ready<TcpStream> {
    serve(listener, limits, metrics, shutdown, |tcp| async move { Ok(tcp) })
}

/// TLS connections for the server (`acceptor` decides versions, ALPN and client
/// certificates).
pub fn tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Ready<TlsStream<TcpStream>> {
    serve(listener, limits, metrics, shutdown, move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp).await }
    })
}

fn serve<IO, F, Fut>(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    setup: F,
) -> Ready<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<IO>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    info!(
        max = limits.max,
        per_address = limits.per_address,
        setup_timeout_ms = limits.setup.as_millis() as u64,
        "connection limits"
    );
    tokio::spawn(accept(listener, limits, metrics, shutdown, setup, tx));
    ReceiverStream::new(rx)
}

async fn accept<IO, F, Fut>(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    setup: F,
    ready: mpsc::Sender<Result<Conn<IO>, io::Error>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = io::Result<IO>> + Send + 'static,
{
    let counts = Arc::new(Mutex::new(Counts::default()));
    let refusals = Arc::new(Mutex::new(RefusalLog::default()));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if out_of_resources(&e) => {
                // Accepting again at once would spin on the same error.
                refused(&refusals, &metrics, "out_of_files", None, &e.to_string());
                tokio::time::sleep(FULL_PAUSE).await;
                continue;
            }
            // The client gave up before it was accepted.
            Err(_) => continue,
        };
        let slot = match take(&counts, peer.ip(), &limits, &metrics) {
            Ok(slot) => slot,
            Err(reason) => {
                refused(&refusals, &metrics, reason, Some(peer), "over the connection cap");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let handshake = setup(tcp);
        let (ready, metrics, refusals) = (ready.clone(), metrics.clone(), refusals.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(limits.setup, start(handshake)).await {
                Ok(Ok(io)) => {
                    let _ = ready.send(Ok(Conn { io, preface_left: PREFACE.len(), _slot: slot })).await;
                }
                Ok(Err((reason, e))) => refused(&refusals, &metrics, reason, Some(peer), &e.to_string()),
                Err(_) => refused(
                    &refusals,
                    &metrics,
                    "setup_timeout",
                    Some(peer),
                    "no TLS handshake and HTTP/2 preface in time",
                ),
            }
        });
    }
}

/// The handshake, then the HTTP/2 preface, which is checked and kept back for the server.
async fn start<IO, Fut>(handshake: Fut) -> Result<IO, (&'static str, io::Error)>
where
    IO: AsyncRead + Unpin,
    Fut: Future<Output = io::Result<IO>>,
{
    let mut io = handshake.await.map_err(|e| ("handshake", e))?;
    let mut preface = [0u8; PREFACE.len()];
    io.read_exact(&mut preface).await.map_err(|e| ("no_preface", e))?;
    if &preface != PREFACE {
        return Err(("not_http2", io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/2 (gRPC) client")));
    }
    Ok(io)
}

fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// One log line per kind of refusal per `LOG_EVERY`, saying how many it stands for.
#[derive(Default)]
struct RefusalLog {
    budgets: HashMap<&'static str, Budget>,
}

fn refused(log: &Mutex<RefusalLog>, metrics: &Metrics, reason: &'static str, peer: Option<SocketAddr>, why: &str) {
    metrics.refused_connection(reason);
    let now = Instant::now();
    let take = {
        let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.budgets.entry(reason).or_insert_with(|| Budget::new(1, LOG_EVERY, now)).take(now)
    };
    if let Take::Allowed { after_refusing } = take {
        let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        warn!(reason, %peer, error = why, more_since_last_line = after_refusing, "closed a connection before its first call");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_each_address_and_the_total_and_free_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let counts = Arc::new(Mutex::new(Counts::default()));
        let limits = Limits { max: 3, per_address: 2, setup: Duration::from_secs(1) };
        let (a, b, c) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3]));
        let a1 = take(&counts, a, &limits, &metrics).expect("a1");
        let a2 = take(&counts, a, &limits, &metrics).expect("a2");
        assert_eq!(take(&counts, a, &limits, &metrics).err(), Some("address_cap"));
        let b1 = take(&counts, b, &limits, &metrics).expect("b1");
        assert_eq!(take(&counts, c, &limits, &metrics).err(), Some("global_cap"));
        drop(a1);
        let c1 = take(&counts, c, &limits, &metrics).expect("a slot freed");
        drop((a2, b1, c1));
        let counts = lock(&counts);
        assert_eq!((counts.total, counts.by_address.len()), (0, 0));
    }

    #[test]
    fn the_global_cap_stays_below_the_open_file_limit() {
        let limits = Limits { max: 50_000, per_address: 512, setup: Duration::from_secs(10) };
        assert_eq!(limits.within(Some(1024)).max, 1024 - RESERVED_FILES as usize);
        assert_eq!(limits.within(Some(1_048_576)).max, 50_000);
        assert_eq!(limits.within(None).max, 50_000);
        assert_eq!(limits.within(Some(10)).max, 1, "never zero");
    }

    #[tokio::test]
    async fn the_preface_is_checked_and_read_again() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest").await.expect("write");
        let io = start(async { Ok(server) }).await.expect("an HTTP/2 client");
        let metrics = Arc::new(Metrics::default());
        let counts = Arc::new(Mutex::new(Counts::default()));
        let limits = Limits { max: 1, per_address: 1, setup: Duration::from_secs(1) };
        let slot = take(&counts, IpAddr::from([10, 0, 0, 1]), &limits, &metrics).expect("slot");
        let mut conn = Conn { io, preface_left: PREFACE.len(), _slot: slot };
        let mut seen = vec![0u8; PREFACE.len() + 4];
        conn.read_exact(&mut seen).await.expect("read");
        assert_eq!(&seen, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest");

        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        assert_eq!(start(async { Ok(server) }).await.err().map(|(reason, _)| reason), Some("not_http2"));
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert_eq!(start(async { Ok(server) }).await.err().map(|(reason, _)| reason), Some("no_preface"));
    }
}
