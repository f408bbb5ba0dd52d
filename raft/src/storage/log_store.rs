//! The Raft log and vote in RocksDB, with group commit.
//!
//! `append` writes entries without fsync (they are readable at once, as openraft requires) and
//! hands the flush callback to one flusher thread. The flusher takes every callback waiting, does
//! one `flush_wal(true)` for all of them and only then reports them durable: many appends, one
//! fsync, and no acknowledgement before the data is on disk.
//!
//! The newest entries are also kept decoded in memory ([`RecentEntries`]): right after an append
//! openraft reads them back twice (to replicate them and to apply them), and serving those reads
//! from memory saves a hand-off to a blocking thread and a decode each time.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rocksdb::WriteBatch;
use tokio::sync::mpsc;

use super::db::{Database, LOG_FAMILY, RAFT_META_FAMILY};
use super::snapshot::SnapshotFiles;
use crate::consensus::types::{Entry, LogId, TypeConfig, Vote};
use crate::domain::codec;
use crate::domain::limits::RECENT_ENTRIES_BUDGET_BYTES;
use crate::storage::append_budget;

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"last_purged";

/// Flush callbacks waiting for the flusher thread.
const PENDING_FLUSHES_MAX: usize = 65_536;
/// Entries kept in memory: enough for replication and apply to find what was just appended, even
/// with a follower a little behind; an entry holds at most about a megabyte.
const RECENT_ENTRIES_MAX: usize = 256;

/// The Raft log store. Cloning shares the database, the recent entries and the flusher.
#[derive(Clone)]
pub struct LogStore {
    database: Database,
    /// The state machine's snapshots: a purge goes no further than they allow.
    snapshots: SnapshotFiles,
    recent: Arc<Mutex<RecentEntries>>,
    /// The flusher thread ends when the last clone is dropped and this channel closes.
    flushes: mpsc::Sender<IOFlushed<TypeConfig>>,
}

/// A copy of the log's newest entries: always a contiguous run of indexes that equals what is
/// stored, because every change of the stored log (append, truncate, purge) changes it too.
/// Bounded by [`RECENT_ENTRIES_MAX`] entries and [`RECENT_ENTRIES_BUDGET_BYTES`] encoded bytes
/// (the newest entry is kept whatever its size).
#[derive(Default)]
struct RecentEntries {
    entries: VecDeque<Entry>,
    /// Encoded size of each entry, in the same order.
    sizes: VecDeque<usize>,
    /// Sum of `sizes`.
    bytes: usize,
}

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.log_id.index)
    }

    /// Adds `entry`, which takes `size` bytes encoded.
    fn append(&mut self, entry: Entry, size: usize) {
        let follows = self.entries.back().is_some_and(|last| last.log_id.index + 1 == entry.log_id.index);
        if !follows {
            // After a restart or a truncation the run starts afresh at the new entry.
            self.entries.clear();
            self.sizes.clear();
            self.bytes = 0;
        }
        self.entries.push_back(entry);
        self.sizes.push_back(size);
        self.bytes += size;
        while self.entries.len() > RECENT_ENTRIES_MAX
            || (self.bytes > RECENT_ENTRIES_BUDGET_BYTES && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        self.entries.pop_front();
        self.bytes -= self.sizes.pop_front().unwrap_or(0);
    }

    /// Entries `start..end`, when every one of them is here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let next = first + self.entries.len() as u64;
        if start < first || end > next || start >= end {
            return None;
        }
        Some(self.entries.range((start - first) as usize..(end - first) as usize).cloned().collect())
    }

    /// Drops entries from `index` on (truncate).
    fn remove_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|last| last.log_id.index >= index) {
            self.entries.pop_back();
            self.bytes -= self.sizes.pop_back().unwrap_or(0);
        }
    }

    /// Drops entries up to and including `index` (purge).
    fn remove_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|first| first.log_id.index <= index) {
            self.pop_front();
        }
    }
}

