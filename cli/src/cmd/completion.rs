//! `fleetctl completion bash|zsh|fish`: the shell completion script, generated from the
//! same clap definition that parses the arguments, so it cannot fall behind them.

use std::io::Write;

use clap::{Args, ValueEnum};

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells fleetctl writes a completion script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Source it from ~/.bashrc, or save it as
    /// ~/.local/share/bash-completion/completions/fleetctl.
    Bash,
    /// Save it as _fleetctl in a directory on $fpath.
    Zsh,
    /// Save it as ~/.config/fish/completions/fleetctl.fish.
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes the script completing `command` (fleetctl's whole command line) for `shell`.
pub fn write(shell: Shell, mut command: clap::Command, out: &mut impl Write) -> Result<(), CliError> {
    // clap_complete panics when its writer fails; a closed pipe (`| head`) must be an
    // error like any other output's, so the script is made in memory first.
    let mut script = Vec::new();
    clap_complete::generate(clap_complete::Shell::from(shell), &mut command, "fleetctl", &mut script);
    Ok(out.write_all(&script)?)
}
