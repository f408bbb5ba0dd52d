//! The CLI drives a real server through a release and a rollback.

mod common;

use std::process::Command;

use common::{binary, Server};
use serde_json::Value;

fn fleetlog(server: &Server, args: &[&str]) -> String {
    let output = Command::new(binary()).arg("--server").arg(&server.url).args(args).output().expect("run fleetlog");
    assert!(
        output.status.success(),
        "fleetlog {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn fleetlog_json(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&fleetlog(server, &all)).expect("json output")
}

const SHOP: [&str; 4] = ["--service", "shop", "--env", "prod"];

/// A server with releases 1.0 and 2.0 of shop and hosts a, b, c registered in shop/prod.
async fn shop_with_three_hosts() -> Server {
    let server = Server::start().await;
    for release in ["1.0", "2.0"] {
        fleetlog(&server, &["release", "create", "--service", "shop", "--release", release]);
    }
    for host in ["a", "b", "c"] {
        let mut args = vec!["target", "register", "--host", host];
        args.extend_from_slice(&SHOP);
        fleetlog(&server, &args);
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deploys_in_waves_and_rolls_back() {
    let server = shop_with_three_hosts().await;
    let shop = SHOP;
    for (id, release) in [("d-1", "1.0"), ("d-2", "2.0")] {
        let mut args = vec![
            "deploy",
            "start",
            "--id",
            id,
            "--release",
            release,
            "--wave",
            "first:hosts=a",
            "--wave",
            "rest:percent=100",
        ];
        args.extend_from_slice(&shop);
        fleetlog(&server, &args);
        for wave in ["first", "rest"] {
            fleetlog(&server, &["deploy", "wave", id, wave]);
            for host in ["a", "b", "c"] {
                let mut report = vec!["report", "--host", host, "--release", release, "--status", "running"];
                report.extend_from_slice(&shop);
                fleetlog(&server, &report);
            }
            fleetlog(&server, &["deploy", "wave", id, wave, "--complete"]);
        }
        fleetlog(&server, &["deploy", "complete", id]);
    }
    let status = fleetlog_json(&server, &["deploy", "status", "d-2"]);
    assert_eq!(status["state"], "completed");

    let table = fleetlog(&server, &["fleet", "--service", "shop"]);
    assert!(table.starts_with("HOST"), "{table}");
    assert!(table.contains("2.0"), "{table}");

    let mut args = vec!["rollback", "--reason", "latency"];
    args.extend_from_slice(&shop);
    let rolled = fleetlog_json(&server, &args);
    assert_eq!(rolled["event"]["release"], "1.0");
    let fleet = fleetlog_json(&server, &["fleet", "--service", "shop", "--env", "prod"]);
    assert_eq!(fleet["summary"]["desired"], serde_json::json!({"1.0": 3}));

    let history = fleetlog(&server, &["--output", "json", "history", "--type", "rollback"]);
    assert_eq!(history.lines().count(), 1, "{history}");

    let failure =
        Command::new(binary()).args(["--server", &server.url, "deploy", "wave", "d-2", "first"]).output().unwrap();
    assert!(!failure.status.success());
    assert!(String::from_utf8_lossy(&failure.stderr).contains("deployment_not_active"));
}

/// `fleetlog history | head`: a reader that closes the pipe early ends the command quietly (by
/// SIGPIPE, as Unix tools end), never with a panic and exit code 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_into_a_pipe_closed_early_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;

    let server = Server::start().await;
    // Far more output than a pipe holds (64 KiB), so the command is still writing when it closes.
    for batch in 0..4 {
        let events: Vec<Value> = (0..500)
            .map(|index| serde_json::json!({"type": "app.note", "stream": "notes", "data": {"batch": batch, "index": index}}))
            .collect();
        server.ok("/v1/events", &serde_json::json!({"events": events})).await;
    }
    let mut child = Command::new(binary())
        .args(["--server", &server.url, "history", "--limit", "2000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run fleetlog history");
    let mut first = [0u8; 256];
    child.stdout.take().unwrap().read_exact(&mut first).expect("the first lines of history");
    let output = child.wait_with_output().expect("wait for fleetlog history");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "history panicked on the closed pipe: {stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "history ended with {:?}: {stderr}",
        output.status
    );
}

/// A deployment that does not exist is named as such: no "(then)" when no past moment was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_unknown_deployment_says_it_does_not_exist() {
    let server = Server::start().await;
    let output = Command::new(binary())
        .args(["--server", &server.url, "deploy", "status", "d-99"])
        .output()
        .expect("run fleetlog deploy status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an unknown deployment succeeded: {stderr}");
    assert!(stderr.contains("deployment \"d-99\" does not exist") && !stderr.contains("(then)"), "{stderr}");
}

/// Runs `fleetlog ARGS` and returns its exit success and standard error.
fn fleetlog_failing(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary()).args(args).output().expect("run fleetlog");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Connection trouble is explained with what to try: a refused connection names `--server`, and
/// an address without a scheme says what a server URL looks like (instead of "builder error").
#[test]
fn connection_errors_say_what_happened_and_what_to_try() {
    let nobody = format!("http://127.0.0.1:{}", common::free_port());
    let (ok, stderr) = fleetlog_failing(&["--server", &nobody, "fleet"]);
    assert!(!ok && stderr.contains("connection refused") && stderr.contains("--server"), "{stderr}");

    let (ok, stderr) = fleetlog_failing(&["--server", "127.0.0.1:7070", "fleet"]);
    assert!(!ok && stderr.contains("must be a URL such as http://"), "{stderr}");
    assert!(!stderr.contains("builder error"), "{stderr}");
}

/// The production binary carries no load generator: they live in `fleetlog-bench`.
#[test]
fn the_production_binary_has_no_bench_command() {
    let (ok, stderr) = fleetlog_failing(&["bench", "append"]);
    assert!(!ok && stderr.contains("unrecognized subcommand 'bench'"), "{stderr}");
}

/// A 401 names the flag and the variable that carry a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_names_the_token_flag() {
    let directory = tempfile::TempDir::new().unwrap();
    let created =
        Command::new(binary()).args(["token", "create", "--role", "admin", "--name", "ops"]).output().unwrap();
    let created = String::from_utf8(created.stdout).unwrap();
    let line = created.lines().nth(1).expect("a token-file line");
    let tokens = directory.path().join("tokens");
    std::fs::write(&tokens, format!("{line}\n")).unwrap();
    let server = Server::start_with(&directory.path().join("data"), &["--token-file", tokens.to_str().unwrap()]).await;
    let (ok, stderr) = fleetlog_failing(&["--server", &server.url, "fleet"]);
    assert!(!ok && stderr.contains("HTTP 401") && stderr.contains("--token or FLEETLOG_TOKEN"), "{stderr}");
}

