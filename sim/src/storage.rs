//! openraft's log store and state machine over a simulated [`Disk`].
//!
//! The state machine applies entries with the same function as the RocksDB one
//! ([`fleetlog_raft::storage::apply::compute`]): the ledger's rules, chain and Merkle tree
//! are the real code; only where the bytes go differs. The durability contract is the real one
//! too: an append is reported flushed only after a sync that covers it; the vote and a
//! truncation are synced before they return; state machine writes, the committed log id and
//! purges are not synced (the log can rebuild them), and become durable with the next sync.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use fleetlog_raft::consensus::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use fleetlog_raft::domain::codec;
use fleetlog_raft::domain::keys::{META_APPLIED, META_MEMBERSHIP};
use fleetlog_raft::domain::kv::{KvRead, Space};
use fleetlog_raft::domain::records;
use fleetlog_raft::storage::apply::compute;
use fleetlog_raft::storage::feed::Feed;
use futures::TryStreamExt;
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftStateMachine, Snapshot,
};
use openraft::{OptionalSend, RaftSnapshotBuilder};

use crate::checker::Checker;
use crate::disk::{Change, Disk, StoredSnapshot};
use crate::kv::SharedKv;
use crate::runtime::SimConfig;

/// What a snapshot holds: the whole state machine as it was. Shared, not serialised: the bytes of
/// the RocksDB snapshot files are not what the simulation is about, and copying them was a
/// tenth of its time.
pub type SnapshotData = Arc<SharedKv>;
type MemorySnapshot = openraft::type_config::alias::SnapshotOf<SimConfig, SnapshotData>;

fn storage_error(what: &str, error: &dyn std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {error}"))
}

/// A known bug, put back on purpose: a run with one shows whether the simulator finds it. Each
/// undoes a rule the product follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Report appended entries durable before the sync that makes them so.
    AckBeforeSync,
    /// Let a snapshot built from an older state replace a newer one installed meanwhile (the
    /// RocksDB store keeps builds and installs single-flight).
    StaleSnapshotWins,
    /// Resume a host's watch on another node from that node's head, as if the agent's position
    /// were a fresh watch's, instead of after the last seq the agent took in.
    WatchResumesAtHead,
}

impl std::str::FromStr for Bug {
    type Err = String;

    fn from_str(text: &str) -> Result<Bug, String> {
        match text {
            "ack-before-sync" => Ok(Bug::AckBeforeSync),
            "stale-snapshot-wins" => Ok(Bug::StaleSnapshotWins),
            "watch-resumes-at-head" => Ok(Bug::WatchResumesAtHead),
            other => {
                Err(format!("unknown bug {other:?}: ack-before-sync, stale-snapshot-wins or watch-resumes-at-head"))
            }
        }
    }
}

/// The Raft log and vote of one node incarnation.
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
    incarnation: u64,
    bug: Option<Bug>,
}

