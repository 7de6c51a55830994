//! moto's EC2 server as the lab's AWS: `python3 -m moto.server` on a free 127.0.0.1 port,
//! reached through the standard `AWS_ENDPOINT_URL`, killed on drop.

use std::path::Path;
use std::time::Duration;

use crate::LabError;
use crate::cmd;
use crate::procs::Proc;

/// The region every lab client and child process uses.
pub const REGION: &str = "us-east-1";

/// moto accepts any credentials; these are the ones its documentation uses.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    proc: Proc,
    port: u16,
}

impl Moto {
    /// Starts moto and waits until it answers HTTP; its output goes to `log_dir/moto.log`.
    pub async fn start(log_dir: &Path) -> Result<Moto, LabError> {
        let port = cmd::free_port(std::net::Ipv4Addr::LOCALHOST)?;
        let port_text = port.to_string();
        let mut command = cmd::command("python3", ["-m", "moto.server", "-H", "127.0.0.1", "-p", &port_text]);
        command.env("PYTHONUNBUFFERED", "1");
        let mut proc = Proc::spawn("moto", command, &log_dir.join("moto.log"))?;
        let endpoint = format!("127.0.0.1:{port}");
        proc.wait_for_tcp(&endpoint, Duration::from_secs(60)).await.map_err(|e| match e {
            LabError::Exited { .. } => LabError::Missing(format!(
                "moto's server did not start (is moto[server] installed? run scripts/setup): {e}"
            )),
            other => other,
        })?;
        tracing::info!(port, "moto started");
        Ok(Moto { proc, port })
    }

    /// The endpoint URL, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's log.
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// The environment a child process needs to talk to this moto.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        aws_env(&self.endpoint())
    }
}

/// `AWS_*` variables that point an AWS SDK at `endpoint` with moto's dummy credentials.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        // Never let an SDK in a child wander off to a real IMDS or a profile on this box.
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
    ]
}
