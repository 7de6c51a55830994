//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl
//! start` on a free 127.0.0.1 port with trust authentication, and an immediate stop plus
//! removal of the directory on drop.
//!
//! Debian's server binaries live in `/usr/lib/postgresql/<major>/bin`, outside `PATH`; the
//! newest installed major is used, else whatever `PATH` offers. Postgres refuses to run as
//! root, so when the tests run as root the server commands run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::LabError;
use crate::cmd::{self, command, run, run_quiet_blocking};

/// How many times to pick a new port when another process grabbed ours first.
const START_ATTEMPTS: usize = 3;

/// A running throwaway cluster. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct TempPostgres {
    /// Holds the data directory, socket directory and server log.
    dir: TempDir,
    bin_dir: Option<PathBuf>,
    run_as_postgres: bool,
    port: u16,
    /// Stops the server and removes the directory if this process dies without dropping
    /// us (a panic with `abort`, a killed test, a cluster kept in a `static`).
    watchdog: Option<std::process::Child>,
}

impl TempPostgres {
    /// Creates a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> Result<TempPostgres, LabError> {
        let bin_dir = find_bin_dir();
        let run_as_postgres = cmd::is_root();
        let dir = tempfile::Builder::new()
            .prefix("teefleet-pg-")
            .tempdir()
            .map_err(|e| LabError::io("creating the Postgres temp dir", e))?;
        let mut pg = TempPostgres { dir, bin_dir, run_as_postgres, port: 0, watchdog: None };
        if run_as_postgres {
            // The temp dir is created 0700 by root; the server must own it.
            cmd::run(command("chown", ["-R".as_ref(), "postgres:postgres".as_ref(), pg.dir.path().as_os_str()]))
                .await?;
        }
        std::fs::create_dir(pg.socket_dir()).map_err(|e| LabError::io("creating the Postgres socket dir", e))?;
        if run_as_postgres {
            cmd::run(command("chown", ["postgres:postgres".as_ref(), pg.socket_dir().as_os_str()])).await?;
        }
        pg.initdb().await?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            pg.port = cmd::free_port(std::net::Ipv4Addr::LOCALHOST)?;
            match pg.pg_ctl_start().await {
                Ok(()) => {
                    tracing::info!(port = pg.port, dir = %pg.dir.path().display(), "temporary Postgres started");
                    pg.watchdog = pg.spawn_watchdog();
                    return Ok(pg);
                }
                Err(e) => {
                    tracing::warn!(port = pg.port, error = %e, "Postgres did not start; retrying on another port");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| LabError::Missing("Postgres did not start".into())))
    }

    /// One cluster for the whole process, started on first use: cheaper than a cluster per
    /// test when each test takes its own database with [`TempPostgres::create_database`].
    /// It is never dropped; the watchdog stops it and removes its files when the process
    /// exits.
    pub async fn shared() -> Result<&'static TempPostgres, LabError> {
        static SHARED: tokio::sync::OnceCell<TempPostgres> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_try_init(TempPostgres::start).await
    }

    /// The URL of the cluster's `postgres` database, as the `postgres` superuser.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log, worth printing when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The postmaster's process id (the first line of `postmaster.pid`), so a benchmark can
    /// read the server's CPU time from `/proc`; `None` if the file cannot be read.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Creates a new, empty database and returns its URL. Names are limited to ASCII
    /// letters, digits and `_` so they need no quoting anywhere.
    pub async fn create_database(&self, name: &str) -> Result<String, LabError> {
        let valid = !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(LabError::Invalid(format!(
                "database name {name:?}: use 1-63 ASCII letters, digits or underscores"
            )));
        }
        let port = self.port.to_string();
        run(command(self.bin("createdb"), ["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name])).await?;
        Ok(self.url_for(name))
    }

    fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn bin(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// A server command, run as `postgres` when we are root, from inside the temp dir so
    /// that the `postgres` user can always read its working directory.
    fn server_command(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let program = self.bin(program);
        let mut cmd = if self.run_as_postgres {
            let mut c = command("runuser", ["-u", "postgres", "--"]);
            c.arg(program);
            c
        } else {
            command(program, std::iter::empty::<&str>())
        };
        cmd.args(args);
        cmd.current_dir(self.dir.path());
        cmd
    }

    async fn initdb(&self) -> Result<(), LabError> {
        let data = self.data_dir();
        let data = path_str(&data)?;
        let cmd = self.server_command(
            "initdb",
            &[
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
        );
        run(cmd).await.map_err(|e| match e {
            LabError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                LabError::Missing("initdb not found: install PostgreSQL's server binaries (scripts/setup)".into())
            }
            other => other,
        })?;
        // Durability is pointless for a cluster that lives for one test run.
        let conf = "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                    max_connections = 200\nlisten_addresses = '127.0.0.1'\n";
        let conf_path = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .map_err(|e| LabError::io(format!("reading {}", conf_path.display()), e))?;
        text.push_str(conf);
        std::fs::write(&conf_path, text).map_err(|e| LabError::io(format!("writing {}", conf_path.display()), e))?;
        Ok(())
    }

    /// Stops the server (fast shutdown: clients are disconnected, committed data is kept),
    /// for tests of a database outage; [`TempPostgres::resume`] starts it again.
    pub async fn pause(&self) -> Result<(), LabError> {
        let data = self.data_dir();
        run(self.server_command("pg_ctl", &["-D", path_str(&data)?, "-m", "fast", "-w", "-t", "60", "stop"])).await?;
        Ok(())
    }

    /// Starts the server paused by [`TempPostgres::pause`] again, on the same port.
    pub async fn resume(&self) -> Result<(), LabError> {
        self.pg_ctl_start().await
    }

    async fn pg_ctl_start(&self) -> Result<(), LabError> {
        let data = self.data_dir();
        let sock = self.socket_dir();
        let log = self.log_path();
        let options = format!("-p {} -k {}", self.port, path_str(&sock)?);
        let cmd = self.server_command(
            "pg_ctl",
            &["-D", path_str(&data)?, "-l", path_str(&log)?, "-o", &options, "-w", "-t", "60", "start"],
        );
        match tokio::time::timeout(Duration::from_secs(90), run(cmd)).await {
            Ok(result) => result.map(|_| ()).map_err(|e| match e {
                LabError::Command { command, status, .. } => {
                    LabError::Command { command, status, stderr: format!("see {}", log.display()) }
                }
                other => other,
            }),
            Err(_) => Err(LabError::Timeout { what: "pg_ctl start".into(), seconds: 90, log: Some(log) }),
        }
    }
}

impl TempPostgres {
    /// A detached `sh` that waits for this process to exit, then stops the server and
    /// removes the directory. Paths go in as positional parameters, never into the script.
    fn spawn_watchdog(&self) -> Option<std::process::Child> {
        const SCRIPT: &str = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            if [ "$5" = yes ]; then runuser -u postgres -- "$2" -D "$3" -m immediate stop
            else "$2" -D "$3" -m immediate stop; fi
            rm -rf -- "$4"
        "#;
        let child = std::process::Command::new("sh")
            .args(["-c", SCRIPT, "teefleet-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.bin("pg_ctl"))
            .arg(self.data_dir())
            .arg(self.dir.path())
            .arg(if self.run_as_postgres { "yes" } else { "no" })
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(child),
            Err(e) => {
                tracing::warn!(error = %e, "no watchdog for the temporary Postgres");
                None
            }
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let Some(data) = data.to_str() else { return };
        let pg_ctl = self.bin("pg_ctl");
        let Some(pg_ctl) = pg_ctl.to_str() else {
            return;
        };
        let stop = ["-D", data, "-m", "immediate", "-w", "stop"];
        let stopped = if self.run_as_postgres {
            let mut args = vec!["-u", "postgres", "--", pg_ctl];
            args.extend(stop);
            run_quiet_blocking("runuser", &args)
        } else {
            run_quiet_blocking(pg_ctl, &stop)
        };
        if !stopped {
            tracing::warn!(dir = %self.dir.path().display(), "could not stop the temporary Postgres");
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // TempDir's own drop removes the directory; root may remove `postgres`'s files.
    }
}

/// The newest `/usr/lib/postgresql/<major>/bin` that has `initdb`.
fn find_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

fn path_str(path: &Path) -> Result<&str, LabError> {
    path.to_str().ok_or_else(|| LabError::Invalid(format!("non-UTF-8 path {}", path.display())))
}
