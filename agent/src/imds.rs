//! The instance metadata service (IMDSv2): the EC2 instance id, used as the host id when
//! none is configured, and the signed instance identity an agent may enroll with. A token
//! from `PUT /latest/api/token`, then each answer with it. Each request is one HTTP/1.1 exchange
//! over its own connection, through hyper's low-level client (no pool, no TLS: IMDS is a
//! link-local plain-HTTP endpoint).

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{
    Method, Request,
    body::{Body, Bytes},
    header::{CONNECTION, CONTENT_LENGTH, HOST},
};
use hyper_util::rt::TokioIo;
use teefleet_model::{HostId, IdentityEvidence, InstanceId, ValidationError};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::config::{UrlError, http_authority};

/// IMDS answers in milliseconds on EC2; off EC2 nothing answers at all, so fail fast.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The token only has to outlive the second request.
const TOKEN_TTL_SECS: u32 = 60;
/// Metadata answers are tiny; anything larger is not IMDS. Bounds the header buffer and
/// the body alike.
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error(transparent)]
    Endpoint(#[from] UrlError),
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("request failed")]
    Io(#[from] std::io::Error),
    #[error("{path} answered HTTP {status}")]
    Status { path: &'static str, status: u16 },
    #[error("malformed HTTP response")]
    Malformed,
    #[error("the instance id is not valid")]
    InvalidId(#[source] ValidationError),
    #[error("the instance identity is unusable")]
    InvalidIdentity(#[source] ValidationError),
}

impl ImdsError {
    /// Whether asking again may help: nothing answered yet (early in boot), as opposed to
    /// an answer that will not change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout | Self::Io(_))
    }
}

impl From<hyper::Error> for ImdsError {
    /// What the server sent could not be read as an HTTP response (or ended early): that
    /// is a malformed answer; anything else (the connection broke) a failed request.
    fn from(e: hyper::Error) -> Self {
        if e.is_parse() || e.is_parse_status() || e.is_incomplete_message() {
            ImdsError::Malformed
        } else {
            ImdsError::Io(std::io::Error::other(e))
        }
    }
}

/// Asks IMDSv2 at `endpoint` (e.g. `http://169.254.169.254`) for the instance id.
pub async fn instance_id(endpoint: &str, timeout: Duration) -> Result<HostId, ImdsError> {
    let [id] = ask(endpoint, timeout, ["/latest/meta-data/instance-id"]).await?;
    let id: InstanceId = id.trim().parse().map_err(ImdsError::InvalidId)?;
    Ok(HostId::from(id))
}

/// The instance identity document and its RSA-2048 PKCS#7 signature, both as IMDSv2 at
/// `endpoint` serves them, for enrolling without a secret.
pub async fn identity(endpoint: &str, timeout: Duration) -> Result<IdentityEvidence, ImdsError> {
    let paths = ["/latest/dynamic/instance-identity/document", "/latest/dynamic/instance-identity/rsa2048"];
    let [document, signature] = ask(endpoint, timeout, paths).await?;
    IdentityEvidence::new(document, signature).map_err(ImdsError::InvalidIdentity)
}

/// IMDSv2's dance: a session token from `PUT /latest/api/token`, then each of `paths` with
/// it, all within `timeout`.
async fn ask<const N: usize>(
    endpoint: &str,
    timeout: Duration,
    paths: [&'static str; N],
) -> Result<[String; N], ImdsError> {
    let authority = http_authority(endpoint)?;
    tokio::time::timeout(timeout, async {
        let ttl = TOKEN_TTL_SECS.to_string();
        let token =
            exchange(&authority, Method::PUT, "/latest/api/token", ("X-aws-ec2-metadata-token-ttl-seconds", &ttl))
                .await?;
        let mut answers = [const { String::new() }; N];
        for (answer, path) in answers.iter_mut().zip(paths) {
            *answer = exchange(&authority, Method::GET, path, ("X-aws-ec2-metadata-token", token.trim())).await?;
        }
        Ok(answers)
    })
    .await
    .map_err(|_| ImdsError::Timeout)?
}

/// One request on a new connection to `authority`; the body of a 200 answer.
async fn exchange(
    authority: &str,
    method: Method,
    path: &'static str,
    header: (&'static str, &str),
) -> Result<String, ImdsError> {
    let stream = TcpStream::connect(authority).await?;
    // A value that cannot be a header value (a token with a line break) is not IMDS's.
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority)
        .header(header.0, header.1)
        .header(CONTENT_LENGTH, "0")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| ImdsError::Malformed)?;
    let (status, body) = send(stream, request).await?;
    if status != 200 {
        return Err(ImdsError::Status { path, status });
    }
    Ok(body)
}

/// Sends `request` over `io` and reads the answer: its status and its body as text.
async fn send<T, B>(io: T, request: Request<B>) -> Result<(u16, String), ImdsError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::Builder::new().max_buf_size(MAX_RESPONSE).handshake(TokioIo::new(io)).await?;
    let answer = async move {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE).collect().await.map_err(|e| {
            match e.downcast::<hyper::Error>() {
                Ok(e) => ImdsError::from(*e),
                // Longer than MAX_RESPONSE.
                Err(_) => ImdsError::Malformed,
            }
        })?;
        String::from_utf8(body.to_bytes().to_vec()).map(|body| (status, body)).map_err(|_| ImdsError::Malformed)
    };
    // The connection is driven only while the answer is read, and both end together (the
    // request says `Connection: close`). A connection error after a complete answer, such
    // as bytes past its end, changes nothing; one before it reaches the answer as well.
    let (answer, _connection) = tokio::join!(answer, connection);
    answer
}

