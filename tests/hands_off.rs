//! Hands-off releases end to end, with real processes only: a 3-node cluster, 20 `fleetlog agent`
//! processes on the hosts of one (service, env), a policy with short bakes and `auto_advance`, and
//! no request from a person after `POST /v1/deployments`. Alertmanager is stood in for by a real
//! `curl` process posting its version-4 webhook (curl is a prerequisite: `scripts/prerequisites.sh`
//! installs it).
//!
//! - an alert during the second wave's bake: the policy rolls back once, naming the alert, and
//!   every agent runs the old release again;
//! - the same with the leader killed right after it acknowledged the alert: still exactly one
//!   rollback, every agent back, the killed node restarted and holding the same log;
//! - a soak (about a minute): consecutive hands-off deployments with the leader killed 20 times
//!   around the policy's decisions, each deployment ending with exactly the decisions it should
//!   have, and every acknowledged event still in the log.

#[path = "common/agents.rs"]
mod agents;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agents::{completed, with_id, Agents, Writer};
use common::cluster::{Cluster, Options};
use serde_json::{json, Value};

const SERVICE: &str = "shop";
const ENV: &str = "prod";
const HOSTS: usize = 20;
/// The hosts of the `canary` group, the first wave.
const CANARIES: usize = 2;
/// Longest a hands-off step may take here (a wave converging and baking, a failover).
const STEP_WAIT: Duration = Duration::from_secs(45);

fn hosts() -> Vec<String> {
    (1..=HOSTS).map(|index| format!("web-{index:02}")).collect()
}

/// The three waves of every hands-off deployment here: the canary group, half the fleet, all of it.
fn waves() -> Value {
    json!([{"name": "canary", "group": "canary"}, {"name": "half", "percent": 50}, {"name": "all", "percent": 100}])
}

/// The policy: 1 s bakes, the canaries 1 s more, 90% healthy, critical alerts roll back, waves
/// advance by themselves. `half_bake_seconds` is the second wave's bake.
fn policy(half_bake_seconds: u64) -> Value {
    json!({"policy": {
        "bake_seconds": 1, "first_wave_extra_bake_seconds": 1, "min_healthy": {"percent": 90},
        "waves": {"half": {"bake_seconds": half_bake_seconds}},
        "alerts": [{"severity": "critical"}], "on_trip": "rollback", "auto_advance": true,
    }})
}

/// A 3-node cluster, `releases` created, one agent per host (the first two in the canary group),
/// the first release deployed by hand to every host and completed, then the policy set (only
/// then: a policy that advances by itself would race the hand-made deployment).
struct Fleet {
    cluster: Cluster,
    writer: Writer,
    agents: Agents,
    /// Seq of the first release's wave.started: what every agent ran first.
    first_seq: u64,
    /// The events the set-up wrote, as acknowledged.
    setup: Vec<Value>,
}

async fn fleet_on_first_release(releases: &[&str], policy: &Value) -> Fleet {
    let cluster = Cluster::start(Options::default()).await;
    let urls: Vec<String> = cluster.members().into_iter().map(|id| cluster.url(id)).collect();
    let writer = Writer::new(&urls);
    let mut setup = Vec::new();
    for release in releases {
        let body = json!({"service": SERVICE, "release": release});
        setup.push(writer.command("/v1/releases", &with_id(&format!("release-{release}"), body)).await);
    }
    let names = hosts();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let canaries = names[..CANARIES].to_vec();
    let agents = Agents::start_each(&urls, SERVICE, ENV, &names, |host| match canaries.contains(&host) {
        true => vec!["--group".into(), "canary".into()],
        false => vec!["--group".into(), "main".into()],
    });
    writer.wait_registered(SERVICE, ENV, HOSTS).await;

    let first = releases[0];
    let body = json!({"deployment": "d-1", "service": SERVICE, "env": ENV, "release": first,
                      "waves": [{"name": "all", "percent": 100}]});
    setup.push(writer.command("/v1/deployments", &with_id("start-d-1", body)).await);
    let started = writer.command("/v1/deployments/d-1/waves/all/start", &with_id("wave-d-1", json!({}))).await;
    let first_seq = started["seq"].as_u64().unwrap();
    setup.push(started);
    writer.wait_converged(SERVICE, ENV, first, first_seq, &agents).await;
    setup.push(writer.command("/v1/deployments/d-1/waves/all/complete", &with_id("wave-done-d-1", json!({}))).await);
    setup.push(writer.command("/v1/deployments/d-1/complete", &with_id("done-d-1", json!({}))).await);

    let (status, answer) =
        writer.request(reqwest::Method::PUT, &format!("/v1/policies/{SERVICE}/{ENV}"), Some(policy)).await;
    assert_eq!(status, 201, "{answer}");
    setup.push(answer);
    let setup = setup.into_iter().map(|answer| answer["event"].clone()).collect();
    Fleet { cluster, writer, agents, first_seq, setup }
}

