//! The trace of one run: what happened, stamped with simulated time. The same seed writes the
//! same trace, byte for byte; its digest is what the determinism check compares.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Clones share one trace.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<TraceInner>>,
}

struct TraceInner {
    started: Instant,
    /// Every line is hashed; only kept when the run was asked to print them.
    lines: Option<Vec<String>>,
    digest: Sha256,
    count: u64,
}

impl Trace {
    /// Starts the clock of the trace now (simulated time).
    pub fn new(keep_lines: bool) -> Trace {
        Trace {
            inner: Arc::new(Mutex::new(TraceInner {
                started: Instant::now(),
                lines: keep_lines.then(Vec::new),
                digest: Sha256::new(),
                count: 0,
            })),
        }
    }

    /// Simulated time since the start, in milliseconds.
    pub fn elapsed_millis(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.started.elapsed().as_millis() as u64
    }

    pub fn line(&self, text: impl AsRef<str>) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let millis = inner.started.elapsed().as_millis();
        let line = format!("{:>4}.{:03}s {}", millis / 1000, millis % 1000, text.as_ref());
        inner.digest.update(line.as_bytes());
        inner.digest.update(b"\n");
        inner.count += 1;
        if let Some(lines) = &mut inner.lines {
            lines.push(line);
        }
    }

    /// The lines kept (empty unless asked for), the number of lines and their digest.
    pub fn finish(&self) -> (Vec<String>, u64, String) {
        let inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let digest = hex::encode(inner.digest.clone().finalize());
        (inner.lines.clone().unwrap_or_default(), inner.count, digest)
    }
}
