//! Browser tests: the operator's page at `/` in a real headless chromium, driven over WebDriver
//! (tests/common/webdriver.rs). They need chromium and chromium-driver
//! (`scripts/prerequisites.sh --tests`).

mod common;

use common::webdriver::{artefact_directory, Browser};
use common::Server;

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