/// How [`send`] reads `raw`, sent as a server's whole answer before it closes: for tests
/// of what answers the agent accepts.
#[cfg(test)]
pub(crate) fn parse_response(raw: &[u8]) -> Result<(u16, String), ImdsError> {
    use tokio::io::AsyncWriteExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let (client, mut server) = tokio::io::duplex(MAX_RESPONSE);
        let request =
            Request::get("/").header(HOST, "imds").body(Empty::<Bytes>::new()).map_err(|_| ImdsError::Malformed)?;
        // The server end stays open for reading until the answer is read, as a real
        // server's would: only its writing side closes.
        let serve = async {
            server.write_all(raw).await?;
            server.shutdown().await
        };
        let (answer, _served) = tokio::join!(send(client, request), serve);
        answer
    })
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A fake IMDSv2 that insists on the token dance, answering `id` for the instance id.
    async fn fake_imds(id: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let n = sock.read(&mut buf).await.expect("read");
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                // Header names are case-insensitive (hyper sends them in lower case).
                let headers = req.to_ascii_lowercase();
                let reply = if req.starts_with("PUT /latest/api/token ")
                    && headers.contains("x-aws-ec2-metadata-token-ttl-seconds: ")
                {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\ntoken".to_owned()
                } else if req.starts_with("GET /latest/meta-data/instance-id ")
                    && headers.contains("x-aws-ec2-metadata-token: token\r\n")
                {
                    format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{id}\r\n0\r\n\r\n", id.len())
                } else if req.starts_with("GET /latest/dynamic/instance-identity/")
                    && headers.contains("x-aws-ec2-metadata-token: token\r\n")
                {
                    let body = if req.contains("/document ") { "{\"instanceId\" : \"i-1\"}" } else { "MIAG\nCSqG" };
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                sock.write_all(reply.as_bytes()).await.expect("write");
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn fetches_the_instance_id_with_a_token() {
        let endpoint = fake_imds("i-0123456789abcdef0").await;
        let id = instance_id(&endpoint, TIMEOUT).await.expect("id");
        assert_eq!(id.as_str(), "i-0123456789abcdef0");
    }

    #[tokio::test]
    async fn fetches_the_signed_identity_with_a_token() {
        let endpoint = fake_imds("i-0123456789abcdef0").await;
        let evidence = identity(&endpoint, TIMEOUT).await.expect("identity");
        assert_eq!((evidence.document(), evidence.signature()), ("{\"instanceId\" : \"i-1\"}", "MIAG\nCSqG"));
    }

    #[tokio::test]
    async fn rejects_what_is_not_an_instance_id() {
        let endpoint = fake_imds("i-x; rm -rf /").await;
        assert!(matches!(instance_id(&endpoint, TIMEOUT).await, Err(ImdsError::InvalidId(_))));
    }

    #[tokio::test]
    async fn times_out_when_nothing_answers() {
        // A listener that accepts but never replies, like a black-holed link-local address.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let err = instance_id(&endpoint, Duration::from_millis(200)).await.expect_err("timeout");
        assert!(matches!(err, ImdsError::Timeout), "{err}");
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcd").expect("ok"),
            (200, "ab".into())
        );
        assert_eq!(parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n").expect("ok"), (404, String::new()));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
