//! End-to-end tests of `fleetlog agent` and of the server's stream fan-out: agents following
//! directives across a leader kill, an agent crashing in the middle of a command, a rollback
//! arriving while a wave is being applied, a failed command retried, stalled streams catching up
//! from disk, and the subscriber limit. Every agent is a real process whose command records each run in a file
//! (`common/agents.rs`), so the assertions are about what the agents actually ran.

#[path = "common/agents.rs"]
mod agents;
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agents::{completed, metric, with_id, Agents, Phase, RawStream, Route, Run, Serve, Writer};
use common::cluster::{Cluster, Options};
use common::Server;
use fleetlog_api::client::{Client, ClientError};
use serde_json::{json, Value};

const SERVICE: &str = "shop";
const ENV: &str = "prod";

/// A directive as the ledger acknowledged it: what every agent must run.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Directive {
    seq: u64,
    release: String,
    cause: &'static str,
    deployment: Option<String>,
}

async fn create_releases(writer: &Writer, releases: &[&str]) {
    for release in releases {
        let body = json!({"service": SERVICE, "release": release});
        writer.command("/v1/releases", &with_id(&format!("release-{release}"), body)).await;
    }
}

/// Starts a one-wave deployment of `release` to every host and its wave: the wave's directive.
async fn start_deployment(writer: &Writer, deployment: &str, release: &str) -> Directive {
    let body = json!({"deployment": deployment, "service": SERVICE, "env": ENV, "release": release,
                      "waves": [{"name": "all", "percent": 100}]});
    writer.command("/v1/deployments", &with_id(&format!("start-{deployment}"), body)).await;
    let path = format!("/v1/deployments/{deployment}/waves/all/start");
    let started = writer.command(&path, &with_id(&format!("wave-{deployment}"), json!({}))).await;
    assert_eq!(started["event"]["release"], release, "{started}");
    Directive {
        seq: started["seq"].as_u64().unwrap(),
        release: release.to_string(),
        cause: "wave.started",
        deployment: Some(deployment.to_string()),
    }
}

async fn complete_deployment(writer: &Writer, deployment: &str) {
    let path = format!("/v1/deployments/{deployment}/waves/all/complete");
    writer.command(&path, &with_id(&format!("wave-done-{deployment}"), json!({}))).await;
    let path = format!("/v1/deployments/{deployment}/complete");
    writer.command(&path, &with_id(&format!("done-{deployment}"), json!({}))).await;
}

/// Appends a rollback (to `release`, or to the target the ledger picks) and checks that the
/// ledger chose `expected`.
async fn roll_back(writer: &Writer, id: &str, release: Option<&str>, expected: &str) -> Directive {
    let mut body = json!({"service": SERVICE, "env": ENV, "reason": format!("test {id}")});
    if let Some(release) = release {
        body["release"] = json!(release);
    }
    let rolled = writer.command("/v1/rollbacks", &with_id(id, body)).await;
    assert_eq!(rolled["event"]["release"], expected, "{rolled}");
    Directive {
        seq: rolled["seq"].as_u64().unwrap(),
        release: expected.to_string(),
        cause: "rollback",
        deployment: None,
    }
}

/// Checks that `runs` are exactly the `expected` directives, each started once and finished
/// before the next started, with the directive's variables.
fn assert_ran_exactly(host: &str, runs: &[Run], expected: &[&Directive], context: &str) {
    let ran = completed(runs).unwrap_or_else(|problem| panic!("agent {host}: {problem}\n{context}"));
    let wanted: Vec<(u64, String)> =
        expected.iter().map(|directive| (directive.seq, directive.release.clone())).collect();
    assert_eq!(ran, wanted, "agent {host} ran these (seq, release), in this order\n{context}");
    for (run, directive) in runs.iter().zip(expected.iter().flat_map(|directive| [directive, directive])) {
        assert_eq!(
            (run.cause.as_str(), &run.deployment, run.host.as_str(), run.environment.as_str()),
            (directive.cause, &directive.deployment, host, format!("{SERVICE}/{ENV}").as_str()),
            "variables of a run of agent {host}\n{context}"
        );
    }
}

/// `host.reported` events of one host about the directive at `seq`: their statuses in order.
async fn reported_statuses(writer: &Writer, host: &str, seq: u64) -> Vec<String> {
    reports(writer, host, seq).await.into_iter().map(|(status, _)| status).collect()
}

/// `host.reported` events of one host about the directive at `seq`: (status, message) in order.
async fn reports(writer: &Writer, host: &str, seq: u64) -> Vec<(String, String)> {
    let page = writer.get(&format!("/v1/events?type=host.reported&host={host}&limit=1000")).await;
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["data"]["applied_seq"] == seq)
        .map(|event| {
            let text = |name: &str| event["data"][name].as_str().unwrap_or_default().to_string();
            (text("status"), text("message"))
        })
        .collect()
}

