//! Any `Last-Event-ID` header, `from_seq` parameter and head: the resume position is refused or
//! lies between 1 and one past the head, never panics.
#![no_main]

use fleetlog_raft::domain::resume::resume_position;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let head = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let text = String::from_utf8_lossy(&data[9..]);
    let (first, second) = text.split_once('\n').unwrap_or((&text, ""));
    let (last_event_id, from_seq) = match data[0] % 4 {
        0 => (None, None),
        1 => (Some(first), None),
        2 => (None, Some(first)),
        _ => (Some(first), Some(second)),
    };
    if let Ok(Some(position)) = resume_position(last_event_id, from_seq, head) {
        assert!(position >= 1 && position <= head.saturating_add(1), "position {position}, head {head}");
    }
});
