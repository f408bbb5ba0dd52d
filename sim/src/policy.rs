//! The leader's policy evaluator, as the real node runs it: every tick, whichever node leads
//! evaluates every active deployment's policy on its own applied state and its own clock
//! ([`pending_decisions`], the function the node calls), and appends what they decide as
//! `system:policy`. A leader change in the middle makes the next leader decide the same again;
//! the decisions' ids make that a duplicate, which the ledger answers without writing twice.

use std::collections::HashMap;
use std::time::Duration;

use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion};
use fleetlog_raft::domain::gates::{pending_decisions, POLICY_ACTOR};
use fleetlog_raft::domain::rejection::RejectionCode;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::workload::{append_on_leader, micros_at};

/// The real evaluator's tick when nothing is applied.
const TICK: Duration = Duration::from_millis(250);

pub struct PolicyEvaluator {
    pub cluster: Cluster,
    pub started: Instant,
    pub until: Instant,
}

impl PolicyEvaluator {
    /// Returns how many decisions it appended.
    pub async fn run(self) -> usize {
        let mut decided = 0;
        let cluster = &self.cluster;
        // The refusal last traced per deployment: one refused every tick is traced once.
        let mut refused: HashMap<String, String> = HashMap::new();
        while Instant::now() < self.until {
            tokio::time::sleep(TICK).await;
            let Some((leader, _)) = cluster.leader() else { continue };
            let now = micros_at(cluster, self.started, leader);
            let pending = cluster.disk(leader).inspect(|stored| pending_decisions(&stored.state, now));
            let pending = match pending {
                Ok(pending) => pending,
                Err(error) => {
                    cluster.checker.violation(format!("node {leader} cannot evaluate its deployments: {error}"));
                    continue;
                }
            };
            for (deployment, events) in pending {
                let ids = events.iter().map(|event| event.id.as_str()).collect::<Vec<_>>().join(",");
                let request =
                    AppendRequest { events, expected_version: ExpectedVersion::Any, actor: POLICY_ACTOR.into() };
                match append_on_leader(cluster, self.started, request).await {
                    Some(AppendOutcome::Appended { duplicate: false, .. }) => {
                        cluster.trace.line(format!("policy of {deployment} decided {ids} on node {leader}"));
                        refused.remove(&deployment);
                        decided += 1;
                    }
                    Some(AppendOutcome::Appended { duplicate: true, .. }) => {}
                    // Decided already with other inputs: the first decision stands.
                    Some(AppendOutcome::Rejected(rejection)) if rejection.code == RejectionCode::IdConflict => {}
                    Some(AppendOutcome::Rejected(rejection)) => {
                        let text = format!("{ids} refused: {}", rejection.code.as_str());
                        if refused.get(&deployment) != Some(&text) {
                            cluster.trace.line(format!("policy of {deployment}: {text}"));
                            refused.insert(deployment, text);
                        }
                    }
                    None => {}
                }
            }
        }
        decided
    }
}