/// With `--output json`, errors are the API's JSON on standard error, with a non-zero exit: an
/// API refusal keeps its code and status, a connection failure is `unreachable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_prints_errors_as_json() {
    let server = Server::start().await;
    let (ok, stderr) = fleetlog_failing(&["--server", &server.url, "--output", "json", "deploy", "status", "d-99"]);
    let error: Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|_| panic!("not JSON: {stderr}"));
    assert!(!ok);
    assert_eq!(error["error"]["code"], "deployment_not_found", "{error}");
    assert_eq!(error["error"]["status"], 404, "{error}");

    let nobody = format!("http://127.0.0.1:{}", common::free_port());
    let (ok, stderr) = fleetlog_failing(&["--server", &nobody, "--output", "json", "fleet"]);
    let error: Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|_| panic!("not JSON: {stderr}"));
    assert!(!ok);
    assert_eq!(error["error"]["code"], "unreachable", "{error}");
}

/// A deployment's wave counters are its own and final once it ends: a later deployment that
/// reselects its hosts, and a rollback that aborts that one, leave them as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wave_counters_stay_put_after_later_deployments_and_rollbacks() {
    let server = shop_with_three_hosts().await;
    let shop = SHOP;
    let report = |host: &'static str, release: &'static str, status: &'static str| {
        let mut args = vec!["report", "--host", host, "--release", release, "--status", status];
        args.extend_from_slice(&shop);
        fleetlog(&server, &args);
    };
    let counters = |id: &str| -> Vec<(u64, u64, u64)> {
        let status = fleetlog_json(&server, &["deploy", "status", id]);
        let waves = status["waves"].as_array().expect("waves").clone();
        waves
            .iter()
            .map(|wave| {
                let hosts = &wave["hosts"];
                let count = |name: &str| hosts[name].as_u64().expect("a count");
                (count("selected"), count("converged"), count("failed"))
            })
            .collect()
    };
    let start = |id: &str, release: &str| {
        let mut args = vec!["deploy", "start", "--id", id, "--release", release, "--wave", "all:percent=100"];
        args.extend_from_slice(&shop);
        fleetlog(&server, &args);
        fleetlog(&server, &["deploy", "wave", id, "all"]);
    };

    start("d-1", "1.0");
    report("a", "1.0", "running");
    report("b", "1.0", "failed");
    fleetlog(&server, &["deploy", "wave", "d-1", "all", "--complete", "--force", "b is being replaced"]);
    fleetlog(&server, &["deploy", "complete", "d-1", "--force", "b is being replaced"]);
    assert_eq!(counters("d-1"), [(3, 1, 1)]);

    // d-2 reselects every host; b recovers and a fails on 2.0: d-1 keeps what it had.
    start("d-2", "2.0");
    report("b", "2.0", "running");
    report("a", "2.0", "failed");
    assert_eq!(counters("d-1"), [(3, 1, 1)], "an ended deployment's counters never change");
    assert_eq!(counters("d-2"), [(3, 1, 1)]);

    // The rollback aborts d-2: its counters stay as they were when it ended.
    let mut args = vec!["rollback", "--release", "1.0", "--reason", "errors"];
    args.extend_from_slice(&shop);
    fleetlog(&server, &args);
    report("c", "2.0", "running");
    report("a", "1.0", "running");
    assert_eq!(fleetlog_json(&server, &["deploy", "status", "d-2"])["state"], "aborted");
    assert_eq!(counters("d-2"), [(3, 1, 1)], "a rolled-back deployment keeps its counters");
    assert_eq!(counters("d-1"), [(3, 1, 1)]);
}

