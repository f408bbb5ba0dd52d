//! The policy evaluator: on the leader, soon after each applied change and at least every 250 ms,
//! every active deployment with a policy is evaluated
//! ([`crate::domain::gates::pending_decisions`]) and what it decides is appended as events by
//! `system:policy`.
//!
//! Exactly once: each decision's event id derives from the deployment, the wave and the step,
//! so a leader that decides again what its predecessor decided (or what it decided itself a tick
//! earlier, before applying it) writes a duplicate, which the ledger answers with the original
//! and writes nothing. The events go through the ledger's rules like anyone's, so a decision
//! made on a state that moved on (a person completed the wave meanwhile) is refused.

use std::collections::HashMap;
use std::time::Duration;

use crate::consensus::node::{now_micros, Node, WeakNode};
use crate::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, ProposedEvent};
use crate::domain::gates::{pending_decisions, POLICY_ACTOR};
use crate::domain::rejection::RejectionCode;

/// How often the leader looks at its deployments when nothing is applied: what time alone
/// decides (a bake passing, a deadline) is seen within this.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two looks: events applied in a burst are looked at together.
const SPACING: Duration = Duration::from_millis(20);

/// Starts the evaluator for `node`; it ends when the node is gone.
pub fn spawn(node: &Node) {
    let weak = node.downgrade();
    let applied = node.feed().head();
    tokio::spawn(run(weak, applied));
}

/// Looks after every tick, and soon after anything is applied (a report, an alert), so a gate
/// an event trips is decided within tens of milliseconds rather than at the next tick.
async fn run(weak: WeakNode, mut applied: tokio::sync::watch::Receiver<u64>) {
    // The refusal last logged per deployment, so a decision refused every tick is logged once.
    let mut logged: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(SPACING).await;
        applied.borrow_and_update();
        let Some(node) = weak.upgrade() else { return };
        if !node.is_leader() {
            continue;
        }
        let pending = match decisions(&node) {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, "policy evaluator: cannot read the deployments");
                continue;
            }
        };
        for (deployment, events) in pending {
            let request = AppendRequest { events, expected_version: ExpectedVersion::Any, actor: POLICY_ACTOR.into() };
            match node.append(request).await {
                Ok(AppendOutcome::Appended { events, duplicate: false }) => {
                    let ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
                    tracing::info!(deployment = %deployment, ?ids, "policy decision appended");
                    logged.remove(&deployment);
                }
                Ok(AppendOutcome::Appended { duplicate: true, .. }) => {}
                // Decided already, with other inputs: the first decision stands.
                Ok(AppendOutcome::Rejected(rejection)) if rejection.code == RejectionCode::IdConflict => {}
                Ok(AppendOutcome::Rejected(rejection)) => {
                    let text = rejection.to_string();
                    if logged.get(&deployment) != Some(&text) {
                        tracing::warn!(deployment = %deployment, refusal = %text, "policy decision refused");
                        logged.insert(deployment, text);
                    }
                }
                Err(error) => tracing::debug!(%error, "policy decision not appended; next tick tries again"),
            }
        }
    }
}

/// The events each active deployment's policy decides now, on the leader's applied state.
fn decisions(node: &Node) -> crate::Result<Vec<(String, Vec<ProposedEvent>)>> {
    let reader = node.database().consistent_reader()?;
    pending_decisions(&reader, now_micros())
}
