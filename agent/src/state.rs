//! The last applied rule set on disk, so mirroring survives reboots and controller
//! outages: the agent re-applies it at start, before it connects.

use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use teefleet_model::{HostId, RuleSet};
use tracing::info;

const FILE_NAME: &str = "ruleset.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not encode the rule set")]
    Encode(#[source] serde_json::Error),
    #[error("the state writer stopped unexpectedly")]
    Join(#[source] tokio::task::JoinError),
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Truncated, hand-edited or written by an incompatible version: never half-applied.
    #[error("{path} is corrupt or invalid")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A state directory copied from another host (an image, a restored volume): its
    /// rules are that host's, never this one's.
    #[error("{path} holds the rule set of host {saved}, not of this host ({ours})")]
    OtherHost { path: PathBuf, saved: HostId, ours: HostId },
}

/// The file's shape: the set, and the host it was applied on (absent in files written
/// before the host was recorded).
#[derive(Serialize, Deserialize)]
struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_id: Option<HostId>,
    #[serde(flatten)]
    set: RuleSet,
}

/// `<state-dir>/ruleset.json`.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    host: Option<HostId>,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), host: None }
    }

    /// The store of `host`: it names the host in what it saves, and refuses a saved set
    /// that names another.
    pub fn for_host(self, host: HostId) -> Self {
        Self { host: Some(host), ..self }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The saved set, `None` when there is none, or why it cannot be trusted. The whole
    /// file is validated (the model validates while deserialising) before anything is
    /// applied, so a corrupt file is ignored whole, never half-applied: the controller
    /// pushes the desired set once connected.
    pub async fn load(&self) -> Result<Option<RuleSet>, StateError> {
        let path = self.path();
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                info!(path = %path.display(), "no saved rule set");
                return Ok(None);
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let saved = serde_json::from_slice::<Saved>(&bytes)
            .map_err(|source| StateError::Corrupt { path: path.clone(), source })?;
        match (saved.host_id, &self.host) {
            (Some(saved), Some(ours)) if saved != *ours => {
                Err(StateError::OtherHost { path, saved, ours: ours.clone() })
            }
            _ => Ok(Some(saved.set)),
        }
    }

    /// Deletes the saved set (for uninstalling), so a restarted agent does not bring the
    /// rules back. Idempotent.
    pub async fn remove(&self) -> Result<bool, StateError> {
        let path = self.path();
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StateError::Write { path, source }),
        }
    }

    /// Replaces the saved set atomically: a crash leaves the old file or the new one.
    pub async fn save(&self, set: &RuleSet) -> Result<(), StateError> {
        let saved = Saved { host_id: self.host.clone(), set: set.clone() };
        let json = serde_json::to_vec_pretty(&saved).map_err(StateError::Encode)?;
        let dir = self.dir.clone();
        let path = self.path();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &[(FILE_NAME, &json)], 0o644))
            .await
            .map_err(StateError::Join)?
            .map_err(|source| StateError::Write { path, source })
    }
}

/// Replaces `files` (name, contents) in `dir` as atomically as the filesystem allows: each
/// is written to a temp file in the same directory (so the rename is atomic), created with
/// `mode`, and fsynced; only then are they renamed over the targets, and the directory is
/// fsynced so the renames survive a power cut. A crash leaves each file old or new, and a
/// set of files mixed only if it strikes between two renames. tempfile names the temp
/// files and removes them if anything fails.
pub(crate) fn write_atomically(dir: &Path, files: &[(&str, &[u8])], mode: u32) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let prefixes: Vec<String> = files.iter().map(|(name, _)| format!(".{name}.")).collect();
    remove_leftovers(dir, &prefixes)?;
    let mut written = Vec::with_capacity(files.len());
    for ((name, bytes), prefix) in files.iter().zip(&prefixes) {
        let mut file =
            tempfile::Builder::new().prefix(prefix).permissions(fs::Permissions::from_mode(mode)).tempfile_in(dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        written.push((file, name));
    }
    for (file, name) in written {
        file.persist(dir.join(name)).map_err(|e| e.error)?;
    }
    File::open(dir)?.sync_all()
}

/// Removes temp files a killed writer left (the agent is the only writer of its state
/// directory), so crashes do not pile up copies of old keys.
fn remove_leftovers(dir: &Path, prefixes: &[String]) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| prefixes.iter().any(|p| n.starts_with(p.as_str()))) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use teefleet_model::{MirrorRule, Protocol, RuleDirection};

    use super::*;

    fn sample() -> RuleSet {
        let rule = MirrorRule::new(
            "web".parse().expect("name"),
            RuleDirection::Egress,
            "10.0.0.5".parse().expect("ip"),
            Protocol::Udp,
            None,
            Some("10.9.0.0/16".parse().expect("cidr")),
        )
        .expect("rule");
        RuleSet::new(42, vec![rule]).expect("set")
    }

    #[tokio::test]
    async fn round_trip_and_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path().join("nested"));
        assert_eq!(store.load().await.expect("no file is fine"), None);
        store.save(&RuleSet::new(1, vec![]).expect("set")).await.expect("save");
        store.save(&sample()).await.expect("save");
        assert_eq!(store.load().await.expect("load"), Some(sample()));
        let names: Vec<_> =
            fs::read_dir(dir.path().join("nested")).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, [FILE_NAME], "no temp file is left behind");
        assert!(store.remove().await.expect("remove"));
        assert!(!store.remove().await.expect("idempotent"));
        assert_eq!(store.load().await.expect("gone"), None);
    }

    #[tokio::test]
    async fn a_set_saved_by_another_host_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = |id: &str| -> HostId { id.parse().expect("host") };
        let ours = StateStore::new(dir.path()).for_host(host("i-0aaaaaaaaaaaaaaa1"));
        ours.save(&sample()).await.expect("save");
        assert_eq!(ours.load().await.expect("ours"), Some(sample()));
        let text = fs::read_to_string(ours.path()).expect("file");
        assert!(text.contains("\"host_id\": \"i-0aaaaaaaaaaaaaaa1\""), "{text}");
        let other = StateStore::new(dir.path()).for_host(host("i-0bbbbbbbbbbbbbbb2"));
        let err = other.load().await.expect_err("another host's set");
        assert!(matches!(err, StateError::OtherHost { .. }), "{err}");
        assert!(err.to_string().contains("i-0aaaaaaaaaaaaaaa1") && err.to_string().contains("i-0bbbbbbbbbbbbbbb2"));
        // A file from before hosts were recorded is still this host's.
        fs::write(ours.path(), serde_json::to_string(&sample()).expect("json")).expect("write");
        assert_eq!(other.load().await.expect("unnamed"), Some(sample()));
    }

    #[tokio::test]
    async fn corrupt_or_invalid_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::new(dir.path());
        let valid = serde_json::to_string(&sample()).expect("json");
        for bad in [
            "{not json".to_owned(),
            valid[..valid.len() / 2].to_owned(),
            valid.replace("10.0.0.5", "0.0.0.0"),
            valid.replace("\"web\"", "\"a b\""),
            valid.replace("10.9.0.0/16", "10.9.0.1/16"),
        ] {
            assert_ne!(bad, valid);
            fs::write(store.path(), &bad).expect("write");
            let err = store.load().await.expect_err(&bad);
            assert!(matches!(err, StateError::Corrupt { .. }), "{bad}: {err}");
        }
    }
}