/// `deploy wave` says how many hosts a wave selected; `deploy wait` ends with 2 when time runs
/// out, 0 once every host converged, and 1 when a host failed (naming the wave and the count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_wait_ends_with_a_code_scripts_can_use() {
    let server = shop_with_three_hosts().await;
    let run = |args: &[&str]| {
        let output = Command::new(binary()).arg("--server").arg(&server.url).args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), text)
    };
    let report = |host: &str, release: &str, status: &str| {
        let mut args = vec!["report", "--host", host, "--release", release, "--status", status];
        args.extend_from_slice(&SHOP);
        fleetlog(&server, &args);
    };
    let mut start = vec![
        "deploy",
        "start",
        "--id",
        "d-1",
        "--release",
        "1.0",
        "--wave",
        "canary:hosts=a",
        "--wave",
        "rest:percent=100",
    ];
    start.extend_from_slice(&SHOP);
    fleetlog(&server, &start);
    let started = fleetlog(&server, &["deploy", "wave", "d-1", "canary"]);
    assert!(started.contains("wave canary selected 1 host\n"), "{started}");

    let (code, text) = run(&["deploy", "wait", "d-1", "--timeout-seconds", "1", "--interval-ms", "100"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("timed out") && text.contains("wave canary 0 of 1 converged"), "{text}");

    report("a", "1.0", "running");
    let (code, text) = run(&["deploy", "wait", "d-1", "--wave", "canary", "--timeout-seconds", "10"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("wave canary: 1 of 1 converged, 0 failed"), "{text}");

    fleetlog(&server, &["deploy", "wave", "d-1", "canary", "--complete"]);
    report("b", "1.0", "failed");
    let (code, text) = run(&["deploy", "wave", "d-1", "rest", "--wait", "--timeout-seconds", "10"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("wave rest selected 2 hosts") && text.contains("wave rest of d-1: 1 host(s) failed"),
        "{text}"
    );

    let (code, text) = run(&["deploy", "wait", "d-1", "--wave", "nosuch", "--timeout-seconds", "1"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("has no wave \"nosuch\""), "{text}");
}

/// `--server` takes a list, as the agent's does: a node that cannot be reached is skipped, and
/// when none can be, the error names each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_fails_over_to_the_next_server() {
    let server = Server::start().await;
    let (first, second) =
        (format!("http://127.0.0.1:{}", common::free_port()), format!("http://127.0.0.1:{}", common::free_port()));
    let list = format!("{first}, {}", server.url);
    let output = Command::new(binary())
        .args(["--server", &list, "release", "create", "--service", "shop", "--release", "1.0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("seq 1 release.created"), "{stdout}");

    let (ok, stderr) = fleetlog_failing(&["--server", &format!("{first},{second}"), "fleet"]);
    assert!(!ok && stderr.contains("connection refused"), "{stderr}");
    assert!(stderr.contains(&format!("also unreachable: {first}")), "{stderr}");
}

/// `fleetlog dev` says so when one of its nodes dies, naming the node and its log.
#[test]
fn dev_reports_a_node_that_died() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::TempDir::new().unwrap();
    let port = common::free_port();
    let mut dev = Command::new(binary())
        .args(["dev", "--nodes", "1", "--base-port", &port.to_string(), "--data"])
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stderr = BufReader::new(dev.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while let Ok(line) = received.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("fleetlog dev never said {needle:?}");
    };
    wait_for("try: fleetlog --server");
    // The node is dev's only child: kill it as a crash would.
    let children = std::fs::read_to_string(format!("/proc/{}/task/{}/children", dev.id(), dev.id())).unwrap();
    let node: i32 = children.split_whitespace().next().expect("a node process").parse().unwrap();
    // SAFETY: sending a signal to a process this test started (through dev).
    unsafe {
        libc::kill(node, libc::SIGKILL);
    }
    let line = wait_for("exited");
    assert!(line.contains("node 1 exited") && line.contains("node-1.log"), "{line}");
    // SAFETY: as above; dev stops on SIGTERM.
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGTERM);
    }
    let _ = dev.wait();
}

/// `release list` shows a release's notes and artifact, under a heading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_list_shows_notes_under_a_heading() {
    let server = Server::start().await;
    fleetlog(
        &server,
        &[
            "release",
            "create",
            "--service",
            "shop",
            "--release",
            "2.0",
            "--notes",
            "faster cart",
            "--artifact",
            "shop:2.0",
        ],
    );
    let listed = fleetlog(&server, &["release", "list", "--service", "shop"]);
    assert!(listed.starts_with("RELEASES (1)"), "{listed}");
    assert!(listed.contains("shop@2.0\n  artifact: shop:2.0\n  notes: faster cart\n"), "{listed}");
    assert!(listed.contains("\nENVIRONMENTS\n"), "{listed}");
    let json = fleetlog_json(&server, &["release", "list", "--service", "shop"]);
    assert_eq!(json["releases"][0]["notes"], "faster cart");
}