/// `POST /v1/deployments` of a hands-off deployment: the last thing a person does. Its seq.
async fn start_hands_off(writer: &Writer, deployment: &str, release: &str) -> u64 {
    let body = json!({"deployment": deployment, "service": SERVICE, "env": ENV, "release": release, "waves": waves()});
    let answer = writer.command("/v1/deployments", &with_id(&format!("start-{deployment}"), body)).await;
    answer["seq"].as_u64().unwrap()
}

/// Polls the deployment (linearizable reads, failing over between nodes) every 20 ms until
/// `check` holds; fails after [`STEP_WAIT`] with the view and the agents.
async fn deployment_until(
    writer: &Writer,
    agents: &Agents,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + STEP_WAIT;
    loop {
        let view = writer.get(&format!("/v1/deployments/{id}")).await;
        if check(&view) {
            return view;
        }
        if Instant::now() > deadline {
            panic!("waited {STEP_WAIT:?} for {what} of {id}: {view:#}\n{}", agents.describe());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wave `index` started and every host it selected reported running: it is baking.
fn baking(view: &Value, index: usize) -> bool {
    let wave = &view["waves"][index];
    let hosts = &wave["hosts"];
    wave["state"] == "started" && hosts["selected"].as_u64() > Some(0) && hosts["converged"] == hosts["selected"]
}

/// An Alertmanager webhook (version 4) with one firing critical alert of the environment.
fn alert_payload(fingerprint: &str) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "fleetlog", "groupKey": "{}:{alertname=\"Errors\"}",
           "truncatedAlerts": 0, "groupLabels": {"alertname": "Errors"}, "commonLabels": {}, "commonAnnotations": {},
           "externalURL": "http://alertmanager.invalid", "alerts": [{
        "status": "firing", "fingerprint": fingerprint, "startsAt": "2026-12-07T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.invalid/graph",
        "labels": {"alertname": "Errors", "service": SERVICE, "env": ENV, "severity": "critical"},
        "annotations": {"summary": "errors up 4x"}}]})
}

