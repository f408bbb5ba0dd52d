//! The receiving side of a snapshot transfer: chunks from the leader (see
//! [`crate::consensus::peer::network::SnapshotChunk`]) are appended to one file in the snapshot directory, and the
//! whole file is handed to openraft once the last chunk is in. Never whole in memory.

use std::io::Write;
use std::path::PathBuf;

use openraft::raft::SnapshotResponse;
use openraft::type_config::alias::VoteOf;
use openraft::Snapshot;

use crate::consensus::peer::network::SnapshotChunk;
use crate::consensus::types::{LogId, Raft, TypeConfig};
use crate::storage::SnapshotFiles;

/// What a chunk is answered with: the receiver's vote once the snapshot is installed, nothing
/// for a chunk taken in between, or why the chunk was refused (the sender starts over).
pub type ChunkAnswer = Result<Option<SnapshotResponse<TypeConfig>>, String>;

/// The transfer under way, if any.
struct Incoming {
    vote: VoteOf<TypeConfig>,
    last_log_id: Option<LogId>,
    path: PathBuf,
    file: std::fs::File,
    next_offset: u64,
}

pub struct SnapshotReceiver {
    snapshots: SnapshotFiles,
    incoming: tokio::sync::Mutex<Option<Incoming>>,
}

impl SnapshotReceiver {
    pub fn new(snapshots: SnapshotFiles) -> SnapshotReceiver {
        SnapshotReceiver { snapshots, incoming: tokio::sync::Mutex::new(None) }
    }

    /// Takes one chunk; the last one installs the snapshot through openraft, which checks the
    /// vote and answers with this node's.
    pub async fn receive(&self, raft: &Raft, chunk: SnapshotChunk) -> ChunkAnswer {
        let mut incoming = self.incoming.lock().await;
        if chunk.offset == 0 {
            // A new transfer replaces one left unfinished.
            if let Some(abandoned) = incoming.take() {
                let _ = std::fs::remove_file(&abandoned.path);
            }
            // From now until the install the log is purged no further than the current snapshot.
            self.snapshots.begin_receiving();
            let path = self.snapshots.incoming_path();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
            *incoming =
                Some(Incoming { vote: chunk.vote, last_log_id: chunk.meta.last_log_id, path, file, next_offset: 0 });
        }
        let Some(current) = incoming.as_mut() else {
            return Err(format!("a chunk at offset {} of a transfer that has not begun here", chunk.offset));
        };
        if current.vote != chunk.vote
            || current.last_log_id != chunk.meta.last_log_id
            || current.next_offset != chunk.offset
        {
            return Err(format!(
                "a chunk at offset {} does not continue the transfer under way (at offset {})",
                chunk.offset, current.next_offset
            ));
        }
        current.file.write_all(&chunk.data).map_err(|error| format!("writing the snapshot: {error}"))?;
        current.next_offset += chunk.data.len() as u64;
        if !chunk.done {
            return Ok(None);
        }
        let Some(finished) = incoming.take() else { unreachable!("checked above") };
        finished.file.sync_all().map_err(|error| format!("syncing the snapshot: {error}"))?;
        drop(finished.file);
        let file = tokio::fs::File::open(&finished.path)
            .await
            .map_err(|error| format!("reopening {}: {error}", finished.path.display()))?;
        let snapshot = Snapshot { meta: chunk.meta, snapshot: file };
        let installed = raft.install_full_snapshot(chunk.vote, snapshot).await;
        // The install adopted the file under its own name; a refused one leaves it behind.
        let _ = std::fs::remove_file(&finished.path);
        self.snapshots.end_receiving();
        installed.map(Some).map_err(|fatal| fatal.to_string())
    }
}