impl LogStore {
    pub fn new(database: Database, snapshots: SnapshotFiles) -> LogStore {
        let (flushes, mut pending) = mpsc::channel::<IOFlushed<TypeConfig>>(PENDING_FLUSHES_MAX);
        let flusher_database = database.clone();
        std::thread::Builder::new()
            .name("fleetlog-log-flusher".into())
            .spawn(move || {
                while let Some(first) = pending.blocking_recv() {
                    let mut callbacks = vec![first];
                    while let Ok(more) = pending.try_recv() {
                        callbacks.push(more);
                    }
                    // The durability point of the log: one fsync for every append above.
                    let result = flusher_database.sync_wal();
                    for callback in callbacks {
                        let outcome = match &result {
                            Ok(()) => Ok(()),
                            Err(error) => Err(std::io::Error::other(error.to_string())),
                        };
                        callback.io_completed(outcome);
                    }
                }
            })
            .expect("spawn the log flusher thread");
        LogStore { database, snapshots, recent: Arc::default(), flushes }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, io::Error> {
        let family = self.database.family(RAFT_META_FAMILY);
        match self.database.raw().get_cf(family, key).map_err(|error| read_error(&error))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(|error| read_error(&error))?)),
            None => Ok(None),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Database) -> Result<T, io::Error> + Send + 'static,
    ) -> Result<T, io::Error> {
        let database = self.database.clone();
        tokio::task::spawn_blocking(move || work(database))
            .await
            .map_err(|error| write_error(&format!("storage task failed: {error}")))?
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, io::Error> {
        let family = self.database.family(LOG_FAMILY);
        let mut iterator = self.database.raw().raw_iterator_cf(family);
        iterator.seek_to_last();
        match iterator.value() {
            Some(bytes) => {
                let entry: Entry = codec::decode(bytes).map_err(|error| read_error(&error))?;
                Ok(Some(entry.log_id))
            }
            None => {
                iterator.status().map_err(|error| read_error(&error))?;
                Ok(None)
            }
        }
    }
}

fn read_error(error: &dyn std::fmt::Display) -> io::Error {
    io::Error::other(format!("reading the Raft log: {error}"))
}

fn write_error(error: &dyn std::fmt::Display) -> io::Error {
    io::Error::other(format!("writing the Raft log: {error}"))
}