/// Waits until web-1's reports about the directive at `seq` are `statuses`.
async fn wait_reported(writer: &Writer, agents: &Agents, seq: u64, statuses: &[&str]) {
    let deadline = Instant::now() + agents::WAIT;
    loop {
        let reported = reported_statuses(writer, "web-1", seq).await;
        if reported == statuses {
            return;
        }
        assert!(Instant::now() < deadline, "reports about seq {seq}: {reported:?}\n{}", agents.describe());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A single node, `releases` created, agents for `hosts` registered, and the first release
/// deployed to all of them and completed: where the agent tests start from.
async fn fleet_on_first_release(releases: &[&str], hosts: &[&str]) -> (Server, Writer, Agents, Directive) {
    let server = Server::start().await;
    let writer = Writer::new(&[&server.url]);
    create_releases(&writer, releases).await;
    let agents = Agents::start(&[&server.url], SERVICE, ENV, hosts);
    writer.wait_registered(SERVICE, ENV, hosts.len()).await;
    let first = start_deployment(&writer, "d-1", releases[0]).await;
    agents.wait_done(first.seq).await;
    complete_deployment(&writer, "d-1").await;
    (server, writer, agents, first)
}

/// Five agents, each given every node of a 3-node cluster, follow eight directives (deployments
/// and rollbacks) while the leader is killed and later restarted: each agent runs every directive
/// exactly once, in seq order, and the fleet view converges on the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_follow_directives_across_a_leader_kill() {
    let mut cluster = Cluster::start(Options::default()).await;
    let urls: Vec<String> = cluster.members().into_iter().map(|id| cluster.url(id)).collect();
    let writer = Writer::new(&urls);
    create_releases(&writer, &["1.0", "2.0", "3.0"]).await;
    let hosts = ["web-1", "web-2", "web-3", "web-4", "web-5"];
    let agents = Agents::start(&urls, SERVICE, ENV, &hosts);
    writer.wait_registered(SERVICE, ENV, hosts.len()).await;

    let mut directives = Vec::new();
    let mut killed = None;
    // Each step appends one directive; after the fifth is acknowledged the leader is killed,
    // so it reaches the agents while they fail over; the old leader is back for the last two.
    for step in 1..=8 {
        let directive = match step {
            1 => start_deployment(&writer, "d-1", "1.0").await,
            2 => start_deployment(&writer, "d-2", "2.0").await,
            // Back to the last completed deployment's release other than 2.0.
            3 => roll_back(&writer, "rollback-3", None, "1.0").await,
            // Left active: the next rollback aborts it.
            4 => start_deployment(&writer, "d-4", "3.0").await,
            5 => roll_back(&writer, "rollback-5", Some("2.0"), "2.0").await,
            6 => start_deployment(&writer, "d-6", "1.0").await,
            7 => start_deployment(&writer, "d-7", "3.0").await,
            _ => roll_back(&writer, "rollback-8", None, "1.0").await,
        };
        if step == 5 {
            let leader = cluster.wait_leader().await;
            let watchers = metric(&cluster.url(leader), "fleetlog_subscribers").await;
            cluster
                .check(watchers >= 1.0, || format!("no agent watched leader {leader}: the kill would prove nothing"));
            cluster.kill(leader);
            killed = Some(leader);
        }
        agents.wait_done(directive.seq).await;
        if let Some(deployment) = directive.deployment.as_deref().filter(|_| step != 4) {
            complete_deployment(&writer, deployment).await;
        }
        if step == 6 {
            cluster.restart(killed.expect("killed at step 5")).await;
        }
        directives.push(directive);
    }
    let directives: Vec<&Directive> = directives.iter().collect();
    let last = directives.last().unwrap();
    writer.wait_converged(SERVICE, ENV, &last.release, last.seq, &agents).await;
    for agent in &agents.agents {
        assert_ran_exactly(&agent.host, &agent.runs(), &directives, &agents.describe());
    }
    // The agents that watched the killed leader went on through another node.
    let failed_over = agents.agents.iter().filter(|agent| agent.watches_opened() > 1).count();
    assert!(failed_over >= 1, "no agent opened its watch twice\n{}", agents.describe());
    eprintln!(
        "leader {killed:?} killed at the fifth directive; {failed_over} agents failed over; all ran all eight once"
    );
}

/// An agent killed (with its command) while applying a directive runs that directive again when
/// restarted, and only that one: it finishes once, earlier directives are not repeated, and a
/// later plain restart runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_in_the_middle_of_applying() {
    let (_server, writer, mut agents, first) = fleet_on_first_release(&["1.0", "2.0", "3.0"], &["web-1"]).await;

    agents.hold("2.0");
    let interrupted = start_deployment(&writer, "d-2", "2.0").await;
    agents.wait_until("2.0 started", |agent| agent.has(interrupted.seq, Phase::Start)).await;
    // The crash comes after the agent reported that it is applying (as attempt 1).
    wait_reported(&writer, &agents, interrupted.seq, &["applying"]).await;
    let agent = &mut agents.agents[0];
    agent.crash();
    let state = agent.state();
    assert_eq!(
        (&state["current"]["directive"]["seq"], &state["target"]["seq"], &state["attempts"]),
        (&json!(first.seq), &json!(interrupted.seq), &json!(1)),
        "state after the crash: {state:#}"
    );

    agent.spawn();
    let restarted_run = |agent: &agents::Agent| {
        agent.runs().iter().filter(|run| run.seq == interrupted.seq && run.phase == Phase::Start).count() == 2
    };
    agents.wait_until("2.0 started again", restarted_run).await;
    let state = agents.agents[0].state();
    assert_eq!((&state["target"]["seq"], &state["attempts"]), (&json!(interrupted.seq), &json!(2)), "{state:#}");
    wait_reported(&writer, &agents, interrupted.seq, &["applying", "applying"]).await;
    agents.let_go("2.0");
    agents.wait_done(interrupted.seq).await;
    complete_deployment(&writer, "d-2").await;

    let runs = agents.agents[0].runs();
    let described = agents.describe();
    assert_ran_exactly("web-1", &runs[..2], &[&first], &described);
    let (killed, rerun) = (&runs[2], &runs[3]);
    assert_eq!((killed.seq, killed.phase), (interrupted.seq, Phase::Start), "{described}");
    assert_ran_exactly("web-1", &runs[3..], &[&interrupted], &described);
    assert_ne!(killed.pid, rerun.pid, "{described}");
    let statuses = reported_statuses(&writer, "web-1", interrupted.seq).await;
    assert_eq!(statuses, ["applying", "applying", "running"], "one applying report per attempt\n{described}");
    let state = agents.agents[0].state();
    assert_eq!((&state["target"], &state["attempts"]), (&Value::Null, &json!(0)), "{state:#}");
    assert_eq!(state["current"]["directive"]["seq"], interrupted.seq, "{state:#}");

    // A plain restart while idle: nothing runs until the next directive.
    let agent = &mut agents.agents[0];
    let status = agent.terminate().await;
    assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}\n{}", agent.describe());
    agent.spawn();
    agents.wait_until("watching again", |agent| agent.watches_opened() >= 1).await;
    let third = start_deployment(&writer, "d-3", "3.0").await;
    agents.wait_done(third.seq).await;
    let runs = agents.agents[0].runs();
    assert_ran_exactly("web-1", &runs[5..], &[&third], &agents.describe());
    writer.wait_converged(SERVICE, ENV, "3.0", third.seq, &agents).await;
}

