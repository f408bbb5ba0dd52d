//! One webhook's deliveries, on the leader: committed events read in seq order from the last
//! acknowledged one, those its filters match POSTed one per request, each retried with a
//! doubling pause until the receiver answers 2xx, never skipped. Acknowledgements are recorded
//! in the log as `webhook.progressed` at most once a second, so a restart or a new leader
//! redelivers at most that last second, with the same delivery ids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetlog_raft::consensus::node::{Node, WeakNode};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, Event, ExpectedVersion, ProposedEvent};
use fleetlog_raft::domain::views::{self, EventFilter};
use fleetlog_raft::domain::webhooks::{self, Webhook, WEBHOOK_ACTOR};

use super::render;
use super::{Live, WebhookOptions};

/// Events read from the log at a time.
const PAGE_EVENTS: usize = 256;
/// Least time between two progress events of one webhook.
const RECORD_SPACING: Duration = Duration::from_secs(1);
/// Longest a caught-up delivery waits without looking at leadership again.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// The first pause after a failed attempt; each further failure doubles it, up to the cap.
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(200);
/// Time the last progress record may take when leadership is gone.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);

/// Files of the system's CA certificates, for https receivers (the first that exists is read).
const SYSTEM_ROOTS: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The client every delivery of a node shares: no redirects (a receiver's 3xx is a failure, not
/// a new address), the system's CA certificates for https.
pub fn http_client() -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = SYSTEM_ROOTS.iter().find_map(|path| std::fs::read(path).ok()) {
        for certificate in reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| error.to_string())? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|error| error.to_string())
}

pub struct Delivery {
    pub node: WeakNode,
    pub webhook: Webhook,
    pub secret: String,
    pub live: Arc<Live>,
    pub options: WebhookOptions,
    pub client: reqwest::Client,
}

/// Why a delivery task stops.
enum Stop {
    /// This node no longer leads, or is gone.
    NotLeader,
}

