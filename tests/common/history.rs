//! A history of client operations against a cluster, and the one checker every fault test uses.
//!
//! Writers append one event per operation, each with an event id unique to the run. An outcome
//! the client cannot know (timeout, connection error, 5xx) is retried with the SAME id, which the
//! ledger deduplicates, until it is acknowledged or the writer gives up; the operation spans all of
//! its attempts, from the first request sent to the last response received. Readers page through
//! the log and record the head they were told and every event they saw.
//!
//! [`History::check`] compares all of that with the final log (identical on every replica, which
//! the cluster harness checks before handing it over):
//! - acknowledged appends have unique seqs, and each is in the final log exactly once, at its
//!   acknowledged seq, with its acknowledged hash;
//! - an append whose outcome stayed unknown is in the final log at most once; one refused with a
//!   4xx is absent; no event with this run's id prefix is there without an operation behind it;
//! - real-time order: if an append completed before another was invoked, its seq is lower (also
//!   against unknown appends that did land);
//! - reads: every event a read saw is the final log's event at that seq; a linearizable read sees
//!   every append acknowledged before it was invoked; no read sees an append invoked after it
//!   completed; the head a sequential linearizable reader is told never decreases.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What a client knows about one append once it stopped trying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (201, or 200 for a replay of an earlier attempt) at this seq with this hash.
    Acked { seq: u64, hash: String },
    /// Refused with a 4xx: definitely not written.
    Failed(String),
    /// Never learned: written at most once.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct Attempt {
    pub node: u64,
    pub at: Instant,
    pub result: String,
}

#[derive(Clone, Debug)]
pub struct WriteOp {
    pub client: usize,
    pub id: String,
    pub tag: Option<String>,
    pub invoke: Instant,
    pub complete: Instant,
    pub outcome: Outcome,
    pub attempts: Vec<Attempt>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenEvent {
    pub seq: u64,
    pub id: String,
    pub hash: String,
}

#[derive(Clone, Debug)]
pub struct ReadOp {
    pub reader: usize,
    pub node: u64,
    pub linearizable: bool,
    pub invoke: Instant,
    pub complete: Instant,
    pub head: u64,
    pub events: Vec<SeenEvent>,
}

/// Nodes a client may talk to, shared with the test so it can change them (a node re-added
/// under a new id).
#[derive(Clone)]
pub struct Endpoints(Arc<RwLock<Vec<(u64, String)>>>);

impl Endpoints {
    pub fn new(list: Vec<(u64, String)>) -> Endpoints {
        assert!(!list.is_empty(), "a client needs at least one node");
        Endpoints(Arc::new(RwLock::new(list)))
    }

    pub fn set(&self, list: Vec<(u64, String)>) {
        assert!(!list.is_empty(), "a client needs at least one node");
        *self.0.write().unwrap() = list;
    }

    pub fn list(&self) -> Vec<(u64, String)> {
        self.0.read().unwrap().clone()
    }
}

/// Set once to stop every client of a history; remembers when.
#[derive(Default)]
pub struct Stop {
    flag: AtomicBool,
    at: Mutex<Option<Instant>>,
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    pub fn stop(&self) {
        self.at.lock().unwrap().get_or_insert_with(Instant::now);
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn stopped_at(&self) -> Option<Instant> {
        *self.at.lock().unwrap()
    }
}

pub struct WriterConfig {
    pub endpoints: Endpoints,
    /// Index (into the endpoints) of the node to talk to first.
    pub first: usize,
    /// Longest one request may take before its outcome counts as unknown.
    pub attempt_timeout: Duration,
    /// Retry an unknown outcome with the same id (on the next node); false: one attempt per append.
    pub retry_unknown: bool,
    /// After the stop signal, how long an append still in progress keeps retrying.
    pub give_up_after_stop: Duration,
    /// Stop after this many appends (None: until the stop signal).
    pub max_ops: Option<usize>,
    /// Pause between two appends.
    pub pause: Duration,
    /// Label recorded on every operation of this writer.
    pub tag: Option<String>,
}

impl WriterConfig {
    /// Retries unknown outcomes, starting on endpoint `first`.
    pub fn new(endpoints: &Endpoints, first: usize) -> WriterConfig {
        WriterConfig {
            endpoints: endpoints.clone(),
            first,
            attempt_timeout: Duration::from_secs(5),
            retry_unknown: true,
            give_up_after_stop: Duration::from_secs(30),
            max_ops: None,
            pause: Duration::from_millis(2),
            tag: None,
        }
    }
}

pub struct ReaderConfig {
    pub node: u64,
    pub url: String,
    pub linearizable: bool,
    pub timeout: Duration,
    pub pause: Duration,
}

/// Every operation of one run; clients append to it concurrently.
pub struct History {
    /// Prefix of every event id of this run.
    pub run: String,
    pub started: Instant,
    writes: Mutex<Vec<WriteOp>>,
    reads: Mutex<Vec<ReadOp>>,
    clients: AtomicUsize,
    http: reqwest::Client,
}

/// Counts of a checked history.
#[derive(Debug, Default)]
pub struct Summary {
    pub writes: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    pub unknown_present: usize,
    pub retried: usize,
    pub reads: usize,
    pub linearizable_reads: usize,
    pub events_seen: usize,
    pub final_len: usize,
}

impl History {
    pub fn new() -> Arc<History> {
        History::with_run(&format!("r{:08x}", rand::random::<u32>()))
    }

