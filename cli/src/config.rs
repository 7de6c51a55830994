//! Where fleetctl's connection settings come from: a flag (`ConnectionFlags`, global to
//! every command), else its environment variable, else the config file, else the default.
//! The file is TOML with the keys `controller`, `token`, `ca_cert` and `insecure`; it is
//! read only when it is private enough (like ssh, a file holding a token must not be
//! readable by others, and no file may be writable by others), and `config set` rewrites
//! it atomically with mode 0600.
//!
//! Resolution is a pure function of the three layers so the precedence is tested without
//! touching the process environment or the user's home.

use std::{
    fmt,
    fs::{self, DirBuilder},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use clap::Args;
use serde::{Deserialize, Serialize};

/// The controller's port when no URL is configured: the controller's own default.
const DEFAULT_ADDRESS: &str = "127.0.0.1:7300";

/// The help heading of the connection options, which `fleetctl --help` alone lists.
pub const CONNECTION: &str = "Connection";

/// How to reach the controller and who to be there, as typed on the command line. An empty
/// value unsets the setting, hiding the environment's and the config file's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ConnectionFlags {
    /// The controller's URL [env: FLEET_CONTROLLER]. An https:// URL uses TLS and needs
    /// --ca-cert; an http:// URL is plaintext and needs --insecure [default:
    /// https://127.0.0.1:7300, or http://127.0.0.1:7300 with --insecure].
    #[arg(long, value_name = "URL", global = true, help_heading = CONNECTION)]
    pub controller: Option<String>,
    /// The bearer token sent with every call [env: FLEET_TOKEN]. Prefer the environment or
    /// `fleetctl config set --token`: other users can see command lines.
    #[arg(long, value_name = "TOKEN", global = true, help_heading = CONNECTION)]
    pub token: Option<String>,
    /// The CA certificate (PEM) to trust for an https:// controller, as printed by
    /// `fleet-controller ca print` [env: FLEET_CA_CERT].
    #[arg(long, value_name = "FILE", global = true, help_heading = CONNECTION)]
    pub ca_cert: Option<PathBuf>,
    /// Talk plaintext to a controller started with --insecure (labs only): needs an http://
    /// URL, and sends no token [env: FLEET_INSECURE]. --insecure=false turns off a
    /// config file's `insecure = true`.
    #[arg(
        long,
        value_name = "BOOL",
        global = true,
        help_heading = CONNECTION,
        hide_possible_values = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub insecure: Option<bool>,
    /// The config file [env: FLEET_CONFIG] [default: $XDG_CONFIG_HOME/fleetctl/config.toml,
    /// else ~/.config/fleetctl/config.toml].
    #[arg(long, value_name = "FILE", global = true, help_heading = CONNECTION)]
    pub config: Option<PathBuf>,
}

pub const ENV_CONTROLLER: &str = "FLEET_CONTROLLER";
pub const ENV_TOKEN: &str = "FLEET_TOKEN";
pub const ENV_CA_CERT: &str = "FLEET_CA_CERT";
pub const ENV_INSECURE: &str = "FLEET_INSECURE";
pub const ENV_CONFIG: &str = "FLEET_CONFIG";

/// The config file's contents. Unknown keys are refused so a typo (`ca-cert`) does not
/// silently leave a setting out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Absolute, or relative to the config file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// A config file as read: where it is and what it holds (empty when it does not exist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedFile {
    pub path: Option<PathBuf>,
    pub config: FileConfig,
}

/// Where a setting in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => f.write_str(name),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting in force and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// The connection settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub controller: Setting<String>,
    pub token: Option<Setting<String>>,
    pub ca_cert: Option<Setting<PathBuf>>,
    pub insecure: Setting<bool>,
    /// The config file consulted, if any.
    pub file: Option<PathBuf>,
}