/// What Alertmanager does: POSTs the payload to `url`'s webhook, here with a real `curl` process.
/// Err with curl's exit status and output when it fails (an HTTP error included).
async fn curl_alert(url: &str, payload: &Value) -> Result<Value, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--noproxy", "*", "--max-time", "10"])
        .args(["-H", "content-type: application/json", "--data-binary", "@-"])
        .arg(format!("{url}/v1/alerts/alertmanager"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run curl ({error}): these tests post Alertmanager's webhook with it; \
                 scripts/prerequisites.sh (run by `make test`) installs it"
            )
        });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(payload.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("curl {}: {stdout} {}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    serde_json::from_str(&stdout).map_err(|error| format!("curl printed no JSON ({error}): {stdout}"))
}

/// Every event of `service`/`env` of type `event_type`, read through the writer.
async fn events_of_type(writer: &Writer, event_type: &str) -> Vec<Value> {
    let page = writer.get(&format!("/v1/events?type={event_type}&service={SERVICE}&env={ENV}&limit=1000")).await;
    page["events"].as_array().cloned().unwrap_or_default()
}

/// Waits until every host runs `release` by what its agent ran (the last command it finished
/// installed `release`, none is running) and by the fleet view (desired and observed `release`,
/// running, converged). Returns the view.
async fn wait_fleet_on(writer: &Writer, agents: &Agents, release: &str) -> Value {
    let deadline = Instant::now() + STEP_WAIT;
    loop {
        let on_release = agents.agents.iter().all(|agent| {
            agent.unfinished().is_empty()
                && completed(&agent.runs()).is_ok_and(|runs| runs.last().is_some_and(|(_, last)| last == release))
        });
        let view = writer.get(&format!("/v1/fleet?service={SERVICE}&env={ENV}")).await;
        let hosts = view["hosts"].as_array().cloned().unwrap_or_default();
        let converged = hosts.len() == HOSTS
            && hosts.iter().all(|host| {
                host["desired_release"] == release
                    && host["observed_release"] == release
                    && host["status"] == "running"
                    && host["converged"] == true
            });
        if on_release && converged {
            return view;
        }
        if Instant::now() > deadline {
            panic!("the fleet did not come to {release} within {STEP_WAIT:?}: {view:#}\n{}", agents.describe());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After a rollback at `rollback_seq` to `old` of a deployment of `new` that reached the hosts in
/// `reached`: each of those ran `new` then `old` (for the rollback) once each; every other host
/// ran nothing after the first release.
fn assert_agents_rolled_back(fleet: &Fleet, old: &str, new: &str, reached: &[String], rollback_seq: u64) {
    let described = fleet.agents.describe();
    for agent in &fleet.agents.agents {
        let runs = agent.runs();
        let ran = completed(&runs).unwrap_or_else(|problem| panic!("agent {}: {problem}\n{described}", agent.host));
        let releases: Vec<&str> = ran.iter().map(|(_, release)| release.as_str()).collect();
        assert_eq!(ran[0], (fleet.first_seq, old.to_string()), "agent {}: {ran:?}\n{described}", agent.host);
        if reached.contains(&agent.host) {
            assert_eq!(releases, [old, new, old], "agent {} ran these releases\n{described}", agent.host);
            let last = runs.last().unwrap();
            assert_eq!(
                (last.seq, last.cause.as_str()),
                (rollback_seq, "rollback"),
                "agent {}\n{described}",
                agent.host
            );
        } else {
            assert_eq!(releases, [old], "agent {} was never asked for {new}\n{described}", agent.host);
        }
    }
}

/// After `POST /v1/deployments` at `started_seq`, nothing in the log came from a person: only the
/// policy's events, the agents' reports and the alert.
async fn assert_hands_off(writer: &Writer, started_seq: u64) {
    let page = writer.get(&format!("/v1/events?from_seq={}&limit=10000", started_seq + 1)).await;
    for event in page["events"].as_array().unwrap() {
        let by_policy = event["actor"] == "system:policy";
        let expected = by_policy || event["type"] == "host.reported" || event["type"] == "alert.fired";
        assert!(expected, "an event after the deployment started that neither the policy nor an agent nor Alertmanager wrote: {event}");
    }
}

/// The decisions the policy appended for `deployment`: (type, wave) in order, each checked to be
/// by `system:policy`.
async fn decisions(writer: &Writer, deployment: &str) -> (Vec<(String, String)>, Vec<Value>) {
    let answer = writer.get(&format!("/v1/deployments/{deployment}/decisions")).await;
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    let steps = events
        .iter()
        .map(|event| {
            assert_eq!(event["actor"], "system:policy", "{event}");
            // A wave step names its wave, a rollback the wave it tripped on; a completion none.
            let wave = match event["type"].as_str() {
                Some("rollback") => event["data"]["decision"]["wave"].as_str(),
                Some("deployment.completed") => None,
                _ => event["data"]["wave"].as_str(),
            };
            let wave = wave.unwrap_or("-");
            (event["type"].as_str().unwrap().to_string(), wave.to_string())
        })
        .collect();
    (steps, events)
}

fn steps(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(kind, wave)| (kind.to_string(), wave.to_string())).collect()
}

/// The hosts whose desired release is `release` in a fleet view.
fn hosts_on(view: &Value, release: &str) -> Vec<String> {
    let hosts = view["hosts"].as_array().unwrap();
    hosts
        .iter()
        .filter(|host| host["desired_release"] == release)
        .map(|host| host["host"].as_str().unwrap().to_string())
        .collect()
}

/// Releases 1.0 then 1.1 hands-off; an alert during the second wave's bake. Returns the fleet,
/// the deployment's start seq, the hosts 1.1 reached and the leader the alert was posted to.
async fn second_wave_baking_then_alert(fingerprint: &str) -> (Fleet, u64, Vec<String>, u64) {
    // The second wave bakes 30 s so the alert lands in its bake however slow the machine; the
    // rollback ends it long before.
    let fleet = fleet_on_first_release(&["1.0", "1.1"], &policy(30)).await;
    let started_seq = start_hands_off(&fleet.writer, "d-2", "1.1").await;
    let view =
        deployment_until(&fleet.writer, &fleet.agents, "d-2", "the second wave's bake", |view| baking(view, 1)).await;
    assert_eq!(view["waves"][0]["state"], "completed", "{view:#}");
    assert_eq!(view["waves"][0]["hosts"]["selected"], CANARIES, "{view:#}");
    assert_eq!(view["waves"][1]["hosts"]["selected"], HOSTS / 2 - CANARIES, "{view:#}");
    let reached = hosts_on(&fleet.writer.get(&format!("/v1/fleet?service={SERVICE}&env={ENV}")).await, "1.1");
    assert_eq!(reached.len(), HOSTS / 2, "{reached:?}");

    let leader = fleet.cluster.wait_leader().await;
    let answer = curl_alert(&fleet.cluster.url(leader), &alert_payload(fingerprint)).await.unwrap_or_else(|error| {
        panic!("Alertmanager's webhook post failed: {error}");
    });
    assert_eq!(answer["written"], 1, "{answer}");
    (fleet, started_seq, reached, leader)
}

/// The rollback the policy appended for d-2 on the alert `fingerprint`, during the second wave's
/// bake: checked and returned.
fn assert_alert_rollback(rollback: &Value, fingerprint: &str) {
    assert_eq!(rollback["actor"], "system:policy", "{rollback:#}");
    assert_eq!(rollback["release"], "1.0", "{rollback:#}");
    let decision = &rollback["data"]["decision"];
    assert_eq!(decision["gate"], "alert", "{rollback:#}");
    assert_eq!(decision["wave"], "half", "{rollback:#}");
    assert_eq!(decision["alerts"][0]["fingerprint"], fingerprint, "{rollback:#}");
    assert_eq!(decision["alerts"].as_array().map(Vec::len), Some(1), "{rollback:#}");
    // Decided while the wave baked: it had settled, every host converged.
    assert!(decision["observed"]["settled_since"].is_string(), "not during the bake: {rollback:#}");
    assert_eq!(decision["observed"]["converged"], decision["observed"]["selected"], "{rollback:#}");
}

/// 1.0 then 1.1 out hands-off in three waves; an Alertmanager alert during the second wave's bake
/// makes the policy roll back: one rollback by `system:policy` naming the alert, the deployment
/// aborted, and every one of the 20 agents runs 1.0 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_during_the_second_wave_rolls_every_agent_back() {
    let began = Instant::now();
    let fingerprint = "5c3d1a2b9e7f6041";
    let (fleet, started_seq, reached, _) = second_wave_baking_then_alert(fingerprint).await;
    let writer = &fleet.writer;

    let view = deployment_until(writer, &fleet.agents, "d-2", "the rollback", |view| view["state"] == "aborted").await;
    assert!(view["end_reason"].as_str().unwrap_or("").contains("alert"), "{view:#}");
    let (decided, events) = decisions(writer, "d-2").await;
    assert_eq!(
        decided,
        steps(&[
            ("wave.started", "canary"),
            ("wave.completed", "canary"),
            ("wave.started", "half"),
            ("rollback", "half")
        ]),
        "{events:#?}"
    );
    let rollbacks = events_of_type(writer, "rollback").await;
    assert_eq!(rollbacks.len(), 1, "{rollbacks:#?}");
    assert_alert_rollback(&rollbacks[0], fingerprint);
    let rollback_seq = rollbacks[0]["seq"].as_u64().unwrap();

    let fleet_view = wait_fleet_on(writer, &fleet.agents, "1.0").await;
    for host in fleet_view["hosts"].as_array().unwrap() {
        assert_eq!(
            (&host["desired_seq"], &host["desired_cause"]),
            (&json!(rollback_seq), &json!("rollback")),
            "{host}"
        );
    }
    assert_agents_rolled_back(&fleet, "1.0", "1.1", &reached, rollback_seq);
    assert_hands_off(writer, started_seq).await;
    // `fleetlog deploy why` tells the same from the log: the rollback, its gate and the alert.
    let leader = fleet.cluster.wait_leader().await;
    let (ok, why) = fleet.cluster.cli(&["--server", &fleet.cluster.url(leader), "deploy", "why", "d-2"]).await;
    assert!(ok, "{why}");
    let rollback_line = why.lines().find(|line| line.contains(" rollback: ")).unwrap_or_else(|| panic!("{why}"));
    assert!(rollback_line.contains("alert tripped on wave half"), "{why}");
    assert!(why.contains("gate: \"alert\"") && why.contains(fingerprint), "{why}");
    eprintln!(
        "rollback at seq {rollback_seq} by system:policy on alert {fingerprint}; {} hosts had 1.1, all {HOSTS} back on 1.0; {:?} in all",
        reached.len(),
        began.elapsed()
    );
}

/// As above, and the leader that acknowledged the alert is killed at once: exactly one rollback
/// (whichever leader decided it), every agent back on 1.0 having run it once, and the killed node,
/// restarted, holds the same log and sees the same rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_killed_right_after_the_alert_still_rolls_back_exactly_once() {
    let began = Instant::now();
    let fingerprint = "a41f9c0e22d87b13";
    let (mut fleet, started_seq, reached, leader) = second_wave_baking_then_alert(fingerprint).await;
    fleet.cluster.kill(leader);
    let killed_at = Instant::now();

    let view =
        deployment_until(&fleet.writer, &fleet.agents, "d-2", "the rollback", |view| view["state"] == "aborted").await;
    assert!(view["end_reason"].as_str().unwrap_or("").contains("alert"), "{view:#}");
    let rolled_back_after = killed_at.elapsed();
    wait_fleet_on(&fleet.writer, &fleet.agents, "1.0").await;

    // The killed node back, and time for a second decision to show up if one were to: the new
    // leader's ticks, with the old one back.
    fleet.cluster.restart(leader).await;
    fleet.cluster.wait_ready(leader).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let rollbacks = events_of_type(&fleet.writer, "rollback").await;
    assert_eq!(rollbacks.len(), 1, "leader {leader} killed right after the alert: {rollbacks:#?}");
    assert_alert_rollback(&rollbacks[0], fingerprint);
    let rollback_seq = rollbacks[0]["seq"].as_u64().unwrap();
    let (decided, events) = decisions(&fleet.writer, "d-2").await;
    assert_eq!(
        decided,
        steps(&[
            ("wave.started", "canary"),
            ("wave.completed", "canary"),
            ("wave.started", "half"),
            ("rollback", "half")
        ]),
        "{events:#?}"
    );
    assert_agents_rolled_back(&fleet, "1.0", "1.1", &reached, rollback_seq);
    assert_hands_off(&fleet.writer, started_seq).await;

    // Every node, the restarted one included, holds the same verified log, with that rollback.
    let log = fleet.cluster.converged_log().await;
    assert_eq!(log.iter().filter(|event| event["type"] == "rollback").count(), 1);
    let local = fleet.cluster.local_events(leader).await;
    assert_eq!(local.len(), log.len(), "the restarted node {leader} is behind");
    let (status, on_restarted) = fleet.cluster.get(leader, "/v1/deployments/d-2?consistency=local").await;
    assert_eq!((status, &on_restarted["state"]), (200, &json!("aborted")), "{on_restarted:#}");
    eprintln!(
        "leader {leader} killed right after acknowledging the alert; d-2 aborted {rolled_back_after:?} later; one \
         rollback (seq {rollback_seq}); all {HOSTS} agents on 1.0; node {leader} restarted with the same {} events; \
         {:?} in all",
        log.len(),
        began.elapsed()
    );
}

// ----- soak ------------------------------------------------------------------------------------

/// Where in a deployment the leader is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KillAt {
    /// Right after `POST /v1/deployments` is acknowledged: the first wave's start is in flight.
    Start,
    /// As soon as the canary wave's start (a decision) is seen.
    CanaryStarted,
    /// During the canary's bake.
    CanaryBaking,
    /// As soon as the canary's completion and the second wave's start (one decision) are seen.
    HalfStarted,
    /// As soon as the last wave's start is seen.
    AllStarted,
    /// As soon as the deployment's completion is seen.
    Completed,
    /// This many milliseconds after the alert was acknowledged: the rollback is in flight.
    AfterAlert(u64),
    /// As soon as the rollback is seen.
    RolledBack,
}

