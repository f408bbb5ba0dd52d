//! Tokens, roles and limits against real `fleetlog serve` processes (SPEC section 7,
//! docs/security.md): tokens made by `fleetlog token create`, every endpoint called with every
//! role, every kind of missing or bad token, the actor taken from the token and never from the
//! body, agents held to their hosts, the per-token rate and stream limits, the start-up refusals,
//! and a ledger that refused requests leave exactly as it was.

#[path = "common/agents.rs"]
mod agents;
mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agents::{read_response_head, Route, Serve};
use common::{binary, free_port, verify_chain};
use fleetlog_api::auth::{Role, ACCESS_RULES};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The hosts the agent token names: `OWN_HOST` is the one the tests act for.
const AGENT_HOSTS: &str = "web-1,web-2";
const OWN_HOST: &str = "web-1";
/// A registered host the agent token does not name.
const FOREIGN_HOST: &str = "db-1";
/// Longest a test waits for one answer, for the server to notice a closed stream, or for a
/// refused `serve` to exit.
const WAIT: Duration = Duration::from_secs(30);
/// Test functions that count cases; the last of them to finish prints the suite's total.
const COUNTING_TESTS: usize = 7;

/// Requests (and `serve` start-ups) the suite has checked, over all its tests.
static CASES: AtomicUsize = AtomicUsize::new(0);
static FINISHED_TESTS: AtomicUsize = AtomicUsize::new(0);

/// Adds a finished test's cases to the suite's total; the last test prints the total.
fn finish(test: &str, cases: usize) {
    eprintln!("security suite: {test}: {cases} cases");
    let total = CASES.fetch_add(cases, Ordering::SeqCst) + cases;
    if FINISHED_TESTS.fetch_add(1, Ordering::SeqCst) + 1 == COUNTING_TESTS {
        eprintln!("security suite: {total} cases");
    }
}

// ---- tokens ----

/// A token made by `fleetlog token create`: the secret and the line for the token file.
struct Issued {
    name: String,
    token: String,
    line: String,
}

/// Runs `fleetlog token create` and checks what it prints: the token (`flt_` and 64 hex digits)
/// on the first line, and on the second a token-file line that names the principal and role and
/// holds a hash, never the token itself.
fn issue(role: &str, name: &str, extra: &[&str]) -> Issued {
    let output = Command::new(binary())
        .args(["token", "create", "--role", role, "--name", name])
        .args(extra)
        .output()
        .expect("run fleetlog token create");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "token create {role} {name}: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let [token, line] = lines[..] else { panic!("token create printed {stdout:?}, not two lines") };
    let random = token.strip_prefix("flt_").unwrap_or_default();
    assert!(random.len() == 64 && random.chars().all(|digit| digit.is_ascii_hexdigit()), "token {token:?}");
    assert!(line.starts_with(&format!("{name} {role} sha256:")), "token-file line {line:?}");
    assert!(!line.contains(random), "the token-file line must not hold the token: {line:?}");
    Issued { name: name.to_string(), token: token.to_string(), line: line.to_string() }
}

/// One token per role, an expired one, one the server is never given, and the token file that
/// holds the lines of all but the last.
struct Tokens {
    admin: Issued,
    deployer: Issued,
    agent: Issued,
    auditor: Issued,
    expired: Issued,
    unlisted: Issued,
    file: PathBuf,
    _directory: tempfile::TempDir,
}

impl Tokens {
    fn create() -> Tokens {
        let agent = issue("agent", "web-agents", &["--hosts", AGENT_HOSTS]);
        assert!(agent.line.ends_with(&format!(" hosts={AGENT_HOSTS}")), "{}", agent.line);
        let expired = issue("auditor", "old-audit", &["--expires", "2020-01-01T00:00:00Z"]);
        assert!(expired.line.ends_with(" expires=2020-01-01T00:00:00Z"), "{}", expired.line);
        let directory = tempfile::TempDir::new().unwrap();
        let tokens = Tokens {
            admin: issue("admin", "ops-admin", &[]),
            deployer: issue("deployer", "ci-deployer", &[]),
            agent,
            auditor: issue("auditor", "audit", &[]),
            expired,
            unlisted: issue("admin", "never-listed", &[]),
            file: directory.path().join("tokens"),
            _directory: directory,
        };
        let listed = [&tokens.admin, &tokens.deployer, &tokens.agent, &tokens.auditor, &tokens.expired];
        let mut text = String::from("# written by tests/security.rs\n\n");
        for issued in listed {
            text.push_str(&issued.line);
            text.push('\n');
        }
        std::fs::write(&tokens.file, text).unwrap();
        tokens
    }

