//! fleetctl: the operator's command line over teefleet's admin gRPC API. Wiring only:
//! parse arguments (usage errors exit 2, clap's default), run the command, and print
//! `error: <message>` (and a `hint:` line when there is something to do) with exit code 1
//! when the controller refuses or cannot be reached, or 64 when the connection settings or
//! the config file cannot be used.

mod args;
#[cfg(test)]
mod args_props;
mod client;
mod cmd;
mod config;
mod error;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod golden;
mod render;
mod table;
mod transport;

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = args::Cli::parse_args();
    cli.check_or_exit();
    let env = |name: &str| std::env::var(name).ok();
    let mut stdout = std::io::stdout().lock();
    match client::run(cli, &env, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
