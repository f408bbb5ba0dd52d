//! The replicated state machine: applies committed entries through the ledger into RocksDB.
//!
//! Each `apply` call writes one atomic batch (events, indexes, views, `last_applied`) without
//! fsync: the Raft log is already durable, and because `last_applied` is in the same batch a
//! restart replays exactly the entries whose effects were lost. The next group-commit fsync of
//! the shared WAL makes these writes durable too.

use std::io;

use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::RaftSnapshotBuilder;
use rocksdb::WriteBatch;

use super::db::Database;
use super::snapshot::SnapshotFiles;
use crate::consensus::types::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::domain::codec;
use crate::domain::invariant;
use crate::domain::keys::{META_APPLIED, META_MEMBERSHIP};
use crate::domain::kv::{KvRead, Space, Writes};
use crate::domain::ledger;
use crate::domain::records;
use crate::error::{Error, Result};
use crate::storage::apply::compute;
use crate::storage::feed::Feed;

/// A snapshot as openraft hands it around: its meta and the open file.
type FileSnapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, tokio::fs::File>;

#[derive(Clone)]
pub struct StateMachine {
    database: Database,
    feed: Feed,
    snapshots: SnapshotFiles,
}

impl StateMachine {
    /// Opens the state machine, finishing a snapshot install a crash interrupted.
    pub fn open(database: Database, snapshots: SnapshotFiles) -> Result<StateMachine> {
        snapshots.resume_install(&database)?;
        match ledger::cluster_identity(&database.reader()) {
            Ok(_) => {}
            // A damaged file (a checksum that does not match), not an old format.
            Err(Error::RocksDb(error)) => {
                return Err(Error::Corrupt(format!(
                    "the database cannot be read ({error}); restore this node's data directory from a backup, \
                     or wipe it and let the node rejoin its cluster"
                )))
            }
            // Builds before the audit tree stored no checkpoint key and no Merkle nodes.
            Err(error) => {
                return Err(Error::Corrupt(format!(
                    "the cluster identity in this data directory cannot be read ({error}); it was probably \
                 written by an older fleetlog without checkpoint keys: recreate the data directory"
                )))
            }
        }
        let head = records::head(&database.reader())?;
        let identity = ledger::cluster_identity(&database.reader()).ok().flatten();
        let layout = ledger::layout(&database.reader());
        if (identity.is_some() || head.seq > 0) && !matches!(layout, Ok(Some(ledger::LAYOUT_VERSION))) {
            // Builds before layout 2 stored every host's desired release in its record.
            return Err(Error::Corrupt(format!(
                "this data directory was written by an older fleetlog whose view records this build cannot read \
                 (layout {}, this build reads layout {}): recreate the data directory, or export the ledger \
                 with the older build first",
                match layout {
                    Ok(Some(version)) => version.to_string(),
                    _ => "1".to_string(),
                },
                ledger::LAYOUT_VERSION
            )));
        }
        Ok(StateMachine { database, feed: Feed::new(head.seq), snapshots })
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    pub fn database(&self) -> &Database {
        &self.database
    }
}

fn storage_error(what: &str, error: &dyn std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {error}"))
}

/// This replica's storage failed while applying: Raft stops on this node only.
fn apply_error(error: &dyn std::fmt::Display) -> io::Error {
    storage_error("this replica's storage failed while applying", error)
}

fn read_meta<T: serde::de::DeserializeOwned>(database: &Database, key: &[u8]) -> Result<Option<T>> {
    match database.reader().get(Space::Meta, key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Writes computed effects in one batch. Runs on a blocking thread.
fn write(database: &Database, writes: Writes) -> Result<()> {
    // Sized up front: growing a batch of several megabytes by doubling copies it again and again.
    let bytes: usize = writes.iter().map(|((_, key), value)| key.len() + value.as_ref().map_or(0, Vec::len) + 16).sum();
    let mut batch = WriteBatch::with_capacity_bytes(bytes + 64);
    database.add_writes(&mut batch, writes);
    database.write_unsynced(batch)
}

/// The apply step panicked: an invariant of the rules broke (see [`invariant`]). Every replica
/// computes the same, so carrying on, or stopping only Raft as a storage error would, helps
/// nobody: the process stops at once, saying why, and nothing of the failed entry was written.
fn stop_on_bug(panic: Box<dyn std::any::Any + Send>) -> ! {
    let what = invariant::panic_text(&*panic);
    tracing::error!(invariant = %what, "stopping: {} (a bug in fleetlog, not a storage failure)", invariant::PREFIX);
    eprintln!("fleetlog: stopping: {}: {what}", invariant::PREFIX);
    std::process::abort();
}

/// A failed `spawn_blocking` of the apply step: a panic is a broken invariant, anything else the
/// runtime shutting down.
fn apply_join_error(error: tokio::task::JoinError) -> io::Error {
    match error.try_into_panic() {
        Ok(panic) => stop_on_bug(panic),
        Err(error) => apply_error(&error),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = tokio::fs::File;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let read = |key| read_meta(&self.database, key);
        let applied: Option<LogId> =
            read(META_APPLIED).map_err(|error| storage_error("reading the applied position", &error))?.flatten();
        let membership: StoredMembership = read_meta(&self.database, META_MEMBERSHIP)
            .map_err(|error| storage_error("reading the membership", &error))?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<Entries>(&mut self, mut stream: Entries) -> Result<(), io::Error>
    where
        Entries: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        // Every entry openraft hands over at once is applied in one batch, as before; each
        // waiting client is answered only after the batch is written and published.
        let mut entries: Vec<Entry> = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = stream.try_next().await? {
            entries.push(entry);
            responders.push(responder);
        }
        let database = self.database.clone();
        let started = std::time::Instant::now();
        let mut computed = tokio::task::spawn_blocking(move || {
            let mut computed = compute(&database.reader(), entries)?;
            if computed.layers.is_empty() && computed.registrations.is_empty() {
                // Nobody to tell early: write on this thread, saving a hand-off.
                write(&database, computed.writes.take().unwrap_or_default())?;
            }
            Ok::<_, Error>(computed)
        })
        .await
        .map_err(apply_join_error)?
        .map_err(|error| apply_error(&error))?;
        if let Some(writes) = computed.writes.take() {
            tracing::debug!(elapsed = ?started.elapsed(), keys = writes.len(), "computed; announcing to watchers");
            // Watchers hear of layer changes before the effects are written: the entries
            // are committed, so a crash now only means computing the same effects again. The
            // head (and with it what readers see) moves only after the write, in `publish`.
            // Announcing from this runtime thread wakes the watchers through the scheduler's
            // local queue, which is much cheaper for 10,000 of them than waking from outside.
            let (layers, registrations) =
                (std::mem::take(&mut computed.layers), std::mem::take(&mut computed.registrations));
            self.feed.announce(layers, registrations, computed.published.head_seq);
            let database = self.database.clone();
            tokio::task::spawn_blocking(move || write(&database, writes))
                .await
                .map_err(apply_join_error)?
                .map_err(|error| apply_error(&error))?;
        }
        tracing::debug!(elapsed = ?started.elapsed(), head = computed.published.head_seq, "applied");
        self.feed.publish(computed.published);
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

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: tokio::fs::File) -> Result<(), io::Error> {
        let error = |error: &dyn std::fmt::Display| storage_error("installing a snapshot", error);
        let file = snapshot.into_std().await;
        file.sync_all().map_err(|e| error(&e))?;
        let path = received_path(&file).map_err(|e| error(&e))?;
        let database = self.database.clone();
        let snapshots = self.snapshots.clone();
        let expected = meta.clone();
        let installed = tokio::task::spawn_blocking(move || {
            let installed = snapshots.install(&database, &path, &expected);
            snapshots.end_receiving();
            installed
        })
        .await
        .map_err(|e| error(&e))?
        .map_err(|e| error(&e))?;
        let head = records::head(&self.database.reader()).map_err(|e| error(&e))?;
        tracing::info!(last_log_id = ?installed.last_log_id, head = head.seq, "installed snapshot");
        self.feed.reset_head(head.seq);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<FileSnapshot>, io::Error> {
        let read_error = |error: &dyn std::fmt::Display| storage_error("reading the current snapshot", error);
        let Some((meta, path)) = self.snapshots.current().map_err(|e| read_error(&e))? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path).await.map_err(|e| read_error(&e))?;
        Ok(Some(Snapshot { meta, snapshot: file }))
    }
}

/// The path of a file received through `begin_receiving_snapshot`, found from its descriptor.
fn received_path(file: &std::fs::File) -> Result<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    Ok(std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = tokio::fs::File;

    async fn build_snapshot(&mut self) -> Result<FileSnapshot, io::Error> {
        let database = self.database.clone();
        let snapshots = self.snapshots.clone();
        let error = |error: &dyn std::fmt::Display| storage_error("building a snapshot", error);
        let (meta, path) = tokio::task::spawn_blocking(move || snapshots.build(&database))
            .await
            .map_err(|e| error(&e))?
            .map_err(|e| error(&e))?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| error(&e))?;
        Ok(Snapshot { meta, snapshot: file })
    }
}