/// A setting that cannot be used, or a config file that cannot be read or written. The
/// message names the flag, variable or file and says what to do; fleetctl exits 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The first layer that sets a value wins; an empty value there means "unset", hiding the
/// layers below (so `--token ''` ignores the config file's token).
fn first<T>(layers: [(Option<T>, Source); 3], is_empty: impl Fn(&T) -> bool) -> Option<Setting<T>> {
    let (value, source) = layers.into_iter().find_map(|(v, s)| v.map(|v| (v, s)))?;
    (!is_empty(&value)).then_some(Setting { value, source })
}

/// Reads `FLEET_INSECURE` as clap reads `--insecure=VALUE`.
fn parse_bool(name: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "no" | "n" | "off" => Ok(false),
        _ => Err(ConfigError(format!("{name}={text:?} is not a boolean: use true or false"))),
    }
}

/// Layers the command line over the environment over the config file. `env` looks up a
/// variable (empty variables count as unset, as a shell's `VAR= cmd` intends).
pub fn resolve(
    flags: &ConnectionFlags,
    env: &dyn Fn(&str) -> Option<String>,
    file: &LoadedFile,
) -> Result<Settings, ConfigError> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let file_source = || file.path.clone().map_or(Source::Default, Source::File);
    // A flag hides the variable, even one that is not a boolean.
    let env_insecure = match flags.insecure {
        Some(_) => None,
        None => env(ENV_INSECURE).map(|v| parse_bool(ENV_INSECURE, &v)).transpose()?,
    };
    let insecure = first(
        [
            (flags.insecure, Source::Flag("--insecure")),
            (env_insecure, Source::Env(ENV_INSECURE)),
            (file.config.insecure, file_source()),
        ],
        |_| false,
    )
    .unwrap_or(Setting { value: false, source: Source::Default });
    let controller = first(
        [
            (flags.controller.clone(), Source::Flag("--controller")),
            (env(ENV_CONTROLLER), Source::Env(ENV_CONTROLLER)),
            (file.config.controller.clone(), file_source()),
        ],
        String::is_empty,
    )
    .unwrap_or_else(|| {
        // The controller's defaults: loopback, TLS unless it runs with --insecure.
        let scheme = if insecure.value { "http" } else { "https" };
        Setting { value: format!("{scheme}://{DEFAULT_ADDRESS}"), source: Source::Default }
    });
    let token = first(
        [
            (flags.token.clone(), Source::Flag("--token")),
            (env(ENV_TOKEN), Source::Env(ENV_TOKEN)),
            (file.config.token.clone(), file_source()),
        ],
        |t| t.trim().is_empty(),
    );
    // A relative path in the file is relative to the file, not to wherever fleetctl runs.
    let file_ca = file.config.ca_cert.as_ref().map(|p| match file.path.as_ref().and_then(|f| f.parent()) {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.clone(),
    });
    let ca_cert = first(
        [
            (flags.ca_cert.clone(), Source::Flag("--ca-cert")),
            (env(ENV_CA_CERT).map(PathBuf::from), Source::Env(ENV_CA_CERT)),
            (file_ca, file_source()),
        ],
        |p| p.as_os_str().is_empty(),
    );
    Ok(Settings { controller, token, ca_cert, insecure, file: file.path.clone() })
}

/// The config file to use: `--config`, else `FLEET_CONFIG`, else the XDG location. The
/// flag says whether it was named explicitly (then it must exist, except for `config set`).
pub fn file_path(flags: &ConnectionFlags, env: &dyn Fn(&str) -> Option<String>) -> Option<(PathBuf, bool)> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(path) = flags.config.clone().or_else(|| env(ENV_CONFIG).map(PathBuf::from)) {
        return Some((path, true));
    }
    // XDG says to ignore a relative XDG_CONFIG_HOME.
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some((base.join("fleetctl").join("config.toml"), false))
}

/// Parses a config file's text; the error names the file.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.message())))
}

