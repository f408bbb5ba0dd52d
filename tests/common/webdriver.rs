//! A small W3C WebDriver client for the browser tests: a `chromedriver` process of the test's own,
//! one headless chromium session with a fresh profile, and the few commands the tests need.
//!
//! Every WebDriver error panics with its error code and message: a browser test has nothing to
//! recover, and a loud failure that names the command is what makes it readable.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use super::free_port;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The key the W3C specification gives element references in JSON, in answers and in arguments.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Flags for a quiet headless browser. Without the background-networking ones, chromium keeps
/// trying to reach Google's services, which the machines running the tests refuse, and floods the
/// logs with refused connections; /dev/shm is small in containers, hence --disable-dev-shm-usage.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
];

/// How long one WebDriver command may take before the test fails instead of hanging: a page load
/// or an asynchronous script that never ends must not block the suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where browser tests leave screenshots and other artefacts for a person to look at:
/// `$FLEETLOG_TEST_ARTEFACTS` when set, otherwise `test-artefacts` in the cargo target directory
/// (`$CARGO_TARGET_DIR`, or this checkout's `target`). Created when missing.
pub fn artefact_directory() -> PathBuf {
    let directory = match std::env::var_os("FLEETLOG_TEST_ARTEFACTS").filter(|value| !value.is_empty()) {
        Some(directory) => PathBuf::from(directory),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
            target.join("test-artefacts")
        }
    };
    std::fs::create_dir_all(&directory)
        .unwrap_or_else(|error| panic!("cannot create the artefact directory {}: {error}", directory.display()));
    directory
}