/// A rollback appended while the agents are still applying a wave is applied right after the
/// wave's command finishes: the rollback is each agent's last run, and the fleet converges on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_racing_an_in_flight_wave() {
    let (_server, writer, agents, first) = fleet_on_first_release(&["1.0", "2.0"], &["web-1", "web-2", "web-3"]).await;

    // The wave's command holds until every agent has taken in the rollback: the race is certain.
    agents.hold("2.0");
    let wave = start_deployment(&writer, "d-2", "2.0").await;
    agents.wait_until("2.0 started", |agent| agent.has(wave.seq, Phase::Start)).await;
    let rollback = roll_back(&writer, "rollback", None, "1.0").await;
    let taken_in = |agent: &agents::Agent| agent.state()["position"].as_u64().unwrap_or(0) >= rollback.seq;
    agents.wait_until("the rollback taken in while 2.0 applies", taken_in).await;
    for agent in &agents.agents {
        assert!(!agent.has(wave.seq, Phase::Done), "2.0 was held\n{}", agents.describe());
    }
    agents.let_go("2.0");

    let rolled_back = |agent: &agents::Agent| agent.has(rollback.seq, Phase::Done);
    let what = format!("the rollback (seq {}, to 1.0) applied after 2.0 (seq {}) finished", rollback.seq, wave.seq);
    agents.wait_until(&what, rolled_back).await;
    for agent in &agents.agents {
        assert_ran_exactly(&agent.host, &agent.runs(), &[&first, &wave, &rollback], &agents.describe());
    }
    writer.wait_converged(SERVICE, ENV, "1.0", rollback.seq, &agents).await;
}

/// A directive waiting behind a running command is replaced by a newer one that arrives before
/// it starts: the older one never runs, the newest does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directive_superseded_while_waiting_never_runs() {
    let (_server, writer, agents, first) = fleet_on_first_release(&["1.0", "2.0", "3.0"], &["web-1", "web-2"]).await;

    agents.hold("2.0");
    let wave = start_deployment(&writer, "d-2", "2.0").await;
    agents.wait_until("2.0 started", |agent| agent.has(wave.seq, Phase::Start)).await;
    // While 2.0 applies: a rollback to 1.0 (aborting d-2), then a deployment of 3.0.
    roll_back(&writer, "rollback", None, "1.0").await;
    let newest = start_deployment(&writer, "d-3", "3.0").await;
    let taken_in = |agent: &agents::Agent| agent.state()["position"].as_u64().unwrap_or(0) >= newest.seq;
    agents.wait_until("3.0 taken in while 2.0 applies", taken_in).await;
    agents.let_go("2.0");

    agents.wait_done(newest.seq).await;
    for agent in &agents.agents {
        assert_ran_exactly(&agent.host, &agent.runs(), &[&first, &wave, &newest], &agents.describe());
    }
    writer.wait_converged(SERVICE, ENV, "3.0", newest.seq, &agents).await;
}