/// Refuses a file others may change, or one holding a token others may read.
pub fn check_mode(path: &Path, mode: u32, holds_token: bool) -> Result<(), ConfigError> {
    let mode = mode & 0o777;
    if mode & 0o022 != 0 {
        return Err(ConfigError(format!(
            "{} is writable by others (mode {mode:04o}), who could redirect fleetctl and take its token; \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    if holds_token && mode & 0o044 != 0 {
        return Err(ConfigError(format!(
            "{} holds a token and is readable by others (mode {mode:04o}); run `chmod 600 {}` \
             (and consider revoking the token)",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Reads the config file. A missing file is empty unless it was named explicitly;
/// `checked` applies the permission rules (`config set` skips them: it rewrites the file
/// with mode 0600).
pub fn load(location: Option<(PathBuf, bool)>, checked: bool) -> Result<LoadedFile, ConfigError> {
    let Some((path, explicit)) = location else {
        return Ok(LoadedFile::default());
    };
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !(explicit && checked) => {
            return Ok(LoadedFile { path: Some(path), config: FileConfig::default() });
        }
        Err(e) => return Err(ConfigError(format!("reading config file {}: {e}", path.display()))),
    };
    let config = parse_file(&path, &text)?;
    if checked {
        let meta = fs::metadata(&path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        check_mode(&path, meta.permissions().mode(), config.token.is_some())?;
    }
    Ok(LoadedFile { path: Some(path), config })
}

/// What `config set` changes: the flags given on the command line. An empty value removes
/// the key. A relative `--ca-cert` is made absolute, so the file works from any directory.
pub fn merge(mut config: FileConfig, flags: &ConnectionFlags) -> Result<FileConfig, ConfigError> {
    fn put<T>(slot: &mut Option<T>, value: Option<T>, is_empty: impl Fn(&T) -> bool) {
        if let Some(v) = value {
            *slot = (!is_empty(&v)).then_some(v);
        }
    }
    put(&mut config.controller, flags.controller.clone(), String::is_empty);
    put(&mut config.token, flags.token.as_ref().map(|t| t.trim().to_owned()), String::is_empty);
    let ca_cert = match &flags.ca_cert {
        Some(p) if !p.as_os_str().is_empty() => {
            Some(std::path::absolute(p).map_err(|e| ConfigError(format!("--ca-cert {}: {e}", p.display())))?)
        }
        other => other.clone(),
    };
    put(&mut config.ca_cert, ca_cert, |p| p.as_os_str().is_empty());
    if let Some(insecure) = flags.insecure {
        config.insecure = Some(insecure);
    }
    Ok(config)
}

/// Writes the config file atomically: a temporary file with mode 0600 beside it, synced,
/// then renamed over it. Missing directories are created with mode 0700.
pub fn save(path: &Path, config: &FileConfig) -> Result<(), ConfigError> {
    let fail = |what: &str, e: io::Error| ConfigError(format!("{what} {}: {e}", path.display()));
    let text = toml::to_string(config).map_err(|e| ConfigError(format!("encoding the config: {e}")))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| fail("creating the directory of", e))?;
    // tempfile names the temporary file beside the target, so the rename is atomic, and
    // removes it if anything fails.
    let write = || -> io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".config.")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        file.write_all(b"# fleetctl's settings; `fleetctl config set` rewrites this file.\n")?;
        file.write_all(text.as_bytes())?;
        file.as_file().sync_all()?;
        file.persist(path).map(drop).map_err(|e| e.error)
    };
    write().map_err(|e| fail("writing", e))
}

/// How a token is shown: its id when it is one of the controller's (`tf1.<id>.<secret>`),
/// never its secret.
pub fn redact(token: &str) -> String {
    match token.split('.').collect::<Vec<_>>().as_slice() {
        ["tf1", id, _secret] if !id.is_empty() => format!("tf1.{id}.<redacted>"),
        _ => "<redacted>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn file(config: FileConfig) -> LoadedFile {
        LoadedFile { path: Some(PathBuf::from("/home/op/.config/fleetctl/config.toml")), config }
    }

    fn full_file() -> LoadedFile {
        file(FileConfig {
            controller: Some("https://file:7300".into()),
            token: Some("file-token".into()),
            ca_cert: Some("ca.pem".into()),
            insecure: Some(false),
        })
    }

    fn file_source() -> Source {
        Source::File("/home/op/.config/fleetctl/config.toml".into())
    }

    #[test]
    fn flags_beat_env_beat_file_beat_default() {
        let flags = ConnectionFlags {
            controller: Some("https://flag:7300".into()),
            token: Some("flag-token".into()),
            ca_cert: Some("/flag/ca.pem".into()),
            ..Default::default()
        };
        let env = env_of(&[
            ("FLEET_CONTROLLER", "https://env:7300"),
            ("FLEET_TOKEN", "env-token"),
            ("FLEET_CA_CERT", "/env/ca.pem"),
        ]);
        let s = resolve(&flags, &env, &full_file()).expect("resolves");
        assert_eq!(s.controller, Setting { value: "https://flag:7300".into(), source: Source::Flag("--controller") });
        assert_eq!(s.token, Some(Setting { value: "flag-token".into(), source: Source::Flag("--token") }));
        assert_eq!(s.ca_cert.map(|c| c.value), Some("/flag/ca.pem".into()));
        assert_eq!(s.insecure, Setting { value: false, source: file_source() });

        let s = resolve(&ConnectionFlags::default(), &env, &full_file()).expect("resolves");
        assert_eq!(s.controller.source, Source::Env("FLEET_CONTROLLER"));
        assert_eq!(s.token.map(|t| (t.value, t.source)), Some(("env-token".into(), Source::Env("FLEET_TOKEN"))));
        assert_eq!(s.ca_cert.map(|c| c.value), Some("/env/ca.pem".into()));

        let s = resolve(&ConnectionFlags::default(), &env_of(&[]), &full_file()).expect("resolves");
        assert_eq!(s.controller, Setting { value: "https://file:7300".into(), source: file_source() });
        assert_eq!(s.token.map(|t| t.value), Some("file-token".into()));
        // Relative to the file's directory.
        assert_eq!(s.ca_cert.map(|c| c.value), Some("/home/op/.config/fleetctl/ca.pem".into()));
        assert_eq!(s.file, Some("/home/op/.config/fleetctl/config.toml".into()));

        let s = resolve(&ConnectionFlags::default(), &env_of(&[]), &LoadedFile::default()).expect("resolves");
        assert_eq!(s.controller, Setting { value: "https://127.0.0.1:7300".into(), source: Source::Default });
        assert_eq!((s.token, s.ca_cert, s.file), (None, None, None));
        assert_eq!(s.insecure, Setting { value: false, source: Source::Default });
    }

    #[test]
    fn insecure_layers_and_picks_the_default_scheme() {
        let none = ConnectionFlags::default();
        let s = resolve(&none, &env_of(&[("FLEET_INSECURE", "1")]), &LoadedFile::default()).expect("resolves");
        assert_eq!(s.insecure, Setting { value: true, source: Source::Env("FLEET_INSECURE") });
        assert_eq!(s.controller.value, "http://127.0.0.1:7300");
        // --insecure=false beats the file's `insecure = true`, and the env beats the file.
        let insecure_file = file(FileConfig { insecure: Some(true), ..Default::default() });
        let off = ConnectionFlags { insecure: Some(false), ..Default::default() };
        let s = resolve(&off, &env_of(&[("FLEET_INSECURE", "true")]), &insecure_file).expect("resolves");
        assert_eq!(s.insecure, Setting { value: false, source: Source::Flag("--insecure") });
        let s = resolve(&none, &env_of(&[("FLEET_INSECURE", "off")]), &insecure_file).expect("resolves");
        assert!(!s.insecure.value);
        let s = resolve(&none, &env_of(&[]), &insecure_file).expect("resolves");
        assert_eq!((s.insecure.value, s.controller.value.as_str()), (true, "http://127.0.0.1:7300"));
        let err = resolve(&none, &env_of(&[("FLEET_INSECURE", "maybe")]), &insecure_file).expect_err("refused");
        assert_eq!(err.0, "FLEET_INSECURE=\"maybe\" is not a boolean: use true or false");
    }

    #[test]
    fn empty_values_unset_and_empty_env_is_ignored() {
        let flags = ConnectionFlags { token: Some(String::new()), ca_cert: Some(PathBuf::new()), ..Default::default() };
        let s = resolve(&flags, &env_of(&[("FLEET_TOKEN", "env-token")]), &full_file()).expect("resolves");
        assert_eq!((s.token, s.ca_cert), (None, None));
        let env = env_of(&[("FLEET_TOKEN", ""), ("FLEET_CONTROLLER", ""), ("FLEET_INSECURE", "")]);
        let s = resolve(&ConnectionFlags::default(), &env, &full_file()).expect("resolves");
        assert_eq!(s.token.map(|t| t.source), Some(file_source()));
        assert_eq!(s.controller.value, "https://file:7300");
        let flags = ConnectionFlags { controller: Some(String::new()), ..Default::default() };
        let s = resolve(&flags, &env_of(&[]), &full_file()).expect("resolves");
        assert_eq!(s.controller.source, Source::Default);
    }

    #[test]
    fn config_file_location() {
        let none = ConnectionFlags::default();
        let at = |vars: &[(&str, &str)]| file_path(&none, &env_of(vars));
        assert_eq!(at(&[("HOME", "/home/op")]), Some(("/home/op/.config/fleetctl/config.toml".into(), false)));
        assert_eq!(
            at(&[("HOME", "/home/op"), ("XDG_CONFIG_HOME", "/xdg")]),
            Some(("/xdg/fleetctl/config.toml".into(), false))
        );
        assert_eq!(
            at(&[("HOME", "/home/op"), ("XDG_CONFIG_HOME", "relative")]),
            Some(("/home/op/.config/fleetctl/config.toml".into(), false))
        );
        assert_eq!(at(&[]), None);
        assert_eq!(at(&[("FLEET_CONFIG", "/etc/f.toml"), ("HOME", "/h")]), Some(("/etc/f.toml".into(), true)));
        let flag = ConnectionFlags { config: Some("/x.toml".into()), ..Default::default() };
        assert_eq!(file_path(&flag, &env_of(&[("FLEET_CONFIG", "/etc/f.toml")])), Some(("/x.toml".into(), true)));
    }

    #[test]
    fn file_parsing_refuses_unknown_keys_and_bad_types() {
        let path = Path::new("/c.toml");
        let parsed = parse_file(
            path,
            "controller = \"https://c:7300\"\ntoken = \"t\"\nca_cert = \"/ca.pem\"\ninsecure = false\n",
        )
        .expect("parses");
        assert_eq!(
            parsed,
            FileConfig {
                controller: Some("https://c:7300".into()),
                token: Some("t".into()),
                ca_cert: Some("/ca.pem".into()),
                insecure: Some(false),
            }
        );
        assert_eq!(parse_file(path, "").expect("empty is fine"), FileConfig::default());
        let err = parse_file(path, "ca-cert = \"/ca.pem\"\n").expect_err("typo");
        assert!(err.0.starts_with("/c.toml: unknown field `ca-cert`"), "{err}");
        let err = parse_file(path, "insecure = \"yes\"\n").expect_err("a string");
        assert!(err.0.starts_with("/c.toml: "), "{err}");
    }

    #[test]
    fn modes_like_ssh() {
        let p = Path::new("/c.toml");
        assert_eq!(check_mode(p, 0o100600, true), Ok(()));
        assert_eq!(check_mode(p, 0o100400, true), Ok(()));
        assert_eq!(check_mode(p, 0o100644, false), Ok(()), "no token, nothing to hide");
        assert_eq!(
            check_mode(p, 0o100640, true).expect_err("group-readable").0,
            "/c.toml holds a token and is readable by others (mode 0640); run `chmod 600 /c.toml` \
             (and consider revoking the token)"
        );
        assert!(check_mode(p, 0o100604, true).is_err(), "world-readable");
        let err = check_mode(p, 0o100664, false).expect_err("group-writable");
        assert!(
            err.0.contains("writable by others (mode 0664)") && err.0.ends_with("run `chmod 600 /c.toml`"),
            "{err}"
        );
        assert!(check_mode(p, 0o100602, false).is_err(), "world-writable");
    }

    fn write_mode(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn load_refuses_a_readable_file_with_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        write_mode(&path, "token = \"tf1.abc.secret\"\n", 0o644);
        let err = load(Some((path.clone(), false)), true).expect_err("refused");
        assert!(err.0.contains("holds a token and is readable by others (mode 0644)"), "{err}");
        assert!(err.0.contains(&format!("chmod 600 {}", path.display())), "{err}");
        // `config set` reads it anyway: it is about to rewrite it with mode 0600.
        assert_eq!(
            load(Some((path.clone(), false)), false).expect("unchecked").config.token.as_deref(),
            Some("tf1.abc.secret")
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(load(Some((path.clone(), false)), true).is_ok());
        write_mode(&path, "controller = \"https://c:7300\"\n", 0o644);
        assert!(load(Some((path, false)), true).is_ok(), "no token");
    }

    #[test]
    fn load_of_a_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.toml");
        let loaded = load(Some((path.clone(), false)), true).expect("the default location may be empty");
        assert_eq!(loaded, LoadedFile { path: Some(path.clone()), config: FileConfig::default() });
        let err = load(Some((path.clone(), true)), true).expect_err("named explicitly");
        assert!(err.0.starts_with(&format!("reading config file {}: ", path.display())), "{err}");
        assert!(load(Some((path, true)), false).is_ok(), "config set creates it");
        assert_eq!(load(None, true), Ok(LoadedFile::default()));
    }

    #[test]
    fn save_writes_0600_in_a_0700_directory_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("xdg").join("fleetctl").join("config.toml");
        let config = FileConfig {
            controller: Some("https://ctl.example:7300".into()),
            token: Some("tf1.abc.secret".into()),
            ca_cert: Some("/etc/teefleet/ca.pem".into()),
            insecure: None,
        };
        save(&path, &config).expect("saves");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "# fleetctl's settings; `fleetctl config set` rewrites this file.\n\
             controller = \"https://ctl.example:7300\"\n\
             token = \"tf1.abc.secret\"\n\
             ca_cert = \"/etc/teefleet/ca.pem\"\n"
        );
        assert_eq!(load(Some((path.clone(), true)), true).expect("reads back").config, config);
        // Overwriting a file someone made readable leaves it private again, and no
        // temporary file behind.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        save(&path, &FileConfig { insecure: Some(true), ..config.clone() }).expect("saves");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> =
            fs::read_dir(path.parent().expect("dir")).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["config.toml"]);
    }

    #[test]
    fn merge_sets_given_keys_and_removes_empty_ones() {
        let base = full_file().config;
        let flags = ConnectionFlags {
            controller: Some("https://new:7300".into()),
            token: Some(String::new()),
            ca_cert: Some("/abs/ca.pem".into()),
            insecure: Some(true),
            config: None,
        };
        let merged = merge(base.clone(), &flags).expect("merges");
        assert_eq!(
            merged,
            FileConfig {
                controller: Some("https://new:7300".into()),
                token: None,
                ca_cert: Some("/abs/ca.pem".into()),
                insecure: Some(true),
            }
        );
        assert_eq!(merge(base.clone(), &ConnectionFlags::default()), Ok(base.clone()));
        let relative =
            ConnectionFlags { ca_cert: Some("ca.pem".into()), token: Some(" t \n".into()), ..Default::default() };
        let merged = merge(base, &relative).expect("merges");
        let ca = merged.ca_cert.expect("set");
        assert!(ca.is_absolute() && ca.ends_with("ca.pem"), "{}", ca.display());
        assert_eq!(merged.token.as_deref(), Some("t"));
    }

    #[test]
    fn tokens_are_redacted_to_their_id() {
        assert_eq!(redact("tf1.0a1b2c3d4e5f.deadbeef"), "tf1.0a1b2c3d4e5f.<redacted>");
        assert_eq!(redact("a-bootstrap-token-of-mine"), "<redacted>");
        assert_eq!(redact("tf1..x"), "<redacted>");
        assert_eq!(redact("tf1.a.b.c"), "<redacted>");
    }
}