/// `token create` names its own flag when an agent token lacks hosts (not the token file's
/// `hosts=` form), and refuses hosts on other roles.
#[test]
fn token_create_names_the_hosts_flag() {
    let (ok, stderr) = fleetlog_failing(&["token", "create", "--role", "agent", "--name", "web"]);
    assert!(!ok && stderr.contains("--hosts web-1,web-2") && !stderr.contains("hosts=A"), "{stderr}");
    let (ok, stderr) = fleetlog_failing(&["token", "create", "--role", "deployer", "--name", "ci", "--hosts", "web-1"]);
    assert!(!ok && stderr.contains("only agent tokens name hosts"), "{stderr}");
}

/// Runs fleetlog and returns its exit code and what it printed (stdout, then stderr).
fn fleetlog_code(server: &Server, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary()).arg("--server").arg(&server.url).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// A misspelt env or group, and completing a rollout whose hosts failed, are refused with a
/// stable code and a sentence naming `--force`; forced, the reason is kept with the deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_refuse_typos_and_failed_rollouts_until_forced() {
    let server = shop_with_three_hosts().await;
    let deploy = |env: &str, id: &str, wave: &str, force: Option<&str>| {
        let mut args = vec!["deploy", "start", "--service", "shop", "--env", env, "--release", "1.0", "--id", id];
        args.extend_from_slice(&["--wave", wave]);
        if let Some(reason) = force {
            args.extend_from_slice(&["--force", reason]);
        }
        fleetlog_code(&server, &args)
    };
    let (code, text) = deploy("prdo", "d-typo", "all:percent=100", None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no_hosts") && text.contains("shop/prdo has no registered host"), "{text}");
    assert!(text.contains("--force REASON"), "the refusal says how to override: {text}");
    let (code, text) = deploy("prod", "d-1", "a:group=nosuch", None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("selector_matches_nobody") && text.contains("group \"nosuch\""), "{text}");
    // Nothing of either was written.
    let (code, text) = fleetlog_code(&server, &["deploy", "status", "d-1"]);
    assert_eq!(code, Some(1), "{text}");

    let (code, text) = deploy("prod", "d-1", "all:percent=100", None);
    assert_eq!(code, Some(0), "{text}");
    fleetlog(&server, &["deploy", "wave", "d-1", "all"]);
    for (host, status) in [("a", "running"), ("b", "failed"), ("c", "running")] {
        let mut args = vec!["report", "--host", host, "--release", "1.0", "--status", status];
        args.extend_from_slice(&SHOP);
        fleetlog(&server, &args);
    }
    for args in [&["deploy", "wave", "d-1", "all", "--complete"][..], &["deploy", "complete", "d-1"][..]] {
        let (code, text) = fleetlog_code(&server, args);
        if args[1] == "wave" {
            assert_eq!(code, Some(1), "{text}");
            assert!(text.contains("hosts_failed") && text.contains("1 host failed on 1.0"), "{text}");
        }
        let mut forced = args.to_vec();
        forced.extend_from_slice(&["--force", "b's disk is full, not the release"]);
        fleetlog(&server, &forced);
    }
    let status = fleetlog_json(&server, &["deploy", "status", "d-1"]);
    assert_eq!(status["state"], "completed");
    let overrides: Vec<(&str, &str)> = status["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["guard"].as_str().unwrap(), item["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(overrides, [("hosts_failed", "b's disk is full, not the release"); 2]);
    // The reason is in the events themselves, and in the release's timeline.
    let events = fleetlog(&server, &["--output", "json", "history", "--type", "wave.completed"]);
    assert!(events.contains("\"force_reason\":\"b's disk is full, not the release\""), "{events}");
    let releases = fleetlog(&server, &["release", "list", "--service", "shop"]);
    assert!(releases.contains("wave=all detail=forced past hosts_failed: b's disk is full"), "{releases}");
}

/// Why a host failed shows in the fleet, host and deployment views; the host still runs what it
/// ran; and a default rollback skips a release that never ran on a host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_show_everywhere_and_rollbacks_skip_releases_that_never_ran() {
    let server = shop_with_three_hosts().await;
    fleetlog(&server, &["release", "create", "--service", "shop", "--release", "3.0"]);
    let report = |host: &str, release: &str, status: &str, message: Option<&str>| {
        let mut args = vec!["report", "--host", host, "--release", release, "--status", status];
        args.extend_from_slice(&SHOP);
        if let Some(message) = message {
            args.extend_from_slice(&["--message", message]);
        }
        fleetlog(&server, &args);
    };
    let deploy = |id: &str, release: &str| {
        let mut args = vec!["deploy", "start", "--id", id, "--release", release, "--wave", "all:percent=100"];
        args.extend_from_slice(&SHOP);
        fleetlog(&server, &args);
        fleetlog(&server, &["deploy", "wave", id, "all"]);
    };
    let finish = |id: &str| {
        let reason = "b is known to be broken";
        fleetlog(&server, &["deploy", "wave", id, "all", "--complete", "--force", reason]);
        fleetlog(&server, &["deploy", "complete", id, "--force", reason]);
    };
    // 1.0 runs everywhere; 2.0 completes without any host running it; 3.0 fails twice on b.
    deploy("d-1", "1.0");
    for host in ["a", "b", "c"] {
        report(host, "1.0", "running", None);
    }
    finish("d-1");
    deploy("d-2", "2.0");
    finish("d-2");
    deploy("d-3", "3.0");
    report("a", "3.0", "running", None);
    report("b", "3.0", "failed", Some("exit 3: port 8080 in use"));
    report("b", "3.0", "applying", None);
    report("b", "3.0", "failed", Some("exit 3: port 8080 still in use"));

    let fleet = fleetlog_json(&server, &["fleet", "--service", "shop", "--env", "prod"]);
    let b = fleet["hosts"].as_array().unwrap().iter().find(|host| host["host"] == "b").unwrap().clone();
    assert_eq!(b["observed_release"], "1.0", "a failed install leaves the release b runs");
    assert_eq!((b["status"].as_str(), b["reported_release"].as_str()), (Some("failed"), Some("3.0")));
    assert_eq!(b["failure"]["release"], "3.0");
    assert_eq!(b["failure"]["attempt"], 2);
    assert_eq!(b["failure"]["message"], "exit 3: port 8080 still in use");
    assert!(b["failure"]["time"].is_string() && b["failure"]["seq"].is_u64(), "{b}");
    assert_eq!(fleet["summary"]["failing"], 1);
    assert_eq!(fleet["summary"]["observed"], serde_json::json!({"1.0": 2, "3.0": 1}));

    let table = fleetlog(&server, &["fleet", "--service", "shop", "--env", "prod"]);
    assert!(table.contains("3.0 #2: exit 3: port 8080 still in use"), "{table}");
    assert!(table.contains("1 failing"), "{table}");
    let host = fleetlog(&server, &["host", "b"]);
    assert!(host.contains("installing 3.0 failed (attempt 2)") && host.contains("port 8080 still in use"), "{host}");
    let status = fleetlog(&server, &["deploy", "status", "d-3"]);
    assert!(status.contains("failed hosts:\n  b (wave all): attempt 2"), "{status}");
    assert!(status.contains("exit 3: port 8080 still in use; runs 1.0"), "{status}");

    // The default target skips 2.0, which never ran on a host, for 1.0.
    finish("d-3");
    let mut args = vec!["rollback", "--reason", "b cannot take 3.0"];
    args.extend_from_slice(&SHOP);
    let rolled = fleetlog_json(&server, &args);
    assert_eq!(rolled["event"]["release"], "1.0");
    // The failure list of an ended deployment stays as it was when it ended.
    report("b", "1.0", "running", None);
    let failures = fleetlog_json(&server, &["deploy", "status", "d-3"])["failures"].clone();
    assert_eq!(failures.as_array().map(Vec::len), Some(1), "{failures}");
    let fleet = fleetlog_json(&server, &["fleet", "--service", "shop", "--env", "prod"]);
    assert_eq!(fleet["summary"]["failing"], 0, "a running report clears the failure");
}

