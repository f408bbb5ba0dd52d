//! The policy's decisions across a leader kill, on a real 3-node cluster: an alert arrives during
//! a canary's bake, the leader is killed at once or a moment later, and the deployment is rolled
//! back exactly once (not zero times, not twice), whichever leader decided.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Options};
use common::{deployment_until, seed_fleet};
use serde_json::{json, Value};

fn alert_payload(fingerprint: &str) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "fleetlog", "groupKey": "g", "alerts": [{
        "status": "firing", "fingerprint": fingerprint, "startsAt": "2026-12-07T03:00:00Z",
        "labels": {"alertname": "Errors", "service": "shop", "env": "prod", "severity": "critical"},
        "annotations": {"summary": "errors up 4x"}}]})
}

/// A node other than `leader` that is running.
fn survivor(cluster: &Cluster, leader: u64) -> u64 {
    cluster.voters().into_iter().find(|id| *id != leader && cluster.is_running(*id)).expect("a survivor")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_then_a_leader_kill_rolls_back_exactly_once() {
    let mut cluster = Cluster::start(Options::default()).await;
    let leader = cluster.wait_leader().await;
    let server = cluster.server(leader);
    seed_fleet(&server).await;
    let policy = json!({"policy": {"bake_seconds": 600, "auto_advance": true, "alerts": [{"severity": "critical"}]}});
    let (status, answer) = cluster.request(leader, reqwest::Method::PUT, "/v1/policies/shop/prod", Some(&policy)).await;
    assert_eq!(status, 201, "{answer}");

    // The leader is killed right after the alert is acknowledged, then 150 ms and 400 ms after:
    // before it could decide, while its decision may be in flight, after it decided.
    for (round, delay_ms) in [0u64, 150, 400].into_iter().enumerate() {
        let leader = cluster.wait_leader().await;
        let deployment = format!("d-{}", round + 2);
        let body = json!({"deployment": deployment, "service": "shop", "env": "prod", "release": "2.0",
                          "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]});
        let (status, answer) = cluster.post(leader, "/v1/deployments", &body).await;
        assert_eq!(status, 201, "{answer}");
        let on_leader = cluster.server(leader);
        deployment_until(&on_leader, &deployment, "the policy's canary start", |view| {
            view["waves"][0]["state"] == "started"
        })
        .await;
        for host in ["web-1", "web-2"] {
            let report = json!({"host": host, "service": "shop", "env": "prod", "release": "2.0",
                                "status": "running", "applied_seq": 1});
            let (status, answer) = cluster.post(leader, "/v1/reports", &report).await;
            assert_eq!(status, 201, "{answer}");
        }
        if round == 0 {
            // The deployment's view shows where the canary stands against each gate.
            let view = deployment_until(&on_leader, &deployment, "the canary settled", |view| {
                view["waves"][0]["settled"].is_string()
            })
            .await;
            let gates = &view["gates"];
            assert_eq!(gates["wave"], "canary", "{view}");
            assert_eq!(gates["bake"]["seconds"], 600, "{gates}");
            let remaining = gates["bake"]["remaining_seconds"].as_u64().unwrap_or_else(|| panic!("{gates}"));
            assert!((590..=600).contains(&remaining), "{gates}");
            assert_eq!(gates["max_failed"], json!({"allowed": 0, "failed": 0, "passing": true}), "{gates}");
            assert_eq!(gates["alerts"], json!({"counted": 0, "passing": true}), "{gates}");
        }
        let (status, answer) =
            cluster.post(leader, "/v1/alerts/alertmanager", &alert_payload(&format!("round-{round}"))).await;
        assert_eq!(status, 200, "{answer}");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        cluster.kill(leader);

        let other = survivor(&cluster, leader);
        let view =
            deployment_until(&cluster.server(other), &deployment, "the rollback", |view| view["state"] == "aborted")
                .await;
        assert!(view["end_reason"].as_str().unwrap_or("").contains("alert"), "{view}");
        // Give a second decision every chance: a new leader's ticks, the old one back.
        cluster.restart(leader).await;
        cluster.wait_ready(leader).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let events = cluster.server(other).all_events().await;
        let rollbacks: Vec<&Value> = events
            .iter()
            .filter(|event| event["type"] == "rollback" && event["deployment"] == deployment.as_str())
            .collect();
        assert_eq!(rollbacks.len(), 1, "round {round} (kill after {delay_ms} ms): {rollbacks:?}");
        assert_eq!(rollbacks[0]["actor"], "system:policy");
        assert_eq!(rollbacks[0]["data"]["decision"]["alerts"][0]["fingerprint"], format!("round-{round}"));
        eprintln!(
            "round {round}: leader {leader} killed {delay_ms} ms after the alert; one rollback at seq {}",
            rollbacks[0]["seq"]
        );
    }
}
