//! Consensus: openraft's type config, a running node, and the peer protocol.
//!
//! - `types`: the openraft type config (commands in, outcomes out).
//! - `node`: a running node: storage and Raft started together; proposing (gathered by
//!   `batcher`), forwarding to the leader, linearizable reads.
//! - `cluster`: membership changes and what each node says about itself.
//! - `membership`: the rules a membership change must meet before it is written (pure, shared
//!   with the simulator).
//! - `peer`: everything nodes say to each other, both sides.

#[cfg(feature = "storage")]
pub mod batcher;
#[cfg(feature = "storage")]
pub mod cluster;
pub mod membership;
#[cfg(feature = "storage")]
pub mod node;
pub mod peer;
#[cfg(feature = "storage")]
pub mod policy_runner;
pub mod types;
