//! Named bounds on everything that grows from input.

/// Events in one append request (SPEC section 7).
pub const BATCH_EVENTS_MAX: usize = 1_000;
/// Canonical bytes of one event's `data` (SPEC section 2).
pub const EVENT_DATA_BYTES_MAX: usize = 64 * 1024;
/// Characters of a service, env, host, release, deployment, wave, group or actor name.
pub const NAME_CHARS_MAX: usize = 128;
/// Characters of a stream name.
pub const STREAM_CHARS_MAX: usize = 200;
/// Characters of an event id.
pub const ID_CHARS_MAX: usize = 128;
/// Characters of an event type.
pub const TYPE_CHARS_MAX: usize = 128;
/// Waves of one deployment.
pub const WAVES_MAX: usize = 100;
/// Hosts named by one wave selector.
pub const WAVE_HOSTS_MAX: usize = 10_000;
/// Characters of a reason.
pub const REASON_CHARS_MAX: usize = 1_024;
/// Characters of a host report's message (the tail of a command's output).
pub const MESSAGE_CHARS_MAX: usize = 4_096;
/// Labels of one target, and characters of a label value.
pub const LABELS_MAX: usize = 64;
pub const LABEL_VALUE_CHARS_MAX: usize = 256;

// ---- byte budgets of what the node holds in memory for readers ----
//
// Counts of items alone do not bound memory: one event's data may be 64 KiB and one Raft entry
// about a megabyte, so each cache and page below also stops at a number of bytes.

/// Bytes of applied batches the live feed's ring keeps for log tails (`feed.rs`). 1,024 batches
/// of large events could otherwise hold over a gigabyte for one tail that stopped reading; a tail
/// behind by more than this reads from disk instead, as it does when it lags by batches.
pub const FEED_RING_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Encoded bytes of the newest Raft entries kept decoded in memory (`RecentEntries` in
/// `storage/log_store.rs`). 256 entries of about a megabyte each would be 256 MiB; this keeps
/// enough for replication and apply to find what was just appended, and older reads go to
/// RocksDB as before.
pub const RECENT_ENTRIES_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of events (their served JSON, estimated) one page of the log holds: `GET /v1/events`
/// and each catch-up step of a stream. 10,000 events of 64 KiB would be over 600 MiB for one
/// request; a page that reaches this stops early and its `next_seq` says where to continue.
pub const READ_PAGE_BUDGET_BYTES: usize = 4 * 1024 * 1024;
/// Characters of one annotation of an alert (a description, a runbook URL).
pub const ANNOTATION_CHARS_MAX: usize = 4_096;
