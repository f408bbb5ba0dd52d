//! Any JSON text through the canonical form (RFC 8785) that every hash covers: rendering refuses
//! or succeeds, never panics, and the canonical text is a fixed point: parsed and rendered again
//! it is the same bytes.
#![no_main]

use fleetlog_raft::domain::canonical::to_canonical_string;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(canonical) = to_canonical_string(&value) else { return };
    let parsed: serde_json::Value = serde_json::from_str(&canonical).expect("canonical text is JSON");
    let again = to_canonical_string(&parsed).expect("canonical text renders again");
    assert_eq!(again, canonical, "the canonical form is not a fixed point");
});
