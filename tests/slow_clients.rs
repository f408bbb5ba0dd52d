//! Clients that hold connections without finishing their requests (slow-loris) are cut off after
//! the client timeout, on the router's connections and on stream connections alike.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT_SECONDS: u64 = 2;

/// Sends `start`, then one more header line every 300 ms; returns how long the server kept the
/// connection open (the first write or read that fails, or the end of the stream).
async fn trickle_head(address: &str, start: &[u8]) -> Duration {
    let mut connection = TcpStream::connect(address).await.unwrap();
    let began = Instant::now();
    connection.write_all(start).await.unwrap();
    let mut buffer = [0u8; 1024];
    while began.elapsed() < Duration::from_secs(20) {
        if connection.write_all(b"x-slow: yes\r\n").await.is_err() {
            return began.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(300), connection.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return began.elapsed(),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    panic!("the server kept a connection with an endless request head open for 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_after_the_client_timeout() {
    let directory = tempfile::TempDir::new().unwrap();
    let timeout = TIMEOUT_SECONDS.to_string();
    let server = Server::start_with(&directory.path().join("data"), &["--client-timeout-seconds", &timeout]).await;
    let limit = Duration::from_secs(TIMEOUT_SECONDS + 3);

    // A request head that never ends, to the router and to the stream listener.
    for start in [&b"GET /v1/fleet HTTP/1.1\r\nhost: x\r\n"[..], b"GET /v1/subscribe HTTP/1.1\r\nhost: x\r\n"] {
        let held = trickle_head(&server.address, start).await;
        assert!(held < limit, "{:?} held the connection {held:?}", String::from_utf8_lossy(start));
    }

    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&server.address).await.unwrap();
    let began = Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(limit, silent.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a silent connection stayed open for {:?}", began.elapsed());

    // A body that stops arriving: 408 with a stable code.
    let mut slow_body = TcpStream::connect(&server.address).await.unwrap();
    slow_body
        .write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ev")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, slow_body.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");

    // Nothing was written, and the server still serves.
    assert_eq!(server.head().await, 0);
    let (status, _) = server.get("/v1/fleet").await;
    assert_eq!(status, 200);
}
