//! One description per route of `router()`, in the router's order. docs/api.md says the same in
//! prose; a route added to the router needs an entry here (a test fails without one).

use fleetlog_types as types;
use utoipa::openapi::OpenApi;

use super::builder::{delete, get, post, put, Document, Endpoint, Kind};
use super::requests;

const DESCRIPTION: &str = "fleetlog's HTTP API: an append-only, Raft-replicated release ledger. \
Every error answer has the shape `{\"error\": {\"code\", \"message\"}}`, `code` stable for programs. \
Without a token file the server runs open and needs no token. docs/api.md in the repository \
describes every endpoint in full.";

const TAGS: [(&str, &str); 7] = [
    ("events", "Appending and reading the log."),
    ("streams", "Server-Sent Events: the log as it grows, and one host's directives."),
    ("views", "Fleet, hosts, deployments, releases, policies, calendars, alerts, DORA."),
    ("commands", "Typed commands: each appends one domain event."),
    ("audit", "Signed checkpoints, Merkle proofs, the export, the fleet's diff."),
    ("cluster", "Cluster membership."),
    ("operations", "Health, readiness, metrics, the caller, this document and the operator's page."),
];

const EVENTS: &str = "events";
const STREAMS: &str = "streams";
const VIEWS: &str = "views";
const COMMANDS: &str = "commands";
const AUDIT: &str = "audit";
const CLUSTER: &str = "cluster";
const OPERATIONS: &str = "operations";

/// Errors of a read that checks its query parameters.
const READ_ERRORS: &[u16] = &[400, 503];
/// Errors of a read of something that may not exist.
const LOOKUP_ERRORS: &[u16] = &[400, 404, 503];
/// Errors of anything that appends.
const WRITE_ERRORS: &[u16] = &[400, 408, 409, 413, 422, 503];
/// Errors of a membership change.
const MEMBERSHIP_ERRORS: &[u16] = &[400, 408, 409, 413, 422, 503];

pub fn describe() -> OpenApi {
    let mut document = Document::new(TAGS.to_vec());
    for endpoint in
        events().into_iter().chain(views()).chain(commands()).chain(audit()).chain(cluster()).chain(operations())
    {
        document.add(endpoint);
    }
    document.finish(DESCRIPTION)
}

/// The filters of `GET /v1/events` and `GET /v1/subscribe`; every given one must match.
fn log_filters(endpoint: Endpoint) -> Endpoint {
    let exact = ["stream", "service", "env", "host", "release", "deployment", "actor"];
    let endpoint = endpoint.query("type", Kind::Text, "Exact type, or a prefix when it ends with a dot (`wave.`).");
    let endpoint = exact.into_iter().fold(endpoint, |endpoint, name| endpoint.query(name, Kind::Text, "Exact match."));
    endpoint.query("since", Kind::Time, "Events at or after this time.").query(
        "until",
        Kind::Time,
        "Events at or before this time.",
    )
}

/// `at_seq` / `at_time`: a view as of a past moment.
fn as_of(endpoint: Endpoint) -> Endpoint {
    endpoint.query("at_seq", Kind::Number, "The view as of this seq.").query(
        "at_time",
        Kind::Time,
        "The view as of the last event at or before this time.",
    )
}

/// What a stream's client may give: where to start and, for browsers, the token.
fn stream_position(endpoint: Endpoint) -> Endpoint {
    endpoint
        .query("from_seq", Kind::Number, "Start at this seq (0 and 1 both mean the first event).")
        .query("access_token", Kind::Text, "The token, for clients that cannot set `Authorization` (EventSource).")
        .header(
            "Last-Event-ID",
            Kind::Number,
            "The last seq the client saw: the stream starts after it (wins over `from_seq`).",
        )
}

/// A typed command's answer: the committed event.
fn command(endpoint: Endpoint) -> Endpoint {
    endpoint
        .idempotency_key()
        .json::<types::CommandAnswer<types::Event>>(201, "The event was appended; the answer holds it as committed.")
        .json::<types::CommandAnswer<types::Event>>(200, "A replay of a known id: the original event.")
        .errors(WRITE_ERRORS)
}

