//! The simulation's openraft type config and async runtime.
//!
//! The type config differs from the real one ([`fleetlog_raft::consensus::types::TypeConfig`])
//! only in its runtime, so entries, log ids, votes and memberships are the very same types, and
//! the state machine applies entries with the real code. The runtime is tokio (on one thread,
//! with a paused clock) with two changes that make a run depend on its seed alone:
//! - openraft's random draws (election timeouts, the first tick) come from a generator per
//!   thread seeded by the run ([`seed_this_thread`]);
//! - its watch channels wake their waiters in the order they began to wait. tokio's own watch
//!   spreads waiters over several lists chosen at random, so the order in which replication
//!   tasks wake, and with it every later message, would differ from run to run.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use fleetlog_raft::consensus::types::LedgerResponse;
use fleetlog_raft::domain::event::LedgerCommand;
use openraft_rt::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use openraft_rt::{AsyncRuntime, OptionalSend, OptionalSync};
use openraft_rt_tokio::{TokioInstant, TokioMpsc, TokioMutex, TokioOneshot, TokioRuntime};
use rand_openraft::rngs::SmallRng;
use rand_openraft::{RngExt, SeedableRng};
use tokio::sync::Notify;

openraft::declare_raft_types!(
    /// fleetlog's Raft types on the simulation's runtime.
    pub SimConfig:
        D = LedgerCommand,
        R = LedgerResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = SimRuntime,
);

thread_local! {
    /// The seeded generator of this thread.
    static SEEDED: RefCell<SmallRng> = RefCell::new(SmallRng::seed_from_u64(0));
}

/// From now on, openraft's random draws on this thread follow `seed`. A run calls this on its
/// thread before it starts any node.
pub fn seed_this_thread(seed: u64) {
    SEEDED.with(|seeded| *seeded.borrow_mut() = SmallRng::seed_from_u64(seed));
}

/// tokio, with seeded random draws and ordered watch channels.
pub struct SimRuntime {
    tokio: TokioRuntime,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SimRuntime").finish_non_exhaustive()
    }
}

impl AsyncRuntime for SimRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> SmallRng {
        SEEDED.with(|seeded| SmallRng::seed_from_u64(seeded.borrow_mut().random()))
    }

    type Mpsc = TokioMpsc;
    type Watch = OrderedWatch;
    type Oneshot = TokioOneshot;
    type Mutex<T: OptionalSend + 'static> = TokioMutex<T>;

    fn new(threads: usize) -> Self {
        SimRuntime { tokio: TokioRuntime::new(threads) }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.tokio.block_on(future)
    }
}

/// A watch channel whose waiters wake in the order they began to wait.
pub struct OrderedWatch;

struct Shared<T> {
    value: RwLock<T>,
    /// Bumped by every change of the value.
    version: AtomicU64,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    changed: Notify,
}

impl<T> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct OrderedSender<T> {
    shared: Arc<Shared<T>>,
}

pub struct OrderedReceiver<T> {
    shared: Arc<Shared<T>>,
    /// The version this receiver has seen.
    seen: u64,
}

impl<T> Clone for OrderedSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        OrderedSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for OrderedSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last sender is gone: waiters learn the channel closed.
            self.shared.changed.notify_waiters();
        }
    }
}

impl<T> Clone for OrderedReceiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        OrderedReceiver { shared: self.shared.clone(), seen: self.seen }
    }
}

impl<T> Drop for OrderedReceiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watch for OrderedWatch {
    type Sender<T: OptionalSend + OptionalSync> = OrderedSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = OrderedReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (OrderedSender<T>, OrderedReceiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            version: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            changed: Notify::new(),
        });
        (OrderedSender { shared: shared.clone() }, OrderedReceiver { shared, seen: 0 })
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<OrderedWatch, T> for OrderedSender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        // As tokio's: a value nobody can receive is handed back.
        if self.shared.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(value));
        }
        self.send_if_modified(|current| {
            *current = value;
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut value = self.shared.value.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let modified = modify(&mut value);
            if modified {
                self.shared.version.fetch_add(1, Ordering::SeqCst);
            }
            modified
        };
        if modified {
            self.shared.changed.notify_waiters();
        }
        modified
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    fn subscribe(&self) -> OrderedReceiver<T> {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        OrderedReceiver { shared: self.shared.clone(), seen: self.shared.version.load(Ordering::SeqCst) }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<OrderedWatch, T> for OrderedReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            let notified = self.shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the checks: a change right after them still wakes this waiter.
            notified.as_mut().enable();
            let version = self.shared.version.load(Ordering::SeqCst);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.senders.load(Ordering::SeqCst) == 0 {
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        let value = self.shared.read();
        self.seen = self.shared.version.load(Ordering::SeqCst);
        value
    }
}

#[cfg(test)]
mod tests {
    use rand_openraft::Rng;

    use super::*;

    fn draws() -> Vec<u64> {
        (0..4).map(|_| SimRuntime::thread_rng().next_u64()).collect()
    }

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        seed_this_thread(7);
        let first = draws();
        seed_this_thread(7);
        assert_eq!(draws(), first);
        seed_this_thread(8);
        assert_ne!(draws(), first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_wakes_its_waiters_in_order_and_reports_closing() {
        let (sender, receiver) = OrderedWatch::channel(0u32);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for index in 0..6 {
            let (mut receiver, order) = (receiver.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                receiver.changed().await.unwrap();
                order.lock().unwrap().push(index);
                receiver.changed().await
            }));
            tokio::task::yield_now().await;
        }
        sender.send(1).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(*receiver.borrow_watched(), 1);
        assert!(!sender.send_if_modified(|value| *value == 2));
        drop(sender);
        for waiter in waiters {
            assert!(waiter.await.unwrap().is_err(), "a waiter learns the sender is gone");
        }
    }
}