/// Adds the purge of the log through `log_id` to `batch`, unless the log is purged that far
/// already. The purge mark and the deletion go in one batch, so a crash never leaves a hole.
pub(crate) fn add_purge(database: &Database, batch: &mut WriteBatch, log_id: &LogId) -> crate::Result<()> {
    let purged: Option<LogId> = match database.raw().get_cf(database.family(RAFT_META_FAMILY), PURGED_KEY)? {
        Some(bytes) => Some(codec::decode(&bytes)?),
        None => None,
    };
    if purged.is_some_and(|purged| purged.index >= log_id.index) {
        return Ok(());
    }
    batch.put_cf(database.family(RAFT_META_FAMILY), PURGED_KEY, codec::encode(log_id)?);
    batch.delete_range_cf(database.family(LOG_FAMILY), index_key(0), index_key(log_id.index + 1));
    Ok(())
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE_KEY)
    }

    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(index) => index.checked_add(1),
            Bound::Excluded(index) => Some(*index),
            Bound::Unbounded => None,
        };
        if let Some(end) = end {
            if let Some(entries) = self.recent.lock().expect("recent entries lock").get(start, end) {
                return Ok(entries);
            }
        }
        self.blocking(move |database| {
            let family = database.family(LOG_FAMILY);
            let mut options = rocksdb::ReadOptions::default();
            if let Some(end) = end {
                options.set_iterate_upper_bound(index_key(end).to_vec());
            }
            let mut iterator = database.raw().raw_iterator_cf_opt(family, options);
            iterator.seek(index_key(start));
            let mut entries = Vec::new();
            while let Some(bytes) = iterator.value() {
                let entry: Entry = codec::decode(bytes).map_err(|error| read_error(&error))?;
                entries.push(entry);
                iterator.next();
            }
            iterator.status().map_err(|error| read_error(&error))?;
            Ok(entries)
        })
        .await
    }

    /// What replication sends in one request: the entries, cut to the byte budget.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        let mut entries = self.try_get_log_entries(start..end).await?;
        append_budget::keep_within_budget(&mut entries);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_meta(PURGED_KEY)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = codec::encode(vote).map_err(|error| write_error(&error))?;
        self.blocking(move |database| {
            let mut batch = WriteBatch::default();
            batch.put_cf(database.family(RAFT_META_FAMILY), VOTE_KEY, bytes);
            // A vote must survive a crash before the node acts on it.
            database.write_synced(batch).map_err(|error| write_error(&error))
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Called on every commit; losing it only means re-learning the commit index, so no fsync.
        let bytes = codec::encode(&committed).map_err(|error| write_error(&error))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.database.family(RAFT_META_FAMILY), COMMITTED_KEY, bytes);
        self.database.write_unsynced(batch).map_err(|error| write_error(&error))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let family = self.database.family(LOG_FAMILY);
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in &entries {
            let bytes = codec::encode(entry).map_err(|error| write_error(&error))?;
            sizes.push(bytes.len());
            batch.put_cf(family, index_key(entry.log_id.index), bytes);
        }
        // Written on this thread rather than handed to a blocking thread: an unsynced write only
        // copies into the memtable and the WAL buffer (tens of microseconds), less than the
        // hand-off itself. The core submits appends without waiting for their flush.
        self.database.write_unsynced(batch).map_err(|error| write_error(&error))?;
        {
            // After the write: what is in memory is always also in the database.
            let mut recent = self.recent.lock().expect("recent entries lock");
            for (entry, size) in entries.into_iter().zip(sizes) {
                recent.append(entry, size);
            }
        }
        // Durable only once the flusher has synced the WAL; it fires the callback then.
        self.flushes.send(callback).await.map_err(|_| write_error(&"the log flusher has stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_kept: Option<LogId>) -> Result<(), io::Error> {
        let from = last_kept.map_or(0, |log_id| log_id.index + 1);
        // Before the deletion: a reader never gets a copy of an entry that is gone.
        self.recent.lock().expect("recent entries lock").remove_from(from);
        self.blocking(move |database| {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(database.family(LOG_FAMILY), index_key(from), index_key(u64::MAX));
            // Synced: conflicting entries must not come back after a crash.
            database.write_synced(batch).map_err(|error| write_error(&error))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // openraft never reads purged entries again, whatever is physically deleted below.
        self.recent.lock().expect("recent entries lock").remove_through(log_id.index);
        let Some(log_id) = self.snapshots.purge_limit(log_id).map_err(|error| write_error(&error))? else {
            return Ok(());
        };
        self.blocking(move |database| {
            let mut batch = WriteBatch::default();
            add_purge(&database, &mut batch, &log_id).map_err(|error| write_error(&error))?;
            database.write_unsynced(batch).map_err(|error| write_error(&error))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::leader_id_adv::CommittedLeaderId;
    use openraft::EntryPayload;

    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId { term, node_id: 1 }, index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|entry| entry.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut recent = RecentEntries::default();
        assert_eq!(indexes(recent.get(1, 2)), None);
        for index in 5..=9 {
            recent.append(entry(1, index), 100);
        }
        assert_eq!(indexes(recent.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(recent.get(7, 8)), Some(vec![7]));
        assert_eq!(indexes(recent.get(4, 6)), None, "starts before the run");
        assert_eq!(indexes(recent.get(8, 11)), None, "ends after the run");
        assert_eq!(indexes(recent.get(6, 6)), None, "empty range");
    }

    #[test]
    fn a_gap_starts_a_new_run_and_the_oldest_entries_go_first() {
        let mut recent = RecentEntries::default();
        recent.append(entry(1, 1), 100);
        recent.append(entry(1, 2), 100);
        recent.append(entry(1, 10), 100);
        assert_eq!(indexes(recent.get(1, 3)), None);
        assert_eq!(indexes(recent.get(10, 11)), Some(vec![10]));
        for index in 11..(11 + RECENT_ENTRIES_MAX as u64) {
            recent.append(entry(1, index), 100);
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES_MAX);
        assert_eq!(recent.first_index(), Some(11));
    }

    #[test]
    fn truncate_and_purge_remove_exactly_their_entries() {
        let mut recent = RecentEntries::default();
        for index in 1..=10 {
            recent.append(entry(1, index), 100);
        }
        recent.remove_from(8);
        assert_eq!(indexes(recent.get(1, 8)), Some((1..8).collect()));
        assert_eq!(indexes(recent.get(7, 9)), None);
        // A new leader's entries replace the truncated ones.
        recent.append(entry(2, 8), 100);
        assert_eq!(recent.get(8, 9).unwrap()[0].log_id.leader_id.term, 2);
        recent.remove_through(3);
        assert_eq!(indexes(recent.get(3, 5)), None);
        assert_eq!(indexes(recent.get(4, 9)), Some((4..9).collect()));
        assert_eq!(recent.bytes, 5 * 100, "the byte count follows truncate and purge");
    }

    #[test]
    fn entries_beyond_the_byte_budget_go_first_but_the_newest_stays() {
        let mut recent = RecentEntries::default();
        let quarter = RECENT_ENTRIES_BUDGET_BYTES / 4;
        for index in 1..=6 {
            recent.append(entry(1, index), quarter);
        }
        assert_eq!(indexes(recent.get(3, 7)), Some(vec![3, 4, 5, 6]), "four quarters fit the budget");
        assert_eq!(indexes(recent.get(2, 3)), None);
        assert!(recent.bytes <= RECENT_ENTRIES_BUDGET_BYTES);
        recent.append(entry(1, 7), 2 * RECENT_ENTRIES_BUDGET_BYTES);
        assert_eq!(indexes(recent.get(7, 8)), Some(vec![7]), "one entry over the budget is still kept");
        assert_eq!(recent.entries.len(), 1);
        assert_eq!(recent.sizes.len(), 1);
    }
}