/// How a deployment of the soak ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Completed,
    /// An alert while wave 0 (canary) or 1 (half) runs: as soon as it started (its hosts still
    /// applying) or, with `true`, once it bakes.
    Alert(usize, bool),
}

/// Events the test saw acknowledged (by a write's answer or a linearizable read): seq → (id, hash).
#[derive(Default)]
struct Acked(BTreeMap<u64, (String, String)>);

impl Acked {
    fn add(&mut self, event: &Value) {
        let seq = event["seq"].as_u64().unwrap();
        let entry = (event["id"].as_str().unwrap().to_string(), event["hash"].as_str().unwrap().to_string());
        if let Some(known) = self.0.insert(seq, entry.clone()) {
            assert_eq!(known, entry, "seq {seq} was acknowledged as two different events");
        }
    }

    /// Every acknowledged event is in `log`, unchanged, at its seq.
    fn check(&self, log: &[Value], context: &str) {
        for (seq, (id, hash)) in &self.0 {
            let event = log.get(*seq as usize - 1).unwrap_or_else(|| panic!("{context}: acked seq {seq} is gone"));
            assert_eq!(
                (event["id"].as_str(), event["hash"].as_str()),
                (Some(id.as_str()), Some(hash.as_str())),
                "{context}: seq {seq}"
            );
        }
    }
}