/// A command that fails twice and then succeeds is retried with growing pauses until it runs,
/// every attempt reported in order (applying, failed attempt 1, applying, failed attempt 2,
/// applying, running), and the fleet view converges on the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_until_it_runs() {
    let server = Server::start().await;
    let writer = Writer::new(&[&server.url]);
    create_releases(&writer, &["1.0"]).await;
    // Pauses of 0.5-1 s, then 1-2 s: long enough for each report to be delivered before the
    // next attempt (only the newest undelivered report is kept), short enough for a quick test.
    let retry = ["--retry-initial-seconds", "1", "--retry-max-seconds", "2"];
    let agents = Agents::start_with(&[&server.url], SERVICE, ENV, &["web-1"], &retry);
    agents.fail("1.0", 2);
    writer.wait_registered(SERVICE, ENV, 1).await;

    let began = Instant::now();
    let deployed = start_deployment(&writer, "d-1", "1.0").await;
    writer.wait_converged(SERVICE, ENV, "1.0", deployed.seq, &agents).await;
    let took = began.elapsed();
    let described = agents.describe();

    let reported = reports(&writer, "web-1", deployed.seq).await;
    let statuses: Vec<&str> = reported.iter().map(|(status, _)| status.as_str()).collect();
    assert_eq!(
        statuses,
        ["applying", "failed", "applying", "failed", "applying", "running"],
        "every attempt reported, in order: {reported:#?}\n{described}"
    );
    let expected = [
        "attempt 1",
        "attempt 1 failed, retrying in ",
        "attempt 2",
        "attempt 2 failed, retrying in ",
        "attempt 3",
        "attempt 3: exit 0",
    ];
    for ((status, message), prefix) in reported.iter().zip(expected) {
        assert!(message.starts_with(prefix), "a {status} report says {message:?}, not {prefix:?}…\n{described}");
        if status == "failed" {
            assert!(message.contains("exit status: 1") && message.contains("failing as asked"), "{message:?}");
        }
    }
    let runs = agents.agents[0].runs();
    let phases: Vec<(u64, Phase)> = runs.iter().map(|run| (run.seq, run.phase)).collect();
    let seq = deployed.seq;
    assert_eq!(
        phases,
        [
            (seq, Phase::Start),
            (seq, Phase::Failed),
            (seq, Phase::Start),
            (seq, Phase::Failed),
            (seq, Phase::Start),
            (seq, Phase::Done)
        ],
        "three runs of the one directive\n{described}"
    );
    // The pauses were drawn from 0.5-1 s and 1-2 s.
    assert!(took >= Duration::from_millis(1_500), "converged after {took:?}: the retries did not wait\n{described}");
    let state = agents.agents[0].state();
    assert_eq!((&state["target"], &state["attempts"]), (&Value::Null, &json!(0)), "{state:#}");
    assert_eq!(state["current"]["outcome"], "running", "{state:#}");
    eprintln!("three attempts, converged {took:.1?} after the deployment started");
}

/// With an hour between retries, a failed release is retried at once when its agent restarts,
/// and a newer directive arriving while a retry waits is applied at once (the failed release is
/// not retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_or_a_newer_directive_cuts_a_retry_wait_short() {
    let server = Server::start().await;
    let writer = Writer::new(&[&server.url]);
    create_releases(&writer, &["1.0", "2.0"]).await;
    let retry = ["--retry-initial-seconds", "3600", "--retry-max-seconds", "3600"];
    let mut agents = Agents::start_with(&[&server.url], SERVICE, ENV, &["web-1"], &retry);
    writer.wait_registered(SERVICE, ENV, 1).await;

    agents.fail("1.0", 1);
    let first = start_deployment(&writer, "d-1", "1.0").await;
    wait_reported(&writer, &agents, first.seq, &["applying", "failed"]).await;
    let state = agents.agents[0].state();
    assert_eq!((&state["target"]["seq"], &state["attempts"]), (&json!(first.seq), &json!(1)), "{state:#}");
    let agent = &mut agents.agents[0];
    agent.crash();
    agent.spawn();
    writer.wait_converged(SERVICE, ENV, "1.0", first.seq, &agents).await;
    let statuses = reported_statuses(&writer, "web-1", first.seq).await;
    assert_eq!(statuses, ["applying", "failed", "applying", "running"], "{}", agents.describe());
    complete_deployment(&writer, "d-1").await;

    agents.fail("2.0", 1_000);
    let wave = start_deployment(&writer, "d-2", "2.0").await;
    wait_reported(&writer, &agents, wave.seq, &["applying", "failed"]).await;
    let rollback = roll_back(&writer, "rollback", None, "1.0").await;
    writer.wait_converged(SERVICE, ENV, "1.0", rollback.seq, &agents).await;
    let statuses = reported_statuses(&writer, "web-1", wave.seq).await;
    assert_eq!(statuses, ["applying", "failed"], "2.0 was not retried\n{}", agents.describe());
    let runs: Vec<(u64, Phase)> = agents.agents[0].runs().iter().map(|run| (run.seq, run.phase)).collect();
    let expected = [
        (first.seq, Phase::Start),
        (first.seq, Phase::Failed),
        (first.seq, Phase::Start),
        (first.seq, Phase::Done),
        (wave.seq, Phase::Start),
        (wave.seq, Phase::Failed),
        (rollback.seq, Phase::Start),
        (rollback.seq, Phase::Done),
    ];
    assert_eq!(runs, expected, "{}", agents.describe());
}

/// Messages of one stream read by a task, as (event type, seq).
type Received = Arc<Mutex<Vec<(String, u64)>>>;

/// Reads a stream in a task for as long as it lasts, recording every message with an id.
fn read_in_background(client: Client, path: String, query: Vec<(&'static str, String)>) -> Received {
    let received: Received = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        let mut stream = client.stream(&path, &query, None).await.expect("open a stream");
        while let Ok(Some(message)) = stream.next().await {
            if let (Some(kind), Some(id)) = (message.event, message.id) {
                sink.lock().unwrap().push((kind, id.parse().unwrap()));
            }
        }
    });
    received
}

/// Seqs of `received` of the given type.
fn seqs_of(received: &[(String, u64)], kind: Option<&str>) -> Vec<u64> {
    received.iter().filter(|(event, _)| kind.is_none_or(|kind| event == kind)).map(|(_, seq)| *seq).collect()
}

/// Reads a raw stream until a message with id `last` arrived; (event type, seq) of each.
async fn read_until(stream: &mut RawStream, last: u64) -> Vec<(String, u64)> {
    let mut received = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("stalled stream: nothing within 20 s after seq {:?}", received.last()))
            .unwrap_or_else(|| panic!("stalled stream ended after {:?}", received.last()));
        if let (Some(kind), Some(id)) = (message.event, message.id) {
            let seq: u64 = id.parse().unwrap();
            received.push((kind, seq));
            if seq >= last {
                return received;
            }
        }
    }
}