/// `deploy start --wait` follows the deployment until it completes, through waves started by
/// another command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_start_waits_for_the_whole_deployment() {
    let server = shop_with_three_hosts().await;
    let mut args = vec!["--server", &server.url, "deploy", "start", "--id", "d-1", "--release", "1.0"];
    args.extend_from_slice(&["--wave", "canary:hosts=a", "--wave", "rest:percent=100", "--wait"]);
    args.extend_from_slice(&["--timeout-seconds", "60"]);
    args.extend_from_slice(&SHOP);
    let waiting = Command::new(binary())
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run deploy start --wait");
    // Give it time to start the deployment before its waves are driven.
    for _ in 0..100 {
        if fleetlog_code(&server, &["deploy", "status", "d-1"]).0 == Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for wave in ["canary", "rest"] {
        fleetlog(&server, &["deploy", "wave", "d-1", wave]);
        for host in ["a", "b", "c"] {
            let mut report = vec!["report", "--host", host, "--release", "1.0", "--status", "running"];
            report.extend_from_slice(&SHOP);
            fleetlog(&server, &report);
        }
        fleetlog(&server, &["deploy", "wave", "d-1", wave, "--complete"]);
    }
    fleetlog(&server, &["deploy", "complete", "d-1"]);
    let output = waiting.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("seq 6 deployment.started"), "{text}");
    assert!(text.contains("completed: wave canary 1 of 1 converged, wave rest 2 of 2 converged"), "{text}");
}

