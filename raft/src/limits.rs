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