/// Batches that can wait inside the server for a stream, beyond those in the kernel: straight on
/// the socket, the one being written and one in hand; through the router, also the response
/// body's channel (16) and hyper's write queue (16 buffers).
fn batches_in_process(route: Route) -> usize {
    match route {
        Route::Direct => 2,
        Route::Router => 2 + 16 + 16,
    }
}

/// Checks that a stream left unread got stuck early enough for more than `capacity` of the
/// batches meant for it to go by afterwards, which pushes it off its live channel. It can have
/// taken in at most the batches whose bytes (at least `sizes`, in order) fit in what the kernel
/// holds for it, plus [`batches_in_process`].
fn assert_pushed_off_its_channel(stream: &RawStream, route: Route, what: &str, sizes: &[u64], capacity: usize) {
    let kernel = stream.kernel_queued_bytes();
    let mut bytes = 0;
    let in_kernel = sizes.iter().take_while(|size| {
        let fits = bytes < kernel;
        bytes += **size;
        fits
    });
    let taken_in = in_kernel.count() + batches_in_process(route);
    let after = sizes.len().saturating_sub(taken_in);
    assert!(
        after > capacity,
        "the {what} stream ({route:?}) may have taken in {taken_in} of {} batches ({kernel} bytes in the kernel): \
         the {after} after it do not overrun its channel of {capacity}",
        sizes.len()
    );
    eprintln!(
        "{what} ({route:?}): {kernel} bytes in the kernel; stuck with at least {after} of {} batches to go",
        sizes.len()
    );
}

