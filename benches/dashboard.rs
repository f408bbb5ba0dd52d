//! The operator's page (`GET /`, api/src/dashboard/index.html) in headless chromium, against the
//! release server holding 10,000 hosts. It prints three figures, each next to its target:
//!
//! 1. **Page weight:** the bytes of `GET /` as served (no compression asked for), and every
//!    resource the page loaded once settled (`performance.getEntriesByType('resource')`), with a
//!    check that none came from another origin.
//! 2. **First full render:** from navigation start to the animation frame after the grid first
//!    held all 10,000 hosts, over several fresh loads. The page records it itself: `page.renders`
//!    gets `{seq, hosts, at, sinceStart}` in the frame after each fleet render.
//! 3. **Live update latency:** one host report appended at a time over HTTP; from the wall clock
//!    just before sending to the `at` (`Date.now()`) of the first render of a seq at least the
//!    event's. Both clocks are this machine's.
//!
//! Timings are printed, never asserted: a slow machine gives slow figures, not a failure.
//!
//! Run: `make bench-dashboard` (builds the release binary, then `cargo bench --profile dev --bench
//! dashboard`). The server measured is `$FLEETLOG` when set, otherwise
//! `$CARGO_TARGET_DIR/release/fleetlog`; the bench itself needs no optimisation.

#[allow(dead_code)]
#[path = "../tests/common/webdriver.rs"]
mod webdriver;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetlog_raft::domain::limits::BATCH_EVENTS_MAX;
use serde_json::{json, Value};

use webdriver::Browser;

/// The fleet the page is measured on.
const HOSTS: usize = 10_000;
/// One host in twenty is a canary, as in a typical first wave.
const CANARIES: usize = HOSTS / 20;

/// Fresh page loads timed for the first full render.
const LOADS: usize = 5;
/// Reports appended one at a time for the live latency.
const LIVE_REPORTS: usize = 200;
/// Bursts of reports sent all at once, and reports in each.
const BURSTS: usize = 10;
const REPORTS_PER_BURST: usize = 50;

const PAGE_WEIGHT_TARGET_BYTES: usize = 300 * 1024;
const FIRST_RENDER_TARGET_MS: f64 = 1_000.0;
const LIVE_P99_TARGET_MS: f64 = 1_000.0;

/// How long the page may take to show the fleet or go live before the bench gives up: far beyond
/// the targets, so only a broken page or server ends the run.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The webdriver module takes its ports from the crate root, as the tests' harness provides them.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The binary measured: `$FLEETLOG` (as benches/cluster.sh takes it), otherwise the release build
/// in the shared target directory. The bench must not measure the debug build by accident.
fn server_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("FLEETLOG").filter(|value| !value.is_empty()) {
        return PathBuf::from(binary);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("fleetlog")
}

/// A `fleetlog serve` of the bench's own, killed when dropped: at the end, and on a panic too, so
/// a failed run leaves no server behind.
struct Server {
    url: String,
    child: Child,
    log: PathBuf,
    /// The data directory and the log; removed after the server is gone.
    _scratch: tempfile::TempDir,
}