impl LogStore {
    pub fn open(disk: Disk, bug: Option<Bug>) -> LogStore {
        let incarnation = disk.incarnation();
        LogStore { disk, incarnation, bug }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<SimConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.disk
            .read(self.incarnation, |stored| stored.log.range(bounds(&range)).map(|(_, entry)| entry.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.disk.read(self.incarnation, |stored| stored.vote)
    }
}

impl RaftLogStorage<SimConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<SimConfig>, io::Error> {
        self.disk.read(self.incarnation, |stored| {
            let last_log_id = stored.log.values().next_back().map(|entry| entry.log_id).or(stored.purged);
            LogState { last_purged_log_id: stored.purged, last_log_id }
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.disk.write_synced(self.incarnation, Change::Vote(*vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.disk.write(self.incarnation, Change::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.disk.read(self.incarnation, |stored| stored.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<SimConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.disk.write(self.incarnation, Change::Append(entries.into_iter().collect()))?;
        // The flush runs beside the core, as the real flusher thread does: openraft hears the
        // entries are durable only once a sync covering them has finished.
        let (disk, incarnation) = (self.disk.clone(), self.incarnation);
        if self.bug == Some(Bug::AckBeforeSync) {
            callback.io_completed(Ok(()));
            tokio::spawn(async move { disk.sync(incarnation).await });
            return Ok(());
        }
        tokio::spawn(async move {
            let synced = disk.sync(incarnation).await;
            callback.io_completed(synced);
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_kept: Option<LogId>) -> Result<(), io::Error> {
        let from = last_kept.map_or(0, |log_id| log_id.index + 1);
        self.disk.write_synced(self.incarnation, Change::TruncateFrom(from)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.disk.write(self.incarnation, Change::Purge(log_id))
    }
}

/// The state machine of one node incarnation.
#[derive(Clone)]
pub struct StateMachine {
    node: u64,
    disk: Disk,
    incarnation: u64,
    checker: Checker,
    bug: Option<Bug>,
    /// What this incarnation applied, for its live watch streams, as a node's feed is.
    feed: Feed,
}

impl StateMachine {
    pub fn open(node: u64, disk: Disk, checker: Checker, bug: Option<Bug>) -> StateMachine {
        let incarnation = disk.incarnation();
        let head = disk.read(incarnation, |stored| records::head(&stored.state).map(|head| head.seq));
        let feed = Feed::new(head.ok().and_then(Result::ok).unwrap_or(0));
        StateMachine { node, disk, incarnation, checker, bug, feed }
    }

    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(state: &SharedKv, key: &[u8]) -> io::Result<Option<T>> {
    match state.get(Space::Meta, key).map_err(|error| storage_error("reading meta", &error))? {
        Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(|error| storage_error("decoding meta", &error))?)),
        None => Ok(None),
    }
}

impl RaftStateMachine<SimConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.disk.read(self.incarnation, |stored| {
            let applied: Option<LogId> = read_meta::<Option<LogId>>(&stored.state, META_APPLIED)?.flatten();
            let membership: StoredMembership = read_meta(&stored.state, META_MEMBERSHIP)?.unwrap_or_default();
            Ok((applied, membership))
        })?
    }

    async fn apply<Entries>(&mut self, mut stream: Entries) -> Result<(), io::Error>
    where
        Entries: futures::Stream<Item = Result<EntryResponder<SimConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut entries: Vec<Entry> = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = stream.try_next().await? {
            entries.push(entry);
            responders.push(responder);
        }
        let node = self.node;
        let checker = self.checker.clone();
        let computed = self.disk.read(self.incarnation, |stored| {
            let previous: Option<LogId> =
                read_meta::<Option<LogId>>(&stored.state, META_APPLIED).ok().flatten().flatten();
            checker.applying(node, previous, &entries);
            std::panic::catch_unwind(AssertUnwindSafe(|| compute(&stored.state, entries)))
        })?;
        let mut computed = match computed {
            Ok(Ok(computed)) => computed,
            Ok(Err(error)) => return Err(storage_error("applying entries", &error)),
            Err(panic) => {
                let text = fleetlog_raft::domain::invariant::panic_text(&*panic);
                self.checker.violation(format!("node {node} stopped applying: {text}"));
                return Err(storage_error("applying entries", &text));
            }
        };
        self.checker.appended(node, &computed.published.events);
        let writes = computed.writes.take().unwrap_or_default();
        // As the RocksDB state machine does: watchers hear of layer changes before the effects
        // are written, and may run meanwhile; the head moves only once they are.
        if !computed.layers.is_empty() || !computed.registrations.is_empty() {
            let (layers, registrations) =
                (std::mem::take(&mut computed.layers), std::mem::take(&mut computed.registrations));
            self.feed.announce(layers, registrations, computed.published.head_seq);
            tokio::task::yield_now().await;
        }
        self.disk.write(self.incarnation, Change::State(writes))?;
        self.feed.publish(std::mem::take(&mut computed.published));
        for (responder, response) in responders.into_iter().zip(computed.responses) {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let state: &SharedKv = &snapshot;
        let applied: Option<LogId> = read_meta::<Option<LogId>>(state, META_APPLIED)?.flatten();
        if applied != meta.last_log_id {
            self.checker.violation(format!(
                "node {} received a snapshot whose meta says {:?} but whose state is at {applied:?}",
                self.node, meta.last_log_id
            ));
        }
        let head = records::head(state).map_err(|error| storage_error("reading a snapshot's head", &error))?;
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot };
        // As the RocksDB store does: the state, the purge of the log the snapshot covers and the
        // snapshot in one synced write, so no restart finds entries older than its state, or a
        // purged log that no kept snapshot covers.
        self.disk.write_synced(self.incarnation, Change::Install(stored)).await?;
        self.checker.installed(self.node, meta.last_log_id, head.seq, head.hash);
        self.feed.reset_head(head.seq);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<MemorySnapshot>, io::Error> {
        self.disk.read(self.incarnation, |stored| {
            stored
                .snapshot
                .as_ref()
                .map(|snapshot| Snapshot { meta: snapshot.meta.clone(), snapshot: snapshot.data.clone() })
        })
    }
}

impl RaftSnapshotBuilder<SimConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<MemorySnapshot, io::Error> {
        // The state is read at one point; writing the snapshot takes a sync, during which
        // entries may be applied and other snapshots built or installed.
        let (state, applied, membership) = self.disk.read(self.incarnation, |stored| {
            let applied: Option<LogId> = read_meta::<Option<LogId>>(&stored.state, META_APPLIED)?.flatten();
            let membership: StoredMembership = read_meta(&stored.state, META_MEMBERSHIP)?.unwrap_or_default();
            Ok::<_, io::Error>((Arc::new(stored.state.clone()), applied, membership))
        })??;
        // Writing the file takes time, as a real one does: about 20 µs a key. Entries are
        // applied, and snapshots installed, meanwhile.
        tokio::time::sleep(Duration::from_micros(20 * state.len() as u64)).await;
        // The log is purged behind a snapshot: what it was built from must be durable first.
        self.disk.sync(self.incarnation).await?;
        let meta = SnapshotMeta { last_log_id: applied, last_membership: membership };
        let stored = StoredSnapshot { meta: meta.clone(), data: state.clone() };
        let newer_kept = self.disk.read(self.incarnation, |stored| {
            stored.snapshot.as_ref().is_some_and(|current| current.meta.last_log_id > applied)
        })?;
        // An install may have replaced the state while this build waited: its snapshot is newer
        // and stays the current one.
        if newer_kept {
            self.checker.note(format!("node {}: a snapshot installed while it built one at {applied:?}", self.node));
        }
        if !newer_kept || self.bug == Some(Bug::StaleSnapshotWins) {
            self.disk.write_synced(self.incarnation, Change::Snapshot(stored)).await?;
        }
        Ok(Snapshot { meta, snapshot: state })
    }
}
