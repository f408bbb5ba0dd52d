//! Opening the one RocksDB that holds the Raft log, the vote and the state machine, and reading
//! it through [`KvRead`].
//!
//! All column families share one write-ahead log, so a multi-family `WriteBatch` is atomic and a
//! synced write (or `flush_wal(true)`) makes everything written before it durable.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockWriteGuard, TryLockError};
use std::time::Duration;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions,
    SnapshotWithThreadMode, WriteBatch, WriteOptions, DB,
};

use crate::domain::kv::{Direction, KvRead, Space, Visitor, Writes};
use crate::error::{Error, Result};

/// Column family of Raft log entries, keyed by index.
pub const LOG_FAMILY: &str = "raft_log";
/// Column family of the vote, the committed log id and the last purged log id.
pub const RAFT_META_FAMILY: &str = "raft_meta";

/// Block cache shared by every column family.
const BLOCK_CACHE_BYTES: usize = 256 * 1024 * 1024;
/// Rarely written families pin old WAL files; past this size RocksDB flushes them.
const WAL_TOTAL_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// The opened database. Clones share it; it closes when the last clone is dropped.
#[derive(Clone)]
pub struct Database {
    db: Arc<Opened>,
}

/// Fields drop in declaration order: the database closes before the registration ends, so
/// [`wait_until_closed`] returns only once RocksDB has finished closing.
struct Opened {
    db: DB,
    /// Held for writing while a snapshot install replaces the state machine: a reader that
    /// cannot take it for reading would see a half-cleared state, so it is refused instead.
    replacing: RwLock<()>,
    _registration: Registration,
}

/// Databases open in this process. A process must not exit while one is closing or open: RocksDB's
/// background threads would meet its static mutexes already destroyed, and abort
/// ("pthread lock: Invalid argument").
static OPEN_DATABASES: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

struct Registration;

impl Registration {
    fn new() -> Registration {
        *OPEN_DATABASES.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
        Registration
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (count, closed) = &OPEN_DATABASES;
        *count.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) -= 1;
        closed.notify_all();
    }
}

/// Waits until every database of this process has closed, at most `timeout`; true if they have.
/// The last clone of a [`Database`] may be dropped on any thread (the log flusher's, a blocking
/// task's), so a process calls this before it exits.
pub fn wait_until_closed(timeout: Duration) -> bool {
    let (count, closed) = &OPEN_DATABASES;
    let guard = count.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (guard, _) =
        closed.wait_timeout_while(guard, timeout, |open| *open > 0).unwrap_or_else(|poisoned| poisoned.into_inner());
    *guard == 0
}

