//! Any bytes as an append request in its JSON form (what a follower forwards to the leader):
//! parsing and the static checks refuse or accept, never panic; an accepted event's data renders
//! as canonical JSON.
#![no_main]

use fleetlog_raft::domain::canonical;
use fleetlog_raft::domain::event::AppendRequest;
use fleetlog_raft::domain::ledger::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<AppendRequest>(data) else { return };
    if validate::check_request(&request).is_ok() {
        for event in &request.events {
            let value: serde_json::Value =
                serde_json::from_str(&event.data).expect("accepted data is JSON");
            canonical::to_canonical_string(&value).expect("accepted data has a canonical form");
        }
    }
});
