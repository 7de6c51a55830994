//! `fleetctl config`: fleetctl's own settings, shown with where each comes from or saved
//! to the config file; neither needs a controller.

use std::io::Write;
use std::path::Path;

use clap::Subcommand;
use serde::Serialize;

use crate::config::{self, ConfigError, ConnectionFlags, Setting, Settings, Source};
use crate::error::CliError;
use crate::render::{Format, Render, emit};
use crate::table::table;
use crate::transport;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Save --controller, --token, --ca-cert and --insecure to the config file (mode 0600),
    /// keeping the settings not given. An empty value removes the setting.
    Set,
    /// Show the settings in force and where each comes from; the token is redacted.
    Show,
}

/// `config show`: the settings in force, whether the file exists, and why commands would
/// refuse the settings, if they would.
pub fn show(settings: &Settings, format: Format, out: &mut impl Write) -> Result<(), CliError> {
    let exists = settings.file.as_ref().is_some_and(|p| p.exists());
    let problem = transport::plan(settings).err().map(|e| e.0);
    Ok(emit(out, format, &ConfigOut::new(settings, exists, problem))?)
}

/// `config set`: merges the flags given into the file, checks the result makes sense on
/// its own, and writes it with mode 0600.
pub fn set(flags: &ConnectionFlags, path: &Path, format: Format, out: &mut impl Write) -> Result<(), CliError> {
    let current = config::load(Some((path.to_owned(), true)), false)?;
    let merged = config::merge(current.config, flags)?;
    let saved = config::LoadedFile { path: Some(path.to_owned()), config: merged };
    // The file alone must be usable, bar a missing CA (it may be set next), so a typo in a
    // URL is caught now rather than at the next command.
    let alone = config::resolve(&Default::default(), &|_| None, &saved)?;
    let mut probe = alone.clone();
    probe.ca_cert.get_or_insert(config::Setting { value: "(set later)".into(), source: config::Source::Default });
    if let Err(e) = transport::plan(&probe) {
        return Err(
            ConfigError(format!("not saved: {e}; give the settings that go together in one `config set`")).into()
        );
    }
    if let Some(ca) = flags.ca_cert.as_ref().and(saved.config.ca_cert.as_ref()) {
        transport::read_ca(ca)?;
    }
    config::save(path, &saved.config)?;
    let settings = ConfigOut::new(&alone, true, transport::plan(&alone).err().map(|e| e.0));
    Ok(emit(out, format, &Saved { path: path.display().to_string(), settings })?)
}

/// One connection setting as `config show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingOut<T> {
    /// Null when unset.
    pub value: T,
    /// `--token`, `env FLEET_TOKEN`, `config file`, `default`, or `unset`.
    pub source: String,
}

/// The settings in force; the token only as its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigOut {
    /// Null when there is no place for one (no HOME).
    pub file: Option<String>,
    pub file_exists: bool,
    pub controller: SettingOut<String>,
    pub token: SettingOut<Option<String>>,
    pub ca_cert: SettingOut<Option<String>>,
    pub insecure: SettingOut<bool>,
    /// Why commands would refuse these settings; null when they would connect.
    pub problem: Option<String>,
}

fn source_name(source: &Source) -> String {
    match source {
        Source::File(_) => "config file".to_owned(),
        other => other.to_string(),
    }
}

impl ConfigOut {
    pub fn new(s: &Settings, file_exists: bool, problem: Option<String>) -> Self {
        fn opt<T>(setting: Option<&Setting<T>>, show: impl Fn(&T) -> String) -> SettingOut<Option<String>> {
            match setting {
                Some(s) => SettingOut { value: Some(show(&s.value)), source: source_name(&s.source) },
                None => SettingOut { value: None, source: "unset".to_owned() },
            }
        }
        ConfigOut {
            file: s.file.as_ref().map(|p| p.display().to_string()),
            file_exists,
            controller: SettingOut { value: s.controller.value.clone(), source: source_name(&s.controller.source) },
            token: opt(s.token.as_ref(), |t| config::redact(t)),
            ca_cert: opt(s.ca_cert.as_ref(), |p| p.display().to_string()),
            insecure: SettingOut { value: s.insecure.value, source: source_name(&s.insecure.source) },
            problem,
        }
    }
}

/// What `config set` prints: where it saved, or as JSON the settings the file now holds.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Saved {
    #[serde(skip)]
    path: String,
    settings: ConfigOut,
}

impl Render for Saved {
    fn text(&self) -> String {
        format!("saved {}\n", self.path)
    }
}

impl Render for ConfigOut {
    /// `config show`'s view: the file, then each setting, its value and where it came from.
    fn text(&self) -> String {
        let file = match (&self.file, self.file_exists) {
            (Some(path), true) => path.clone(),
            (Some(path), false) => format!("{path} (absent)"),
            (None, _) => "none (no HOME or XDG_CONFIG_HOME; pass --config)".to_owned(),
        };
        let unset = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let rows = vec![
            vec!["controller".to_owned(), self.controller.value.clone(), self.controller.source.clone()],
            vec!["token".to_owned(), unset(&self.token.value), self.token.source.clone()],
            vec!["ca_cert".to_owned(), unset(&self.ca_cert.value), self.ca_cert.source.clone()],
            vec!["insecure".to_owned(), self.insecure.value.to_string(), self.insecure.source.clone()],
        ];
        let mut out = format!("Config file: {file}\n\n{}", table(&["SETTING", "VALUE", "SOURCE"], &rows));
        if let Some(problem) = &self.problem {
            out.push_str(&format!("\nProblem: {problem}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_view_redacts_the_token() {
        let settings = Settings {
            controller: Setting { value: "https://ctl:7300".into(), source: Source::File("/c.toml".into()) },
            token: Some(Setting { value: "tf1.0a1b2c3d4e5f.secret".into(), source: Source::Env("FLEET_TOKEN") }),
            ca_cert: None,
            insecure: Setting { value: false, source: Source::Flag("--insecure") },
            file: Some("/c.toml".into()),
        };
        let shown = ConfigOut::new(&settings, true, None);
        assert_eq!(
            shown.text(),
            "Config file: /c.toml\n\
             \n\
             SETTING     VALUE                        SOURCE\n\
             controller  https://ctl:7300             config file\n\
             token       tf1.0a1b2c3d4e5f.<redacted>  env FLEET_TOKEN\n\
             ca_cert     -                            unset\n\
             insecure    false                        --insecure\n"
        );
        assert_eq!(
            serde_json::to_value(&shown).expect("serializes"),
            serde_json::json!({
                "file": "/c.toml",
                "file_exists": true,
                "controller": {"value": "https://ctl:7300", "source": "config file"},
                "token": {"value": "tf1.0a1b2c3d4e5f.<redacted>", "source": "env FLEET_TOKEN"},
                "ca_cert": {"value": null, "source": "unset"},
                "insecure": {"value": false, "source": "--insecure"},
                "problem": null,
            })
        );
        let absent = ConfigOut::new(&Settings { file: Some("/c.toml".into()), ..settings.clone() }, false, None);
        assert!(absent.text().starts_with("Config file: /c.toml (absent)\n"));
        let troubled = ConfigOut::new(&settings, true, Some("it needs a CA".into()));
        assert!(troubled.text().ends_with("--insecure\n\nProblem: it needs a CA\n"));
        let nowhere = ConfigOut::new(&Settings { file: None, ..settings }, false, None);
        assert!(nowhere.text().starts_with("Config file: none (no HOME or XDG_CONFIG_HOME; pass --config)\n"));
    }
}