fn events() -> Vec<Endpoint> {
    vec![
        post("/v1/events", EVENTS, "Append a batch of events atomically")
            .body::<requests::AppendBody>("1 to 1,000 events; all are committed, in order, or none.")
            .json::<types::AppendAnswer>(201, "The batch was appended.")
            .json::<types::AppendAnswer>(200, "An exact replay of a batch appended before.")
            .errors(WRITE_ERRORS),
        log_filters(
            get("/v1/events", EVENTS, "Read committed events in seq order")
                .query("from_seq", Kind::Number, "First seq to consider (default 1).")
                .query("limit", Kind::Number, "Events to return, 1 to 10,000 (default 100)."),
        )
        .consistency()
        .json::<types::EventPage<types::Event>>(200, "A page; continue with `from_seq=next_seq`.")
        .errors(LOOKUP_ERRORS),
        get("/v1/events/{seq}", EVENTS, "One event")
            .path_parameter("seq", Kind::Number, "The event's seq, 1 or more.")
            .json::<types::Event>(200, "The committed event.")
            .errors(LOOKUP_ERRORS),
        get("/v1/streams/{*stream}", EVENTS, "The events of one stream in version order")
            .path_parameter("stream", Kind::Stream, "The stream's name; it may contain `/`.")
            .query("from_version", Kind::Number, "First version (default 0).")
            .query("limit", Kind::Number, "1 to 10,000 (default 100).")
            .consistency()
            .json::<types::StreamPage<types::Event>>(200, "A page; continue with `from_version=next_version`.")
            .errors(LOOKUP_ERRORS),
        log_filters(stream_position(get("/v1/subscribe", STREAMS, "Follow the log, filtered (Server-Sent Events)")))
            .query(
                "format",
                Kind::Text,
                "`fleetlog` (the default): each message's data is the committed event; `cdevents`: a \
                 CloudEvent carrying the event's CDEvent, events with none left out (docs/cdevents.md).",
            )
            .consistency()
            .text(
                200,
                "text/event-stream",
                "Never ends on its own. One message per matching event: `id` its seq, `event` its type, `data` \
                 the committed event; a comment `: head SEQ` once caught up and every 5 seconds.",
            )
            .errors(LOOKUP_ERRORS),
        stream_position(get("/v1/watch/{host}", STREAMS, "What one host should run (Server-Sent Events)"))
            .path_parameter("host", Kind::Name, "The host.")
            .consistency()
            .text(
                200,
                "text/event-stream",
                "Never ends on its own. A fresh watch starts with a `state` message (the host in every service \
                 and env it was registered in), then one `directive` message per change of what it should run.",
            )
            .errors(LOOKUP_ERRORS),
    ]
}