impl Server {
    fn start(binary: &Path) -> Server {
        let scratch = tempfile::TempDir::new().unwrap();
        let log = scratch.path().join("server.log");
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .args(["serve", "--listen", &address, "--data"])
            .arg(scratch.path().join("data"))
            .env("FLEETLOG_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        Server { url: format!("http://{address}"), child, log, _scratch: scratch }
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = http.get(format!("{}/readyz", self.url)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("the server at {} never became ready; its log:\n{log}", self.url);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body` and returns the answer's JSON; any refusal ends the run with the server's words.
async fn post(http: &reqwest::Client, url: &str, path: &str, body: Value) -> Value {
    let response = http
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST {path}: {error}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_else(|error| panic!("POST {path}: {error}"));
    if !status.is_success() {
        panic!("POST {path} answered {status}: {text}");
    }
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("POST {path} answered {status} without JSON: {text}"))
}

/// Set-up events in the largest batches the ledger takes: a few dozen requests for the fleet.
async fn append_in_batches(http: &reqwest::Client, url: &str, events: Vec<Value>) {
    for batch in events.chunks(BATCH_EVENTS_MAX) {
        post(http, url, "/v1/events", json!({"events": batch})).await;
    }
}

fn host_name(number: usize) -> String {
    format!("web-{number:05}")
}

fn host_report(id: String, host: &str, release: &str, data: Value) -> Value {
    json!({"id": id, "type": "host.reported", "host": host, "service": "shop", "env": "prod",
           "release": release, "data": data})
}

/// A fleet with every state the grid draws often: 10,000 hosts that ran release 1.0 everywhere
/// (deployment d-1, completed), then a second deployment whose canary wave has moved its 500
/// canaries to 2.0, one of which failed. Registrations and reports go in batches, so this takes
/// seconds, not the minutes of one request per event.
async fn populate(http: &reqwest::Client, url: &str) {
    for release in ["1.0", "2.0"] {
        post(http, url, "/v1/releases", json!({"service": "shop", "release": release})).await;
    }
    let registrations = (0..HOSTS)
        .map(|index| {
            let group = if index < CANARIES { "canary" } else { "main" };
            json!({"id": format!("register-{index}"), "type": "target.registered", "host": host_name(index + 1),
                   "service": "shop", "env": "prod", "data": {"group": group}})
        })
        .collect();
    append_in_batches(http, url, registrations).await;

    let everywhere = json!({"deployment": "d-1", "service": "shop", "env": "prod", "release": "1.0",
                            "waves": [{"name": "all", "percent": 100}]});
    post(http, url, "/v1/deployments", everywhere).await;
    post(http, url, "/v1/deployments/d-1/waves/all/start", json!({})).await;
    let running = json!({"status": "running", "applied_seq": 1});
    let reports =
        (0..HOSTS).map(|index| host_report(format!("d-1-{index}"), &host_name(index + 1), "1.0", running.clone()));
    append_in_batches(http, url, reports.collect()).await;
    post(http, url, "/v1/deployments/d-1/waves/all/complete", json!({})).await;
    post(http, url, "/v1/deployments/d-1/complete", json!({})).await;

    let canary_first = json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0",
                              "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]});
    post(http, url, "/v1/deployments", canary_first).await;
    post(http, url, "/v1/deployments/d-2/waves/canary/start", json!({})).await;
    let mut canary_reports: Vec<Value> = (0..CANARIES - 1)
        .map(|index| host_report(format!("d-2-{index}"), &host_name(index + 1), "2.0", running.clone()))
        .collect();
    let failed = json!({"status": "failed", "message": "exit 1", "applied_seq": 1});
    canary_reports.push(host_report(format!("d-2-{}", CANARIES - 1), &host_name(CANARIES), "2.0", failed));
    append_in_batches(http, url, canary_reports).await;
}

fn milliseconds_since_epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs_f64() * 1000.0
}

/// Appends one report of a host in the main group (its state stays the same: any appended event
/// makes the page read the fleet again) and returns the event's seq.
async fn append_report(http: &reqwest::Client, url: &str, number: usize) -> u64 {
    let host = host_name(CANARIES + 1 + number % (HOSTS - CANARIES));
    let report = json!({"host": host, "service": "shop", "env": "prod", "release": "1.0",
                        "status": "running", "applied_seq": 1});
    let answer = post(http, url, "/v1/reports", report).await;
    // `/v1/reports` answers one event's `seq`; `/v1/events` answers `first_seq`/`last_seq`.
    answer["seq"]
        .as_u64()
        .or_else(|| answer["last_seq"].as_u64())
        .unwrap_or_else(|| panic!("POST /v1/reports answered no seq: {answer}"))
}

/// Waits in the page (no WebDriver round trip per look) for the first render of a seq at least
/// `seq`, and returns its `at`: `Date.now()` in the frame after the grid showed it. Gives up after
/// 20 s, within WebDriver's 30 s script timeout, with what the page knows, to show where it stuck.
async fn shown_at(browser: &Browser, seq: u64) -> f64 {
    let script = "const [seq, done] = arguments;
        const until = Date.now() + 20000;
        const look = () => {
          const shown = page.renders.find((render) => render.seq >= seq);
          if (shown) return done(shown.at);
          if (Date.now() < until) return setTimeout(look, 5);
          done({head: page.head, lastEventSeq: page.lastEventSeq, refreshing: page.refreshing,
                refreshAgain: page.refreshAgain, shownSeq: page.fleet.as_of_seq, at: page.at,
                live: document.getElementById('live-state').textContent, hidden: document.hidden,
                stream: page.stream && page.stream.readyState, renders: page.renders.slice(-3)});
        };
        look();";
    let at = browser.execute_async(script, vec![json!(seq)]).await;
    at.as_f64().unwrap_or_else(|| panic!("the page showed no render of seq {seq} within 20 s; the page: {at}"))
}

/// The first full render of one fresh load of the page, with the fleet read that fed it.
struct Load {
    first_full_render: f64,
    /// Navigation start to the first byte asked of `/v1/fleet`, to its last byte received.
    fleet_requested: f64,
    fleet_received: f64,
    fleet_bytes: u64,
}

async fn fresh_load(browser: &Browser, url: &str) -> Load {
    browser.goto("about:blank").await;
    browser.goto(url).await;
    let condition = format!("page.renders.find((render) => render.hosts === {HOSTS})");
    browser.wait_for("the first render of every host", PAGE_TIMEOUT, &condition).await;
    // The fleet read that fed the render: the last one answered before that frame.
    let script = "const [hosts] = arguments;
        const render = page.renders.find((entry) => entry.hosts === hosts);
        const reads = performance.getEntriesByType('resource')
          .filter((entry) => new URL(entry.name).pathname === '/v1/fleet' && entry.responseEnd <= render.sinceStart);
        const read = reads[reads.length - 1];
        return {render: render.sinceStart, requested: read.startTime, received: read.responseEnd,
                bytes: read.decodedBodySize};";
    let measured = browser.execute(script, vec![json!(HOSTS)]).await;
    let number =
        |name: &str| measured[name].as_f64().unwrap_or_else(|| panic!("the page's timing has no {name}: {measured}"));
    Load {
        first_full_render: number("render"),
        fleet_requested: number("requested"),
        fleet_received: number("received"),
        fleet_bytes: number("bytes") as u64,
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let rank = (fraction * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn verdict(within: bool) -> &'static str {
    if within {
        "within target"
    } else {
        "OVER target"
    }
}

/// `1234567` as `1,234,567`, for byte counts read at a glance.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut text = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

async fn page_weight(http: &reqwest::Client, url: &str) {
    // reqwest is built without decompression, so it asks for none: the body is the page as sent.
    let response = http.get(format!("{url}/")).send().await.unwrap_or_else(|error| panic!("GET /: {error}"));
    let status = response.status();
    let body = response.bytes().await.unwrap_or_else(|error| panic!("GET /: {error}"));
    assert!(status.is_success(), "GET / answered {status}");
    let within = body.len() < PAGE_WEIGHT_TARGET_BYTES;
    println!(
        "  GET /: {} bytes ({:.1} KiB); target under 300 KiB: {}",
        grouped(body.len() as u64),
        body.len() as f64 / 1024.0,
        verdict(within)
    );
}

/// Every resource the settled page loaded, and whether any came from another origin. Resource
/// Timing lists a request once it has ended, so the page's open event stream is added from
/// `page.stream` (when the page still keeps it there).
async fn resources(browser: &Browser) {
    let script = "const entries = performance.getEntriesByType('resource').map((entry) => ({
          url: entry.name, kind: entry.initiatorType, bytes: entry.decodedBodySize}));
        const stream = typeof page === 'object' && page.stream && page.stream.url;
        if (stream) entries.push({url: stream, kind: 'eventsource, open', bytes: null});
        for (const entry of entries) entry.foreign = new URL(entry.url, location.href).origin !== location.origin;
        return entries;";
    let entries = browser.execute(script, Vec::new()).await;
    let entries = entries.as_array().unwrap_or_else(|| panic!("the resource timings are no list: {entries}"));
    println!("  resources the page loaded (performance.getEntriesByType('resource'), page settled and live):");
    let mut foreign = Vec::new();
    for entry in entries {
        let url = entry["url"].as_str().unwrap_or("?");
        let bytes = match entry["bytes"].as_u64() {
            Some(bytes) => format!("{} bytes", grouped(bytes)),
            None => "-".to_string(),
        };
        println!("    {:<18} {:>15}  {url}", entry["kind"].as_str().unwrap_or("?"), bytes);
        if entry["foreign"] == true {
            foreign.push(url.to_string());
        }
    }
    if foreign.is_empty() {
        println!("  no third-party requests ({} resources, all from the page's origin)", entries.len());
    } else {
        println!("  THIRD-PARTY REQUESTS: {}", foreign.join(", "));
    }
}

/// Where a render's time goes, timed inside the page on the data it already shows: the fleet
/// read (to its headers, to its last byte), `JSON.parse` of it, the page's own `layoutFleet`, and
/// from there to the end of the next frame (style, layout and paint). The medians of five rounds.
async fn render_breakdown(browser: &Browser) {
    let script = "const done = arguments[arguments.length - 1];
        (async () => {
          const rounds = [];
          for (let round = 0; round < 5; round++) {
            const started = performance.now();
            const response = await fetch('/v1/fleet', {cache: 'no-store'});
            const headers = performance.now();
            const text = await response.text();
            const body = performance.now();
            JSON.parse(text);
            const parsed = performance.now();
            let laidOut = parsed, framed = parsed;
            if (typeof layoutFleet === 'function') {
              layoutFleet();
              laidOut = performance.now();
              // A task queued from the next animation frame runs once that frame's style,
              // layout and paint are done: the grid drawn, not only laid out in script.
              await new Promise((resolve) => requestAnimationFrame(() => {
                const channel = new MessageChannel();
                channel.port1.onmessage = resolve;
                channel.port2.postMessage(null);
              }));
              framed = performance.now();
            }
            rounds.push([headers - started, body - headers, parsed - body, laidOut - parsed, framed - laidOut]);
          }
          const median = (column) => rounds.map((round) => round[column]).sort((a, b) => a - b)[2];
          done({headers: median(0), body: median(1), parse: median(2), layout: median(3), frame: median(4),
                measured_layout: typeof layoutFleet === 'function'});
        })().catch((error) => done({error: String(error)}));";
    let timings = browser.execute_async(script, Vec::new()).await;
    if let Some(error) = timings.get("error") {
        println!("  (the breakdown failed in the page: {error})");
        return;
    }
    let figure = |name: &str| timings[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "  in the page, medians of 5: fleet read to headers {:.0} ms, body {:.0} ms, JSON.parse {:.0} ms",
        figure("headers"),
        figure("body"),
        figure("parse")
    );
    if timings["measured_layout"] == true {
        println!(
            "  layoutFleet() {:.0} ms, then {:.0} ms to the end of the frame drawing it",
            figure("layout"),
            figure("frame")
        );
    }
}

async fn first_render(browser: &Browser, url: &str) {
    let mut renders = Vec::new();
    for load in 1..=LOADS {
        let timing = fresh_load(browser, url).await;
        println!(
            "  load {load}: {:.0} ms  (fleet read from {:.0} to {:.0} ms, {} bytes; shown {:.0} ms after its last byte)",
            timing.first_full_render,
            timing.fleet_requested,
            timing.fleet_received,
            grouped(timing.fleet_bytes),
            timing.first_full_render - timing.fleet_received
        );
        renders.push(timing.first_full_render);
    }
    let renders = sorted(renders);
    let slowest = renders[renders.len() - 1];
    println!(
        "  min / median / max: {:.0} / {:.0} / {:.0} ms; target at most 1 s (every load): {}",
        renders[0],
        percentile(&renders, 0.5),
        slowest,
        verdict(slowest <= FIRST_RENDER_TARGET_MS)
    );
}

/// Frames while the grid scrolls from top to bottom, a viewport's height per frame, in the grid
/// and in the text list (10,000 rows). Each frame paints the rows newly in view; a frame over
/// 50 ms is a visible stutter.
async fn scrolling(browser: &Browser) {
    const SCRIPT: &str = r#"
        const [mode, done] = arguments;
        const select = document.getElementById('view-mode');
        select.value = mode;
        select.dispatchEvent(new Event('change'));
        const viewport = document.getElementById('fleet-viewport');
        viewport.scrollTop = 0;
        const frames = [];
        let last = null;
        function step(now) {
            if (last !== null) frames.push(now - last);
            last = now;
            if (viewport.scrollTop + viewport.clientHeight >= viewport.scrollHeight) {
                done({ frames, height: viewport.scrollHeight, painted: document.querySelectorAll('#fleet-spacer > *').length });
                return;
            }
            viewport.scrollTop += viewport.clientHeight;
            requestAnimationFrame(step);
        }
        requestAnimationFrame(step);
    "#;
    for mode in ["grid", "list"] {
        let answer = browser.execute_async(SCRIPT, vec![json!(mode)]).await;
        let frames = sorted(answer["frames"].as_array().unwrap().iter().filter_map(Value::as_f64).collect());
        let stutters = frames.iter().filter(|frame| **frame > 50.0).count();
        println!(
            "  {mode}: {} frames over {} px, frame p50 / p99 / max: {:.1} / {:.1} / {:.1} ms; {stutters} over 50 ms; {} rows in the page at the end",
            frames.len(),
            grouped(answer["height"].as_u64().unwrap_or(0)),
            percentile(&frames, 0.5),
            percentile(&frames, 0.99),
            frames[frames.len() - 1],
            answer["painted"]
        );
    }
    browser.execute("const select = document.getElementById('view-mode'); select.value = 'grid'; select.dispatchEvent(new Event('change'));", Vec::new()).await;
}

async fn live_latency(browser: &Browser, http: &reqwest::Client, url: &str) {
    browser
        .wait_for(
            "the page to follow the log",
            PAGE_TIMEOUT,
            "document.getElementById('live-state').dataset.state === 'live' && !page.refreshing",
        )
        .await;
    let mut latencies = Vec::with_capacity(LIVE_REPORTS);
    for number in 0..LIVE_REPORTS {
        let sent = milliseconds_since_epoch();
        let seq = append_report(http, url, number).await;
        latencies.push(shown_at(browser, seq).await - sent);
        // 100 to 200 ms apart, spread evenly, so appends fall at every point of the page's cycle.
        tokio::time::sleep(Duration::from_millis(100 + (number as u64 * 37) % 101)).await;
    }
    let latencies = sorted(latencies);
    let p99 = percentile(&latencies, 0.99);
    println!(
        "  {LIVE_REPORTS} single reports, 100–200 ms apart: p50 / p99 / max: {:.0} / {:.0} / {:.0} ms; \
         target p99 at most 1 s: {}",
        percentile(&latencies, 0.5),
        p99,
        latencies[latencies.len() - 1],
        verdict(p99 <= LIVE_P99_TARGET_MS)
    );

    // Bursts: many reports at once, timed from the first send to the render of the last seq.
    let mut bursts = Vec::with_capacity(BURSTS);
    for burst in 0..BURSTS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = milliseconds_since_epoch();
        let appends = (0..REPORTS_PER_BURST)
            .map(|index| append_report(http, url, LIVE_REPORTS + burst * REPORTS_PER_BURST + index));
        let last = futures::future::join_all(appends).await.into_iter().max().expect("a burst has reports");
        bursts.push(shown_at(browser, last).await - sent);
    }
    let bursts = sorted(bursts);
    println!(
        "  {BURSTS} bursts of {REPORTS_PER_BURST} concurrent reports, first send to last shown: \
         p50 / max: {:.0} / {:.0} ms",
        percentile(&bursts, 0.5),
        bursts[bursts.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` (and so `make test`) runs every bench once without `--bench`.
    // This one needs the release server and a minute of the machine, so there it only says how
    // to run it.
    if !std::env::args().any(|argument| argument == "--bench") {
        println!("dashboard bench: skipped outside `cargo bench`; run `make bench-dashboard`");
        return;
    }
    let binary = server_binary();
    if !binary.exists() {
        eprintln!("{} is missing: run `make release` first (or `make bench-dashboard`).", binary.display());
        std::process::exit(1);
    }
    // Loopback only: a proxy from the environment must not sit in the measured path.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let server = Server::start(&binary);
    server.wait_ready(&http).await;
    let url = server.url.clone();
    let setting_up = Instant::now();
    populate(&http, &url).await;
    println!(
        "dashboard bench: {} serving {} hosts (set up in {:.1} s), headless chromium 1280×800",
        binary.display(),
        grouped(HOSTS as u64),
        setting_up.elapsed().as_secs_f64()
    );

    println!("\npage weight");
    page_weight(&http, &url).await;

    let browser = Browser::start().await;
    println!(
        "\nfirst full render of {} hosts, navigation start to the frame showing them, {LOADS} fresh loads",
        grouped(HOSTS as u64)
    );
    first_render(&browser, &url).await;

    // The page as an operator leaves it open: loaded, live, then left alone a moment. Listed
    // before the breakdown below, whose own reads of the fleet would join the list.
    browser
        .wait_for(
            "the page to follow the log",
            PAGE_TIMEOUT,
            "document.getElementById('live-state').dataset.state === 'live'",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let screenshot = browser.screenshot("dashboard-bench.png").await;
    println!("\npage weight, continued");
    resources(&browser).await;

    println!("\nwhere a render of {} hosts goes", grouped(HOSTS as u64));
    render_breakdown(&browser).await;

    println!("\nscrolling through {} hosts", grouped(HOSTS as u64));
    scrolling(&browser).await;

    println!("\nlive update latency, POST /v1/reports to the frame showing its seq");
    live_latency(&browser, &http, &url).await;
    println!("\nscreenshot of the page measured: {}", screenshot.display());
}
