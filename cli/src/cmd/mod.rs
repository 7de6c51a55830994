//! fleetctl's commands, one file each as mini-redis lays out its own: each owns its clap
//! arguments, its gRPC call, its output types (the JSON contract, converted from the
//! wire here) and how they print.

pub mod audit;
pub mod collector;
pub mod completion;
pub mod config;
pub mod host;
pub mod preflight;
pub mod session;
pub mod session_update;
pub mod token;

use std::io::Write;

use clap::Subcommand;

use crate::error::CliError;
use crate::render::Format;
use crate::transport::Transport;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collector instances that receive the mirrored traffic.
    #[command(subcommand)]
    Collector(collector::CollectorCommand),
    /// Source hosts running the agent.
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Mirroring sessions.
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Bearer tokens for operators and join tokens for agents (admin).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The controller's record of every change and who made it (admin).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// fleetctl's own config file; needs no controller.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print the shell completion script for bash, zsh or fish; needs no controller.
    Completion(completion::CompletionArgs),
}

impl Command {
    /// Checks what can be checked without the controller, reporting every problem at once.
    pub fn check(&self) -> Result<(), CliError> {
        match self {
            Command::Session(cmd) => cmd.check(),
            _ => Ok(()),
        }
    }

    /// Runs a controller command over `channel`, writing its answer to `out`.
    pub async fn run(self, channel: Transport, format: Format, out: &mut impl Write) -> Result<(), CliError> {
        match self {
            Command::Collector(cmd) => cmd.run(channel, format, out).await,
            Command::Host(cmd) => cmd.run(channel, format, out).await,
            Command::Session(cmd) => cmd.run(channel, format, out).await,
            Command::Token(cmd) => cmd.run(channel, format, out).await,
            Command::Audit(cmd) => cmd.run(channel, format, out).await,
            // `client::run` handles these without a controller.
            Command::Config(_) | Command::Completion(_) => Ok(()),
        }
    }
}
