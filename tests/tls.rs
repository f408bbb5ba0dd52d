//! TLS for the API and peer traffic: a CA and node certificates made with openssl for the test, a
//! single node and a three-node cluster serving https, and the CLI trusting the CA by file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, free_port};
use serde_json::{json, Value};

/// A CA and one certificate for 127.0.0.1 that it signed, in a directory of the test's own.
struct Certificates {
    directory: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Certificates {
        let directory = tempfile::TempDir::new().unwrap();
        let openssl = |arguments: &[&str]| {
            let output = Command::new("openssl").args(arguments).current_dir(directory.path()).output().unwrap();
            assert!(output.status.success(), "openssl {arguments:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &curve,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fleetlog test CA"],
            ]
            .concat(),
        );
        openssl(
            &[&["req"][..], &curve, &["-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1"]].concat(),
        );
        std::fs::write(
            directory.path().join("node.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "node.pem",
            "-days",
            "2",
            "-extfile",
            "node.ext",
        ]);
        Certificates { directory }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    fn server_flags(&self) -> Vec<String> {
        ["--tls-cert", "node.pem", "--tls-key", "node.key"]
            .map(|flag| if flag.starts_with("--") { flag.to_string() } else { self.path(flag).display().to_string() })
            .to_vec()
    }

    /// A client that trusts the CA.
    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.path("ca.pem")).unwrap()).unwrap();
        reqwest::Client::builder().no_proxy().add_root_certificate(ca).timeout(Duration::from_secs(10)).build().unwrap()
    }
}

/// A `fleetlog serve` child process, killed on drop.
struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn spawn(data: &Path, arguments: &[String]) -> Node {
        let log = data.with_extension("log");
        let child = Command::new(binary())
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Node { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_until(what: &str, client: &reqwest::Client, url: &str, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} at {url} never answered; log: {}", node.log());
}

fn cli(certificates: &Certificates, server: &str, arguments: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(["--server", server, "--tls-ca"])
        .arg(certificates.path("ca.pem"))
        .args(arguments)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_https_and_nothing_else() {
    let certificates = Certificates::make();
    let directory = tempfile::TempDir::new().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let mut arguments = vec!["--listen".to_string(), address.clone()];
    arguments.extend(certificates.server_flags());
    let node = Node::spawn(&directory.path().join("data"), &arguments);
    let base = format!("https://{address}");
    let client = certificates.client();
    wait_until("the node", &client, &format!("{base}/readyz"), &node).await;

    let appended = client
        .post(format!("{base}/v1/events"))
        .json(&json!({"events": [{"type": "app.note", "stream": "tls", "data": {"over": "https"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 201);

    // A stream over TLS (served by the router: there is no peeking under encryption).
    let mut stream = client.get(format!("{base}/v1/subscribe?from_seq=1")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("id: 1"), "{first:?}");

    // The CLI with the CA file.
    let history = cli(&certificates, &base, &["--output", "json", "history"]);
    assert!(history.status.success(), "{}", String::from_utf8_lossy(&history.stderr));
    let events: Vec<Value> =
        String::from_utf8_lossy(&history.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["over"], "https");

    // No plain HTTP on the TLS port, and no https without trusting the CA.
    let plain = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    assert!(plain.get(format!("http://{address}/v1/fleet")).send().await.is_err(), "plain HTTP was answered");
    let untrusting = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    assert!(untrusting.get(format!("{base}/v1/fleet")).send().await.is_err(), "a client without the CA connected");
    let refused = Command::new(binary()).args(["--server", &base, "history"]).output().unwrap();
    assert!(!refused.status.success(), "the CLI without --tls-ca connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_replicates_over_tls() {
    let certificates = Certificates::make();
    let directory = tempfile::TempDir::new().unwrap();
    let addresses: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let client = certificates.client();
    let mut nodes = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let mut arguments: Vec<String> = [
            "--node-id",
            &(index + 1).to_string(),
            "--listen",
            address,
            "--advertise",
            address,
            "--cluster-secret",
            "tls-test-secret",
            "--tls-ca",
        ]
        .map(str::to_string)
        .to_vec();
        arguments.push(certificates.path("ca.pem").display().to_string());
        arguments.extend(certificates.server_flags());
        nodes.push(Node::spawn(&directory.path().join(format!("node-{}", index + 1)), &arguments));
    }
    for (address, node) in addresses.iter().zip(&nodes) {
        wait_until("a member", &client, &format!("https://{address}/healthz"), node).await;
    }
    let members: Vec<String> =
        addresses.iter().enumerate().map(|(index, address)| format!("{}={address}", index + 1)).collect();
    let initialised =
        cli(&certificates, &format!("https://{}", addresses[0]), &["cluster", "init", "--members", &members.join(",")]);
    assert!(initialised.status.success(), "{}", String::from_utf8_lossy(&initialised.stderr));
    for (address, node) in addresses.iter().zip(&nodes) {
        wait_until("a ready member", &client, &format!("https://{address}/readyz"), node).await;
    }

    // Appends through every member: followers forward to the leader over the peers' TLS.
    for (index, address) in addresses.iter().enumerate() {
        let response = client
            .post(format!("https://{address}/v1/events"))
            .json(&json!({"events": [{"type": "app.note", "stream": "tls", "data": {"via": index}}]}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            status,
            201,
            "via node {}: {}; log: {}",
            index + 1,
            response.text().await.unwrap(),
            nodes[index].log()
        );
    }
    for address in &addresses {
        let page: Value =
            client.get(format!("https://{address}/v1/events?from_seq=1")).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["events"].as_array().unwrap().len(), 3, "{address}: {page}");
    }
}