/// Subscribers and watchers that stop reading while the server keeps appending are pushed off
/// their live channels, and when read again catch up from disk: from where they were to the
/// head and on into live events, with no gap and no duplicate. Streams served straight on the
/// socket and through the router alike. Subscribers that keep reading are not held up.
///
/// Loopback TCP autotunes the server's send buffer up to `tcp_wmem` (4 MiB), which would absorb
/// some 12,000 one-directive batches: the directives come 1,000 to a batch (rollbacks alternating
/// between two releases), so every buffer fills within a few batches; then 1,200 single-event
/// batches of 2 KiB push the subscribers off the shared ring of 1,024 batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_catches_up_from_disk_without_a_gap() {
    const DIRECTIVE_BATCHES: usize = 60;
    const DIRECTIVES_PER_BATCH: usize = 1_000;
    const NOTES: usize = 1_200;
    const NOTE_BYTES: usize = 2 * 1024;
    // Lower bounds of the served size: a rollback event, a directive (with these names), a note.
    const ROLLBACK_EVENT_BYTES: u64 = 500;
    const DIRECTIVE_BYTES: u64 = 350;
    let server = Server::start().await;
    let writer = Writer::new(&[&server.url]);
    let releases = [format!("{}-a", "r".repeat(118)), format!("{}-b", "r".repeat(118))];
    create_releases(&writer, &[releases[0].as_str(), releases[1].as_str()]).await;
    let host = "h".repeat(120);
    writer.command("/v1/targets", &json!({"id": "target", "host": host, "service": SERVICE, "env": ENV})).await;
    let watch_path = format!("/v1/watch/{host}");

    let start = server.head().await + 1;
    let log_path = format!("/v1/subscribe?from_seq={start}");
    let mut stalled = Vec::new();
    for route in [Route::Direct, Route::Router] {
        for path in [&log_path, &watch_path] {
            let stream = RawStream::open(&server.address, path, route, 4096).await.expect("open a stream");
            assert_eq!(stream.is_chunked(), route == Route::Router, "{path} by {route:?}: which server path");
            stalled.push((route, path.as_str(), stream));
        }
    }
    let client = Client::new(&server.url).unwrap();
    let live_log = read_in_background(client.clone(), "/v1/subscribe".into(), vec![("from_seq", start.to_string())]);
    let live_watch = read_in_background(client, watch_path.clone(), vec![]);

    let began = Instant::now();
    let mut directives = Vec::new();
    for _ in 0..DIRECTIVE_BATCHES {
        let events: Vec<Value> = (0..DIRECTIVES_PER_BATCH)
            .map(|index| {
                json!({"type": "rollback", "service": SERVICE, "env": ENV, "release": releases[index % 2],
                       "data": {"reason": "stall"}})
            })
            .collect();
        let appended = server.ok("/v1/events", &json!({"events": events})).await;
        directives.extend(appended["first_seq"].as_u64().unwrap()..=appended["last_seq"].as_u64().unwrap());
    }
    for index in 0..NOTES {
        let note = json!({"events": [{"type": "app.note", "data": {"n": index, "padding": "x".repeat(NOTE_BYTES)}}]});
        server.ok("/v1/events", &note).await;
    }
    let head = server.head().await;
    let appended_in = began.elapsed();

    // The readers that kept reading have everything soon after the last append.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log_last = live_log.lock().unwrap().last().map(|(_, seq)| *seq);
        let watch_last = live_watch.lock().unwrap().last().map(|(_, seq)| *seq);
        if log_last == Some(head) && watch_last == directives.last().copied() {
            break;
        }
        assert!(Instant::now() < deadline, "live readers at {log_last:?} and {watch_last:?}, head {head}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live_done_in = began.elapsed();
    assert_eq!(seqs_of(&live_log.lock().unwrap(), None), (start..=head).collect::<Vec<_>>());
    assert_eq!(seqs_of(&live_watch.lock().unwrap(), Some("directive")), directives);

    let directive_batch = DIRECTIVES_PER_BATCH as u64;
    let mut log_sizes = vec![ROLLBACK_EVENT_BYTES * directive_batch; DIRECTIVE_BATCHES];
    log_sizes.extend(std::iter::repeat_n(NOTE_BYTES as u64, NOTES));
    let watch_sizes = vec![DIRECTIVE_BYTES * directive_batch; DIRECTIVE_BATCHES];
    let ring = fleetlog_raft::storage::feed::FEED_BATCHES_MAX;
    let host_channel = fleetlog_raft::storage::feed::HOST_BATCHES_MAX;
    for (route, path, stream) in &stalled {
        if *path == log_path {
            assert_pushed_off_its_channel(stream, *route, "subscribe", &log_sizes, ring);
        } else {
            assert_pushed_off_its_channel(stream, *route, "watch", &watch_sizes, host_channel);
        }
    }
    for (route, path, stream) in &mut stalled {
        if *path == log_path {
            let log = read_until(stream, head).await;
            assert_eq!(seqs_of(&log, None), (start..=head).collect::<Vec<_>>(), "stalled subscriber by {route:?}");
        } else {
            let watch = read_until(stream, *directives.last().unwrap()).await;
            assert_eq!(watch[0].0, "state", "a watch starts with the host's state");
            assert_eq!(seqs_of(&watch, Some("directive")), directives, "stalled watcher by {route:?}");
        }
    }

    // All have caught up and follow live events again.
    let mut more = Vec::new();
    for index in 0..3 {
        let body = json!({"service": SERVICE, "env": ENV, "release": releases[index % 2], "reason": "live"});
        more.push(server.ok("/v1/rollbacks", &body).await["seq"].as_u64().unwrap());
    }
    for (route, path, stream) in &mut stalled {
        let kind = if *path == log_path { None } else { Some("directive") };
        assert_eq!(seqs_of(&read_until(stream, more[2]).await, kind), more, "{path} by {route:?} after catching up");
    }
    eprintln!(
        "{} batches ({} events) appended in {:.1} s; live readers done at {:.1} s; stalled ones at {:.1} s",
        DIRECTIVE_BATCHES + NOTES,
        head + 1 - start,
        appended_in.as_secs_f64(),
        live_done_in.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
}

/// Opens a stream and returns it, or the API error it was refused with.
async fn open(client: &Client, path: &str) -> Result<fleetlog_api::client::SseReader, (u16, String)> {
    match client.stream(path, &[], None).await {
        Ok(stream) => Ok(stream),
        Err(ClientError::Api { status, code, .. }) => Err((status, code)),
        Err(error) => panic!("GET {path}: {error}"),
    }
}

/// Checks that a new stream of either kind is refused with 503 `too_many_subscribers`, whether
/// the server serves it straight on the socket or through the router.
async fn assert_refused(address: &str) {
    for route in [Route::Direct, Route::Router] {
        for path in ["/v1/subscribe", "/v1/watch/web-3"] {
            let refused = RawStream::open(address, path, route, 64 * 1024).await.err();
            let answer = refused.map(|(status, body)| (status, body["error"]["code"].clone()));
            assert_eq!(answer, Some((503, json!("too_many_subscribers"))), "{path} by {route:?}");
        }
    }
}

/// With `--max-subscribers 3`, a fourth stream (watch or subscribe) is refused with 503
/// `too_many_subscribers`; closing a stream frees its slot, and an agent refused meanwhile gets
/// in once a slot is free and applies its directive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_limit_answers_503_and_frees_slots() {
    let server = Serve::start(&["--max-subscribers", "3"]).await;
    let client = Client::new(&server.url).unwrap();
    let mut streams = Vec::new();
    for path in ["/v1/watch/web-1", "/v1/subscribe", "/v1/watch/web-2"] {
        streams.push(open(&client, path).await.unwrap_or_else(|error| panic!("{path}: {error:?}")));
    }
    assert_eq!(metric(&server.url, "fleetlog_subscribers").await, 3.0);
    assert_refused(&server.address).await;

    // Closing one frees its slot once the server notices the connection is gone.
    drop(streams.remove(1));
    let deadline = Instant::now() + Duration::from_secs(15);
    let reopened = loop {
        match open(&client, "/v1/subscribe").await {
            Ok(stream) => break stream,
            Err(error) => assert!(Instant::now() < deadline, "no slot freed: {error:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    streams.push(reopened);

    // An agent whose watch is refused keeps trying; when a slot frees, it gets in and applies.
    let writer = Writer::new(&[&server.url]);
    create_releases(&writer, &["1.0"]).await;
    let agents = Agents::start(&[&server.url], SERVICE, ENV, &["web-9"]);
    writer.wait_registered(SERVICE, ENV, 1).await;
    let refused_once = |agent: &agents::Agent| agent.log_since_start().contains("the server refused the watch");
    agents.wait_until("a watch refused", refused_once).await;
    let first = start_deployment(&writer, "d-1", "1.0").await;
    drop(streams.remove(0));
    agents.wait_done(first.seq).await;
    writer.wait_converged(SERVICE, ENV, "1.0", first.seq, &agents).await;

    // Every slot comes back: after closing ours, only the agent's stream is counted.
    streams.clear();
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&server.url, "fleetlog_subscribers").await != 1.0 {
        assert!(Instant::now() < deadline, "slots not freed; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = Vec::new();
    for path in ["/v1/subscribe", "/v1/watch/web-1"] {
        again.push(open(&client, path).await.unwrap_or_else(|error| panic!("{path}: {error:?}")));
    }
    assert_refused(&server.address).await;
}

/// The node whose URL `line` names (followed by anything but a digit, so port 1234 is not 12345).
fn node_named(cluster: &Cluster, line: &str) -> Option<u64> {
    cluster.members().into_iter().find(|&id| {
        let url = cluster.url(id);
        line.match_indices(&url).any(|(at, _)| !line[at + url.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// The node on which an agent last opened its watch stream, from its log.
fn watched_node(cluster: &Cluster, agent: &agents::Agent) -> Option<u64> {
    let log = agent.log_since_start();
    let line = log.lines().rev().find(|line| line.contains(" watching "))?;
    node_named(cluster, line)
}

/// Waits until the agents' streams are open, one each, on the nodes their logs name: the
/// hosts watching each node, by node.
async fn wait_placed(cluster: &Cluster, agents: &Agents) -> std::collections::BTreeMap<u64, Vec<String>> {
    let deadline = Instant::now() + agents::WAIT;
    loop {
        let mut placed = std::collections::BTreeMap::<u64, Vec<String>>::new();
        for agent in &agents.agents {
            if let Some(id) = watched_node(cluster, agent) {
                placed.entry(id).or_default().push(agent.host.clone());
            }
        }
        let mut gauges = Vec::new();
        for id in cluster.members() {
            let open = metric(&cluster.url(id), "fleetlog_subscribers").await as usize;
            gauges.push((id, open, placed.get(&id).map_or(0, Vec::len)));
        }
        let opened: usize = placed.values().map(Vec::len).sum();
        if opened == agents.agents.len() && gauges.iter().all(|(_, open, logged)| open == logged) {
            return placed;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!(
                "agents' streams not settled: (node, open streams, agents whose log names it) {gauges:?}\n{}",
                agents.describe()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node cut off from the other two still answers its clients and keeps its streams beating,
/// but nothing new reaches it: its streams end, and the agents watching it move on to a node of
/// the majority and apply what is appended there. First the leader is cut off (openraft 0.9
/// leaves it leading, alone; only its lost quorum tells), then a follower (it loses its leader).
/// Each time a deployment is started through the majority while the agent still watches the cut
/// node; every agent applies it once, and the majority's fleet view converges. After the links
/// heal, a rollback reaches every agent and nothing ever ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_leaves_a_node_cut_off_from_the_cluster() {
    /// From cutting a node off to its agents having applied the directive appended meanwhile:
    /// two heartbeats out of contact (5-10 s after the contact is lost) and a reconnection.
    const MOVED_WITHIN: Duration = Duration::from_secs(40);
    let began = Instant::now();
    let cluster = Cluster::start(Options::default()).await;
    let members = cluster.members();
    let urls: Vec<String> = members.iter().map(|&id| cluster.url(id)).collect();
    let writer = Writer::new(&urls);
    create_releases(&writer, &["1.0", "2.0"]).await;
    // Host names differing in their last letter start on consecutive URLs: one agent per node.
    let hosts = ["web-1", "web-2", "web-3"];
    let agents = Agents::start(&urls, SERVICE, ENV, &hosts);
    writer.wait_registered(SERVICE, ENV, hosts.len()).await;

    let mut directives = Vec::new();
    let mut timings = Vec::new();
    for (step, cut_leader, release) in [(1, true, "1.0"), (2, false, "2.0")] {
        let placed = wait_placed(&cluster, &agents).await;
        let leader = cluster.wait_leader().await;
        let cut = if cut_leader {
            leader
        } else {
            let follower = placed.keys().copied().find(|&id| id != leader);
            follower.unwrap_or_else(|| cluster.fail(&format!("no agent watches a follower: {placed:?}")))
        };
        let role = if cut_leader { "leader" } else { "follower" };
        let Some(watchers) = placed.get(&cut).cloned() else {
            cluster.fail(&format!("no agent watches the {role} {cut}: cutting it off would prove nothing: {placed:?}"))
        };
        let log_lines: Vec<usize> = agents.agents.iter().map(|agent| agent.log_since_start().lines().count()).collect();

        let cut_at = Instant::now();
        cluster.isolate(cut).await;
        let majority: Vec<String> = members.iter().filter(|&&id| id != cut).map(|&id| cluster.url(id)).collect();
        let majority_writer = Writer::new(&majority);
        let directive = start_deployment(&majority_writer, &format!("d-{step}"), release).await;
        agents.wait_done(directive.seq).await;
        let applied_in = cut_at.elapsed();
        cluster.check(applied_in < MOVED_WITHIN, || {
            format!(
                "the agents on the cut-off {role} {cut} applied seq {} only {applied_in:?} after the cut",
                directive.seq
            )
        });
        // Not through the cut node: it never had the directive.
        let cut_head = cluster.local_head(cut).await;
        cluster.check(cut_head.is_some_and(|head| head < directive.seq), || {
            format!("the cut-off node {cut} has head {cut_head:?}, yet seq {} was appended without it", directive.seq)
        });
        // The cut node ended its streams, and each agent that was there now watches the majority.
        for (agent, &lines) in agents.agents.iter().zip(&log_lines) {
            if !watchers.contains(&agent.host) {
                continue;
            }
            let now = watched_node(&cluster, agent);
            let since_cut: Vec<String> = agent.log_since_start().lines().skip(lines).map(str::to_string).collect();
            let ended = since_cut.iter().any(|line| line.contains("the server closed the stream"));
            assert!(
                ended && now.is_some_and(|id| id != cut),
                "agent {} on the cut-off {role} {cut}: stream ended by the server {ended}, now watching {now:?}\n{}",
                agent.host,
                agents.describe()
            );
        }
        let open_on_cut = metric(&cluster.url(cut), "fleetlog_subscribers").await;
        cluster.check(open_on_cut == 0.0, || format!("the cut-off node {cut} still has {open_on_cut} open streams"));
        complete_deployment(&majority_writer, &format!("d-{step}")).await;
        majority_writer.wait_converged(SERVICE, ENV, release, directive.seq, &agents).await;
        timings.push(format!("{role} {cut} cut off ({watchers:?} on it): applied after {applied_in:.1?}"));
        directives.push(directive);

        cluster.heal_all();
        cluster.wait_leader().await;
        cluster.wait_ready_all().await;
    }

    // Healed: every agent follows one more directive, and none ever ran anything twice.
    let rollback = roll_back(&writer, "rollback-3", None, "1.0").await;
    agents.wait_done(rollback.seq).await;
    writer.wait_converged(SERVICE, ENV, "1.0", rollback.seq, &agents).await;
    directives.push(rollback);
    let directives: Vec<&Directive> = directives.iter().collect();
    for agent in &agents.agents {
        assert_ran_exactly(&agent.host, &agent.runs(), &directives, &agents.describe());
    }
    eprintln!("{}; all ran all three once; {:.1?} in all", timings.join("; "), began.elapsed());
}

/// Health reports of web-`index`'s `host.reported` events that carry `data.health`, in order.
async fn health_reports(writer: &Writer, host: &str) -> Vec<String> {
    let page = writer.get(&format!("/v1/events?type=host.reported&host={host}&limit=1000")).await;
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["data"]["health"].as_str())
        .map(str::to_string)
        .collect()
}

/// Agents with `--check` say their host's health only when it changes: three healthy agents
/// checking five times a second write no health at all; one turning unhealthy during a bake
/// trips the policy's `min_healthy` (halting the deployment), and healthy again is one more
/// report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_checks_report_changes_only_and_count_against_min_healthy() {
    let server = Server::start().await;
    let writer = Writer::new(&[&server.url]);
    create_releases(&writer, &["1.0", "2.0"]).await;
    let sick = tempfile::tempdir().unwrap();
    let check = format!("if [ -e '{}'/\"$FLEETLOG_HOST\" ]; then echo 'disk full'; exit 1; fi", sick.path().display());
    let hosts = ["web-1", "web-2", "web-3"];
    let agents = Agents::start_with(&[&server.url], SERVICE, ENV, &hosts, &["--check", &check, "--check-every", "0.2"]);
    writer.wait_registered(SERVICE, ENV, hosts.len()).await;
    let first = start_deployment(&writer, "d-1", "1.0").await;
    agents.wait_done(first.seq).await;
    complete_deployment(&writer, "d-1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for host in hosts {
        assert_eq!(health_reports(&writer, host).await, Vec::<String>::new(), "healthy {host} wrote health");
    }

    let policy = json!({"policy": {"min_healthy": {"percent": 100}, "bake_seconds": 600, "on_trip": "halt"}});
    let (status, answer) =
        writer.request(reqwest::Method::PUT, &format!("/v1/policies/{SERVICE}/{ENV}"), Some(&policy)).await;
    assert_eq!(status, 201, "{answer}");
    let second = start_deployment(&writer, "d-2", "2.0").await;
    agents.wait_done(second.seq).await;
    std::fs::write(sick.path().join("web-2"), b"").unwrap();
    let deadline = Instant::now() + agents::WAIT;
    let halted = loop {
        let deployment = writer.get("/v1/deployments/d-2").await;
        if !deployment["halted"].is_null() {
            break deployment;
        }
        assert!(Instant::now() < deadline, "not halted: {deployment}\n{}", agents.describe());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(halted["halted"]["since"]["actor"], "system:policy", "{halted}");
    assert_eq!(halted["waves"][0]["hosts"]["unhealthy"], 1, "{halted}");
    let decisions = writer.get("/v1/deployments/d-2/decisions").await;
    let decision = &decisions["events"][0]["data"]["decision"];
    assert_eq!(
        (decision["gate"].as_str(), decision["observed"]["unhealthy"].as_u64()),
        (Some("min_healthy"), Some(1)),
        "{decisions}"
    );
    let view = writer.get("/v1/hosts/web-2").await;
    assert_eq!(view["targets"][0]["health"]["state"], "unhealthy", "{view}");
    assert!(view["targets"][0]["health"]["message"].as_str().unwrap_or("").contains("disk full"), "{view}");

    std::fs::remove_file(sick.path().join("web-2")).unwrap();
    let deadline = Instant::now() + agents::WAIT;
    while health_reports(&writer, "web-2").await.len() < 2 {
        assert!(Instant::now() < deadline, "web-2 never said it is healthy again\n{}", agents.describe());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(health_reports(&writer, "web-2").await, ["unhealthy", "healthy"]);
    for host in ["web-1", "web-3"] {
        assert_eq!(health_reports(&writer, host).await, Vec::<String>::new(), "healthy {host} wrote health");
    }
    let view = writer.get("/v1/hosts/web-2").await;
    assert_eq!(view["targets"][0]["health"]["state"], "healthy", "{view}");
}
