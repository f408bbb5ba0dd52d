//! Snapshots of the state machine as files, never held in memory.
//!
//! A snapshot is a dump of every state machine column family read from one RocksDB snapshot:
//!
//! ```text
//! "FLSNAP01" | u32 meta length | meta (codec) | records… | 0xFF | u64 record count | sha256
//! record = u8 space tag | u32 key length | key | u32 value length | value
//! ```
//!
//! The trailing SHA-256 covers every byte before it, so a damaged or truncated transfer is
//! refused before anything is installed.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::WriteBatch;
use sha2::{Digest, Sha256};

use super::db::Database;
use super::log_store;
use crate::consensus::types::{LogId, SnapshotMeta, StoredMembership};
use crate::domain::codec;
use crate::domain::keys::{META_APPLIED, META_MEMBERSHIP};
use crate::domain::kv::{Direction, KvRead, Space};
use crate::error::{Error, Result};
use crate::storage::crash_point;

const MAGIC: &[u8; 8] = b"FLSNAP01";
const END_MARK: u8 = 0xFF;
/// Bytes of records written per batch while installing.
const INSTALL_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Largest key or value a snapshot may hold (events are far smaller).
const RECORD_BYTES_MAX: u32 = 64 * 1024 * 1024;
const CURRENT_FILE: &str = "current";
/// Meta key set while a snapshot is being installed; a restart that finds it installs again.
pub const META_INSTALLING: &[u8] = b"installing";
/// The crash point name of an install's steps (`FLEETLOG_CRASH_POINT=snapshot-install:N`).
pub const INSTALL_CRASH_POINT: &str = "snapshot-install";
/// Steps of an install that carry a crash point: 1 to this.
pub const INSTALL_STEPS: u32 = 7;

/// Where snapshots live: `<data>/snapshots/`. Clones share one lock: building a snapshot and
/// installing one never run at once, in any order (a build reading a half-installed state, or
/// deleting the file an install just adopted, would otherwise be possible).
#[derive(Clone, Debug)]
pub struct SnapshotFiles {
    directory: PathBuf,
    single_flight: Arc<Mutex<()>>,
    /// Set from the first byte of a received snapshot until its install is done: see
    /// [`SnapshotFiles::purge_limit`].
    receiving: Arc<AtomicBool>,
}