    /// A history whose event ids start with `run`.
    pub fn with_run(run: &str) -> Arc<History> {
        let run = run.to_string();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Arc::new(History {
            run,
            started: Instant::now(),
            writes: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            clients: AtomicUsize::new(0),
            http,
        })
    }

    pub fn writes(&self) -> Vec<WriteOp> {
        self.writes.lock().unwrap().clone()
    }

    pub fn reads(&self) -> Vec<ReadOp> {
        self.reads.lock().unwrap().clone()
    }

    pub fn record_write(&self, op: WriteOp) {
        self.writes.lock().unwrap().push(op);
    }

    pub fn record_read(&self, op: ReadOp) {
        self.reads.lock().unwrap().push(op);
    }

    /// Acknowledged appends that completed within [from, to].
    pub fn acked_between(&self, from: Instant, to: Instant) -> usize {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Acked { .. }) && op.complete >= from && op.complete <= to)
            .count()
    }

    pub fn acked(&self) -> usize {
        self.writes.lock().unwrap().iter().filter(|op| matches!(op.outcome, Outcome::Acked { .. })).count()
    }

    /// Starts a writer task; it stops after the current append once `stop` is set.
    pub fn spawn_writer(self: &Arc<Self>, config: WriterConfig, stop: &Arc<Stop>) -> tokio::task::JoinHandle<()> {
        let history = self.clone();
        let stop = stop.clone();
        let client = self.clients.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move { history.run_writer(client, config, stop).await })
    }

    /// Starts a reader task that reads until `stop` is set.
    pub fn spawn_reader(self: &Arc<Self>, config: ReaderConfig, stop: &Arc<Stop>) -> tokio::task::JoinHandle<()> {
        let history = self.clone();
        let stop = stop.clone();
        let reader = self.clients.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move { history.run_reader(reader, config, stop).await })
    }

    /// The body of one append of this history.
    pub fn event_body(&self, client: usize, id: &str, n: usize) -> Value {
        json!({"events": [{
            "id": id,
            "type": "fault.write",
            "stream": format!("{}-c{client}", self.run),
            "data": {"client": client, "n": n},
        }]})
    }

    async fn run_writer(&self, client: usize, config: WriterConfig, stop: Arc<Stop>) {
        let mut at = config.first;
        let mut n = 0;
        while !stop.is_stopped() && config.max_ops.is_none_or(|max| n < max) {
            let id = format!("{}-c{client}-{n}", self.run);
            let body = self.event_body(client, &id, n);
            n += 1;
            let invoke = Instant::now();
            let mut attempts = Vec::new();
            let mut backoff = Duration::from_millis(20);
            let outcome = loop {
                let endpoints = config.endpoints.list();
                let (node, url) = endpoints[at % endpoints.len()].clone();
                let sent = Instant::now();
                let result = self.attempt_append(&url, &body, config.attempt_timeout).await;
                let description = match &result {
                    AttemptResult::Acked { seq, duplicate, .. } => format!("acked seq {seq} duplicate {duplicate}"),
                    AttemptResult::Refused(text) => format!("refused: {text}"),
                    AttemptResult::Unknown(text) => format!("unknown: {text}"),
                };
                attempts.push(Attempt { node, at: sent, result: description });
                match result {
                    AttemptResult::Acked { seq, hash, .. } => break Outcome::Acked { seq, hash },
                    AttemptResult::Refused(text) => break Outcome::Failed(text),
                    AttemptResult::Unknown(text) => {
                        let given_up = stop
                            .stopped_at()
                            .is_some_and(|stopped| Instant::now() > stopped + config.give_up_after_stop);
                        if !config.retry_unknown || given_up {
                            break Outcome::Unknown(text);
                        }
                        // Another node may be up or know the leader; same id, so at most once.
                        at += 1;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(300));
                    }
                }
            };
            // A fresh id answered "duplicate" at once: the ledger confused it with another event.
            if matches!(outcome, Outcome::Acked { .. })
                && attempts.len() == 1
                && attempts[0].result.contains("duplicate true")
            {
                attempts[0].result.push_str(FIRST_ATTEMPT_DUPLICATE);
            }
            self.record_write(WriteOp {
                client,
                id,
                tag: config.tag.clone(),
                invoke,
                complete: Instant::now(),
                outcome,
                attempts,
            });
            if !config.pause.is_zero() {
                tokio::time::sleep(config.pause).await;
            }
        }
    }

    async fn attempt_append(&self, url: &str, body: &Value, timeout: Duration) -> AttemptResult {
        let request = self.http.post(format!("{url}/v1/events")).json(body).timeout(timeout);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return AttemptResult::Unknown(format!("transport: {error}")),
        };
        let status = response.status().as_u16();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return AttemptResult::Unknown(format!("HTTP {status}, body lost: {error}")),
        };
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            200 | 201 => {
                let first = &answer["events"][0];
                match (first["seq"].as_u64(), first["hash"].as_str()) {
                    (Some(seq), Some(hash)) => AttemptResult::Acked {
                        seq,
                        hash: hash.to_string(),
                        duplicate: answer["duplicate"].as_bool().unwrap_or(false),
                    },
                    _ => AttemptResult::Unknown(format!("HTTP {status} without a seq: {answer}")),
                }
            }
            // 408 and 429 say nothing about the write; retrying with the same id is safe.
            400..=499 if status != 408 && status != 429 => AttemptResult::Refused(format!("HTTP {status} {answer}")),
            _ => AttemptResult::Unknown(format!("HTTP {status} {}", answer["error"]["code"])),
        }
    }

    async fn run_reader(&self, reader: usize, config: ReaderConfig, stop: Arc<Stop>) {
        let mut head = 0u64;
        while !stop.is_stopped() {
            // Overlap the previous read by a few events so each read checks some known ones too.
            let from = head.saturating_sub(3).max(1);
            let mut url = format!("{}/v1/events?from_seq={from}&limit=100", config.url);
            if !config.linearizable {
                url.push_str("&consistency=local");
            }
            let invoke = Instant::now();
            let response = self.http.get(&url).timeout(config.timeout).send().await;
            let page: Option<Value> = match response {
                Ok(response) if response.status().as_u16() == 200 => response.json().await.ok(),
                _ => None,
            };
            let complete = Instant::now();
            if let Some(page) = page {
                let (Some(told), Some(events)) = (page["head_seq"].as_u64(), page["events"].as_array()) else {
                    panic!("a read of {url} answered 200 without head_seq or events: {page}");
                };
                let events = events
                    .iter()
                    .map(|event| SeenEvent {
                        seq: event["seq"].as_u64().unwrap_or(0),
                        id: event["id"].as_str().unwrap_or_default().to_string(),
                        hash: event["hash"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect();
                self.record_read(ReadOp {
                    reader,
                    node: config.node,
                    linearizable: config.linearizable,
                    invoke,
                    complete,
                    head: told,
                    events,
                });
                head = head.max(told);
            }
            tokio::time::sleep(config.pause).await;
        }
    }

    /// Checks the history against the final log; every violation found, as a sentence each.
    pub fn check(&self, final_log: &[Value]) -> (Summary, Vec<String>) {
        let writes = self.writes();
        let reads = self.reads();
        let mut violations = Vec::new();
        let mut summary = Summary { final_len: final_log.len(), ..Summary::default() };

        // The final log, by seq and by id.
        let mut at_seq: Vec<SeenEvent> = Vec::with_capacity(final_log.len());
        let mut seqs_of: HashMap<String, Vec<u64>> = HashMap::new();
        for (position, event) in final_log.iter().enumerate() {
            let seen = SeenEvent {
                seq: event["seq"].as_u64().unwrap_or(0),
                id: event["id"].as_str().unwrap_or_default().to_string(),
                hash: event["hash"].as_str().unwrap_or_default().to_string(),
            };
            if seen.seq != position as u64 + 1 {
                violations.push(format!("final log: position {} holds seq {}", position + 1, seen.seq));
            }
            seqs_of.entry(seen.id.clone()).or_default().push(seen.seq);
            at_seq.push(seen);
        }

        // Appends.
        let mut by_seq: BTreeMap<u64, &WriteOp> = BTreeMap::new();
        let known_ids: std::collections::HashSet<&str> = writes.iter().map(|op| op.id.as_str()).collect();
        // (invoke, seq) of every append that is in the final log; (complete, seq) of acknowledged ones.
        let mut present: Vec<(Instant, u64, &WriteOp)> = Vec::new();
        let mut acked_by_completion: Vec<(Instant, u64)> = Vec::new();
        summary.writes = writes.len();
        for op in &writes {
            if op.attempts.len() > 1 {
                summary.retried += 1;
            }
            let found = seqs_of.get(&op.id).cloned().unwrap_or_default();
            match &op.outcome {
                Outcome::Acked { seq, hash } => {
                    summary.acked += 1;
                    if op.attempts.len() == 1 && op.attempts[0].result.contains(FIRST_ATTEMPT_DUPLICATE) {
                        violations.push(format!("{}: acknowledged as a duplicate on its first attempt", op.id));
                    }
                    if let Some(other) = by_seq.insert(*seq, op) {
                        violations.push(format!("seq {seq} acknowledged to two appends: {} and {}", other.id, op.id));
                    }
                    if found != vec![*seq] {
                        violations.push(format!(
                            "{}: acknowledged at seq {seq}, but the final log holds it at {found:?} ({})",
                            op.id,
                            describe(op)
                        ));
                    } else if at_seq[*seq as usize - 1].hash != *hash {
                        violations.push(format!(
                            "{}: acknowledged with hash {hash}, the final log's is {}",
                            op.id,
                            at_seq[*seq as usize - 1].hash
                        ));
                    }
                    acked_by_completion.push((op.complete, *seq));
                    if let Some(&seq) = found.first() {
                        present.push((op.invoke, seq, op));
                    }
                }
                Outcome::Failed(_) => {
                    summary.failed += 1;
                    if !found.is_empty() {
                        violations.push(format!(
                            "{}: refused, yet in the final log at {found:?} ({})",
                            op.id,
                            describe(op)
                        ));
                    }
                }
                Outcome::Unknown(_) => {
                    summary.unknown += 1;
                    if found.len() > 1 {
                        violations.push(format!(
                            "{}: unknown outcome, in the final log {} times: {found:?}",
                            op.id,
                            found.len()
                        ));
                    }
                    if let Some(&seq) = found.first() {
                        summary.unknown_present += 1;
                        present.push((op.invoke, seq, op));
                    }
                }
            }
        }
        let prefix = format!("{}-", self.run);
        for event in &at_seq {
            if event.id.starts_with(&prefix) && !known_ids.contains(event.id.as_str()) {
                violations.push(format!("seq {}: event {} was never sent by any client", event.seq, event.id));
            }
        }

        // Real-time order: everything acknowledged before an append was invoked sits below it.
        acked_by_completion.sort();
        let mut highest_acked_by: Vec<u64> = Vec::with_capacity(acked_by_completion.len());
        for (_, seq) in &acked_by_completion {
            let previous = highest_acked_by.last().copied().unwrap_or(0);
            highest_acked_by.push(previous.max(*seq));
        }
        // The highest seq acknowledged strictly before `instant`, and the append holding it.
        let highest_acked_before = |instant: Instant| -> u64 {
            let count = acked_by_completion.partition_point(|(complete, _)| *complete < instant);
            if count == 0 {
                0
            } else {
                highest_acked_by[count - 1]
            }
        };
        for (invoke, seq, op) in &present {
            let below = highest_acked_before(*invoke);
            if below >= *seq {
                let earlier = by_seq.get(&below).map(|earlier| describe(earlier)).unwrap_or_default();
                violations.push(format!(
                    "real-time order: {} (seq {seq}) was invoked after seq {below} was acknowledged, yet sits \
                     below it; {} / earlier: {earlier}",
                    op.id,
                    describe(op)
                ));
            }
        }

        // Reads.
        present.sort_by_key(|(invoke, _, _)| *invoke);
        let mut lowest_from: Vec<u64> = vec![u64::MAX; present.len() + 1];
        for index in (0..present.len()).rev() {
            lowest_from[index] = lowest_from[index + 1].min(present[index].1);
        }
        let mut last_head: HashMap<usize, (u64, Instant)> = HashMap::new();
        let mut sorted_reads: Vec<&ReadOp> = reads.iter().collect();
        sorted_reads.sort_by_key(|read| (read.reader, read.invoke));
        summary.reads = reads.len();
        for read in sorted_reads {
            let kind = if read.linearizable { "linearizable" } else { "local" };
            let who =
                format!("{kind} read by reader {} on node {} at +{:?}", read.reader, read.node, self.at(read.invoke));
            summary.events_seen += read.events.len();
            if read.head > final_log.len() as u64 {
                violations.push(format!("{who}: head {} is beyond the final log ({})", read.head, final_log.len()));
            }
            for seen in &read.events {
                match at_seq.get((seen.seq as usize).wrapping_sub(1)) {
                    Some(truth) if truth == seen => {}
                    Some(truth) => violations.push(format!(
                        "{who}: saw {} / {} at seq {}, the final log holds {} / {}",
                        seen.id, seen.hash, seen.seq, truth.id, truth.hash
                    )),
                    None => violations.push(format!(
                        "{who}: saw {} at seq {}, beyond the final log ({})",
                        seen.id,
                        seen.seq,
                        final_log.len()
                    )),
                }
                if seen.seq > read.head {
                    violations.push(format!("{who}: saw seq {} beyond the head {} it was told", seen.seq, read.head));
                }
            }
            // Nothing invoked after the read completed can be in what it saw.
            let after = present.partition_point(|(invoke, _, _)| *invoke <= read.complete);
            if lowest_from[after] <= read.head {
                violations.push(format!(
                    "{who}: head {} already includes seq {}, appended by an operation invoked after the read completed",
                    read.head, lowest_from[after]
                ));
            }
            if read.linearizable {
                summary.linearizable_reads += 1;
                let acknowledged = highest_acked_before(read.invoke);
                if acknowledged > read.head {
                    let op = by_seq.get(&acknowledged).map(|op| describe(op)).unwrap_or_default();
                    violations.push(format!(
                        "{who}: stale: head {} misses seq {acknowledged}, acknowledged before the read began ({op})",
                        read.head
                    ));
                }
                if let Some((previous, when)) = last_head.get(&read.reader) {
                    if read.head < *previous {
                        violations.push(format!(
                            "{who}: head went back from {previous} (read at +{:?}) to {}",
                            self.at(*when),
                            read.head
                        ));
                    }
                }
                last_head.insert(read.reader, (read.head, read.invoke));
            }
        }
        (summary, violations)
    }

    fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.started)
    }

    /// One line per operation of the given client ids (for failure messages).
    pub fn dump_ops(&self, ids: &[&str]) -> String {
        let mut text = String::new();
        for op in self.writes().iter().filter(|op| ids.contains(&op.id.as_str())) {
            let _ = writeln!(text, "{}", describe(op));
            for attempt in &op.attempts {
                let _ = writeln!(text, "    +{:?} node {}: {}", self.at(attempt.at), attempt.node, attempt.result);
            }
        }
        text
    }
}