/// `policy set` builds the policy from flags over a file, `policy show` prints it, and
/// `deploy halt` / `deploy resume` hold a deployment's waves back and let them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_a_policy_and_halts_a_deployment() {
    let server = shop_with_three_hosts().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), r#"{"bake_seconds": 120, "on_trip": "halt", "alerts": [{"team": "shop"}]}"#).unwrap();
    let mut args = vec![
        "policy",
        "set",
        "--file",
        file.path().to_str().unwrap(),
        "--bake-seconds",
        "300",
        "--min-healthy",
        "90%",
        "--max-failed",
        "5%",
        "--auto-advance",
        "--alert",
        "severity=critical,team=shop",
    ];
    args.extend_from_slice(&SHOP);
    let set = fleetlog(&server, &args);
    assert!(set.contains("policy.set"), "{set}");
    let mut show = vec!["policy", "show"];
    show.extend_from_slice(&SHOP);
    let shown = fleetlog_json(&server, &show);
    let policy = &shown["policy"];
    assert_eq!(policy["bake_seconds"], 300, "the flag wins over the file: {policy}");
    assert_eq!(policy["on_trip"], "halt", "the file's value stays: {policy}");
    assert_eq!(policy["min_healthy"], serde_json::json!({"percent": 90}));
    assert_eq!(policy["max_failed"], serde_json::json!({"ratio": 0.05}));
    assert_eq!(policy["auto_advance"], true);
    assert_eq!(policy["alerts"], serde_json::json!([{"severity": "critical", "team": "shop"}]));
    let table = fleetlog(&server, &show);
    assert!(table.contains("bake_seconds") && table.contains("300"), "{table}");

    // The waves below are started by hand: a policy that advances by itself would race them.
    let mut manual = vec!["policy", "set", "--bake-seconds", "300"];
    manual.extend_from_slice(&SHOP);
    fleetlog(&server, &manual);
    let mut start = vec!["deploy", "start", "--id", "d-1", "--release", "2.0", "--wave", "all:percent=100"];
    start.extend_from_slice(&SHOP);
    fleetlog(&server, &start);
    fleetlog(&server, &["deploy", "halt", "d-1", "--reason", "looking at latency"]);
    let refused = Command::new(binary())
        .args(["--server", &server.url, "deploy", "wave", "d-1", "all"])
        .output()
        .expect("run fleetlog");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("deployment_halted"), "{stderr}");
    fleetlog(&server, &["deploy", "resume", "d-1"]);
    fleetlog(&server, &["deploy", "wave", "d-1", "all"]);
}

