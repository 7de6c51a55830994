//! The connection a command runs over: the settings resolved (flag > env > file), the
//! config commands answered without a controller, one gRPC channel to the controller's
//! admin API for the rest, and the hints added to what fails. Errors keep the
//! controller's message verbatim, because it names the offending field.

use std::io::Write;

use clap::CommandFactory;

use crate::args::Cli;
use crate::cmd::{self, Command, config::ConfigCommand};
use crate::config::{self, ConfigError};
use crate::error::{CliError, with_access_hint};
use crate::transport;

/// Runs one parsed command: config commands locally, the others against the controller.
/// `env` looks up environment variables (injected so tests need not set the process's).
pub async fn run(cli: Cli, env: &dyn Fn(&str) -> Option<String>, out: &mut impl Write) -> Result<(), CliError> {
    if let Command::Completion(args) = &cli.command {
        // The plain definition, where the connection options are listed under every
        // command, so that they complete after any of them.
        return cmd::completion::write(args.shell, Cli::command(), out);
    }
    let location = config::file_path(&cli.connection, env);
    if let Command::Config(ConfigCommand::Set) = cli.command {
        let Some((path, _)) = location else {
            return Err(
                ConfigError("no config file location: set HOME or XDG_CONFIG_HOME, or pass --config".into()).into()
            );
        };
        return cmd::config::set(&cli.connection, &path, cli.output, out);
    }
    let file = config::load(location, true)?;
    let settings = config::resolve(&cli.connection, env, &file)?;
    if let Command::Config(ConfigCommand::Show) = cli.command {
        return cmd::config::show(&settings, cli.output, out);
    }
    cli.command.check()?;
    let plan = transport::plan(&settings)?;
    let channel = transport::connect(&plan).await?;
    cli.command.run(channel, cli.output, out).await.map_err(|e| match e {
        // A status with a source was made on this side, by the transport, not sent by the
        // controller (which can only send a code and a message).
        CliError::Status(status) if std::error::Error::source(&status).is_some() => {
            transport::unreachable(&plan, &status)
        }
        other => with_access_hint(other, &settings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EXIT_CONFIG;

    async fn run_in(home: &std::path::Path, vars: &[(&str, &str)], args: &[&str]) -> (Result<(), CliError>, String) {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("fleetctl").chain(args.iter().copied())).expect("parses");
        let mut vars: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        vars.entry("HOME".into()).or_insert_with(|| home.display().to_string());
        let env = move |name: &str| vars.get(name).cloned();
        let mut out = Vec::new();
        let result = run(cli, &env, &mut out).await;
        (result, String::from_utf8(out).expect("utf-8"))
    }

    #[tokio::test]
    async fn config_set_refuses_a_file_that_cannot_work() {
        let home = tempfile::tempdir().expect("home");
        let file = home.path().join(".config/fleetctl/config.toml");
        let (result, _) = run_in(home.path(), &[], &["config", "set", "--controller", "http://lab:7300"]).await;
        let err = result.expect_err("plaintext without --insecure");
        assert_eq!(err.exit_code(), EXIT_CONFIG);
        assert!(err.to_string().starts_with("not saved: http://lab:7300 (from config file "), "{err}");
        assert!(err.to_string().ends_with("give the settings that go together in one `config set`"), "{err}");
        assert!(!file.exists());

        let (result, out) =
            run_in(home.path(), &[], &["config", "set", "--controller", "http://lab:7300", "--insecure"]).await;
        result.expect("saved");
        assert_eq!(out, format!("saved {}\n", file.display()));
        let (result, _) = run_in(home.path(), &[], &["config", "set", "--controller", "https://lab:7300"]).await;
        assert!(result.expect_err("contradiction").to_string().contains("asks for plaintext but https://lab:7300"));

        // A TLS URL without its CA yet is fine: it may come next.
        let (result, _) =
            run_in(home.path(), &[], &["config", "set", "--controller", "https://lab:7300", "--insecure=false"]).await;
        result.expect("saved");
        let missing = home.path().join("missing.pem");
        let (result, _) =
            run_in(home.path(), &[], &["config", "set", "--ca-cert", missing.to_str().expect("utf-8")]).await;
        assert!(result.expect_err("no such CA").to_string().starts_with("reading the CA certificate"));
        let (result, _) = run_in(home.path(), &[], &["config", "set", "--token", "a b"]).await;
        assert!(result.expect_err("not a header").to_string().contains("holds spaces"));
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            "# fleetctl's settings; `fleetctl config set` rewrites this file.\n\
             controller = \"https://lab:7300\"\n\
             insecure = false\n"
        );
    }

    #[tokio::test]
    async fn a_session_the_controller_would_refuse_is_refused_before_connecting() {
        let home = tempfile::tempdir().expect("home");
        let args = [
            "--insecure",
            "--controller",
            "http://127.0.0.1:1",
            "session",
            "create",
            "bad name",
            "--source",
            "i-0123456789abcdef0",
            "--collector",
            "i-0123456789abcdef1",
            "--port",
            "0",
            "--cidr",
            "10.0.0.1/8",
        ];
        let (result, out) = run_in(home.path(), &[], &args).await;
        let err = result.expect_err("refused");
        assert_eq!((err.exit_code(), out.as_str()), (2, ""));
        let lines: Vec<_> =
            err.to_string().lines().map(|l| l.split(':').next().unwrap_or_default().to_owned()).collect();
        assert_eq!(
            lines,
            ["the session cannot be created; nothing was sent", "  name", "  filter.port", "  filter.cidrs[0]"],
            "every problem, and no attempt to reach the closed port: {err}"
        );
    }

    #[tokio::test]
    async fn config_show_and_refusals_need_no_controller() {
        let home = tempfile::tempdir().expect("home");
        let (result, out) = run_in(
            home.path(),
            &[("FLEET_TOKEN", "tf1.0a1b2c3d4e5f.s"), ("FLEET_INSECURE", "1")],
            &["config", "show", "-o", "json"],
        )
        .await;
        result.expect("shows");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["controller"], serde_json::json!({"value": "http://127.0.0.1:7300", "source": "default"}));
        assert_eq!(v["token"]["value"], "tf1.0a1b2c3d4e5f.<redacted>");
        assert_eq!(v["file_exists"], false);
        assert_eq!(v["problem"], serde_json::Value::Null);

        let (result, out) = run_in(home.path(), &[], &["--controller", "http://127.0.0.1:1", "session", "list"]).await;
        let err = result.expect_err("plaintext without --insecure");
        assert_eq!((err.exit_code(), out.as_str()), (EXIT_CONFIG, ""));
        let (result, _) =
            run_in(home.path(), &[], &["--config", "/nonexistent/fleetctl.toml", "session", "list"]).await;
        assert!(
            result
                .expect_err("named but absent")
                .to_string()
                .starts_with("reading config file /nonexistent/fleetctl.toml")
        );
        let (result, _) = run_in(home.path(), &[("HOME", "")], &["config", "set", "--insecure"]).await;
        assert_eq!(
            result.expect_err("nowhere to write").to_string(),
            "no config file location: set HOME or XDG_CONFIG_HOME, or pass --config"
        );
    }

    #[tokio::test]
    async fn completion_scripts_need_no_controller_nor_config() {
        let home = tempfile::tempdir().expect("home");
        let script = async |shell| {
            let args = ["--config", "/nonexistent/fleetctl.toml", "completion", shell];
            let (result, out) = run_in(home.path(), &[], &args).await;
            result.expect("written");
            out
        };
        let bash = script("bash").await;
        assert!(bash.contains("complete -F _fleetctl"), "{bash}");
        // The connection options complete after a command, where they are accepted too.
        let create = bash.lines().find(|l| l.contains("opts=") && l.contains("--source-tag")).expect("create's");
        assert!(create.contains("--wait") && create.contains("--controller"), "{create}");
        assert!(script("zsh").await.starts_with("#compdef fleetctl"));
        assert!(script("fish").await.contains("complete -c fleetctl"));
    }
}
