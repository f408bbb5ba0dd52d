//! Free space on the data directory's filesystem. Appends are refused while less than a reserve
//! is free, so a filling disk turns into a clear `disk_full` answer instead of a failed RocksDB
//! write: a failed log write is a storage error, and openraft stops a node on those.

use std::path::{Path, PathBuf};

/// Free space below which appends are refused unless configured otherwise: room for RocksDB to
/// flush its memtables and finish what is in flight.
pub const RESERVE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct DiskGuard {
    path: PathBuf,
    reserve_bytes: u64,
}

impl DiskGuard {
    pub fn new(path: PathBuf, reserve_bytes: u64) -> DiskGuard {
        DiskGuard { path, reserve_bytes }
    }

    /// Why a write must wait for space, if it must. Checked on every append, so appends resume
    /// the moment space returns.
    pub fn shortage(&self) -> Option<String> {
        match free_bytes(&self.path) {
            Ok(free) if free < self.reserve_bytes => Some(format!(
                "the data directory's filesystem has {free} bytes free; appends need at least {} \
                 (--min-free-mib); free some space and retry",
                self.reserve_bytes
            )),
            Ok(_) => None,
            Err(error) => {
                // Not knowing is no reason to refuse: the write itself will tell.
                tracing::warn!(%error, path = %self.path.display(), "cannot read the free space of the data directory");
                None
            }
        }
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_free_space_and_refuses_below_the_reserve() {
        let directory = tempfile::tempdir().unwrap();
        let free = free_bytes(directory.path()).unwrap();
        assert!(free > 0);
        assert!(DiskGuard::new(directory.path().to_path_buf(), 0).shortage().is_none());
        let shortage = DiskGuard::new(directory.path().to_path_buf(), u64::MAX).shortage().unwrap();
        assert!(shortage.contains("bytes free"), "{shortage}");
        assert!(free_bytes(&directory.path().join("missing")).is_err());
    }
}