/// Marks an attempt that was answered "duplicate" although its id had never been sent before.
const FIRST_ATTEMPT_DUPLICATE: &str = " (on the FIRST attempt)";

enum AttemptResult {
    Acked { seq: u64, hash: String, duplicate: bool },
    Refused(String),
    Unknown(String),
}

fn describe(op: &WriteOp) -> String {
    let nodes: Vec<u64> = op.attempts.iter().map(|attempt| attempt.node).collect();
    format!(
        "{} by client {}{}: {:?} after {} attempt(s) on nodes {nodes:?}, took {:?}; last: {}",
        op.id,
        op.client,
        op.tag.as_ref().map(|tag| format!(" [{tag}]")).unwrap_or_default(),
        op.outcome,
        op.attempts.len(),
        op.complete.saturating_duration_since(op.invoke),
        op.attempts.last().map(|attempt| attempt.result.as_str()).unwrap_or("-")
    )
}

impl std::fmt::Display for Summary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} appends ({} acked, {} unknown of which {} landed, {} refused, {} retried), {} reads ({} linearizable, \
             {} events seen), final log {} events",
            self.writes,
            self.acked,
            self.unknown,
            self.unknown_present,
            self.failed,
            self.retried,
            self.reads,
            self.linearizable_reads,
            self.events_seen,
            self.final_len
        )
    }
}
