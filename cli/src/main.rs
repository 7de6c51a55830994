//! fleetctl: the operator's command line over teefleet's admin gRPC API. Wiring only:
//! parse arguments (usage errors exit 2, clap's default), run the command, and print
//! `error: <message>` with exit code 1 when the controller refuses or cannot be reached.

mod args;
#[cfg(test)]
mod args_fuzz;
mod client;
mod output;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = async {
        let channel = client::connect(&cli.controller).await?;
        let mut stdout = std::io::stdout().lock();
        client::execute(channel, cli.command, cli.output, &mut stdout).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