/// The address of one WebDriver session, shared by the browser and the elements found in it.
#[derive(Clone)]
struct Session {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`: every command's path is relative to it.
    url: String,
}

impl Session {
    /// Sends one command and returns its `value`; panics on a WebDriver error or an answer that is
    /// not WebDriver's JSON.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        send(&self.http, method, &format!("{}{path}", self.url), body).await
    }
}

async fn send(http: &reqwest::Client, method: Method, url: &str, body: Option<Value>) -> Value {
    let mut request = http.request(method.clone(), url).timeout(COMMAND_TIMEOUT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap_or_else(|error| panic!("WebDriver {method} {url}: {error}"));
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_else(|error| panic!("WebDriver {method} {url}: {error}"));
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!("WebDriver {method} {url} answered {status} without JSON: {}", String::from_utf8_lossy(&bytes))
    });
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let message = value.get("message").and_then(Value::as_str).unwrap_or("");
        panic!("WebDriver {method} {url} failed ({status}): {error}: {message}");
    }
    value
}

/// A headless chromium driven through a `chromedriver` process of its own.
pub struct Browser {
    session: Session,
    /// `127.0.0.1:<port>` of chromedriver, for the synchronous clean-up in `Drop`.
    driver_address: String,
    session_id: String,
    driver: Option<Child>,
    /// The chromium profile and chromedriver's log; removed after the browser has quit.
    _scratch: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session of a headless chromium with an empty
    /// profile and a 1280×800 window.
    pub async fn start() -> Browser {
        if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
            panic!("chromium and chromium-driver are missing: run scripts/prerequisites.sh --tests");
        }
        let scratch = tempfile::TempDir::new().unwrap();
        let profile = scratch.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        let log_path = scratch.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {CHROMEDRIVER}: {error}"));
        let driver_address = format!("127.0.0.1:{port}");
        let driver_url = format!("http://{driver_address}");
        // The browser is built before the session exists, so a failure below still kills
        // chromedriver (through `Drop`, which skips the session while its id is empty).
        let mut browser = Browser {
            session: Session { http: reqwest::Client::new(), url: String::new() },
            driver_address,
            session_id: String::new(),
            driver: Some(driver),
            _scratch: scratch,
        };
        browser.wait_until_driver_ready(&driver_url, &log_path).await;

        let mut arguments: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
        arguments.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": arguments},
        }}});
        let created =
            send(&browser.session.http, Method::POST, &format!("{driver_url}/session"), Some(capabilities)).await;
        let session_id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("POST /session answered without a session id: {created}"))
            .to_string();
        browser.session.url = format!("{driver_url}/session/{session_id}");
        browser.session_id = session_id;
        browser
    }

    async fn wait_until_driver_ready(&mut self, driver_url: &str, log_path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status =
                self.session.http.get(format!("{driver_url}/status")).timeout(Duration::from_secs(2)).send().await;
            if let Ok(response) = status {
                if let Ok(answer) = response.json::<Value>().await {
                    if answer["value"]["ready"] == true {
                        return;
                    }
                }
            }
            let exited = self.driver.as_mut().and_then(|driver| driver.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                panic!("chromedriver never became ready at {driver_url} (exit: {exited:?}); its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens `url` and returns once the page has loaded.
    pub async fn goto(&self, url: &str) {
        self.session.command(Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// Runs `script` as the body of a function in the page (its arguments in `arguments`) and
    /// returns what it returns. Elements (`Element::as_argument`) may be passed as arguments.
    pub async fn execute(&self, script: &str, arguments: Vec<Value>) -> Value {
        self.session.command(Method::POST, "/execute/sync", Some(json!({"script": script, "args": arguments}))).await
    }

    /// Runs `script` as the body of a function whose last argument is a callback, and returns the
    /// value the script passes to it (the session's script timeout, 30 s by default, applies).
    pub async fn execute_async(&self, script: &str, arguments: Vec<Value>) -> Value {
        self.session.command(Method::POST, "/execute/async", Some(json!({"script": script, "args": arguments}))).await
    }

    /// The first element matching a CSS selector; panics (WebDriver's `no such element`) if none.
    pub async fn find(&self, css: &str) -> Element {
        let found = self.session.command(Method::POST, "/element", Some(css_locator(css))).await;
        Element::from_reference(&self.session, &found)
    }

    /// Every element matching a CSS selector, in document order; empty if none.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.session.command(Method::POST, "/elements", Some(css_locator(css))).await;
        let references = found.as_array().unwrap_or_else(|| panic!("POST /elements answered no list: {found}"));
        references.iter().map(|reference| Element::from_reference(&self.session, reference)).collect()
    }

    /// Writes a PNG screenshot of the window and returns the file's path. A relative `path` is
    /// taken inside `artefact_directory()`; missing parent directories are created.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = artefact_directory().join(path);
        let encoded = self.session.command(Method::GET, "/screenshot", None).await;
        let encoded = encoded.as_str().unwrap_or_else(|| panic!("GET /screenshot answered no text: {encoded}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_else(|error| panic!("the screenshot is not base64: {error}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, png).unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        path
    }

    /// Resizes the window (outer size, in CSS pixels), for layouts at other widths.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.session.command(Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Evaluates the JavaScript `expression` every 50 ms until it is truthy and returns its value;
    /// after `timeout`, panics with `description` and the last value. An expression that throws
    /// fails at once (write `?.` for what may not exist yet).
    pub async fn wait_for(&self, description: &str, timeout: Duration, expression: &str) -> Value {
        let script = format!("return ({expression});");
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(&script, Vec::new()).await;
            if truthy(&value) {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("waited {timeout:?} for {description} ({expression}); last value: {value}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn css_locator(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

/// JavaScript's truthiness of a value come back as JSON (NaN and undefined arrive as null).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|number| number != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

impl Drop for Browser {
    /// Best effort, and synchronous because `Drop` cannot await: ends the session, which makes
    /// chromedriver quit chromium, then kills chromedriver.
    fn drop(&mut self) {
        if !self.session_id.is_empty() {
            // A hand-written HTTP/1.1 request: reqwest's client is asynchronous, and the tests'
            // runtime (a current-thread one by default) cannot be blocked on from here.
            if let Ok(address) = self.driver_address.parse() {
                if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                    let request = format!(
                        "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        self.session_id, self.driver_address
                    );
                    if stream.write_all(request.as_bytes()).is_ok() {
                        // The answer comes once chromium has quit: waiting for it leaves no browser
                        // behind writing into the profile about to be removed.
                        read_one_response(&mut stream);
                    }
                }
            }
        }
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.kill();
            let _ = driver.wait();
        }
    }
}

/// Reads one HTTP response to its end. chromedriver keeps the connection open despite
/// `Connection: close`, so reading until the end of the stream would wait for the read timeout:
/// the response ends after its headers and `Content-Length` bytes of body.
fn read_one_response(stream: &mut TcpStream) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(count) => received.extend_from_slice(&buffer[..count]),
        }
        let Some(header_end) = received.windows(4).position(|window| window == b"\r\n\r\n") else { continue };
        let headers = String::from_utf8_lossy(&received[..header_end]).to_ascii_lowercase();
        let body_length = headers
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|length| length.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if received.len() >= header_end + 4 + body_length {
            return;
        }
    }
}

/// An element found in the page. It stays valid until the page replaces it (then WebDriver's
/// `stale element reference` panics).
#[derive(Clone)]
pub struct Element {
    session: Session,
    id: String,
}

impl std::fmt::Debug for Element {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Element({})", self.id)
    }
}

impl Element {
    fn from_reference(session: &Session, reference: &Value) -> Element {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not a WebDriver element reference: {reference}"))
            .to_string();
        Element { session: session.clone(), id }
    }

    /// The element as an argument of `Browser::execute`, where the script receives the DOM node.
    pub fn as_argument(&self) -> Value {
        json!({ELEMENT_KEY: self.id})
    }

    pub async fn click(&self) {
        self.session.command(Method::POST, &format!("/element/{}/click", self.id), Some(json!({}))).await;
    }

    /// The rendered text, as a user sees it (hidden parts left out).
    pub async fn text(&self) -> String {
        let text = self.session.command(Method::GET, &format!("/element/{}/text", self.id), None).await;
        text.as_str().unwrap_or_else(|| panic!("the element's text is not a string: {text}")).to_string()
    }

    /// An attribute's value, `None` when the element has no such attribute.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        let value = self.session.command(Method::GET, &format!("/element/{}/attribute/{name}", self.id), None).await;
        value.as_str().map(str::to_string)
    }

    /// Types `text` into the element, after what it already holds.
    pub async fn send_keys(&self, text: &str) {
        self.session.command(Method::POST, &format!("/element/{}/value", self.id), Some(json!({"text": text}))).await;
    }

    /// Empties an input or a text area.
    pub async fn clear(&self) {
        self.session.command(Method::POST, &format!("/element/{}/clear", self.id), Some(json!({}))).await;
    }
}
