//! The EC2 instance id from the instance metadata service (IMDSv2), used as the host id
//! when none is configured.
//!
//! Two requests over plain HTTP/1.1 to a link-local endpoint do not justify an HTTP
//! client dependency, so this speaks the protocol directly over a tokio socket: one
//! request per connection, `Connection: close`, the body read to the end.

use std::time::Duration;

use teefleet_model::{HostId, InstanceId, ValidationError};

use crate::config::{UrlError, http_authority};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// IMDS answers in milliseconds on EC2; off EC2 nothing answers at all, so fail fast.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The token only has to outlive the second request.
const TOKEN_TTL_SECS: u32 = 60;
/// Metadata answers are tiny; anything larger is not IMDS.
const MAX_RESPONSE: u64 = 64 * 1024;

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
}

/// Asks IMDSv2 at `endpoint` (e.g. `http://169.254.169.254`) for the instance id.
pub async fn instance_id(endpoint: &str, timeout: Duration) -> Result<HostId, ImdsError> {
    let authority = http_authority(endpoint)?;
    tokio::time::timeout(timeout, async {
        let token = exchange(
            &authority,
            "PUT",
            "/latest/api/token",
            &format!("X-aws-ec2-metadata-token-ttl-seconds: {TOKEN_TTL_SECS}"),
        )
        .await?;
        let id = exchange(
            &authority,
            "GET",
            "/latest/meta-data/instance-id",
            &format!("X-aws-ec2-metadata-token: {}", token.trim()),
        )
        .await?;
        let id: InstanceId = id.trim().parse().map_err(ImdsError::InvalidId)?;
        Ok(HostId::from(id))
    })
    .await
    .map_err(|_| ImdsError::Timeout)?
}

async fn exchange(authority: &str, method: &str, path: &'static str, header: &str) -> Result<String, ImdsError> {
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{header}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
    let (status, body) = parse_response(&response)?;
    if status != 200 {
        return Err(ImdsError::Status { path, status });
    }
    Ok(body)
}

/// Status code and body of an HTTP/1.1 response read until the server closed.
pub(crate) fn parse_response(raw: &[u8]) -> Result<(u16, String), ImdsError> {
    let text = std::str::from_utf8(raw).map_err(|_| ImdsError::Malformed)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or(ImdsError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(ImdsError::Malformed)?;
    let header = |name: &str| {
        lines
            .clone()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Ok((status, dechunk(body).ok_or(ImdsError::Malformed)?));
    }
    let body = match header("content-length").map(str::parse::<usize>) {
        Some(Ok(len)) => body.get(..len).ok_or(ImdsError::Malformed)?,
        Some(Err(_)) => return Err(ImdsError::Malformed),
        None => body,
    };
    Ok((status, body.to_owned()))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

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
                let reply = if req.starts_with("PUT /latest/api/token ")
                    && req.contains("X-aws-ec2-metadata-token-ttl-seconds: ")
                {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\ntoken".to_owned()
                } else if req.starts_with("GET /latest/meta-data/instance-id ")
                    && req.contains("X-aws-ec2-metadata-token: token\r\n")
                {
                    format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{id}\r\n0\r\n\r\n", id.len())
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