fn views() -> Vec<Endpoint> {
    vec![
        as_of(
            get("/v1/fleet", VIEWS, "Every host's desired and observed release")
                .query("service", Kind::Name, "Only this service.")
                .query("env", Kind::Name, "Only this env."),
        )
        .consistency()
        .json::<types::FleetView>(200, "The fleet.")
        .errors(LOOKUP_ERRORS),
        as_of(
            get("/v1/hosts/{host}", VIEWS, "One host in every service and env, with its history")
                .path_parameter("host", Kind::Name, "The host.")
                .query("limit", Kind::Number, "History entries, 1 to 1,000."),
        )
        .consistency()
        .json::<types::HostDocument>(200, "The host.")
        .errors(LOOKUP_ERRORS),
        get("/v1/deployments", VIEWS, "Deployments, newest first")
            .query("service", Kind::Name, "Only this service.")
            .query("env", Kind::Name, "Only this env.")
            .query("state", Kind::Text, "Only deployments in this state.")
            .query("release", Kind::Release, "Only deployments of this release.")
            .query("limit", Kind::Number, "How many.")
            .consistency()
            .json::<types::DeploymentList>(200, "The deployments.")
            .errors(READ_ERRORS),
        as_of(get("/v1/deployments/{id}", VIEWS, "One deployment: waves, failures, gates").path_parameter(
            "id",
            Kind::Name,
            "The deployment's id.",
        ))
        .consistency()
        .json::<types::DeploymentDetail>(200, "The deployment.")
        .errors(LOOKUP_ERRORS),
        get("/v1/deployments/{id}/decisions", VIEWS, "The release-safety policy's decisions on a deployment")
            .path_parameter("id", Kind::Name, "The deployment's id.")
            .consistency()
            .json::<types::DecisionList<types::Event>>(200, "The `system:policy` events of the deployment.")
            .errors(LOOKUP_ERRORS),
        as_of(
            get("/v1/policies/{service}/{env}", VIEWS, "The release-safety policy of a service in an env")
                .path_parameter("service", Kind::Name, "The service.")
                .path_parameter("env", Kind::Name, "The env."),
        )
        .consistency()
        .json::<types::PolicyView>(200, "The policy as set.")
        .errors(LOOKUP_ERRORS),
        get("/v1/calendars", VIEWS, "Freeze calendars, and whether a (service, env) is frozen now")
            .query("service", Kind::Name, "With `env`: the calendars that apply to it, and whether it is frozen.")
            .query("env", Kind::Name, "With `service`.")
            .consistency()
            .json::<types::CalendarList>(200, "The calendars.")
            .errors(READ_ERRORS),
        get("/v1/dora", VIEWS, "DORA's four keys over a window")
            .query("service", Kind::Name, "Only this service.")
            .query("env", Kind::Name, "Only this env.")
            .query("since", Kind::Time, "Start of the window (default: 30 days before `until`).")
            .query("until", Kind::Time, "End of the window (default: now).")
            .consistency()
            .json::<types::DoraReport>(200, "The report.")
            .errors(READ_ERRORS),
        get("/v1/alerts", VIEWS, "Alerts received from Alertmanager")
            .query("state", Kind::Text, "`firing` (the default), `resolved`, `unmapped` or `all`.")
            .query("service", Kind::Name, "Only this service.")
            .query("env", Kind::Name, "Only this env.")
            .consistency()
            .json::<types::AlertList>(200, "The alerts.")
            .errors(READ_ERRORS),
        post("/v1/alerts/alertmanager", COMMANDS, "Alertmanager's webhook: one event per alert")
            .body::<requests::AlertmanagerBody>("Alertmanager's webhook payload.")
            .json::<types::AlertmanagerAnswer>(200, "What was received and written.")
            .errors(WRITE_ERRORS),
        post("/v1/cdevents", COMMANDS, "CDEvents from other tools, in CloudEvents envelopes")
            .body_as::<requests::CloudEventBody>(
                "A CloudEvent carrying a CDEvent (structured mode; see docs/cdevents.md for the batched \
                 and binary modes). Service events are recorded for their (service, env); incidents \
                 become alerts; every other type is refused and nothing is written.",
                &["application/cloudevents+json", "application/json"],
            )
            .json::<types::CdEventsAnswer>(201, "Recorded: where the new events were written.")
            .json::<types::CdEventsAnswer>(200, "Every event was recorded already (a sender's retry).")
            .errors(&[400, 408, 409, 413, 415, 422, 503]),
        get("/v1/webhooks", VIEWS, "The webhooks, each with how far its receiver acknowledged (admin)")
            .json::<types::WebhookList>(200, "The webhooks, never with their secrets.")
            .errors(READ_ERRORS),
        get("/v1/services/{service}/releases", VIEWS, "A service's releases and environments")
            .path_parameter("service", Kind::Name, "The service.")
            .consistency()
            .json::<types::ReleasesView>(200, "The releases, each with its timeline.")
            .errors(LOOKUP_ERRORS),
    ]
}

