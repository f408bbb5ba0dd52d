//! Any bytes read back from the database as a record: decoding refuses or succeeds, never
//! panics, and what it accepts encodes again to bytes that decode to the same encoding.
#![no_main]

use fleetlog_raft::domain::codec;
use fleetlog_raft::domain::event::Event;
use fleetlog_raft::domain::records::{
    DeploymentRecord, EnvironmentRecord, Head, HostRecord, LayerRecord, ReleaseRecord, Tally,
};
use fleetlog_raft::consensus::types::Entry;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(value) = codec::decode::<T>(bytes) else { return };
    let encoded = codec::encode(&value).expect("a decoded record encodes");
    let again = codec::decode::<T>(&encoded).expect("an encoded record decodes");
    assert_eq!(codec::encode(&again).expect("encodes"), encoded, "re-encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 9 {
        0 => round_trip::<Event>(bytes),
        1 => round_trip::<HostRecord>(bytes),
        2 => round_trip::<DeploymentRecord>(bytes),
        3 => round_trip::<ReleaseRecord>(bytes),
        4 => round_trip::<EnvironmentRecord>(bytes),
        5 => round_trip::<Head>(bytes),
        6 => round_trip::<LayerRecord>(bytes),
        7 => round_trip::<Tally>(bytes),
        _ => round_trip::<Entry>(bytes),
    }
});