impl Database {
    pub fn open(path: &Path) -> Result<Database> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_total_wal_size(WAL_TOTAL_BYTES_MAX);
        options.increase_parallelism(2);
        // PointInTime (the default) accepts the torn WAL tail a crash leaves; never relax
        // ordering of writes.
        options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut families = vec![
            ColumnFamilyDescriptor::new(LOG_FAMILY, family_options(&cache, false)),
            ColumnFamilyDescriptor::new(RAFT_META_FAMILY, family_options(&cache, false)),
        ];
        for space in Space::ALL {
            let point_lookups =
                matches!(space, Space::EventIds | Space::StreamHeads | Space::State | Space::Meta | Space::Merkle);
            families.push(ColumnFamilyDescriptor::new(space.name(), family_options(&cache, point_lookups)));
        }
        let db = DB::open_cf_descriptors(&options, path, families)
            .map_err(|error| Error::Corrupt(format!("cannot open the database at {}: {error}", path.display())))?;
        // What the last process wrote but never synced survives its crash in the page cache, and
        // recovery reads it back; Raft then takes those entries as durable and acknowledges them
        // to the leader. RocksDB's recovery flush (on by default) makes them durable; this fsync
        // keeps it so whatever the options, before anything is reported. (The simulator found a
        // replica losing an acknowledged entry to a power loss after a restart this way.)
        db.flush_wal(true)?;
        Ok(Database { db: Arc::new(Opened { db, replacing: RwLock::new(()), _registration: Registration::new() }) })
    }

    pub fn family(&self, name: &str) -> &ColumnFamily {
        self.db.db.cf_handle(name).expect("every column family is created at open")
    }

    pub fn space(&self, space: Space) -> &ColumnFamily {
        self.family(space.name())
    }

    pub fn raw(&self) -> &DB {
        &self.db.db
    }

    /// Reads the current state (no snapshot).
    pub fn reader(&self) -> Reader<'_> {
        Reader { database: self, snapshot: None }
    }

    /// Reads one consistent point in time. Only for the state machine's own work, which never
    /// runs beside a snapshot install; everything else reads through [`Database::consistent_reader`].
    pub fn snapshot_reader(&self) -> Reader<'_> {
        Reader { database: self, snapshot: Some(self.db.db.snapshot()) }
    }

    /// Reads one consistent point in time, refused with [`Error::InstallingSnapshot`] while a
    /// snapshot install is replacing the state machine. The RocksDB snapshot is taken under the
    /// read lock, so it holds either the whole old state or the whole new one; once taken it
    /// stays consistent even if an install starts.
    pub fn consistent_reader(&self) -> Result<Reader<'_>> {
        let _shared = match self.db.replacing.try_read() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return Err(Error::InstallingSnapshot),
            // A panic while replacing left the state unknown: refuse reads as during the install.
            Err(TryLockError::Poisoned(_)) => return Err(Error::InstallingSnapshot),
        };
        Ok(self.snapshot_reader())
    }

    /// Excludes every [`Database::consistent_reader`] until the guard drops: held while a
    /// snapshot install clears and refills the state machine.
    pub fn exclude_readers(&self) -> RwLockWriteGuard<'_, ()> {
        self.db.replacing.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds state machine writes to a batch.
    pub fn add_writes(&self, batch: &mut WriteBatch, writes: Writes) {
        for ((space, key), value) in writes {
            match value {
                Some(value) => batch.put_cf(self.space(space), key, value),
                None => batch.delete_cf(self.space(space), key),
            }
        }
    }

    /// Writes without waiting for fsync: for data the Raft log can rebuild.
    pub fn write_unsynced(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(false);
        Ok(self.db.db.write_opt(batch, &options)?)
    }

    /// Writes and fsyncs the WAL before returning.
    pub fn write_synced(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        Ok(self.db.db.write_opt(batch, &options)?)
    }

    /// Makes every write so far durable: one fsync of the shared WAL.
    pub fn sync_wal(&self) -> Result<()> {
        Ok(self.db.db.flush_wal(true)?)
    }
}

fn family_options(cache: &Cache, point_lookups: bool) -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if point_lookups {
        table.set_bloom_filter(10.0, false);
    }
    options.set_block_based_table_factory(&table);
    options
}

/// [`KvRead`] over the database, optionally pinned to a snapshot.
pub struct Reader<'db> {
    database: &'db Database,
    snapshot: Option<SnapshotWithThreadMode<'db, DB>>,
}

impl Reader<'_> {
    fn options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        if let Some(snapshot) = &self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }
}

impl KvRead for Reader<'_> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.database.raw().get_cf_opt(self.database.space(space), key, &self.options())?)
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let mut options = self.options();
        options.set_iterate_lower_bound(start.to_vec());
        options.set_iterate_upper_bound(end.to_vec());
        let mut iterator = self.database.raw().raw_iterator_cf_opt(self.database.space(space), options);
        match direction {
            Direction::Forward => iterator.seek_to_first(),
            Direction::Reverse => iterator.seek_to_last(),
        }
        while let (Some(key), Some(value)) = (iterator.key(), iterator.value()) {
            if !visit(key, value)? {
                break;
            }
            match direction {
                Direction::Forward => iterator.next(),
                Direction::Reverse => iterator.prev(),
            }
        }
        iterator.status()?;
        Ok(())
    }
}
