//! The ledger's pure domain: no I/O, no consensus.
//!
//! - `ledger`: the rules. `ledger::apply_command` turns a command into events and view changes
//!   over a key-value [`kv::Overlay`]; `ledger::validate` holds the static checks.
//! - `event`, `rejection`: the event envelope, commands, outcomes and stable rejection codes.
//! - `canonical`, `codec`: RFC 8785 JSON for hashes; bincode with a version byte for storage and
//!   peer messages.
//! - `kv`, `keys`, `records`: the key-value interface, key layout and the view records.
//! - `desired`: which release each host should run, resolved from the desired layer.
//! - `agent_state`: which directive an agent applies next (the agent and the simulator share it).
//! - `policy`, `gates`: release-safety policies, and what they decide for a deployment now.
//! - `merkle`, `checkpoint`: the RFC 9162 tree over the events, its proofs, signed checkpoints.
//! - `views`: read-side queries (log reads, fleet, hosts, deployments, releases, as-of reads).
//! - `webhooks`: webhook events' rules, derived secrets, delivery signatures, type filters, the
//!   list read back from the log.
//! - `resume`, `limits`, `invariant`: where a stream starts, the bounds on input, the checks that
//!   stay on in every build.

pub mod agent_state;
pub mod calendar;
pub mod canonical;
pub mod checkpoint;
pub mod codec;
pub mod desired;
pub mod dora;
pub mod event;
pub mod gates;
pub mod invariant;
pub mod keys;
pub mod kv;
pub mod ledger;
pub mod limits;
pub mod merkle;
pub mod policy;
pub mod records;
pub mod rejection;
pub mod resume;
pub mod views;
pub mod webhooks;
