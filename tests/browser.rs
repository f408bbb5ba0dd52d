//! Browser tests: the operator's page at `/` in a real headless chromium, driven over WebDriver
//! (tests/common/webdriver.rs). They need chromium and chromium-driver
//! (`scripts/prerequisites.sh --tests`).

mod common;

use std::time::Duration;

use common::webdriver::{artefact_directory, Browser};
use common::Server;
use serde_json::{json, Value};

/// The smoke test of the WebDriver client itself: it starts chromium, loads the page, runs a
/// script, finds an element and takes a screenshot. What the page shows is for other tests.
#[tokio::test]
async fn the_webdriver_client_drives_a_real_chromium() {
    let server = Server::start().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.url)).await;

    let title = browser.execute("return document.title;", Vec::new()).await;
    assert_eq!(title, "fleetlog");
    let heading = browser.find("header h1").await;
    assert_eq!(heading.text().await, "fleetlog");

    let path = browser.screenshot(artefact_directory().join("webdriver-smoke.png")).await;
    let png = std::fs::read(&path).unwrap();
    let signature = b"\x89PNG\r\n\x1a\n";
    assert!(png.starts_with(signature), "{} is not a PNG: {:?}", path.display(), &png[..png.len().min(8)]);
}

// ---- the operator's page against a real server with 1,000 hosts ----

/// Hosts of the fleet the page is tested with; the first 50 are the canary group.
const HOSTS: usize = 1_000;
const CANARY: usize = 50;
/// WebDriver's code for the Enter key.
const ENTER: &str = "\u{E007}";
/// Long enough for a debug build on a loaded machine; the page itself follows within a second.
const WAIT: Duration = Duration::from_secs(20);

/// One browser at a time: chromium and the server share two cores with the other tests.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A token the server knows, made by `fleetlog token create` as an operator would.
struct Issued {
    name: String,
    token: String,
}

fn issue(role: &str, name: &str) -> (Issued, String) {
    let output = std::process::Command::new(common::binary())
        .args(["token", "create", "--role", role, "--name", name])
        .output()
        .expect("run fleetlog token create");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    let token = lines.next().unwrap().to_string();
    let line = lines.next().unwrap().to_string();
    (Issued { name: name.to_string(), token }, line)
}

/// A server that needs tokens, with a fleet of [`HOSTS`] hosts of shop/prod on release 1.0
/// (deployment d-1, completed) and deployment d-2 of release 2.0 started on its canary wave.
struct Fleet {
    server: Server,
    http: reqwest::Client,
    admin: Issued,
    deployer: Issued,
    auditor: Issued,
    /// The seq at which d-1 completed: the fleet all on 1.0, before d-2.
    before_second_deployment: u64,
    /// The server's token file, to restart it as it was.
    token_file: std::path::PathBuf,
    /// Rounds of reports so far, so each report's id is new.
    report_rounds: std::sync::atomic::AtomicUsize,
    _directory: tempfile::TempDir,
}

fn host_name(index: usize) -> String {
    format!("web-{index:04}")
}

