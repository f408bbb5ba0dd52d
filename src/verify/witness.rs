//! The witness file: the pinned checkpoint key and the last checkpoint this verifier accepted,
//! so the next run can demand a consistency proof from it (the log may only grow).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    key: Option<String>,
    /// The last accepted signed checkpoint, verbatim.
    checkpoint: Option<String>,
}

pub struct Witness {
    path: PathBuf,
    saved: Saved,
}

impl Witness {
    /// Loads `path` (default `~/.fleetlog/verify.json`); a missing file is an empty witness.
    pub fn load(path: Option<PathBuf>) -> Result<Witness> {
        let path = match path {
            Some(path) => path,
            None => {
                let home = std::env::var_os("HOME").context("HOME is not set; give --state FILE")?;
                PathBuf::from(home).join(".fleetlog").join("verify.json")
            }
        };
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a fleetlog verify state file", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Witness { path, saved })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn key(&self) -> Option<&str> {
        self.saved.key.as_deref()
    }

    pub fn checkpoint(&self) -> Option<&str> {
        self.saved.checkpoint.as_deref()
    }

    /// Pins `key` and remembers `checkpoint`, replacing the file atomically.
    pub fn save(&mut self, key: String, checkpoint: String) -> Result<()> {
        self.saved = Saved { key: Some(key), checkpoint: Some(checkpoint) };
        if let Some(directory) = self.path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        }
        let temporary = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&self.saved)?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)
        };
        write().with_context(|| format!("saving {}", self.path.display()))
    }
}
