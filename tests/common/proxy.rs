//! A TCP proxy for one directed link between two nodes, with a switch the test controls.
//!
//! Every proxy runs on one shared tokio runtime of its own (two worker threads), so the links keep
//! forwarding whatever the test's runtime is doing, and a test that blocks a thread for a moment
//! does not stall the cluster's traffic.
//!
//! [`Proxy::cut`] resets every open connection and, while cut, accepts and immediately resets new
//! ones: a node dialling through a cut link sees its connection fail at once. [`Proxy::heal`]
//! restores forwarding. Dropping the proxy stops its listener and all of its connections.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest a proxied connection waits for its target to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Closed,
}

struct Shared {
    target: Mutex<String>,
    mode: watch::Sender<Mode>,
    /// Connections currently forwarding (or connecting).
    active: AtomicUsize,
    /// Connections accepted since the proxy started.
    accepted: AtomicU64,
    /// Connections refused (reset at once) because the link was cut.
    refused: AtomicU64,
}

/// One directed link: listens on 127.0.0.1 on a free port and forwards to its target.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime")
    })
}

impl Proxy {
    /// Starts a proxy to `target` (`HOST:PORT`). The target may not be listening yet.
    pub fn start(target: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        listener.set_nonblocking(true).expect("non-blocking proxy listener");
        let port = listener.local_addr().unwrap().port();
        let (mode, _) = watch::channel(Mode::Open);
        let shared = Arc::new(Shared {
            target: Mutex::new(target.to_string()),
            mode,
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let handle = runtime().handle().clone();
        let task_shared = shared.clone();
        handle.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("register the proxy listener");
            accept_loop(listener, task_shared).await;
        });
        Proxy { port, shared }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes where new connections go (open connections keep their target).
    pub fn set_target(&self, target: &str) {
        *self.shared.target.lock().unwrap() = target.to_string();
    }

    pub fn target(&self) -> String {
        self.shared.target.lock().unwrap().clone()
    }

    /// Resets every open connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.shared.mode.send_if_modified(|mode| {
            if *mode == Mode::Open {
                *mode = Mode::Cut;
                true
            } else {
                false
            }
        });
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.shared.mode.send_if_modified(|mode| {
            if *mode == Mode::Cut {
                *mode = Mode::Open;
                true
            } else {
                false
            }
        });
    }

    pub fn is_cut(&self) -> bool {
        *self.shared.mode.borrow() != Mode::Open
    }

    /// Connections currently open through this proxy.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// (accepted, refused while cut) since the start.
    pub fn counters(&self) -> (u64, u64) {
        (self.shared.accepted.load(Ordering::Relaxed), self.shared.refused.load(Ordering::Relaxed))
    }

    /// Waits (up to `limit`) until no connection is open through this proxy; true if none is.
    pub async fn wait_drained(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.active() > 0 {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.mode.send_replace(Mode::Closed);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut mode = shared.mode.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else {
                    // Out of file descriptors or similar: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if *shared.mode.borrow() != Mode::Open {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    reset(inbound);
                    continue;
                }
                tokio::spawn(forward(inbound, shared.clone()));
            }
            _ = until(&mut mode, |mode| *mode == Mode::Closed) => return,
        }
    }
}

/// Counts a connection as active for as long as it lives.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn forward(mut inbound: TcpStream, shared: Arc<Shared>) {
    shared.active.fetch_add(1, Ordering::SeqCst);
    let _guard = ActiveGuard(shared.clone());
    let mut mode = shared.mode.subscribe();
    let target = shared.target.lock().unwrap().clone();
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target));
    let mut outbound = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(stream)) => stream,
            // The target is down (killed node) or not accepting: the dialler sees a reset.
            _ => return reset(inbound),
        },
        _ = until(&mut mode, |mode| *mode != Mode::Open) => return reset(inbound),
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = until(&mut mode, |mode| *mode != Mode::Open) => {
            reset(inbound);
            reset(outbound);
        }
    }
}

/// Resolves once the mode satisfies `done` (at once if it already does, or if the proxy is gone).
async fn until(mode: &mut watch::Receiver<Mode>, done: impl FnMut(&Mode) -> bool) {
    let _ = mode.wait_for(done).await;
}

/// Closes a connection with a RST rather than a FIN, like a link that went away.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