/// `calendar set` from flags, `calendar show` saying why an environment is frozen, a start
/// refused in the window and let through with `--override`, and `alerts` listing what came in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_a_freeze_calendar_breaks_glass_and_lists_alerts() {
    let server = shop_with_three_hosts().await;
    let mut set = vec![
        "calendar",
        "set",
        "--deny",
        "* * * * * for 1m in America/New_York",
        "--allow",
        "2026-01-01T00:00:00Z..2099-01-01T00:00:00Z",
        "--reason",
        "launch week",
    ];
    set.extend_from_slice(&SHOP);
    assert!(fleetlog(&server, &set).contains("freeze.calendar.set"));
    let mut show = vec!["calendar", "show"];
    show.extend_from_slice(&SHOP);
    let table = fleetlog(&server, &show);
    assert!(table.contains("FROZEN") && table.contains("launch week") && table.contains("America/New_York"), "{table}");

    let mut start = vec!["deploy", "start", "--id", "d-1", "--release", "2.0", "--wave", "all:percent=100"];
    start.extend_from_slice(&SHOP);
    let (code, refused) = fleetlog_code(&server, &start);
    assert_eq!(code, Some(1), "{refused}");
    assert!(refused.contains("frozen") && refused.contains("--override"), "{refused}");
    start.extend_from_slice(&["--override", "launch blocker fix"]);
    assert!(fleetlog(&server, &start).contains("deployment.started"));
    let deployment = fleetlog_json(&server, &["deploy", "status", "d-1"]);
    assert_eq!(deployment["overrides"][0]["reason"], "launch blocker fix", "{deployment}");

    let (code, text) = fleetlog_code(&server, &["calendar", "set", "--deny", "every friday"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("CRON for DURATION in TIME_ZONE"), "a malformed window says how to write one: {text}");
    let mut clear = vec!["calendar", "set", "--clear"];
    clear.extend_from_slice(&SHOP);
    fleetlog(&server, &clear);
    assert!(fleetlog(&server, &show).contains("not frozen"));

    let payload = serde_json::json!({"version": "4", "status": "firing", "receiver": "fleetlog", "alerts": [
        {"status": "firing", "fingerprint": "f-1", "startsAt": "2026-12-07T03:00:00Z",
         "labels": {"alertname": "ErrorsUp", "service": "shop", "env": "prod"}},
        {"status": "firing", "fingerprint": "f-2", "startsAt": "2026-12-07T03:00:00Z", "labels": {"alertname": "DiskFull"}}]});
    let (status, answer) = server.post("/v1/alerts/alertmanager", &payload).await;
    assert_eq!(status, 200, "{answer}");
    let firing = fleetlog(&server, &["alerts"]);
    assert!(firing.contains("ErrorsUp") && firing.contains("shop/prod"), "{firing}");
    let unmapped = fleetlog(&server, &["alerts", "--state", "unmapped"]);
    assert!(unmapped.contains("DiskFull") && !unmapped.contains("ErrorsUp"), "{unmapped}");
}