impl SnapshotFiles {
    pub fn new(directory: PathBuf) -> Result<SnapshotFiles> {
        if !directory.exists() {
            fs::create_dir_all(&directory)?;
            // The directory's own entry is durable before any snapshot in it is relied on.
            if let Some(parent) = directory.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(SnapshotFiles { directory, single_flight: Arc::new(Mutex::new(())), receiving: Arc::default() })
    }

    /// A snapshot is arriving from the leader; its install will follow.
    pub fn begin_receiving(&self) {
        self.receiving.store(true, Ordering::SeqCst);
    }

    /// The received snapshot is installed (or its transfer was given up).
    pub fn end_receiving(&self) {
        self.receiving.store(false, Ordering::SeqCst);
    }

    /// How far the Raft log may be purged when openraft asks for `wanted`.
    ///
    /// openraft 0.9 purged a follower's log up to a received snapshot as soon as it handed the
    /// snapshot to the state machine, without waiting for the install (0.10 waits for the
    /// snapshot; this bound stays as a second line of defence). A crash in between would
    /// leave the log purged past the current snapshot, a state from which openraft refuses to
    /// start (it asserts purged <= snapshot). So while a snapshot is being received or installed,
    /// the log is purged no further than the current snapshot (`None`: not at all); the install
    /// itself purges up to the new snapshot, in the same batch that makes it applied.
    pub fn purge_limit(&self, wanted: LogId) -> Result<Option<LogId>> {
        if !self.receiving.load(Ordering::SeqCst) {
            return Ok(Some(wanted));
        }
        let current = self.current()?.and_then(|(meta, _)| meta.last_log_id);
        Ok(match current {
            Some(current) if current.index < wanted.index => Some(current),
            Some(_) => Some(wanted),
            None => None,
        })
    }

    fn alone(&self) -> MutexGuard<'_, ()> {
        // A panic in an earlier build or install left nothing half-done that the lock guards:
        // the install mark and the `current` pointer carry the durable state.
        self.single_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh path for a snapshot being received.
    pub fn incoming_path(&self) -> PathBuf {
        self.directory.join(format!("incoming-{}.snap", unique_suffix()))
    }

    /// Moves a received snapshot file into this directory under its snapshot id, so a later
    /// transfer cannot overwrite it, and makes the move durable. A file from elsewhere is copied.
    fn adopt(&self, received: &Path, snapshot_id: &str) -> Result<PathBuf> {
        let kept = self.directory.join(format!("{snapshot_id}.snap"));
        if received == kept {
            return Ok(kept);
        }
        if received.parent() == Some(self.directory.as_path()) {
            fs::rename(received, &kept)?;
        } else {
            fs::copy(received, &kept)?;
            File::open(&kept)?.sync_all()?;
        }
        File::open(&self.directory)?.sync_all()?;
        Ok(kept)
    }

    /// Replaces the state machine with a received snapshot, crash-safe and never beside a build.
    ///
    /// Steps (each a crash point, see [`INSTALL_CRASH_POINT`]): 1 the file is adopted; 2 the
    /// install mark is durable; 3 the state machine is cleared; 4 every record is written; 5 the
    /// applied position is durable; 6 the file is the current snapshot; 7 the mark is gone. A
    /// crash before 2 leaves the old state; from 2 on, [`SnapshotFiles::resume_install`] finishes
    /// the install at the next start, before anything is served.
    pub fn install(&self, database: &Database, received: &Path, expected: &SnapshotMeta) -> Result<SnapshotMeta> {
        let _alone = self.alone();
        let meta = verify(received)?;
        if meta.last_log_id != expected.last_log_id || meta.last_membership != expected.last_membership {
            return Err(Error::Corrupt(format!(
                "snapshot file {} holds the state at {:?}, not the announced {:?}",
                received.display(),
                meta.last_log_id,
                expected.last_log_id
            )));
        }
        let kept = self.adopt(received, &snapshot_name(&meta.last_log_id))?;
        crash_point::reached(INSTALL_CRASH_POINT, 1);
        replace_state(database, &kept, &meta)?;
        self.set_current(&meta, &kept)?;
        crash_point::reached(INSTALL_CRASH_POINT, 6);
        clear_install_mark(database)?;
        crash_point::reached(INSTALL_CRASH_POINT, 7);
        Ok(meta)
    }

    /// Finishes an install that a crash interrupted, if the install mark says there was one.
    pub fn resume_install(&self, database: &Database) -> Result<Option<SnapshotMeta>> {
        let _alone = self.alone();
        let Some(path) = database.reader().get(Space::Meta, META_INSTALLING)? else {
            return Ok(None);
        };
        let path = PathBuf::from(String::from_utf8_lossy(&path).into_owned());
        tracing::warn!(snapshot = %path.display(), "finishing a snapshot install that a crash interrupted");
        let meta = verify(&path).map_err(|error| {
            Error::Corrupt(format!(
                "a snapshot install was interrupted and its file {} cannot be read ({error}); wipe this \
                 node's data directory and let it rejoin its cluster",
                path.display()
            ))
        })?;
        replace_state(database, &path, &meta)?;
        self.set_current(&meta, &path)?;
        clear_install_mark(database)?;
        Ok(Some(meta))
    }

    /// The current snapshot: its meta and file.
    pub fn current(&self) -> Result<Option<(SnapshotMeta, PathBuf)>> {
        let pointer = self.directory.join(CURRENT_FILE);
        let bytes = match fs::read(&pointer) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let (meta, name): (SnapshotMeta, String) = codec::decode(&bytes)?;
        Ok(Some((meta, self.directory.join(name))))
    }

    /// Makes `path` the current snapshot (atomically) and deletes older snapshot files. Called
    /// only under the single-flight lock: nothing else can be adopting a file meanwhile.
    fn set_current(&self, meta: &SnapshotMeta, path: &Path) -> Result<()> {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| Error::Corrupt(format!("snapshot path {} has no file name", path.display())))?
            .to_string();
        let temporary = self.directory.join(format!("{CURRENT_FILE}-{}.tmp", unique_suffix()));
        let mut file = File::create(&temporary)?;
        file.write_all(&codec::encode(&(meta.clone(), name.clone()))?)?;
        file.sync_all()?;
        fs::rename(&temporary, self.directory.join(CURRENT_FILE))?;
        File::open(&self.directory)?.sync_all()?;
        for entry in fs::read_dir(&self.directory)? {
            let entry = entry?;
            let other = entry.file_name();
            let other = other.to_string_lossy();
            let stale = (other.ends_with(".snap") && other != name && !other.starts_with("incoming-"))
                || (other.starts_with(CURRENT_FILE) && other.ends_with(".tmp"));
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Dumps the state machine, as of one consistent point, into a new snapshot file.
    pub fn build(&self, database: &Database) -> Result<(SnapshotMeta, PathBuf)> {
        let _alone = self.alone();
        // The Raft log is purged behind a snapshot: make every applied write durable first.
        database.sync_wal()?;
        let reader = database.snapshot_reader();
        let last_log_id: Option<LogId> = read_meta(&reader, META_APPLIED)?.flatten();
        let last_membership: StoredMembership = read_meta(&reader, META_MEMBERSHIP)?.unwrap_or_default();
        let snapshot_id = snapshot_name(&last_log_id);
        let meta = SnapshotMeta { last_log_id, last_membership };
        let path = self.directory.join(format!("{snapshot_id}.snap"));
        let temporary = self.directory.join(format!("{snapshot_id}.partial"));
        let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(&temporary)?));
        writer.write_all(MAGIC)?;
        let meta_bytes = codec::encode(&meta)?;
        writer.write_all(&(meta_bytes.len() as u32).to_be_bytes())?;
        writer.write_all(&meta_bytes)?;
        let mut count = 0u64;
        for space in Space::ALL {
            reader.scan(space, &[], &[0xFF; 32], Direction::Forward, &mut |key, value| {
                writer.write_all(&[space.tag()])?;
                writer.write_all(&(key.len() as u32).to_be_bytes())?;
                writer.write_all(key)?;
                writer.write_all(&(value.len() as u32).to_be_bytes())?;
                writer.write_all(value)?;
                count += 1;
                Ok(true)
            })?;
        }
        writer.write_all(&[END_MARK])?;
        writer.write_all(&count.to_be_bytes())?;
        let digest = writer.digest();
        let mut inner = writer.into_inner();
        inner.write_all(&digest)?;
        let file = inner.into_inner().map_err(|error| Error::Io(error.into_error()))?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        self.set_current(&meta, &path)?;
        Ok((meta, path))
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(reader: &dyn KvRead, key: &[u8]) -> Result<Option<T>> {
    match reader.get(Space::Meta, key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Checks a snapshot file end to end (magic, structure, count, checksum) and returns its meta.
pub fn verify(path: &Path) -> Result<SnapshotMeta> {
    read_records(path, &mut |_, _, _| Ok(()))
}

/// Replaces the state machine with the snapshot at `path`, outside any snapshot directory (tools
/// and tests). A node installs through [`SnapshotFiles::install`].
pub fn install(database: &Database, path: &Path) -> Result<SnapshotMeta> {
    let meta = verify(path)?;
    replace_state(database, path, &meta)?;
    clear_install_mark(database)?;
    Ok(meta)
}

/// Clears the state machine and loads the verified snapshot at `path` into it. The install mark
/// is written (synced) first and survives the clear, so a crash at any point after it makes the
/// next start run this again; readers are excluded from the clear to the end.
fn replace_state(database: &Database, path: &Path, meta: &SnapshotMeta) -> Result<()> {
    let mut mark = WriteBatch::default();
    mark.put_cf(database.space(Space::Meta), META_INSTALLING, path.to_string_lossy().as_bytes());
    database.write_synced(mark)?;
    crash_point::reached(INSTALL_CRASH_POINT, 2);

    let _exclusive = database.exclude_readers();
    let mut clear = WriteBatch::default();
    for space in Space::ALL {
        let family = database.space(space);
        if space == Space::Meta {
            // Every meta key but the mark itself.
            let mut after_mark = META_INSTALLING.to_vec();
            after_mark.push(0);
            clear.delete_range_cf(family, &[][..], META_INSTALLING);
            clear.delete_range_cf(family, &after_mark[..], &[0xFFu8; 32][..]);
        } else {
            clear.delete_range_cf(family, &[][..], &[0xFFu8; 32][..]);
        }
    }
    database.write_unsynced(clear)?;
    crash_point::reached(INSTALL_CRASH_POINT, 3);

    let mut batch = WriteBatch::default();
    read_records(path, &mut |space, key, value| {
        if space == Space::Meta && key == META_INSTALLING {
            return Ok(());
        }
        batch.put_cf(database.space(space), key, value);
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            database.write_unsynced(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    database.write_unsynced(batch)?;
    crash_point::reached(INSTALL_CRASH_POINT, 4);

    let mut finish = WriteBatch::default();
    finish.put_cf(database.space(Space::Meta), META_APPLIED, codec::encode(&meta.last_log_id)?);
    finish.put_cf(database.space(Space::Meta), META_MEMBERSHIP, codec::encode(&meta.last_membership)?);
    // The log the snapshot covers goes with it, atomically (see `SnapshotFiles::purge_limit`).
    if let Some(last) = &meta.last_log_id {
        log_store::add_purge(database, &mut finish, last)?;
    }
    database.write_synced(finish)?;
    crash_point::reached(INSTALL_CRASH_POINT, 5);
    Ok(())
}

/// Ends an install: from here a restart no longer installs the snapshot again.
fn clear_install_mark(database: &Database) -> Result<()> {
    let mut done = WriteBatch::default();
    done.delete_cf(database.space(Space::Meta), META_INSTALLING);
    database.write_synced(done)
}

/// What reading a snapshot calls for each record.
type RecordVisitor<'a> = dyn FnMut(Space, &[u8], &[u8]) -> Result<()> + 'a;

fn read_records(path: &Path, visit: &mut RecordVisitor<'_>) -> Result<SnapshotMeta> {
    let corrupt = |what: &str| Error::Corrupt(format!("snapshot {}: {what}", path.display()));
    let file = File::open(path)?;
    let length = file.metadata()?.len();
    if length < (MAGIC.len() + 4 + 1 + 8 + 32) as u64 {
        return Err(corrupt("too short"));
    }
    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, file).take(length - 32));
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(corrupt("not a fleetlog snapshot"));
    }
    let meta_bytes = read_block(&mut reader, RECORD_BYTES_MAX)?;
    let meta: SnapshotMeta = codec::decode(&meta_bytes)?;
    let mut count = 0u64;
    let mut key = Vec::new();
    let mut value = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        reader.read_exact(&mut tag)?;
        if tag[0] == END_MARK {
            break;
        }
        let space = Space::from_tag(tag[0]).ok_or_else(|| corrupt("unknown key space"))?;
        read_block_into(&mut reader, RECORD_BYTES_MAX, &mut key)?;
        read_block_into(&mut reader, RECORD_BYTES_MAX, &mut value)?;
        visit(space, &key, &value)?;
        count += 1;
    }
    let mut stored_count = [0u8; 8];
    reader.read_exact(&mut stored_count)?;
    if u64::from_be_bytes(stored_count) != count {
        return Err(corrupt("record count does not match"));
    }
    let digest = reader.digest();
    let mut inner = reader.into_inner().into_inner();
    let mut stored_digest = [0u8; 32];
    inner.read_exact(&mut stored_digest)?;
    if stored_digest != digest {
        return Err(corrupt("checksum does not match"));
    }
    Ok(meta)
}

fn read_block(reader: &mut impl Read, bytes_max: u32) -> Result<Vec<u8>> {
    let mut block = Vec::new();
    read_block_into(reader, bytes_max, &mut block)?;
    Ok(block)
}

fn read_block_into(reader: &mut impl Read, bytes_max: u32, block: &mut Vec<u8>) -> Result<()> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length)?;
    let length = u32::from_be_bytes(length);
    if length > bytes_max {
        return Err(Error::Corrupt(format!("snapshot record of {length} bytes exceeds the limit")));
    }
    block.resize(length as usize, 0);
    reader.read_exact(block)?;
    Ok(())
}

/// A file name for a snapshot of the state at `last_log_id`, unique on this node: two builds
/// at the same log id never share a file.
fn snapshot_name(last_log_id: &Option<LogId>) -> String {
    match last_log_id {
        Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, unique_suffix()),
        None => format!("empty-{}", unique_suffix()),
    }
}

fn unique_suffix() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", now.as_micros(), std::process::id())
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new() }
    }

    fn digest(&mut self) -> [u8; 32] {
        std::mem::take(&mut self.hasher).finalize().into()
    }

    fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    fn digest(&mut self) -> [u8; 32] {
        std::mem::take(&mut self.hasher).finalize().into()
    }

    fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}