impl Fleet {
    async fn start() -> Fleet {
        let directory = tempfile::TempDir::new().unwrap();
        let (admin, admin_line) = issue("admin", "ops-admin");
        let (deployer, deployer_line) = issue("deployer", "ci-deployer");
        let (auditor, auditor_line) = issue("auditor", "audit");
        let token_file = directory.path().join("tokens");
        std::fs::write(&token_file, format!("{admin_line}\n{deployer_line}\n{auditor_line}\n")).unwrap();
        let server =
            Server::start_with(&directory.path().join("data"), &["--token-file", token_file.to_str().unwrap()]).await;
        let mut fleet = Fleet {
            server,
            http: reqwest::Client::new(),
            admin,
            deployer,
            auditor,
            before_second_deployment: 0,
            token_file,
            report_rounds: Default::default(),
            _directory: directory,
        };
        for release in ["1.0", "2.0"] {
            fleet.post("/v1/releases", json!({"service": "shop", "release": release})).await;
        }
        let registrations = (0..HOSTS)
            .map(|index| {
                let group = if index < CANARY { "canary" } else { "main" };
                json!({"id": format!("register-{index}"), "type": "target.registered", "host": host_name(index),
                       "service": "shop", "env": "prod", "data": {"group": group}})
            })
            .collect();
        fleet.append(registrations).await;
        fleet
            .post(
                "/v1/deployments",
                json!({"deployment": "d-1", "service": "shop", "env": "prod", "release": "1.0",
                       "waves": [{"name": "all", "percent": 100}]}),
            )
            .await;
        fleet.post("/v1/deployments/d-1/waves/all/start", json!({})).await;
        fleet.report(0..HOSTS, "1.0").await;
        fleet.post("/v1/deployments/d-1/waves/all/complete", json!({})).await;
        let completed = fleet.post("/v1/deployments/d-1/complete", json!({})).await;
        fleet.before_second_deployment = completed["seq"].as_u64().unwrap_or_else(|| panic!("{completed}"));
        fleet
            .post(
                "/v1/deployments",
                json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0",
                       "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]}),
            )
            .await;
        fleet.post("/v1/deployments/d-2/waves/canary/start", json!({})).await;
        fleet
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.server.url))
            .bearer_auth(&self.admin.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "POST {path} → {status} {answer}");
        answer
    }

    async fn get(&self, path: &str) -> Value {
        let response =
            self.http.get(format!("{}{path}", self.server.url)).bearer_auth(&self.admin.token).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path} → {}", response.status());
        response.json().await.unwrap()
    }

    /// Appends events as agents' report traffic would arrive: batches of at most 1,000.
    async fn append(&self, events: Vec<Value>) -> u64 {
        let mut last = 0;
        for batch in events.chunks(1_000) {
            last = self.post("/v1/events", json!({"events": batch})).await["last_seq"].as_u64().unwrap();
        }
        last
    }

    /// The hosts of `indexes` report that they run `release`.
    async fn report(&self, indexes: std::ops::Range<usize>, release: &str) -> u64 {
        let round = self.report_rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let reports = indexes
            .map(|index| {
                json!({"id": format!("report-{round}-{index}"), "type": "host.reported", "host": host_name(index),
                       "service": "shop", "env": "prod", "release": release,
                       "data": {"status": "running", "applied_seq": 1}})
            })
            .collect();
        self.append(reports).await
    }

    async fn head(&self) -> u64 {
        self.get("/v1/events?limit=1").await["head_seq"].as_u64().unwrap()
    }

    /// Opens the page and gives it `token` in its token dialog, as a person would.
    async fn open(&self, browser: &Browser, token: &str) {
        browser.goto(&format!("{}/", self.server.url)).await;
        browser.wait_for("the page to ask for a token", WAIT, "document.getElementById('token-dialog').open").await;
        browser.find("#token-input").await.send_keys(token).await;
        browser.find("#token-save").await.click().await;
        let head = self.head().await;
        wait_shown(browser, head).await;
        browser
            .wait_for(
                "the page to follow the log",
                WAIT,
                "document.getElementById('live-state').dataset.state === 'live'",
            )
            .await;
    }
}

/// Clicks the element `css` names at once, in the page: the deployments are drawn again when they
/// change, so an element found by one WebDriver call may be gone by the next.
async fn click(browser: &Browser, css: &str) {
    let clicked = browser
        .execute(
            "const target = document.querySelector(arguments[0]); target?.click(); return !!target;",
            vec![json!(css)],
        )
        .await;
    assert_eq!(clicked, true, "nothing to click at {css}");
}

/// Asks for `action` on deployment d-2 and waits for the page's confirmation.
async fn ask(browser: &Browser, action: &str) {
    click(browser, &format!("[data-deployment=\"d-2\"] [data-action=\"{action}\"]")).await;
    let open = "document.getElementById('confirm-dialog').open";
    browser.wait_for(&format!("the confirmation of {action}"), WAIT, open).await;
}

/// Confirms the open confirmation, giving `reason` when there is one to give.
async fn confirm(browser: &Browser, reason: Option<&str>) {
    if let Some(reason) = reason {
        browser.find("#confirm-reason").await.send_keys(reason).await;
    }
    browser.find("#confirm-yes").await.click().await;
}

/// Waits until the page shows the fleet at seq `seq` or later.
async fn wait_shown(browser: &Browser, seq: u64) {
    let condition = format!("Number(document.body.dataset.fleetSeq || 0) >= {seq}");
    browser.wait_for(&format!("the fleet at seq {seq}"), WAIT, &condition).await;
}