/// Kills the leader (SIGKILL) and starts it again, so the next kill finds three nodes: the `kill`th
/// kill waits until another node leads before the restart when it is even, and restarts at once
/// when it is odd (before the others time out: the restarted node may lead again, in the same
/// term). The leader then, and what happened, for the log.
async fn kill_leader(cluster: &mut Cluster, leader: u64, kill: usize) -> (u64, String) {
    let killed_at = Instant::now();
    cluster.kill(leader);
    if kill.is_multiple_of(2) {
        let next = cluster.wait_leader().await;
        assert_ne!(next, leader, "node {leader} was killed, yet leads");
        let elected_after = killed_at.elapsed();
        cluster.restart(leader).await;
        (next, format!("killed {leader}, {next} led {} ms later", elected_after.as_millis()))
    } else {
        cluster.restart(leader).await;
        let next = cluster.wait_leader().await;
        (next, format!("killed {leader} and restarted it, {next} led {} ms later", killed_at.elapsed().as_millis()))
    }
}

/// Consecutive hands-off deployments of fresh releases, the leader killed (SIGKILL) 20 times at
/// points around the policy's decisions: right after a deployment starts, as a wave start, a wave
/// completion, a deployment completion or a rollback is seen, while a canary bakes, and 0 to 60 ms
/// after an alert is acknowledged; the killed node is restarted at once or after a new leader is
/// elected (see [`kill_leader`]). After each deployment: exactly the decisions it should have (no
/// wave started, completed or rolled back twice, none missing), as many rollbacks in the
/// environment as deployments rolled back, every agent on the release it should run and no agent
/// having run a directive twice, and every event ever acknowledged still in the log; at the end,
/// every node holds the same verified log, with each alert once.
///
/// About a minute here (each kill costs a failover of about 1.2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_leader_kills_around_decisions_keep_every_decision_exactly_once() {
    use KillAt::*;
    let began = Instant::now();
    let plan: Vec<(Outcome, Vec<KillAt>)> = vec![
        (Outcome::Completed, vec![CanaryStarted, HalfStarted, Completed]),
        (Outcome::Alert(1, true), vec![Start, AfterAlert(0)]),
        (Outcome::Completed, vec![CanaryBaking, AllStarted]),
        (Outcome::Alert(0, false), vec![CanaryStarted, AfterAlert(20)]),
        (Outcome::Completed, vec![Start, HalfStarted, Completed]),
        (Outcome::Alert(1, false), vec![HalfStarted, AfterAlert(60)]),
        (Outcome::Completed, vec![CanaryStarted, AllStarted]),
        (Outcome::Alert(1, true), vec![AfterAlert(5), RolledBack]),
        (Outcome::Alert(1, true), vec![CanaryBaking, AfterAlert(0)]),
    ];
    assert_eq!(plan.iter().map(|(_, kills)| kills.len()).sum::<usize>(), 20);
    let releases: Vec<String> = (0..=plan.len()).map(|index| format!("1.{index}")).collect();
    let release_names: Vec<&str> = releases.iter().map(String::as_str).collect();
    // The second wave bakes 2 s: its alert is still posted in time after a kill just before.
    let mut fleet = fleet_on_first_release(&release_names, &policy(2)).await;
    let mut acked = Acked::default();
    for event in &fleet.setup {
        acked.add(event);
    }
    let mut running = "1.0".to_string();
    let mut rolled_back = 0;
    let mut kills = 0;

    for (index, (outcome, kill_points)) in plan.iter().enumerate() {
        let deployment = format!("d-{}", index + 2);
        let release = releases[index + 1].clone();
        let step_began = Instant::now();
        let mut pending: std::collections::VecDeque<KillAt> = kill_points.iter().copied().collect();
        let mut leader = fleet.cluster.wait_leader().await;

        let body =
            json!({"deployment": deployment, "service": SERVICE, "env": ENV, "release": release, "waves": waves()});
        let answer = fleet.writer.command("/v1/deployments", &with_id(&format!("start-{deployment}"), body)).await;
        acked.add(&answer["event"]);
        let mut killed_here = Vec::new();
        let mut alert_sent = false;
        loop {
            let view = fleet.writer.get(&format!("/v1/deployments/{deployment}")).await;
            let ended = view["state"] != "active";
            let wave_state = |index: usize| view["waves"][index]["state"].as_str().unwrap_or("").to_string();
            let due = match pending.front() {
                Some(Start) => true,
                Some(CanaryStarted) => wave_state(0) != "pending",
                Some(CanaryBaking) => baking(&view, 0) || wave_state(0) == "completed",
                Some(HalfStarted) => wave_state(1) != "pending",
                Some(AllStarted) => wave_state(2) != "pending",
                Some(Completed) => view["state"] == "completed",
                Some(RolledBack) => view["state"] == "aborted",
                Some(AfterAlert(_)) | None => false,
            };
            if due {
                let point = pending.pop_front().unwrap();
                let (next, what) = kill_leader(&mut fleet.cluster, leader, kills).await;
                (leader, kills) = (next, kills + 1);
                killed_here.push(format!("{point:?}: {what}"));
                continue;
            }
            // The alert, posted to the leader while the wave the plan names runs (or bakes).
            if let Outcome::Alert(wave, in_bake) = *outcome {
                let now = if in_bake { baking(&view, wave) } else { wave_state(wave) == "started" };
                if !alert_sent && now {
                    let payload = alert_payload(&format!("soak-{deployment}"));
                    let mut acknowledged_by = leader;
                    let answer = match curl_alert(&fleet.cluster.url(leader), &payload).await {
                        Ok(answer) => answer,
                        // Alertmanager retries a failed post: so does this, to the leader then.
                        Err(_) => {
                            acknowledged_by = fleet.cluster.wait_leader().await;
                            curl_alert(&fleet.cluster.url(acknowledged_by), &payload).await.expect("the alert's retry")
                        }
                    };
                    assert_eq!(answer["received"], 1, "{answer}");
                    alert_sent = true;
                    if let Some(AfterAlert(delay)) = pending.front().copied() {
                        pending.pop_front();
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        let (next, what) = kill_leader(&mut fleet.cluster, acknowledged_by, kills).await;
                        (leader, kills) = (next, kills + 1);
                        killed_here.push(format!("AfterAlert({delay}): {what}"));
                    }
                    continue;
                }
            }
            assert!(
                alert_sent || !(ended && matches!(outcome, Outcome::Alert(..))),
                "{deployment}: the alert's moment passed without it being posted (the test was too slow): {view:#}"
            );
            if ended {
                assert!(pending.is_empty(), "{deployment} ({outcome:?}) ended before the kills {pending:?}: {view:#}");
                break;
            }
            assert!(
                step_began.elapsed() < Duration::from_secs(90),
                "{deployment} ({outcome:?}) stuck; kills left {pending:?}: {view:#}\n{}",
                fleet.agents.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Exactly the decisions this deployment should have, once each.
        let expected = match outcome {
            Outcome::Completed => {
                running = release.clone();
                steps(&[
                    ("wave.started", "canary"),
                    ("wave.completed", "canary"),
                    ("wave.started", "half"),
                    ("wave.completed", "half"),
                    ("wave.started", "all"),
                    ("wave.completed", "all"),
                    ("deployment.completed", "-"),
                ])
            }
            Outcome::Alert(0, _) => {
                rolled_back += 1;
                steps(&[("wave.started", "canary"), ("rollback", "canary")])
            }
            Outcome::Alert(..) => {
                rolled_back += 1;
                steps(&[
                    ("wave.started", "canary"),
                    ("wave.completed", "canary"),
                    ("wave.started", "half"),
                    ("rollback", "half"),
                ])
            }
        };
        let (decided, events) = decisions(&fleet.writer, &deployment).await;
        assert_eq!(decided, expected, "{deployment} ({outcome:?}, kills {killed_here:?}): {events:#?}");
        for event in &events {
            acked.add(event);
        }
        if let Outcome::Alert(..) = outcome {
            let rollback = events.last().unwrap();
            assert_eq!(
                rollback["data"]["decision"]["alerts"][0]["fingerprint"],
                format!("soak-{deployment}"),
                "{rollback:#}"
            );
            assert_eq!(rollback["release"], running.as_str(), "{rollback:#}");
        }
        let rollbacks = events_of_type(&fleet.writer, "rollback").await;
        assert_eq!(
            rollbacks.len(),
            rolled_back,
            "after {deployment} ({outcome:?}, kills {killed_here:?}): {rollbacks:#?}"
        );
        wait_fleet_on(&fleet.writer, &fleet.agents, &running).await;
        for agent in &fleet.agents.agents {
            let ran = completed(&agent.runs()).unwrap_or_else(|problem| panic!("agent {}: {problem}", agent.host));
            let mut seqs: Vec<u64> = ran.iter().map(|(seq, _)| *seq).collect();
            seqs.dedup();
            assert_eq!(seqs.len(), ran.len(), "agent {} ran a directive twice: {ran:?}", agent.host);
        }
        let log = fleet.writer.get("/v1/events?limit=10000").await["events"].as_array().cloned().unwrap_or_default();
        acked.check(&log, &deployment);
        eprintln!(
            "{deployment} {release} {outcome:?}: leader killed at {killed_here:?}; decisions {}; fleet on {running}; {:?}",
            decided.len(),
            step_began.elapsed()
        );
    }
    assert_eq!(kills, 20);
    let log = fleet.cluster.converged_log().await;
    acked.check(&log, "the end");
    for (index, (outcome, _)) in plan.iter().enumerate() {
        if let Outcome::Alert(..) = outcome {
            let fingerprint = format!("soak-d-{}", index + 2);
            let fired = log
                .iter()
                .filter(|event| event["type"] == "alert.fired" && event["data"]["fingerprint"] == fingerprint.as_str());
            assert_eq!(fired.count(), 1, "alert {fingerprint}");
        }
    }
    eprintln!(
        "{} deployments, {kills} leader kills, {rolled_back} rollbacks; {} acknowledged events all present on every node; {:?}",
        plan.len(),
        acked.0.len(),
        began.elapsed()
    );
}
