//! Named bounds of the HTTP layer on what clients and peers can hold: connections, time and bytes.
//! Each is a default; `fleetlog serve` has a flag for those an operator may need to move.
//! (The ledger's own bounds, and the byte budgets of the node's caches and pages, are in
//! `fleetlog_raft::domain::limits`.)

use std::time::Duration;

/// Open connections one node serves at once (`--max-connections`); beyond it a new connection
/// gets 503 `too_many_connections` and is closed. The default is the default stream limit
/// (15,000, `--max-subscribers`) plus 1,000 for requests and peers: with the 20,000 open files a
/// process may hold here, that leaves 4,000 for RocksDB's files, outgoing peer connections and
/// the rest, so the node never runs out of descriptors (accept failing, RocksDB unable to open a
/// table) however many clients arrive.
pub const CONNECTIONS_MAX: usize = 16_000;

/// Connections over the cap that are being answered 503 at once. An answer takes at most
/// [`REFUSAL_LINGER_SECONDS`]; a flood beyond this is closed without an answer, so refusing
/// cannot itself use up the descriptors the cap protects.
pub const REFUSALS_IN_FLIGHT_MAX: usize = 256;

/// Seconds a refused connection is kept after its 503 while what the client sent is read and
/// dropped: closing a socket with unread input resets it, and the reset could reach the client
/// before the answer does.
pub const REFUSAL_LINGER_SECONDS: u64 = 1;

/// Seconds a write to a client may make no progress (its socket buffer stays full because the
/// client stopped reading) before its connection is closed (`--send-timeout-seconds`). Without
/// it a stream whose client stopped reading would hold its subscriber slot, its socket and its
/// task for ever; its client resumes with `Last-Event-ID`. The default is the client timeout's:
/// a client that reads at all empties a socket buffer far faster.
pub const SEND_TIMEOUT_SECONDS: u64 = 30;

/// Seconds shutdown waits for open connections to finish their requests in flight before it
/// drops them. Streams end at once on shutdown; this bounds what a stuck client (one that sends
/// a body slowly, or stopped reading an answer) can add to a restart.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 10;

/// Largest body a peer may send to `/raft/*`: a replication batch (100 entries of up to about
/// 1 MiB) or a snapshot chunk. Read only after the cluster secret was checked, within the client
/// timeout.
pub const PEER_BODY_BYTES_MAX: usize = 128 * 1024 * 1024;

pub const SEND_TIMEOUT: Duration = Duration::from_secs(SEND_TIMEOUT_SECONDS);
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(SHUTDOWN_GRACE_SECONDS);
