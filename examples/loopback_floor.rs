//! What this machine allows for watch fan-out, with nothing of fleetlog in the way: one runtime
//! (2 worker threads, like a server) writes one 200-byte message to each of N loopback
//! connections at once, another (2 worker threads, like a load generator) reads them, and the
//! time until the first, median and last reader got its message is printed. It bounds what
//! `fleetlog bench fanout` can show on the same machine.
//!
//!   cargo run --example loopback_floor -- 9000        (N ≤ 9,500: both ends share one process's
//!                                                      20,000 open files)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MESSAGE_BYTES: usize = 200;
const ROUNDS: usize = 5;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn main() {
    let connections: usize = std::env::args().nth(1).and_then(|text| text.parse().ok()).unwrap_or(9_000);
    let (server, client) = (runtime(), runtime());
    let listener = server.block_on(TcpListener::bind("127.0.0.1:0")).expect("a listener");
    let address = listener.local_addr().expect("an address");
    let (accepted_sender, accepted) = std::sync::mpsc::channel::<TcpStream>();
    server.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            if accepted_sender.send(stream).is_err() {
                return;
            }
        }
    });
    let received = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(connections)));
    for _ in 0..connections {
        let (received, arrivals) = (received.clone(), arrivals.clone());
        client.spawn(async move {
            let mut stream = TcpStream::connect(address).await.expect("a connection");
            let mut buffer = [0u8; 2048];
            while let Ok(read) = stream.read(&mut buffer).await {
                if read == 0 {
                    return;
                }
                let now = Instant::now();
                arrivals.lock().expect("arrivals").push(now);
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut streams: Vec<TcpStream> = (0..connections).map(|_| accepted.recv().expect("accepted")).collect();
    std::thread::sleep(Duration::from_secs(1));
    let message = Arc::new(vec![b'x'; MESSAGE_BYTES]);
    for round in 1..=ROUNDS {
        received.store(0, Ordering::Relaxed);
        arrivals.lock().expect("arrivals").clear();
        // Every writer waits on one signal, as every watcher waits on one applied batch.
        let go = Arc::new(tokio::sync::Notify::new());
        let writers: Vec<_> = streams
            .drain(..)
            .map(|mut stream| {
                let (go, message) = (go.clone(), message.clone());
                server.spawn(async move {
                    go.notified().await;
                    stream.write_all(&message).await.expect("a write");
                    stream
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        go.notify_waiters();
        while received.load(Ordering::Relaxed) < connections {
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut times = arrivals.lock().expect("arrivals").clone();
        times.sort();
        let at = |index: usize| (times[index] - sent).as_secs_f64() * 1000.0;
        println!(
            "round {round}: {connections} connections, first {:.1} ms, median {:.1} ms, last {:.1} ms",
            at(0),
            at(connections / 2),
            at(connections - 1)
        );
        streams = writers.into_iter().map(|writer| server.block_on(writer).expect("a writer")).collect();
    }
}