    fn of(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin.token,
            Role::Deployer => &self.deployer.token,
            Role::Agent => &self.agent.token,
            Role::Auditor => &self.auditor.token,
        }
    }

    /// A server that takes these tokens, with `extra` flags.
    async fn serve(&self, extra: &[&str]) -> Serve {
        let mut arguments = vec!["--token-file", self.file.to_str().unwrap()];
        arguments.extend_from_slice(extra);
        Serve::start(&arguments).await
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---- requests ----

/// The answer to a routed request.
struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// The answer to a stream request sent on a connection of its own.
struct StreamAnswer {
    status: u16,
    /// Status line and headers, the headers' names lowercased.
    head: String,
    /// The JSON body of a refusal; Null for an accepted stream.
    body: Value,
    /// The connection of an accepted stream: the stream lasts until it is dropped.
    connection: Option<BufReader<TcpStream>>,
}

impl StreamAnswer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// The test's client of one server; counts every request it sends.
struct Client {
    http: reqwest::Client,
    url: String,
    address: String,
    sent: AtomicUsize,
}

impl Client {
    fn new(serve: &Serve) -> Client {
        let http = reqwest::Client::builder().no_proxy().timeout(WAIT).build().unwrap();
        Client { http, url: serve.url.clone(), address: serve.address.clone(), sent: AtomicUsize::new(0) }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// One request with `authorization` as the raw header value (None: no header).
    async fn request(&self, method: &str, path: &str, authorization: Option<&str>, body: Option<&Value>) -> Answer {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.request("GET", path, Some(&bearer(token)), None).await
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(&bearer(token)), Some(body)).await
    }

    /// `GET path` for a stream, on a fresh TCP connection: as its first request when `route` is
    /// [`Route::Direct`] (the listener serves it straight on the socket), after a `/healthz` when
    /// it is [`Route::Router`]. Reads the head only, and the body of a refusal.
    async fn stream(&self, path: &str, authorization: Option<&str>, route: Route) -> StreamAnswer {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let opening = async {
            let mut reader = BufReader::new(TcpStream::connect(&self.address).await.unwrap());
            if route == Route::Router {
                let probe = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", self.address);
                reader.get_mut().write_all(probe.as_bytes()).await.unwrap();
                let (status, head) = read_response_head(&mut reader).await;
                assert_eq!(status, 200, "GET /healthz → {head}");
                read_body(&mut reader, &head).await;
            }
            let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n", self.address);
            if let Some(value) = authorization {
                request.push_str(&format!("Authorization: {value}\r\n"));
            }
            request.push_str("\r\n");
            reader.get_mut().write_all(request.as_bytes()).await.unwrap();
            let (status, head) = read_response_head(&mut reader).await;
            if status == 200 {
                return StreamAnswer { status, head, body: Value::Null, connection: Some(reader) };
            }
            let body = serde_json::from_slice(&read_body(&mut reader, &head).await).unwrap_or(Value::Null);
            StreamAnswer { status, head, body, connection: None }
        };
        tokio::time::timeout(WAIT, opening).await.unwrap_or_else(|_| panic!("GET {path} ({route:?}): no answer"))
    }

    /// Every event of the ledger, read with `token`.
    async fn all_events(&self, token: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = 1;
        loop {
            let page = self.get(&format!("/v1/events?from_seq={from}&limit=10000"), token).await;
            assert_eq!(page.status, 200, "{}", page.body);
            events.extend(page.body["events"].as_array().unwrap().iter().cloned());
            let next = page.body["next_seq"].as_u64().unwrap();
            if next > page.body["head_seq"].as_u64().unwrap() {
                return events;
            }
            from = next;
        }
    }

    /// The server's count of requests its gate refused (`/metrics` is text, not JSON).
    async fn refusals(&self, token: &str) -> u64 {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let request = self.http.get(format!("{}/metrics", self.url)).header("authorization", bearer(token));
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        let text = response.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("fleetlog_access_refusals_total ")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no fleetlog_access_refusals_total in {text}"))
    }
}

/// The body of a response with a `content-length`.
async fn read_body(reader: &mut BufReader<TcpStream>, head: &str) -> Vec<u8> {
    let length: usize = header_of(head, "content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.unwrap();
    body
}

// ---- the role table ----

/// Who may call an endpoint, written out from docs/security.md's role table (not taken from
/// `Permission::allows`, so a change to the product's rules shows up here as a failure).
#[derive(Clone, Copy, Debug)]
enum Who {
    /// Admin, deployer and auditor.
    Readers,
    /// Readers, and agents for the hosts their token names.
    ReadersAndHostAgents,
    /// Admin and deployer.
    Writers,
    /// Writers, and agents for the hosts their token names.
    WritersAndHostAgents,
    /// Admin only: cluster membership, webhooks.
    Admin,
}

impl Who {
    fn allows(self, role: Role, host_is_own: bool) -> bool {
        match (role, self) {
            (Role::Admin, _) => true,
            (_, Who::Admin) => false,
            (Role::Deployer, _) => true,
            (Role::Auditor, Who::Readers | Who::ReadersAndHostAgents) => true,
            (Role::Auditor, Who::Writers | Who::WritersAndHostAgents) => false,
            (Role::Agent, Who::ReadersAndHostAgents | Who::WritersAndHostAgents) => host_is_own,
            (Role::Agent, Who::Readers | Who::Writers) => false,
        }
    }
}

/// Where a request names the host it acts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostIn {
    Nowhere,
    Path,
    Body,
}

/// Every endpoint but the two probes (which need no token), with who may call it.
const ROLE_TABLE: &[(&str, &str, Who, HostIn)] = {
    use HostIn::*;
    use Who::*;
    &[
        ("GET", "/metrics", Readers, Nowhere),
        ("POST", "/v1/events", Writers, Nowhere),
        ("GET", "/v1/events", Readers, Nowhere),
        ("GET", "/v1/events/{seq}", Readers, Nowhere),
        ("GET", "/v1/streams/{*stream}", Readers, Nowhere),
        ("GET", "/v1/subscribe", Readers, Nowhere),
        ("GET", "/v1/watch/{host}", ReadersAndHostAgents, Path),
        ("GET", "/v1/fleet", Readers, Nowhere),
        ("GET", "/v1/fleet/diff", Readers, Nowhere),
        ("GET", "/v1/checkpoint", Readers, Nowhere),
        ("GET", "/v1/checkpoint/key", Readers, Nowhere),
        ("GET", "/v1/proofs/inclusion", Readers, Nowhere),
        ("GET", "/v1/proofs/consistency", Readers, Nowhere),
        ("GET", "/v1/export", Readers, Nowhere),
        ("GET", "/v1/hosts/{host}", ReadersAndHostAgents, Path),
        ("POST", "/v1/deployments", Writers, Nowhere),
        ("GET", "/v1/deployments", Readers, Nowhere),
        ("GET", "/v1/deployments/{id}", Readers, Nowhere),
        ("POST", "/v1/deployments/{id}/waves/{wave}/start", Writers, Nowhere),
        ("POST", "/v1/deployments/{id}/waves/{wave}/complete", Writers, Nowhere),
        ("POST", "/v1/deployments/{id}/complete", Writers, Nowhere),
        ("POST", "/v1/deployments/{id}/abort", Writers, Nowhere),
        ("POST", "/v1/deployments/{id}/halt", Writers, Nowhere),
        ("POST", "/v1/deployments/{id}/resume", Writers, Nowhere),
        ("GET", "/v1/deployments/{id}/decisions", Readers, Nowhere),
        ("GET", "/v1/policies/{service}/{env}", Readers, Nowhere),
        ("PUT", "/v1/policies/{service}/{env}", Writers, Nowhere),
        ("GET", "/v1/calendars", Readers, Nowhere),
        ("PUT", "/v1/calendars", Writers, Nowhere),
        ("GET", "/v1/dora", Readers, Nowhere),
        ("GET", "/v1/alerts", Readers, Nowhere),
        ("POST", "/v1/alerts/alertmanager", Writers, Nowhere),
        ("POST", "/v1/cdevents", Writers, Nowhere),
        ("POST", "/v1/releases", Writers, Nowhere),
        ("GET", "/v1/services/{service}/releases", Readers, Nowhere),
        ("POST", "/v1/services/{service}/releases/{release}/block", Writers, Nowhere),
        ("POST", "/v1/services/{service}/releases/{release}/unblock", Writers, Nowhere),
        ("POST", "/v1/rollbacks", Writers, Nowhere),
        ("POST", "/v1/targets", WritersAndHostAgents, Body),
        ("DELETE", "/v1/targets/{service}/{env}/{host}", WritersAndHostAgents, Path),
        ("POST", "/v1/reports", WritersAndHostAgents, Body),
        ("POST", "/v1/freezes", Writers, Nowhere),
        ("DELETE", "/v1/freezes/{service}/{env}", Writers, Nowhere),
        ("POST", "/v1/webhooks", Admin, Nowhere),
        ("GET", "/v1/webhooks", Admin, Nowhere),
        ("DELETE", "/v1/webhooks/{id}", Admin, Nowhere),
        ("GET", "/v1/whoami", Readers, Nowhere),
        ("GET", "/v1/cluster", Readers, Nowhere),
        ("POST", "/v1/cluster/init", Admin, Nowhere),
        ("POST", "/v1/cluster/learners", Admin, Nowhere),
        ("PUT", "/v1/cluster/members", Admin, Nowhere),
        ("DELETE", "/v1/cluster/members/{id}", Admin, Nowhere),
        ("POST", "/v1/cluster/members/{id}/promote", Admin, Nowhere),
    ]
};

/// The endpoints that need no token: the page, the probes and the API's OpenAPI document.
const PROBES: [&str; 4] = ["/", "/healthz", "/readyz", "/v1/openapi.json"];

fn is_stream(template: &str) -> bool {
    template == "/v1/subscribe" || template == "/v1/watch/{host}"
}

/// A path for a route template. The `{id}` of a deployment or of a cluster member is not a
/// number: deployments answer 404/409 for it and membership changes refuse it before acting.
fn concrete(template: &str, host: &str) -> String {
    template
        .replace("{host}", host)
        .replace("{seq}", "1")
        .replace("{*stream}", "notes/one")
        .replace("{id}", "no-such")
        .replace("{wave}", "first")
        .replace("{service}", "shop")
        .replace("{env}", "prod")
        .replace("{release}", "9.9")
}

/// The body of a write in the role matrix. Every handler refuses the unknown field `colour`
/// (422), so calls that pass the gate still append nothing and change no membership.
fn refused_body(host_in: HostIn, host: &str) -> Value {
    match host_in {
        HostIn::Body => json!({"host": host, "colour": "blue"}),
        HostIn::Nowhere | HostIn::Path => json!({"colour": "blue"}),
    }
}

/// What an endpoint answered to one way of sending a request.
struct Outcome {
    /// How it was sent: "routed", or for a stream "Direct" or "Router".
    route: String,
    status: u16,
    code: Option<String>,
    /// The WWW-Authenticate header.
    challenge: Option<String>,
}

/// Calls one endpoint of [`ROLE_TABLE`] for `host` with `authorization`. A stream is opened
/// both ways the server serves it (straight on the socket, and through the router); any other
/// endpoint is called once, a write with [`refused_body`].
async fn call(
    client: &Client,
    (method, template, host_in): (&str, &str, HostIn),
    host: &str,
    authorization: Option<&str>,
) -> Vec<Outcome> {
    let path = concrete(template, host);
    if is_stream(template) {
        let mut outcomes = Vec::new();
        for route in [Route::Direct, Route::Router] {
            let answer = client.stream(&path, authorization, route).await;
            outcomes.push(Outcome {
                route: format!("{route:?}"),
                status: answer.status,
                code: answer.code().map(str::to_string),
                challenge: answer.header("www-authenticate").map(str::to_string),
            });
        }
        return outcomes;
    }
    let body = (method != "GET").then(|| refused_body(host_in, host));
    let answer = client.request(method, &path, authorization, body.as_ref()).await;
    vec![Outcome {
        route: "routed".to_string(),
        status: answer.status,
        code: answer.code().map(str::to_string),
        challenge: answer.header("www-authenticate").map(str::to_string),
    }]
}

/// Releases and two registered hosts (one the agent's, one not), appended by the deployer.
async fn seed(client: &Client, tokens: &Tokens) {
    let deployer = &tokens.deployer.token;
    let answer = client.post("/v1/releases", deployer, &json!({"service": "shop", "release": "1.0"})).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    for host in [OWN_HOST, FOREIGN_HOST] {
        let body = json!({"host": host, "service": "shop", "env": "prod"});
        let answer = client.post("/v1/targets", deployer, &body).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_what_the_role_table_gives_it() {
    // The table covers every endpoint the server has a rule for, and nothing else.
    let mut tested: BTreeSet<(&str, &str)> = ROLE_TABLE.iter().map(|(method, path, _, _)| (*method, *path)).collect();
    tested.extend(PROBES.map(|path| ("GET", path)));
    let ruled: BTreeSet<(&str, &str)> = ACCESS_RULES.iter().map(|(method, path, _)| (*method, *path)).collect();
    assert_eq!(tested, ruled, "ROLE_TABLE and fleetlog_api::auth::ACCESS_RULES name different endpoints");

    let tokens = Tokens::create();
    let serve = tokens.serve(&[]).await;
    let client = Client::new(&serve);
    seed(&client, &tokens).await;
    let before = client.all_events(&tokens.admin.token).await;

    let mut failures = Vec::new();
    for &(method, template, who, host_in) in ROLE_TABLE {
        // Where a host is named, the agent's own and a foreign one.
        let hosts: &[&str] = if host_in == HostIn::Nowhere { &[""] } else { &[OWN_HOST, FOREIGN_HOST] };
        for &host in hosts {
            for role in Role::ALL {
                let allowed = who.allows(role, host == OWN_HOST);
                let authorization = bearer(tokens.of(role));
                for outcome in call(&client, (method, template, host_in), host, Some(&authorization)).await {
                    let Outcome { route, status, code, .. } = outcome;
                    let case = format!("{} {method} {} ({route})", role.as_str(), concrete(template, host));
                    let got = format!("{status} {code:?}");
                    // The fallbacks' codes mean the request matched no route and met no gate.
                    let unrouted = matches!(code.as_deref(), Some("not_found" | "method_not_allowed"));
                    if !allowed && (status, code.as_deref()) != (403, Some("forbidden")) {
                        failures.push(format!("{case}: expected 403 forbidden, got {got}"));
                    } else if allowed && is_stream(template) && status != 200 {
                        failures.push(format!("{case}: expected the stream (200), got {got}"));
                    } else if allowed && (matches!(status, 401 | 403 | 429) || status >= 500 || unrouted) {
                        failures.push(format!("{case}: expected the handler's own answer, got {got}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of the role matrix's cases failed:\n{}", failures.len(), failures.join("\n"));

    let after = client.all_events(&tokens.admin.token).await;
    assert_eq!(after, before, "the role matrix changed the ledger");
    verify_chain(&after);
    assert!(!serve.log().contains("panicked"), "the server panicked: {}", serve.log());
    finish("role matrix", client.sent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_get_401_everywhere_but_the_probes() {
    let tokens = Tokens::create();
    let serve = tokens.serve(&[]).await;
    let client = Client::new(&serve);
    seed(&client, &tokens).await;
    let before = client.all_events(&tokens.admin.token).await;
    let refusals_before = client.refusals(&tokens.admin.token).await;

    let credentials: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "unauthenticated"),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".to_string()), "unauthenticated"),
        ("bearer without a token", Some("Bearer ".to_string()), "unauthenticated"),
        ("token without the scheme", Some(tokens.admin.token.clone()), "unauthenticated"),
        ("a token the server was never given", Some(bearer(&tokens.unlisted.token)), "invalid_token"),
        ("an expired token", Some(bearer(&tokens.expired.token)), "token_expired"),
    ];
    let mut failures = Vec::new();
    let mut refused = 0;
    for (credential, authorization, expected_code) in &credentials {
        for &(method, template, _, host_in) in ROLE_TABLE {
            for outcome in call(&client, (method, template, host_in), OWN_HOST, authorization.as_deref()).await {
                refused += 1;
                let got = (outcome.status, outcome.code.as_deref(), outcome.challenge.as_deref());
                if got != (401, Some(*expected_code), Some("Bearer")) {
                    failures.push(format!(
                        "{credential}: {method} {} ({}): expected 401 {expected_code} with \
                         WWW-Authenticate: Bearer, got {got:?}",
                        concrete(template, OWN_HOST),
                        outcome.route
                    ));
                }
            }
        }
        // The probes answer whatever the caller presents.
        for probe in PROBES {
            let answer = client.request("GET", probe, authorization.as_deref(), None).await;
            if answer.status != 200 {
                let got = format!("{} {}", answer.status, answer.body);
                failures.push(format!("{credential}: GET {probe}: expected 200, got {got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));

    // Every 401 counts as a refusal of the gate, on both ways a stream is served.
    let refusals_after = client.refusals(&tokens.admin.token).await;
    assert_eq!(refusals_after - refusals_before, refused, "fleetlog_access_refusals_total");
    let after = client.all_events(&tokens.admin.token).await;
    assert_eq!(after, before, "refused requests changed the ledger");
    verify_chain(&after);
    finish("missing and bad tokens", client.sent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_of_an_event_is_the_token_name_never_the_body() {
    let tokens = Tokens::create();
    let serve = tokens.serve(&[]).await;
    let client = Client::new(&serve);
    let (deployer, agent, auditor) = (&tokens.deployer.token, &tokens.agent.token, &tokens.auditor.token);

    let note = client.post("/v1/events", deployer, &json!({"events": [{"type": "app.note"}]})).await;
    assert_eq!(note.status, 201, "{}", note.body);
    let seq = note.body["first_seq"].as_u64().unwrap();
    let stored = client.get(&format!("/v1/events/{seq}"), auditor).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(stored.body["actor"], tokens.deployer.name.as_str(), "{}", stored.body);

    // An actor in the envelope is not a field a client may set: the append is refused whole.
    let head = client.all_events(auditor).await.len();
    for body in [
        json!({"events": [{"type": "app.note", "actor": "mallory"}]}),
        json!({"events": [{"type": "app.note"}], "actor": "mallory"}),
    ] {
        let answer = client.post("/v1/events", deployer, &body).await;
        assert_eq!((answer.status, answer.code()), (422, Some("unknown_field")), "{body}: {}", answer.body);
    }
    assert_eq!(client.all_events(auditor).await.len(), head, "a refused append was stored");

    // In `data` it is only data: the event's actor is still the token's name.
    let answer = client
        .post("/v1/events", deployer, &json!({"events": [{"type": "app.note", "data": {"actor": "mallory"}}]}))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let stored = client.get(&format!("/v1/events/{}", answer.body["first_seq"]), auditor).await;
    assert_eq!(stored.body["actor"], tokens.deployer.name.as_str(), "{}", stored.body);
    assert_eq!(stored.body["data"]["actor"], "mallory", "{}", stored.body);

    // A typed command by an agent: its actor is the agent token's name.
    let release = client.post("/v1/releases", deployer, &json!({"service": "shop", "release": "1.0"})).await;
    assert_eq!(release.status, 201, "{}", release.body);
    let target = json!({"host": OWN_HOST, "service": "shop", "env": "prod"});
    let registered = client.post("/v1/targets", agent, &target).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    assert_eq!(registered.body["event"]["actor"], tokens.agent.name.as_str(), "{}", registered.body);
    // A typed command's other fields become the event's data, which has no `actor`.
    let mut with_actor = target.clone();
    with_actor["actor"] = json!("mallory");
    let answer = client.post("/v1/targets", agent, &with_actor).await;
    assert_eq!((answer.status, answer.code()), (422, Some("unknown_field")), "{}", answer.body);

    // Read back by actor: every event has its token's name, none the body's.
    let events = client.all_events(auditor).await;
    let actors: Vec<&str> = events.iter().map(|event| event["actor"].as_str().unwrap()).collect();
    let (deployer_name, agent_name) = (tokens.deployer.name.as_str(), tokens.agent.name.as_str());
    let expected = [deployer_name, deployer_name, deployer_name, agent_name];
    assert_eq!(actors, expected, "actors of the ledger's events");
    let by_agent = client.get(&format!("/v1/events?actor={}", tokens.agent.name), auditor).await;
    assert_eq!(by_agent.body["events"].as_array().map(Vec::len), Some(1), "{}", by_agent.body);
    let by_mallory = client.get("/v1/events?actor=mallory", auditor).await;
    assert_eq!(by_mallory.body["events"].as_array().map(Vec::len), Some(0), "{}", by_mallory.body);
    verify_chain(&events);
    finish("actor", client.sent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_acts_only_for_the_hosts_its_token_names() {
    let tokens = Tokens::create();
    let serve = tokens.serve(&[]).await;
    let client = Client::new(&serve);
    let agent = &tokens.agent.token;
    seed(&client, &tokens).await;
    let report = |host: &str| {
        json!({"host": host, "service": "shop", "env": "prod", "release": "1.0",
               "status": "running", "applied_seq": 1})
    };
    let target = |host: &str| json!({"host": host, "service": "shop", "env": "prod"});
    let forbidden = (403, Some("forbidden"));

    // The foreign host is registered (see `seed`), so only the token can be why these are refused.
    let head = client.all_events(&tokens.admin.token).await;
    let cases: Vec<(&str, &str, String, Option<Value>)> = vec![
        ("register a foreign host", "POST", "/v1/targets".into(), Some(target(FOREIGN_HOST))),
        ("report for a foreign host", "POST", "/v1/reports".into(), Some(report(FOREIGN_HOST))),
        ("report naming no host", "POST", "/v1/reports".into(), Some(json!({"service": "shop", "env": "prod"}))),
        ("deregister a foreign host", "DELETE", format!("/v1/targets/shop/prod/{FOREIGN_HOST}"), Some(json!({}))),
        ("view a foreign host", "GET", format!("/v1/hosts/{FOREIGN_HOST}"), None),
    ];
    for (case, method, path, body) in &cases {
        let answer = client.request(method, path, Some(&bearer(agent)), body.as_ref()).await;
        assert_eq!((answer.status, answer.code()), forbidden, "{case}: {}", answer.body);
    }
    assert_eq!(client.all_events(&tokens.admin.token).await, head, "a refused command was stored");

    // Its own hosts: register, report, view, deregister.
    for host in ["web-1", "web-2"] {
        let answer = client.post("/v1/targets", agent, &target(host)).await;
        assert_eq!(answer.status, 201, "register {host}: {}", answer.body);
        let answer = client.post("/v1/reports", agent, &report(host)).await;
        assert_eq!(answer.status, 201, "report for {host}: {}", answer.body);
        assert_eq!(answer.body["event"]["host"], host, "{}", answer.body);
        let answer = client.get(&format!("/v1/hosts/{host}"), agent).await;
        assert_eq!(answer.status, 200, "view {host}: {}", answer.body);
        assert_eq!(answer.body["targets"][0]["observed_release"], "1.0", "{}", answer.body);
    }
    let answer = client.request("DELETE", "/v1/targets/shop/prod/web-2", Some(&bearer(agent)), Some(&json!({}))).await;
    assert_eq!(answer.status, 201, "deregister web-2: {}", answer.body);

    // Nothing the agent appended names the foreign host.
    let foreign = client.get(&format!("/v1/events?host={FOREIGN_HOST}"), &tokens.admin.token).await;
    let foreign_events = foreign.body["events"].as_array().unwrap();
    let foreign_actors: Vec<&Value> = foreign_events.iter().map(|event| &event["actor"]).collect();
    assert_eq!(foreign_actors, [&json!(tokens.deployer.name)], "events of {FOREIGN_HOST}: {}", foreign.body);
    verify_chain(&client.all_events(&tokens.admin.token).await);
    finish("agent hosts", client.sent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_and_other_tokens_are_still_served() {
    const RATE: usize = 5;
    const REQUESTS: usize = 30;
    let tokens = Tokens::create();
    let serve = tokens.serve(&["--requests-per-second-per-token", &RATE.to_string()]).await;
    let client = Client::new(&serve);
    let auditor = &tokens.auditor.token;

    // All at once, so they arrive well within one second: the burst is one second's worth.
    let burst = (0..REQUESTS).map(|_| client.get("/v1/events?limit=1", auditor));
    let answers = futures::future::join_all(burst).await;
    let served = answers.iter().filter(|answer| answer.status == 200).count();
    let limited: Vec<&Answer> = answers.iter().filter(|answer| answer.status == 429).collect();
    assert_eq!(served + limited.len(), REQUESTS, "only 200 and 429 are expected: {:?}", statuses(&answers));
    assert!(served >= RATE, "the burst of {RATE} must be served: {:?}", statuses(&answers));
    assert!(!limited.is_empty(), "{REQUESTS} requests at once were all served at {RATE} per second");
    for answer in &limited {
        assert_eq!(answer.code(), Some("rate_limited"), "{}", answer.body);
        let retry_after: u64 = answer.header("retry-after").and_then(|value| value.parse().ok()).unwrap_or(0);
        assert!(retry_after >= 1, "429 needs a Retry-After of at least one second: {:?}", answer.headers);
    }

    // Another token has its own share, while this one's is spent.
    let other = client.get("/v1/events?limit=1", &tokens.deployer.token).await;
    assert_eq!(other.status, 200, "{}", other.body);
    // And this one is served again once it has waited as told.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = client.get("/v1/events?limit=1", auditor).await;
    assert_eq!(again.status, 200, "{}", again.body);
    finish("rate", client.sent());
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    answers.iter().map(|answer| answer.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holds_at_most_its_share_of_streams() {
    let tokens = Tokens::create();
    let serve = tokens.serve(&["--max-subscribers-per-token", "2"]).await;
    let client = Client::new(&serve);
    let auditor = bearer(&tokens.auditor.token);

    let first = client.stream("/v1/subscribe", Some(&auditor), Route::Direct).await;
    let second = client.stream(&format!("/v1/watch/{OWN_HOST}"), Some(&auditor), Route::Router).await;
    assert_eq!((first.status, second.status), (200, 200), "{} / {}", first.head, second.head);

    // The third is refused however it is served.
    for route in [Route::Direct, Route::Router] {
        let third = client.stream("/v1/subscribe", Some(&auditor), route).await;
        assert_eq!(
            (third.status, third.code()),
            (429, Some("too_many_streams_for_token")),
            "{route:?}: {}",
            third.head
        );
        let retry_after: u64 = third.header("retry-after").and_then(|value| value.parse().ok()).unwrap_or(0);
        assert!(retry_after >= 1, "{route:?}: 429 needs a Retry-After: {}", third.head);
    }
    // Another token is not held to this one's share.
    let other = client.stream("/v1/subscribe", Some(&bearer(&tokens.admin.token)), Route::Direct).await;
    assert_eq!(other.status, 200, "{}", other.head);

    // Closing a stream gives its place back once the server notices the close.
    drop(first);
    let deadline = Instant::now() + WAIT;
    // Attempts made before the server noticed are not cases: how many there are is timing.
    let mut early_attempts = 0;
    let reopened = loop {
        let attempt = client.stream("/v1/subscribe", Some(&auditor), Route::Direct).await;
        if attempt.status == 200 {
            break attempt;
        }
        early_attempts += 1;
        assert_eq!(attempt.code(), Some("too_many_streams_for_token"), "{}", attempt.head);
        assert!(Instant::now() < deadline, "the closed stream's place was not given back within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reopened.connection.is_some());
    drop((second, other, reopened));
    finish("streams per token", client.sent() - early_attempts);
}

// ---- start-up ----

/// Runs `fleetlog serve` with `arguments`, which it must refuse: a non-zero exit within
/// [`WAIT`], with `expected` in what it prints on stderr.
fn refuses_to_start(arguments: &[&str], data: &Path, expected: &[&str]) {
    let mut child = Command::new(binary())
        .arg("serve")
        .args(arguments)
        .arg("--data")
        .arg(data)
        // The flags under test must not come from the test's own environment.
        .env_remove("FLEETLOG_TOKEN_FILE")
        .env_remove("FLEETLOG_CLUSTER_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fleetlog serve");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {arguments:?} was still running after {WAIT:?}: it should refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "serve {arguments:?} exited with {status}");
    for part in expected {
        assert!(stderr.contains(part), "serve {arguments:?}: stderr should mention {part:?}: {stderr}");
    }
}

#[test]
fn serve_refuses_to_start_with_unsafe_or_broken_access_settings() {
    let tokens = Tokens::create();
    let directory = tempfile::TempDir::new().unwrap();
    let data = directory.path().join("data");
    let file = |name: &str, text: String| -> String {
        let path = directory.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let good = tokens.file.to_str().unwrap();
    let hash = format!("sha256:{}", "ab".repeat(32));
    let unknown_role = file("unknown-role", format!("# tokens\n{}\nalice root {hash}\n", tokens.admin.line));
    let agent_without_hosts = file("agent-without-hosts", format!("{}\nweb-agent agent {hash}\n", tokens.admin.line));
    // The same name with another token: names must be unique, as they become events' actors.
    let second_admin = issue("auditor", &tokens.admin.name, &[]);
    let same_name = file("same-name", format!("{}\n{}\n", tokens.admin.line, second_admin.line));
    let empty = file("empty", String::new());
    let comments_only = file("comments-only", "# nobody yet\n\n".to_string());
    let open_address = format!("0.0.0.0:{}", free_port());
    let loopback = format!("127.0.0.1:{}", free_port());

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--listen", &open_address], vec!["--token-file"]),
        (vec!["--listen", &loopback, "--node-id", "1", "--token-file", good], vec!["--cluster-secret"]),
        (vec!["--listen", &loopback, "--token-file", &unknown_role], vec!["line 3", "unknown role"]),
        (vec!["--listen", &loopback, "--token-file", &agent_without_hosts], vec!["line 2", "must name its hosts"]),
        (vec!["--listen", &loopback, "--token-file", &same_name], vec!["line 2", "used twice"]),
        (vec!["--listen", &loopback, "--token-file", &empty], vec!["holds no tokens"]),
        (vec!["--listen", &loopback, "--token-file", &comments_only], vec!["holds no tokens"]),
        (
            vec!["--listen", &loopback, "--token-file", good, "--requests-per-second-per-token", "0"],
            vec!["--requests-per-second-per-token"],
        ),
    ];
    for (arguments, expected) in &cases {
        refuses_to_start(arguments, &data, expected);
    }
    finish("start-up refusals", cases.len());
}

// ---- once product bugs, found by this suite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A single node with tokens and no cluster secret used to serve its peer routes to anyone.
async fn peer_routes_are_no_way_around_the_tokens() {
    use fleetlog_raft::domain::event::{AppendRequest, ExpectedVersion, ProposedEvent};
    let tokens = Tokens::create();
    let serve = tokens.serve(&[]).await;
    let client = Client::new(&serve);
    let before = client.all_events(&tokens.admin.token).await;

    // What a follower forwards to its leader, sent by a caller with neither token nor secret,
    // in the name of the admin.
    let forged = AppendRequest {
        events: vec![ProposedEvent::new("forged-1", "app.note")],
        expected_version: ExpectedVersion::Any,
        actor: tokens.admin.name.clone(),
    };
    let url = format!("{}{}", serve.url, fleetlog_raft::consensus::peer::client::path::FORWARD_APPEND);
    let body = fleetlog_raft::domain::codec::encode(&forged).unwrap();
    let response = client.http.post(url).body(body).send().await.unwrap();
    let status = response.status().as_u16();

    let after = client.all_events(&tokens.admin.token).await;
    assert_eq!(after, before, "a peer call without token or secret appended: {:?}", &after[before.len()..]);
    assert_eq!(status, 403, "a peer call to a node with tokens and no cluster secret");
}

/// Token names used to allow ':', which the ledger refuses in an actor, so such a token could
/// never append; names now follow the ledger's rules, and one it would refuse is refused here.
#[test]
fn a_token_name_the_ledger_would_refuse_as_an_actor_is_refused_at_creation() {
    for (name, hosts) in [("ci:release", None), ("ci release", None), ("web-agents", Some("web@1"))] {
        let mut command = Command::new(binary());
        command.args(["token", "create", "--name", name]);
        match hosts {
            Some(hosts) => command.args(["--role", "agent", "--hosts", hosts]),
            None => command.args(["--role", "deployer"]),
        };
        let output = command.output().expect("run fleetlog token create");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "token create accepted {name:?} {hosts:?}");
        assert!(stderr.contains("allowed set"), "{name:?}: {stderr}");
        assert!(output.stdout.is_empty(), "a refused token must print nothing: {:?}", output.stdout);
    }
}

/// A browser's EventSource cannot set headers, so the two streams (and only they) take the token
/// as `access_token` in the query, under the same role and host rules as the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_take_their_token_from_access_token_and_nothing_else_does() {
    let tokens = Tokens::create();
    let serve = tokens.serve(&[]).await;
    let client = Client::new(&serve);
    let query = |token: &str| format!("access_token={token}");
    for route in [Route::Direct, Route::Router] {
        let opened = client.stream(&format!("/v1/subscribe?{}", query(&tokens.auditor.token)), None, route).await;
        assert_eq!(opened.status, 200, "{route:?}: {}", opened.head);
        let with_filter =
            client.stream(&format!("/v1/subscribe?type=rollback&{}", query(&tokens.deployer.token)), None, route).await;
        assert_eq!(with_filter.status, 200, "{route:?}: {}", with_filter.head);
        let watch = client.stream(&format!("/v1/watch/{OWN_HOST}?{}", query(&tokens.agent.token)), None, route).await;
        assert_eq!(watch.status, 200, "{route:?}: {}", watch.head);

        let refusals = [
            (format!("/v1/subscribe?{}", query(&tokens.unlisted.token)), None, 401, "invalid_token"),
            (format!("/v1/subscribe?{}", query(&tokens.expired.token)), None, 401, "token_expired"),
            (format!("/v1/subscribe?{}", query(&tokens.agent.token)), None, 403, "forbidden"),
            (format!("/v1/watch/{FOREIGN_HOST}?{}", query(&tokens.agent.token)), None, 403, "forbidden"),
            // Two tokens at once: refused rather than one of them picked.
            (
                format!("/v1/subscribe?{}", query(&tokens.auditor.token)),
                Some(bearer(&tokens.auditor.token)),
                400,
                "invalid_parameter",
            ),
        ];
        for (path, header, status, code) in refusals {
            let answer = client.stream(&path, header.as_deref(), route).await;
            assert_eq!((answer.status, answer.code()), (status, Some(code)), "{route:?} {path}: {}", answer.head);
        }
    }
    // Any other endpoint ignores a token in the query: it is no way around the header.
    for path in ["/v1/fleet", "/v1/whoami"] {
        let answer = client.request("GET", &format!("{path}?{}", query(&tokens.admin.token)), None, None).await;
        assert_eq!((answer.status, answer.code()), (401, Some("unauthenticated")), "{path}: {}", answer.body);
    }
    let write =
        client.request("POST", &format!("/v1/releases?{}", query(&tokens.admin.token)), None, Some(&json!({}))).await;
    assert_eq!(write.status, 401, "{}", write.body);
}

/// The page shows actions only to tokens that may take them; it learns which from /v1/whoami.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_names_the_caller_and_whether_it_may_write() {
    let tokens = Tokens::create();
    let serve = tokens.serve(&[]).await;
    let client = Client::new(&serve);
    for (role, name, may_write) in
        [(Role::Admin, "ops-admin", true), (Role::Deployer, "ci-deployer", true), (Role::Auditor, "audit", false)]
    {
        let answer = client.get("/v1/whoami", tokens.of(role)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.body,
            json!({"name": name, "role": role.as_str(), "may_write": may_write, "tokens_required": true})
        );
    }
    let open = Serve::start(&[]).await;
    let answer = reqwest::get(format!("{}/v1/whoami", open.url)).await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(answer, json!({"name": "anonymous", "role": "admin", "may_write": true, "tokens_required": false}));
}
