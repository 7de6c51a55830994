//! `systemd-analyze` on unit files, for the tests of the shipped units and packages:
//! `verify` (which exits 0 even on a setting it ignores, so its messages are read too) and
//! the exposure score of `security --offline=true`.

use std::path::Path;
use std::process::Command;

use crate::LabError;

/// The highest exposure score a shipped unit may have (issue 16).
pub const MAX_EXPOSURE: f64 = 3.0;

/// Whether `systemd-analyze` can run here; tests without it skip, saying so.
pub fn analyze_available() -> bool {
    Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs `systemd-analyze verify` on `units` and fails on a non-zero exit or on any message
/// that names one of them (a misspelt or unknown setting is only a warning to it).
pub fn verify(units: &[&Path]) -> Result<(), LabError> {
    let out = run(Command::new("systemd-analyze").arg("verify").args(units))?;
    let text = format!("{}{}", out.stdout, out.stderr);
    let names: Vec<String> =
        units.iter().filter_map(|u| u.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    let problems: Vec<&str> = text.lines().filter(|l| names.iter().any(|n| l.contains(n.as_str()))).collect();
    if !out.success || !problems.is_empty() {
        return Err(LabError::Invalid(format!(
            "systemd-analyze verify {}: exit {:?}\n{}",
            names.join(" "),
            out.code,
            if problems.is_empty() { text.clone() } else { problems.join("\n") }
        )));
    }
    Ok(())
}

/// The overall exposure level `systemd-analyze security --offline=true` gives `unit`.
pub fn exposure(unit: &Path) -> Result<f64, LabError> {
    let out = run(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(unit))?;
    parse_exposure(&out.stdout).ok_or_else(|| {
        LabError::Invalid(format!("no overall exposure level for {} in:\n{}{}", unit.display(), out.stdout, out.stderr))
    })
}

/// The score on the line `→ Overall exposure level for NAME: 2.2 OK 🙂`.
pub fn parse_exposure(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("Overall exposure level for"))?;
    let (_, after) = line.rsplit_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}

struct Ran {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Result<Ran, LabError> {
    let line = format!("{command:?}");
    let out = command.output().map_err(|e| LabError::io(format!("running {line}"), e))?;
    Ok(Ran {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_overall_score() {
        let text = "  NAME  DESCRIPTION  EXPOSURE\n✗ PrivateNetwork=  Service has access  0.5\n\n\
                    → Overall exposure level for fleet-agent.service: 2.2 OK 🙂\n";
        assert_eq!(parse_exposure(text), Some(2.2));
        assert_eq!(parse_exposure("→ Overall exposure level for x.service: 10.0 UNSAFE 😨"), Some(10.0));
        assert_eq!(parse_exposure("nothing here"), None);
    }
}
