//! The ledger's views against the independent model of its rules (`fleetlog_raft::model`).
//!
//! Once a run has settled, the committed events are fed to the model one by one, in seq order:
//! the model must accept each (the ledger did), and the views the ledger computed (every host's
//! desired release as of past seqs and now, the directives each agent is sent, deployments,
//! waves and their counters, releases, the environment) must be the model's. The replicas'
//! states are compared with each other and with a replay elsewhere, so one replica's views stand
//! for all of them.

use fleetlog_raft::domain::event::{Event, ProposedEvent};
use fleetlog_raft::domain::gates::POLICY_ACTOR;
use fleetlog_raft::domain::kv::KvRead;
use fleetlog_raft::model::{resolved_desired, LedgerModel};

use crate::workload::{ENVIRONMENT, HOSTS, ROLLBACK_TO_PREVIOUS};

/// Past desired releases are compared every this many seqs (and at the head).
const PAST_EVERY: u64 = 64;

/// The ways `kv`'s views, holding `events` (the whole ledger, in seq order), differ from the
/// model's; empty when they agree.
pub fn differences(kv: &dyn KvRead, events: &[Event]) -> Vec<String> {
    let mut model = LedgerModel::new(ENVIRONMENT.0, ENVIRONMENT.1);
    let mut found = Vec::new();
    for event in events {
        if let Err(code) = model.apply(&proposal(event), event.seq) {
            found.push(format!(
                "event {} ({}), which the ledger took, the model refuses: {code}",
                event.seq, event.event_type
            ));
            // The model no longer follows the ledger: what it would say next is noise.
            return found;
        }
        if event.seq % PAST_EVERY == 0 {
            match resolved_desired(kv, &HOSTS, Some(event.seq)) {
                Ok(desired) if desired == model.desired => {}
                Ok(desired) => found.push(format!(
                    "as of seq {}, desired releases: the ledger has {desired:?}, the model {:?}",
                    event.seq, model.desired
                )),
                Err(error) => found.push(format!("reading desired releases as of seq {} failed: {error}", event.seq)),
            }
        }
    }
    match model.differences(kv, &HOSTS) {
        Ok(differences) => found.extend(differences),
        Err(error) => found.push(format!("reading the ledger's views failed: {error}")),
    }
    found
}

/// The event as it was proposed, as far as the rules read it. A rollback that named no release
/// (the policy's, and the workload's to the previous release) gets its target from the ledger,
/// which writes it into the event; the model is given the proposal without it, to choose the
/// target by itself.
fn proposal(event: &Event) -> ProposedEvent {
    let mut proposal = ProposedEvent::new(event.id.clone(), event.event_type.clone());
    proposal.stream = Some(event.stream.clone());
    proposal.service = event.service.clone();
    proposal.env = event.env.clone();
    proposal.host = event.host.clone();
    proposal.release = event.release.clone();
    proposal.deployment = event.deployment.clone();
    proposal.data = event.data.clone();
    let named_no_release = event.actor == POLICY_ACTOR || event.data.contains(ROLLBACK_TO_PREVIOUS);
    if event.event_type == "rollback" && named_no_release {
        proposal.release = None;
    }
    proposal
}
