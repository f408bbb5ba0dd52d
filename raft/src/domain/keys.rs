//! Byte layout of every key the state machine writes.
//!
//! Text components end with a 0x00 byte; names are validated to never contain one, so a prefix of
//! components is unambiguous. Numbers are big-endian so byte order is numeric order.

/// Tags of records in `Space::State` (current value) and `Space::History` (every version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordTag {
    /// (service, env, host) → host record.
    Host = 1,
    /// (host, service, env) → nothing: which environments a host belongs to.
    HostEnvironment = 2,
    /// (deployment) → deployment record.
    Deployment = 3,
    /// (deployment, host) → wave index that selected the host.
    DeploymentHost = 4,
    /// (service, env, seq) → deployment id, in start order.
    DeploymentByEnvironment = 5,
    /// (seq) → deployment id, in start order.
    DeploymentBySeq = 6,
    /// (service, release) → release record.
    Release = 7,
    /// (service, release, seq) → timeline entry.
    Timeline = 8,
    /// (service, env) → environment record.
    Environment = 9,
    /// (service, env) → desired layer.
    Layer = 10,
    /// (service, env) → counts wave starts need.
    Tally = 11,
    /// (service, env, group, host) → nothing: the registered hosts of a group.
    HostGroup = 12,
    /// (service, env, release) → seq of the first report of a host there running it.
    Ran = 13,
    /// (service, env) → release-safety policy.
    Policy = 14,
    /// (service or "", env or "", fingerprint) → the alert's latest firing.
    Alert = 15,
    /// (service or "", env or "") → freeze calendar; ("", "") is the global one.
    Calendar = 16,
    /// (service, env, failure seq) → a failure recovered from.
    Recovery = 17,
}

/// Fields of events with a secondary index in `Space::EventIndex`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IndexField {
    Type = 1,
    Service = 2,
    Env = 3,
    Host = 4,
    Release = 5,
    Deployment = 6,
    Actor = 7,
    Stream = 8,
}

/// Builds a key component by component.
#[derive(Clone, Debug, Default)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn record(tag: RecordTag) -> Key {
        Key(vec![tag as u8])
    }

    pub fn index(field: IndexField) -> Key {
        Key(vec![field as u8])
    }

    /// A key read back from storage.
    pub fn record_from_bytes(bytes: Vec<u8>) -> Key {
        Key(bytes)
    }

    pub fn empty() -> Key {
        Key(Vec::new())
    }

    pub fn text(mut self, component: &str) -> Key {
        debug_assert!(!component.as_bytes().contains(&0), "names never contain 0x00");
        self.0.extend_from_slice(component.as_bytes());
        self.0.push(0);
        self
    }

    pub fn number(mut self, value: u64) -> Key {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Key of event `seq` in `Space::Events`.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The last 8 bytes of a key, read as a big-endian number (the seq or version suffix).
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    key.len().checked_sub(8).and_then(|start| decode_u64(&key[start..]))
}

/// The text component that starts at the beginning of `bytes`, and the rest after its 0x00.
pub fn leading_text(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.iter().position(|byte| *byte == 0)?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    Some((text, &bytes[end + 1..]))
}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xFF: there is no finite upper bound; use a key above any we write.
    vec![u8::MAX; prefix.len() + 9]
}

/// Key of `(time, seq)` in `Space::Times`; signed microseconds map to unsigned order.
pub fn time_key(time_micros: i64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ordered_time(time_micros).to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn ordered_time(time_micros: i64) -> u64 {
    (time_micros as u64) ^ (1 << 63)
}

pub const META_HEAD: &[u8] = b"head";
pub const META_APPLIED: &[u8] = b"applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
/// Every node id an applied membership has named. Node ids are never reused: a wiped machine
/// back under its old id would have forgotten the vote it gave, and a leader of an older term
/// that never heard of the removal could count that vote again.
pub const META_MEMBERS_EVER: &[u8] = b"members_ever";
pub const META_CLUSTER: &[u8] = b"cluster";
/// The layout of the state machine's records, written with the cluster identity.
pub const META_LAYOUT: &[u8] = b"layout";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_every_key_with_the_prefix() {
        let prefix = Key::record(RecordTag::Host).text("svc").text("prod").into_bytes();
        let end = prefix_end(&prefix);
        let inside = Key::record(RecordTag::Host).text("svc").text("prod").text("zzzz").into_bytes();
        let outside = Key::record(RecordTag::Host).text("svc").text("prod2").into_bytes();
        assert!(inside.as_slice() < end.as_slice());
        assert!(outside.as_slice() >= end.as_slice());
        assert_eq!(prefix_end(&[1, 0xFF]), vec![2]);
    }

    #[test]
    fn time_keys_sort_numerically_across_zero() {
        assert!(time_key(-5, 1) < time_key(0, 1));
        assert!(time_key(0, 1) < time_key(0, 2));
        assert!(time_key(1, 0) > time_key(0, u64::MAX));
    }

    #[test]
    fn components_parse_back() {
        let key = Key::empty().text("web-1").number(7).into_bytes();
        let (text, rest) = leading_text(&key).unwrap();
        assert_eq!(text, "web-1");
        assert_eq!(decode_u64(rest), Some(7));
        assert_eq!(trailing_u64(&key), Some(7));
    }
}
