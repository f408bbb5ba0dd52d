//! Invariants of the rules and the apply loop: checks that stay on in every build.
//!
//! Two kinds of failure must never look alike. A replica's storage failing (a read error, a
//! damaged record) is [`crate::Error`]: that replica stops, and wiping it and letting it rejoin
//! repairs it. A broken invariant (a wave counter below zero, a chain that does not link) is a
//! bug in the rules: every replica computes the same thing, so every replica would break the same
//! way, and no disk is at fault. It panics with a message that names the entry and the invariant,
//! and the state machine stops the process on it (see `storage::state_machine`).

/// Every invariant failure's message starts with this.
pub const PREFIX: &str = "invariant violated";

/// Stops the current apply: `what` names the invariant and where it broke.
#[track_caller]
pub fn violated(what: impl std::fmt::Display) -> ! {
    panic!("{PREFIX} (a bug in fleetlog's rules, not a storage failure): {what}")
}

/// The text of a caught panic, without the prefix [`violated`] put in front of it.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else {
        "a panic without a message".to_string()
    };
    match text.split_once("not a storage failure): ") {
        Some((_, what)) if text.starts_with(PREFIX) => what.to_string(),
        _ => text,
    }
}
