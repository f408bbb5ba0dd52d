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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deploys_in_waves_and_rolls_back() {
    let server = Server::start().await;
    let shop = ["--service", "shop", "--env", "prod"];
    for release in ["1.0", "2.0"] {
        fleetlog(&server, &["release", "create", "--service", "shop", "--release", release]);
    }
    for host in ["a", "b", "c"] {
        let mut args = vec!["target", "register", "--host", host];
        args.extend_from_slice(&shop);
        fleetlog(&server, &args);
    }
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