fn commands() -> Vec<Endpoint> {
    let deployment = |endpoint: Endpoint| endpoint.path_parameter("id", Kind::Name, "The deployment's id.");
    let wave = |endpoint: Endpoint| deployment(endpoint).path_parameter("wave", Kind::Name, "The wave's name.");
    let step = "Members besides `id` and `stream` become the event's `data`.";
    let release = |endpoint: Endpoint| {
        endpoint.path_parameter("service", Kind::Name, "The service.").path_parameter(
            "release",
            Kind::Release,
            "The release.",
        )
    };
    let scope = |endpoint: Endpoint| {
        endpoint.path_parameter("service", Kind::Name, "The service.").path_parameter("env", Kind::Name, "The env.")
    };
    vec![
        post("/v1/webhooks", COMMANDS, "Add a webhook (`webhook.added`; admin)")
            .body::<types::WebhookRequest>("Where to send which events, in which format.")
            .json::<types::WebhookCreated>(201, "The webhook, and its secret: shown this once.")
            .errors(WRITE_ERRORS),
        delete("/v1/webhooks/{id}", COMMANDS, "Remove a webhook (`webhook.removed`; admin)")
            .path_parameter("id", Kind::Name, "The webhook's id.")
            .json::<types::WebhookRemoved>(200, "Removed: no delivery starts after this.")
            .errors(&[400, 404, 408, 409, 413, 422, 503]),
        command(
            post("/v1/deployments", COMMANDS, "Start a deployment (`deployment.started`)")
                .body::<requests::DeploymentBody>("The deployment."),
        ),
        command(
            wave(post("/v1/deployments/{id}/waves/{wave}/start", COMMANDS, "Start a wave (`wave.started`)"))
                .body::<requests::CommandBody>(step),
        ),
        command(
            wave(post("/v1/deployments/{id}/waves/{wave}/complete", COMMANDS, "Complete a wave (`wave.completed`)"))
                .body::<requests::CommandBody>(step),
        ),
        command(
            deployment(post(
                "/v1/deployments/{id}/complete",
                COMMANDS,
                "Complete a deployment (`deployment.completed`)",
            ))
            .body::<requests::CommandBody>(step),
        ),
        command(
            deployment(post("/v1/deployments/{id}/abort", COMMANDS, "Abort a deployment (`deployment.aborted`)"))
                .body::<requests::CommandBody>(step),
        ),
        command(
            deployment(post("/v1/deployments/{id}/halt", COMMANDS, "Halt a deployment (`deployment.halted`)"))
                .body::<requests::CommandBody>(step),
        ),
        command(
            deployment(post(
                "/v1/deployments/{id}/resume",
                COMMANDS,
                "Resume a halted deployment (`deployment.resumed`)",
            ))
            .body::<requests::CommandBody>(step),
        ),
        command(
            scope(put("/v1/policies/{service}/{env}", COMMANDS, "Set the release-safety policy (`policy.set`)"))
                .body::<requests::PolicyBody>("The policy."),
        ),
        command(
            put("/v1/calendars", COMMANDS, "Set a freeze calendar (`freeze.calendar.set`)")
                .body::<requests::CalendarBody>("The calendar's windows."),
        ),
        command(
            post("/v1/releases", COMMANDS, "Create a release (`release.created`)")
                .body::<requests::ReleaseBody>("The release."),
        ),
        command(
            release(post(
                "/v1/services/{service}/releases/{release}/block",
                COMMANDS,
                "Block a release (`release.blocked`)",
            ))
            .body::<requests::CommandBody>(step),
        ),
        command(
            release(post(
                "/v1/services/{service}/releases/{release}/unblock",
                COMMANDS,
                "Unblock a release (`release.unblocked`)",
            ))
            .body::<requests::CommandBody>(step),
        ),
        command(
            post("/v1/rollbacks", COMMANDS, "Roll back a service in an env (`rollback`)")
                .body::<requests::RollbackBody>("What to roll back, and why."),
        ),
        command(
            post("/v1/targets", COMMANDS, "Register a host (`target.registered`)")
                .body::<requests::TargetBody>("The host and where it serves."),
        ),
        command(
            scope(delete("/v1/targets/{service}/{env}/{host}", COMMANDS, "Deregister a host (`target.deregistered`)"))
                .path_parameter("host", Kind::Name, "The host."),
        ),
        command(
            post("/v1/reports", COMMANDS, "Report what a host runs (`host.reported`)")
                .body::<requests::ReportBody>("The report."),
        ),
        command(
            post("/v1/freezes", COMMANDS, "Freeze a service in an env (`freeze.started`)")
                .body::<requests::FreezeBody>("What to freeze, and why."),
        ),
        command(scope(delete("/v1/freezes/{service}/{env}", COMMANDS, "End a freeze (`freeze.ended`)"))),
    ]
}

