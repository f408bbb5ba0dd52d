//! Counters for `GET /metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetlog_raft::RejectionCode;

pub struct Metrics {
    appends: AtomicU64,
    events_appended: AtomicU64,
    duplicates: AtomicU64,
    rejections: Vec<AtomicU64>,
    pub subscribers_active: AtomicU64,
    access_refusals: AtomicU64,
    /// Connections open now (counted from accept to close).
    pub connections_open: AtomicU64,
    /// Connections refused over the connection cap.
    pub connections_refused: AtomicU64,
    /// Connections and streams closed because their client stopped reading.
    pub send_timeouts: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            appends: AtomicU64::new(0),
            events_appended: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejections: RejectionCode::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            subscribers_active: AtomicU64::new(0),
            access_refusals: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            send_timeouts: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn appended(&self, events: usize, duplicate: bool) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.events_appended.fetch_add(events as u64, Ordering::Relaxed);
        }
    }

    pub fn rejected(&self, code: RejectionCode) {
        if let Some(position) = RejectionCode::ALL.iter().position(|known| *known == code) {
            self.rejections[position].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request the gate refused: no token, an unknown or expired one, a forbidden action, or
    /// one over its token's rate.
    pub fn refused(&self) {
        self.access_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the counters plus the gauges passed in.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut text = String::new();
        let counters = [
            (
                "fleetlog_append_requests_total",
                "Append requests that were committed (including replays).",
                &self.appends,
            ),
            (
                "fleetlog_events_appended_total",
                "Events written to the ledger by this node's clients.",
                &self.events_appended,
            ),
            ("fleetlog_append_duplicates_total", "Append requests that replayed known ids.", &self.duplicates),
            (
                "fleetlog_access_refusals_total",
                "Requests the gate refused: token (401), role or host (403), rate (429).",
                &self.access_refusals,
            ),
            (
                "fleetlog_connections_refused_total",
                "Connections refused over the connection cap (503 too_many_connections).",
                &self.connections_refused,
            ),
            (
                "fleetlog_send_timeouts_total",
                "Connections and streams closed because a write made no progress within the send timeout.",
                &self.send_timeouts,
            ),
        ];
        for (name, help, value) in counters {
            let _ =
                writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            text,
            "# HELP fleetlog_rejections_total Append requests refused, by code.\n# TYPE fleetlog_rejections_total counter"
        );
        for (code, value) in RejectionCode::ALL.iter().zip(&self.rejections) {
            let count = value.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(text, "fleetlog_rejections_total{{code=\"{}\"}} {count}", code.as_str());
            }
        }
        let subscribers = self.subscribers_active.load(Ordering::Relaxed) as f64;
        let connections = self.connections_open.load(Ordering::Relaxed) as f64;
        let mut all_gauges: Vec<(&str, &str, f64)> = vec![
            ("fleetlog_subscribers", "Open subscribe and watch streams.", subscribers),
            ("fleetlog_connections", "Open client and peer connections.", connections),
        ];
        all_gauges.extend_from_slice(gauges);
        for (name, help, value) in all_gauges {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        text
    }
}

/// The process `process` names: `self` or a pid.
fn process(process: &str) -> Option<procfs::process::Process> {
    match process {
        "self" => procfs::process::Process::myself().ok(),
        pid => procfs::process::Process::new(pid.parse().ok()?).ok(),
    }
}

/// CPU time (user + system) a process has used (`self` for this one); 0 where it cannot be read.
/// The kernel counts it in clock ticks of `sysconf(_SC_CLK_TCK)` each.
pub fn cpu_seconds(process_name: &str) -> f64 {
    let Some(stat) = process(process_name).and_then(|process| process.stat().ok()) else {
        return 0.0;
    };
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

/// Resident set size of a process (`self` for this one); 0 where it cannot be read.
pub fn resident_bytes(process_name: &str) -> u64 {
    let status = process(process_name).and_then(|process| process.status().ok());
    status.and_then(|status| status.vmrss).unwrap_or(0) * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        // 300 ms spent spinning is at least 0.2 s of CPU (ticks are 10 ms apart).
        let seconds = cpu_seconds("self");
        assert!((0.2..3600.0).contains(&seconds), "{seconds}");
        let own_pid = std::process::id().to_string();
        assert!((cpu_seconds(&own_pid) - seconds).abs() < 1.0);
        assert!(resident_bytes("self") > 1024 * 1024);
    }

    #[test]
    fn a_missing_process_reads_as_zero() {
        assert_eq!(cpu_seconds("not-a-pid"), 0.0);
        assert_eq!(resident_bytes("4194305"), 0);
    }
}