/// The page's own count of hosts by state, as its summary shows them.
async fn counts(browser: &Browser) -> Value {
    let text = browser.execute("return document.getElementById('summary').dataset.counts;", Vec::new()).await;
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

fn expected_counts(converged: usize, applying: usize) -> Value {
    json!({"total": converged + applying, "converged": converged, "applying": applying, "failed": 0, "unhealthy": 0,
           "unknown": 0})
}

async fn wait_counts(browser: &Browser, what: &str, expected: &Value) {
    let condition = format!("document.getElementById('summary').dataset.counts === {:?}", expected.to_string());
    browser.wait_for(what, WAIT, &condition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_counts_a_thousand_hosts_and_a_wave_moves_live() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let fleet = Fleet::start().await;
    let browser = Browser::start().await;
    fleet.open(&browser, &fleet.deployer.token).await;

    // The canary wave has started: its 50 hosts are told to run 2.0 and still run 1.0.
    assert_eq!(counts(&browser).await, expected_counts(HOSTS - CANARY, CANARY));
    let group = browser
        .execute("return document.querySelector('[data-group=\"shop/prod\"]').dataset.counts;", Vec::new())
        .await;
    let group: Value = serde_json::from_str(group.as_str().unwrap()).unwrap();
    assert_eq!((group["converged"].as_u64(), group["applying"].as_u64()), (Some(950), Some(50)), "{group}");
    // The grid is virtualised, yet every host painted says its state in words.
    let unlabelled = browser
        .execute("return [...document.querySelectorAll('.cell[data-host]')].filter(c => !c.getAttribute('aria-label')).length;", Vec::new())
        .await;
    assert_eq!(unlabelled, 0);
    let canary = browser.find("[data-deployment=\"d-2\"] [data-wave=\"canary\"]").await;
    assert_eq!(canary.attribute("data-selected").await.as_deref(), Some("50"));
    assert_eq!(canary.attribute("data-converged").await.as_deref(), Some("0"));
    browser.screenshot("dashboard-fleet-1000-hosts.png").await;

    // Agents' reports arrive in batches; the wave's progress follows each without a reload.
    browser.execute("window.loadedOnce = true;", Vec::new()).await;
    for batch in 0..5 {
        let seq = fleet.report(batch * 10..(batch + 1) * 10, "2.0").await;
        let converged = (batch + 1) * 10;
        let condition = format!(
            "document.querySelector('[data-deployment=\"d-2\"] [data-wave=\"canary\"]')?.dataset.converged === '{converged}'"
        );
        browser.wait_for(&format!("{converged} canary hosts converged (seq {seq})"), WAIT, &condition).await;
        if batch == 1 {
            browser.screenshot("dashboard-wave-moving.png").await;
        }
    }
    assert_eq!(counts(&browser).await, expected_counts(HOSTS, 0));
    assert_eq!(browser.execute("return window.loadedOnce === true;", Vec::new()).await, true, "the page reloaded");
    let gates = "document.querySelectorAll('[data-deployment=\"d-2\"] [data-gate]').length";
    assert_eq!(browser.execute(&format!("return {gates};"), Vec::new()).await, 0, "d-2 has no policy, so no gates");

    // With a policy, the settled canary bakes, and the page counts the bake down.
    let policy = json!({"policy": {"bake_seconds": 600, "max_failed": {"count": 1}}});
    let response = fleet
        .http
        .put(format!("{}/v1/policies/shop/prod", fleet.server.url))
        .bearer_auth(&fleet.admin.token)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let baking = "document.querySelector('[data-deployment=\"d-2\"] [data-gate=\"bake\"]')?.textContent.includes('s left of 600 s')";
    browser.wait_for("the canary's bake counting down", WAIT, baking).await;
    let failed = browser.find("[data-deployment=\"d-2\"] [data-gate=\"max_failed\"]").await;
    assert_eq!(failed.attribute("data-passing").await.as_deref(), Some("true"));
    assert!(failed.text().await.contains("0 of 1 allowed"), "{}", failed.text().await);
    browser.screenshot("dashboard-wave-converged.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_rollback_appends_one_rollback_and_the_grid_turns() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let fleet = Fleet::start().await;
    fleet.report(0..CANARY, "2.0").await;
    let browser = Browser::start().await;
    fleet.open(&browser, &fleet.deployer.token).await;
    let rollbacks = || async { fleet.get("/v1/events?type=rollback").await["events"].as_array().unwrap().clone() };

    // Halt and resume, each with its reason, then the next wave by hand.
    for (action, reason, state) in
        [("halt", "looking at the canary", "halted"), ("resume", "canary looks fine", "active")]
    {
        ask(&browser, action).await;
        confirm(&browser, Some(reason)).await;
        let shown = format!("document.querySelector('[data-deployment=\"d-2\"]')?.dataset.state === '{state}'");
        browser.wait_for(&format!("d-2 {state}"), WAIT, &shown).await;
    }
    let halts = fleet.get("/v1/events?type=deployment.halted").await;
    assert_eq!(halts["events"][0]["data"]["reason"], "looking at the canary", "{halts}");
    ask(&browser, "next-wave").await;
    confirm(&browser, None).await;
    // The rest wave tells the other 950 hosts to run 2.0.
    wait_counts(&browser, "the rest wave started", &expected_counts(CANARY, HOSTS - CANARY)).await;
    let rest =
        "document.querySelector('[data-deployment=\"d-2\"] [data-wave=\"rest\"]')?.dataset.waveState === 'started'";
    browser.wait_for("the rest wave shown started", WAIT, rest).await;
    // The canary completed and the rest started in one append: consecutive seqs.
    let completed = fleet.get("/v1/events?type=wave.completed&deployment=d-2").await["events"][0]["seq"].as_u64();
    let started = fleet.get("/v1/events?type=wave.started&deployment=d-2").await["events"][1]["seq"].as_u64();
    assert_eq!(started, completed.map(|seq| seq + 1), "the canary's completion and the rest's start");

    // The confirmation names the release it goes back to and how many hosts it reaches.
    ask(&browser, "rollback").await;
    let dialog = browser.find("#confirm-dialog").await;
    assert_eq!(dialog.attribute("data-target").await.as_deref(), Some("1.0"));
    assert_eq!(dialog.attribute("data-hosts").await.as_deref(), Some("1000"));
    let text = browser.find("#confirm-text").await.text().await;
    assert!(text.contains("to release 1.0") && text.contains("1000 hosts"), "{text}");
    browser.screenshot("dashboard-rollback-confirmation.png").await;

    // Cancelled: nothing is written.
    browser.find("#confirm-no").await.click().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rollbacks().await.is_empty(), "a cancelled confirmation appended a rollback");

    ask(&browser, "rollback").await;
    confirm(&browser, Some("canary errors")).await;

    // The canary hosts are now told to run 1.0 while they still run 2.0.
    wait_counts(&browser, "the grid to turn", &expected_counts(HOSTS - CANARY, CANARY)).await;
    let appended = rollbacks().await;
    assert_eq!(appended.len(), 1, "{appended:?}");
    let rollback = &appended[0];
    assert_eq!(rollback["release"], "1.0");
    assert_eq!(rollback["actor"], fleet.deployer.name.as_str());
    assert_eq!(rollback["data"]["reason"], "canary errors");
    browser
        .wait_for(
            "d-2 shown rolled back",
            WAIT,
            "document.querySelector('[data-deployment=\"d-2\"]')?.dataset.state === 'aborted'",
        )
        .await;
    browser.screenshot("dashboard-rolled-back.png").await;

    // The agents apply it; the grid is all green again.
    fleet.report(0..CANARY, "1.0").await;
    wait_counts(&browser, "every host back on 1.0", &expected_counts(HOSTS, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_sees_no_actions_and_can_travel_back_and_check_proofs() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let fleet = Fleet::start().await;
    fleet.report(0..CANARY, "2.0").await;
    let browser = Browser::start().await;
    fleet.open(&browser, &fleet.auditor.token).await;

    browser.find("[data-deployment=\"d-2\"]").await;
    assert!(browser.find_all("[data-action]").await.is_empty(), "an auditor is shown action buttons");
    assert_eq!(browser.find("#who").await.text().await, "audit (auditor)");

    // Back to the moment d-1 completed: every host on 1.0, and no d-2 yet.
    let before = fleet.before_second_deployment;
    browser
        .execute(
            "const slider = document.getElementById('moment-slider'); slider.value = String(arguments[0]); \
             slider.dispatchEvent(new Event('input'));",
            vec![json!(before)],
        )
        .await;
    let condition = format!("document.body.dataset.fleetSeq === '{before}' && document.body.dataset.at === '{before}'");
    browser.wait_for("the fleet at the earlier seq", WAIT, &condition).await;
    assert_eq!(counts(&browser).await, expected_counts(HOSTS, 0));
    let desired =
        browser.execute("return [...new Set(page.fleet.hosts.map(h => h.desired_release))];", Vec::new()).await;
    assert_eq!(desired, json!(["1.0"]));
    browser
        .wait_for("d-2 gone from the earlier moment", WAIT, "!document.querySelector('[data-deployment=\"d-2\"]') && !!document.querySelector('[data-deployment=\"d-1\"]')")
        .await;
    browser.screenshot("dashboard-time-travel.png").await;

    // What changed since then: the 50 canary hosts.
    browser.find("#diff-from").await.clear().await;
    browser.find("#diff-from").await.send_keys(&before.to_string()).await;
    browser.find("#diff-form button").await.click().await;
    browser.wait_for("the diff", WAIT, "document.querySelector('[data-diff-count]')?.dataset.diffCount === '50'").await;

    browser.find("#live-button").await.click().await;
    let head = fleet.head().await;
    wait_shown(&browser, head).await;
    wait_counts(&browser, "the live fleet again", &expected_counts(HOSTS, 0)).await;

    // The audit panel: the checkpoint's signature and the inclusion of a release's events,
    // both checked by the browser itself.
    browser
        .wait_for(
            "the checkpoint's signature",
            WAIT,
            "document.getElementById('checkpoint-signature')?.dataset.signature === 'valid'",
        )
        .await;
    browser.execute("document.querySelector('#releases details[data-release=\"2.0\"]').open = true;", Vec::new()).await;
    browser
        .wait_for(
            "the release's events proven included",
            WAIT,
            "Number(document.getElementById('proof-status')?.dataset.proven || 0) >= 3 && document.getElementById('proof-status').dataset.failed === '0'",
        )
        .await;
    browser.screenshot("dashboard-audit.png").await;

    // By keyboard alone: filter, switch to the text list, open a host with Enter.
    browser.find("#filter").await.send_keys("web-0007").await;
    browser.find("#view-mode").await.send_keys("list").await;
    let row = browser.find("button.row.line[data-host=\"web-0007\"]").await;
    row.send_keys(ENTER).await;
    let detail = "document.querySelector('[data-detail-host=\"web-0007\"]')?.textContent.includes('converged')";
    browser.wait_for("web-0007's details", WAIT, detail).await;
    browser.screenshot("dashboard-keyboard-list.png").await;

    // Readable on a phone: nothing wider than the screen.
    browser.set_window_size(420, 860).await;
    let fits = "document.documentElement.scrollWidth <= window.innerWidth";
    browser.wait_for("nothing wider than a phone's screen", Duration::from_secs(5), fits).await;
    browser.screenshot("dashboard-phone.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_the_log_again_after_its_server_restarts() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let browser = Browser::start().await;
    fleet.open(&browser, &fleet.auditor.token).await;
    browser.execute("window.loadedOnce = true;", Vec::new()).await;

    // The stream breaks; EventSource reconnects by itself, with Last-Event-ID.
    let token_file = fleet.token_file.to_str().unwrap().to_string();
    fleet.server.kill_and_restart_with(&["--token-file", &token_file]).await;
    let seq = fleet.report(0..10, "2.0").await;
    wait_shown(&browser, seq).await;
    let converged =
        "document.querySelector('[data-deployment=\"d-2\"] [data-wave=\"canary\"]')?.dataset.converged === '10'";
    browser.wait_for("the reports made after the restart", WAIT, converged).await;
    browser
        .wait_for("the page live again", WAIT, "document.getElementById('live-state').dataset.state === 'live'")
        .await;
    assert_eq!(browser.execute("return window.loadedOnce === true;", Vec::new()).await, true, "the page reloaded");

    // And it keeps following: one more report shows without any other event.
    let seq = fleet.report(10..11, "2.0").await;
    wait_shown(&browser, seq).await;
}
