//! The machine's own fan-out floor, with nothing of fleetlog in the way: one runtime (2 worker
//! threads, like a server) writes one 200-byte message to each of N loopback connections at once,
//! another (2 worker threads, like a load generator) reads them, and the time until the first,
//! median and last reader got its message is measured. It bounds what `fleetlog bench fanout`
//! can show on the same machine, and `bench fanout` runs it after its own rounds.
//!
//! Both ends live in this process, so N is bounded by half its free open files
//! ([`connections_possible`], at most `FLOOR_CONNECTIONS_MAX`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MESSAGE_BYTES: usize = 200;
/// Both ends of every connection are this process's: 2 × 9,500 files fit the 20,000 allowed here.
pub const FLOOR_CONNECTIONS_MAX: usize = 9_500;

/// One round: when the first, the median and the last reader got its message.
#[derive(Clone, Copy, Debug)]
pub struct FloorRound {
    pub first: Duration,
    pub median: Duration,
    pub last: Duration,
}

/// How many loopback connections the floor can open now: both ends count against this process's
/// open-file limit, beside the files it already holds.
pub fn connections_possible(wanted: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    let open = std::fs::read_dir("/proc/self/fd").map(|entries| entries.count()).unwrap_or(0);
    let free = limit.map_or(FLOOR_CONNECTIONS_MAX * 2, |limit| limit.saturating_sub(open + 200));
    wanted.min(free / 2).clamp(1, FLOOR_CONNECTIONS_MAX)
}

/// Measures `rounds` rounds over `connections` loopback connections (see
/// [`connections_possible`]), on threads of its own.
pub async fn measure(connections: usize, rounds: usize) -> Result<Vec<FloorRound>> {
    let worker = std::thread::Builder::new()
        .name("bench-floor".into())
        .spawn(move || measure_blocking(connections, rounds))
        .context("start the floor thread")?;
    tokio::task::spawn_blocking(move || worker.join()).await?.map_err(|_| anyhow!("the floor thread panicked"))?
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn measure_blocking(connections: usize, rounds: usize) -> Result<Vec<FloorRound>> {
    let (server, client) = (runtime()?, runtime()?);
    // A large backlog, and connections opened a few hundred at a time: thousands of SYNs at once
    // overflow a small accept queue and wait for retransmits.
    let listener = server
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind("127.0.0.1:0".parse().expect("a loopback address"))?;
            socket.listen(4_096)
        })
        .context("a loopback listener")?;
    let opening = Arc::new(tokio::sync::Semaphore::new(256));
    let address = listener.local_addr()?;
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
        let (received, arrivals, opening) = (received.clone(), arrivals.clone(), opening.clone());
        client.spawn(async move {
            let permit = opening.acquire_owned().await;
            let Ok(mut stream) = TcpStream::connect(address).await else { return };
            drop(permit);
            let mut buffer = [0u8; 2048];
            while let Ok(read) = stream.read(&mut buffer).await {
                if read == 0 {
                    return;
                }
                let now = Instant::now();
                arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(now);
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = accepted
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("only {} of {connections} loopback connections opened", streams.len()))?;
        streams.push(stream);
    }
    std::thread::sleep(Duration::from_secs(1));
    let message = Arc::new(vec![b'x'; MESSAGE_BYTES]);
    let mut measured = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        received.store(0, Ordering::Relaxed);
        arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        // Every writer waits on one signal, as every watcher waits on one applied step.
        let go = Arc::new(tokio::sync::Notify::new());
        let writers: Vec<_> = streams
            .drain(..)
            .map(|mut stream| {
                let (go, message) = (go.clone(), message.clone());
                server.spawn(async move {
                    go.notified().await;
                    let _ = stream.write_all(&message).await;
                    stream
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        go.notify_waiters();
        let deadline = sent + Duration::from_secs(30);
        while received.load(Ordering::Relaxed) < connections && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut times = arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        times.sort();
        if times.is_empty() {
            return Err(anyhow!("no loopback reader got its message"));
        }
        let at = |index: usize| times[index.min(times.len() - 1)] - sent;
        measured.push(FloorRound { first: at(0), median: at(times.len() / 2), last: at(times.len() - 1) });
        for writer in writers {
            streams.push(server.block_on(writer)?);
        }
    }
    Ok(measured)
}

/// The median over rounds of one figure.
pub fn median_of(rounds: &[FloorRound], figure: impl Fn(&FloorRound) -> Duration) -> Duration {
    let mut values: Vec<Duration> = rounds.iter().map(figure).collect();
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