impl Delivery {
    pub async fn run(self) {
        let id = self.webhook.id.clone();
        // The log's record, or the webhook's own seq: deliveries are of the events after it.
        let mut acknowledged = self.webhook.acknowledged_seq;
        let mut recorded = acknowledged;
        let mut last_record = Instant::now();
        let mut position = acknowledged;
        tracing::info!(webhook = %id, from_seq = acknowledged + 1, "webhook deliveries start");
        self.live.acknowledged(&id, acknowledged);
        let stopped = loop {
            let Some(node) = self.leading() else { break Stop::NotLeader };
            let events = match read_after(&node, position).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(webhook = %id, %error, "webhook deliveries cannot read the log");
                    tokio::time::sleep(IDLE_WAIT).await;
                    continue;
                }
            };
            let mut head = node.feed().head();
            drop(node);
            if events.is_empty() {
                if acknowledged > recorded && last_record.elapsed() >= RECORD_SPACING {
                    if self.record(acknowledged).await {
                        recorded = acknowledged;
                    }
                    last_record = Instant::now();
                    continue;
                }
                let wait = if acknowledged > recorded {
                    RECORD_SPACING.saturating_sub(last_record.elapsed()).min(IDLE_WAIT)
                } else {
                    IDLE_WAIT
                };
                head.borrow_and_update();
                let _ = tokio::time::timeout(wait, head.changed()).await;
                continue;
            }
            let mut stop = None;
            for event in events {
                position = event.seq;
                if !webhooks::matches(&self.webhook.events, &event.event_type) {
                    continue;
                }
                let Some(body) = render::body(self.webhook.format, &event) else { continue };
                if let Err(stopped) = self.deliver(&event, &body, acknowledged).await {
                    stop = Some(stopped);
                    break;
                }
                acknowledged = event.seq;
                self.live.acknowledged(&id, acknowledged);
                if last_record.elapsed() >= RECORD_SPACING {
                    if self.record(acknowledged).await {
                        recorded = acknowledged;
                    }
                    last_record = Instant::now();
                }
            }
            if let Some(stopped) = stop {
                break stopped;
            }
        };
        match stopped {
            Stop::NotLeader => {
                // Best effort: the new leader resumes from what the log holds, so recording what
                // was acknowledged here only spares the receiver redeliveries.
                if acknowledged > recorded {
                    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.record(acknowledged)).await;
                }
                tracing::info!(webhook = %id, acknowledged_seq = acknowledged, "webhook deliveries stop: not the leader");
            }
        }
        self.live.forget(&id);
    }

    /// The node, while it still leads.
    fn leading(&self) -> Option<Node> {
        self.node.upgrade().filter(Node::is_leader)
    }

    /// Sends one event until the receiver acknowledges it; gives up only when leadership goes.
    async fn deliver(&self, event: &Event, body: &[u8], acknowledged: u64) -> Result<(), Stop> {
        let mut pause = RETRY_PAUSE_FIRST;
        let mut attempt = 1u32;
        loop {
            if self.leading().is_none() {
                return Err(Stop::NotLeader);
            }
            match self.attempt(event, body).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::debug!(webhook = %self.webhook.id, seq = event.seq, attempt, %error, "webhook delivery failed");
                    self.live.failed(&self.webhook.id, acknowledged, format!("seq {}: {error}", event.seq));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.options.retry_pause_max);
            attempt = attempt.saturating_add(1);
        }
    }

    /// One POST: 2xx within the timeout acknowledges, anything else is an error to retry.
    async fn attempt(&self, event: &Event, body: &[u8]) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = webhooks::signature(&self.secret, &timestamp, body);
        let response = self
            .client
            .post(&self.webhook.url)
            .timeout(self.options.timeout)
            .header("content-type", render::content_type(self.webhook.format))
            .header("fleetlog-delivery", webhooks::delivery_id(&self.webhook.id, event.seq))
            .header("fleetlog-event", &event.event_type)
            .header("fleetlog-timestamp", &timestamp)
            .header("fleetlog-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|error| {
                if error.is_timeout() {
                    format!("no answer within {:?}", self.options.timeout)
                } else {
                    format!("cannot reach the receiver: {error}")
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered HTTP {}", status.as_u16()))
        }
    }

    /// Appends the progress event of `seq`; true once the log holds it.
    async fn record(&self, seq: u64) -> bool {
        let Some(node) = self.node.upgrade() else { return false };
        let id = &self.webhook.id;
        let mut event = ProposedEvent::new(webhooks::progress_event_id(id, seq), webhooks::PROGRESSED);
        event.stream = Some(webhooks::progress_stream(id));
        // Members in canonical (sorted) order, whole numbers only: this text is already canonical.
        event.data = serde_json::json!({ "seq": seq, "webhook": id }).to_string();
        let request =
            AppendRequest { events: vec![event], expected_version: ExpectedVersion::Any, actor: WEBHOOK_ACTOR.into() };
        match node.append(request).await {
            Ok(AppendOutcome::Appended { .. }) => true,
            Ok(AppendOutcome::Rejected(rejection)) => {
                tracing::warn!(webhook = %id, seq, refusal = %rejection, "webhook progress refused");
                false
            }
            Err(error) => {
                tracing::debug!(webhook = %id, seq, %error, "webhook progress not recorded; the next one carries it");
                false
            }
        }
    }
}

/// The committed events after `position` that this node has applied, a page at a time, read
/// as `GET /v1/events` reads them.
async fn read_after(node: &Node, position: u64) -> Result<Vec<Event>, String> {
    let database = node.database().clone();
    tokio::task::spawn_blocking(move || {
        let reader = database.consistent_reader()?;
        views::read_events(&reader, &EventFilter::default(), position + 1, PAGE_EVENTS)
    })
    .await
    .map_err(|error| error.to_string())?
    .map(|page| page.events)
    .map_err(|error| error.to_string())
}
