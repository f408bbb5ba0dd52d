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

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat` (`self` for this one);
/// 0 where there is no such file. The kernel reports it in USER_HZ ticks, which are 1/100 s on
/// Linux whatever the kernel's own tick rate.
pub fn cpu_seconds(process: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Resident set size of a process, from the `VmRSS` line of `/proc/<pid>/status` (`self` for
/// this one); 0 where there is no such file.
pub fn resident_bytes(process: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    let kibibytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kibibytes * 1024
}
