//! A `fleetlog serve --node-id` process that nobody initialises: it answers HTTP but has no
//! cluster, hence no recorded identity and no checkpoint key. The common servers cannot stand in
//! for it, since they are single-node clusters that initialise themselves at once.
//!
//! Declared by the tests that use it (`#[path = "common/unjoined.rs"] mod unjoined;`), next to
//! `mod common;`.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{binary, free_port};

pub struct UnjoinedMember {
    pub url: String,
    child: Child,
    log: std::path::PathBuf,
    _directory: tempfile::TempDir,
}

impl UnjoinedMember {
    /// Starts node 1 of a cluster that is never formed, and waits until it answers `/healthz`
    /// (it never becomes ready: it has no leader).
    pub async fn start() -> UnjoinedMember {
        let directory = tempfile::TempDir::new().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let log = directory.path().join("serve.log");
        let child = Command::new(binary())
            .args(["serve", "--node-id", "1", "--listen", &address, "--advertise", &address, "--data"])
            .arg(directory.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn fleetlog serve --node-id 1");
        let member = UnjoinedMember { url: format!("http://{address}"), child, log, _directory: directory };
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(format!("{}/healthz", member.url)).send().await {
                if response.status().is_success() {
                    return member;
                }
            }
            assert!(Instant::now() < deadline, "the member never answered /healthz; log: {}", member.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for UnjoinedMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
