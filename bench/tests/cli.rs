//! `fleetlog-bench`'s own arguments, run as a process.

use std::process::Command;

fn bench_failing(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fleetlog-bench")).args(args).output().expect("run fleetlog-bench");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `fanout` takes a list of servers to spread its watchers over: the list reaches the bench
/// (which checks its own arguments first) instead of being refused as one malformed URL.
#[test]
fn a_bench_takes_a_list_of_servers() {
    let servers = format!("http://127.0.0.1:{},http://127.0.0.1:{}", free_port(), free_port());
    let (ok, stderr) = bench_failing(&["--server", &servers, "fanout", "--agents", "0"]);
    assert!(!ok && stderr.contains("--agents and --rounds must be at least 1"), "{stderr}");
    assert!(!stderr.contains("must be a URL"), "{stderr}");
}

/// `compare` starts its own fleetlog nodes: a missing executable is said before anything starts.
#[test]
fn compare_names_a_missing_fleetlog_executable() {
    let (ok, stderr) = bench_failing(&["--fleetlog", "/nonexistent/fleetlog", "compare"]);
    assert!(!ok && stderr.contains("no fleetlog executable at /nonexistent/fleetlog"), "{stderr}");
}
