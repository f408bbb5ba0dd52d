//! Named points where a test can make the process die, to prove that a crash there loses nothing.
//!
//! A test sets `FLEETLOG_CRASH_POINT=<name>:<step>` in a child process's environment; when that
//! process reaches the point, it aborts at once (no destructors, no flush), as a power cut or
//! `kill -9` would stop it between two instructions. Unset (always, outside tests), each point
//! costs one comparison with a value read once.

use std::sync::OnceLock;

/// The environment variable a test sets: `<name>:<step>`, e.g. `snapshot-install:3`.
pub const VARIABLE: &str = "FLEETLOG_CRASH_POINT";

fn armed() -> Option<&'static (String, u32)> {
    static ARMED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var(VARIABLE).ok()?;
            let (name, step) = value.rsplit_once(':')?;
            Some((name.to_string(), step.parse().ok()?))
        })
        .as_ref()
}

/// Aborts the process if a test armed this point (`name`, `step`).
pub fn reached(name: &str, step: u32) {
    if let Some((armed_name, armed_step)) = armed() {
        if armed_name == name && *armed_step == step {
            eprintln!("crash point {name}:{step} reached: aborting as a test asked");
            std::process::abort();
        }
    }
}