fn audit() -> Vec<Endpoint> {
    vec![
        as_of(
            get("/v1/fleet/diff", AUDIT, "What changed in the fleet between two moments")
                .required_query("from", Kind::Text, "A seq or an RFC 3339 time.")
                .query("to", Kind::Text, "A seq or an RFC 3339 time (default: the head).")
                .query("service", Kind::Name, "Only this service.")
                .query("env", Kind::Name, "Only this env."),
        )
        .consistency()
        .json::<types::FleetDiff>(200, "Every host whose view changed.")
        .errors(LOOKUP_ERRORS),
        get("/v1/checkpoint", AUDIT, "The signed checkpoint of the log's Merkle tree")
            .query("tree_size", Kind::Number, "The tree of this many events (default: the head).")
            .consistency()
            .text(200, "text/plain", "A C2SP signed note: origin, size, root hash, signature.")
            .errors(LOOKUP_ERRORS),
        get("/v1/checkpoint/key", AUDIT, "The checkpoint key's verifier string")
            .text(200, "text/plain", "One line.")
            .errors(&[503]),
        get("/v1/proofs/inclusion", AUDIT, "The inclusion proof of one event")
            .required_query("seq", Kind::Number, "The event's seq.")
            .query("tree_size", Kind::Number, "The tree's size (default: the head).")
            .consistency()
            .json::<types::InclusionProof>(200, "The audit path, base64 hashes.")
            .errors(LOOKUP_ERRORS),
        get("/v1/proofs/consistency", AUDIT, "The consistency proof between two tree sizes")
            .required_query("from_size", Kind::Number, "The older tree's size.")
            .query("to_size", Kind::Number, "The newer tree's size (default: the head).")
            .consistency()
            .json::<types::ConsistencyProof>(200, "The proof, base64 hashes.")
            .errors(LOOKUP_ERRORS),
        get("/v1/export", AUDIT, "Every event in a range, one canonical JSON object per line")
            .query("from_seq", Kind::Number, "First seq (default 1).")
            .query("to_seq", Kind::Number, "Last seq (default: the head when the export starts).")
            .consistency()
            .text_with_header(
                200,
                "application/x-ndjson",
                "Newline-delimited JSON: the committed events in seq order.",
                ("X-Fleetlog-Last-Seq", "The last seq the export holds; a shorter body was cut off."),
            )
            .errors(LOOKUP_ERRORS),
    ]
}

fn cluster() -> Vec<Endpoint> {
    let member = |endpoint: Endpoint| endpoint.path_parameter("id", Kind::Number, "The node's id.");
    let status = "The cluster's status after the change.";
    vec![
        get("/v1/cluster", CLUSTER, "The cluster's members, leader and progress")
            .json::<types::ClusterStatus>(200, "The status, gathered from every member.")
            .errors(&[]),
        post("/v1/cluster/init", CLUSTER, "Form a new cluster")
            .body::<requests::InitBody>("Every member's id and address.")
            .json::<types::ClusterStatus>(200, "The formed cluster.")
            .errors(MEMBERSHIP_ERRORS),
        post("/v1/cluster/learners", CLUSTER, "Add a learner")
            .body::<requests::LearnerBody>("The new node.")
            .json::<types::ClusterStatus>(200, status)
            .errors(MEMBERSHIP_ERRORS),
        put("/v1/cluster/members", CLUSTER, "Replace the set of voters")
            .body::<requests::VotersBody>("The voters.")
            .json::<types::ClusterStatus>(200, status)
            .errors(MEMBERSHIP_ERRORS),
        member(delete("/v1/cluster/members/{id}", CLUSTER, "Remove a voter or a learner"))
            .json::<types::ClusterStatus>(200, status)
            .errors(MEMBERSHIP_ERRORS),
        member(post("/v1/cluster/members/{id}/promote", CLUSTER, "Make a learner a voter"))
            .json::<types::ClusterStatus>(200, status)
            .errors(MEMBERSHIP_ERRORS),
    ]
}

fn operations() -> Vec<Endpoint> {
    vec![
        get("/", OPERATIONS, "The operator's page").public().text(200, "text/html", "The page (HTML)."),
        get("/healthz", OPERATIONS, "Liveness").public().json::<types::Health>(200, "The process answers."),
        get("/readyz", OPERATIONS, "Readiness")
            .public()
            .json::<types::Ready>(200, "The node knows a leader and has applied its log.")
            .errors(&[503]),
        get("/metrics", OPERATIONS, "Prometheus metrics")
            .text(200, "text/plain", "The Prometheus text format, version 0.0.4.")
            .errors(&[]),
        get("/v1/whoami", OPERATIONS, "The caller: name, role, whether it may write")
            .json::<types::WhoAmI>(200, "The caller.")
            .errors(&[]),
        get("/v1/openapi.json", OPERATIONS, "This document").public().object(200, "OpenAPI 3.1."),
    ]
}
