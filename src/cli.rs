//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `fleetlog --version`: the package version and the commit it was built from (see build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("FLEETLOG_COMMIT"), ")");

#[derive(Parser, Debug)]
#[command(name = "fleetlog", version = VERSION, about = "A replicated, append-only release ledger and event store")]
pub struct Cli {
    /// Server to talk to: a URL, or a comma-separated list of them to fail over between.
    #[arg(long, global = true, env = "FLEETLOG_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// Bearer token for servers that require one (see `fleetlog token create`).
    #[arg(long, global = true, env = "FLEETLOG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for https servers; `serve` uses it to dial its peers.
    #[arg(long, global = true, env = "FLEETLOG_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// A TOML file any flag can also come from (docs/configuration.md): flags and environment
    /// variables override it.
    #[arg(long, global = true, env = "FLEETLOG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns, for reading.
    Table,
    /// The server's JSON, for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node. Without flags: a single-node cluster in ./fleetlog-data on 127.0.0.1:7070.
    #[command(
        after_help = "Examples:\n  fleetlog serve\n  fleetlog serve --node-id 1 --listen 127.0.0.1:7071 --data ./node-1 --cluster-secret s3cret"
    )]
    Serve(ServeArgs),
    /// Membership: form a cluster, add, promote and remove nodes, show status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run a local cluster of several nodes in child processes (for trying things out).
    #[command(after_help = "Example:\n  fleetlog dev --nodes 3 --base-port 7071 --data ./fleetlog-dev")]
    Dev(DevArgs),
    /// Create, block, unblock and list the releases of a service.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Add hosts to a fleet or remove them.
    #[command(subcommand)]
    Target(TargetCommand),
    /// Report what a host runs (what an agent does).
    #[command(
        after_help = "Example:\n  fleetlog report --service checkout --env prod --host web-1 --release 1.4.2 --status running --applied-seq 14"
    )]
    Report(ReportArgs),
    /// Deploy a release in waves, follow its progress, complete or abort it.
    #[command(subcommand)]
    Deploy(DeployCommand),
    /// Roll an environment back with one event.
    #[command(
        after_help = "Example:\n  fleetlog rollback --service checkout --env prod --reason \"checkout errors up 4x on canaries\""
    )]
    Rollback(RollbackArgs),
    /// Stop deployments to an environment for a while, and allow them again.
    #[command(subcommand)]
    Freeze(FreezeCommand),
    /// Send the log's events to HTTP receivers as they are committed, signed, in order, retried
    /// until acknowledged (admin).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Set or show the release-safety policy of an environment: bake times, healthy and failed
    /// hosts per wave, alerts, what a tripped gate does.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Scheduled freezes: deny windows (and allow windows) when deployments start no wave, for an
    /// environment or for all of them.
    #[command(subcommand)]
    Calendar(CalendarCommand),
    /// The alerts received (firing by default), by environment; unmapped ones included.
    #[command(
        after_help = "Examples:\n  fleetlog alerts\n  fleetlog alerts --state unmapped\n  fleetlog alerts --service checkout --env prod --state all"
    )]
    Alerts(AlertsArgs),
    /// DORA's four keys from the ledger (deployment frequency, change lead time, change fail
    /// rate, failed deployment recovery time), each with its band in the 2024 report.
    #[command(
        after_help = "Examples:\n  fleetlog dora --service checkout --env prod\n  fleetlog dora --since 2026-10-01T00:00:00Z --until 2027-01-01T00:00:00Z"
    )]
    Dora(DoraArgs),
    /// What should run and does run on every host, now or at a past moment.
    #[command(
        after_help = "Examples:\n  fleetlog fleet --service checkout --env prod\n  fleetlog fleet --service checkout --env prod --at-seq 18"
    )]
    Fleet(FleetArgs),
    /// One host in every environment, with its recent history.
    #[command(after_help = "Example:\n  fleetlog host web-2")]
    Host(HostArgs),
    /// Hosts whose registration, desired or observed release changed between two moments.
    #[command(after_help = "Example:\n  fleetlog diff --from 12 --to 19 --service checkout --env prod")]
    Diff(DiffArgs),
    /// Read the log, filtered.
    #[command(after_help = "Example:\n  fleetlog history --service checkout --env prod --type wave. --limit 20")]
    History(HistoryArgs),
    /// Follow the log as it grows.
    #[command(after_help = "Example:\n  fleetlog tail --service checkout --from-seq 18")]
    Tail(TailArgs),
    /// Append an event of any type.
    #[command(
        after_help = "Example:\n  fleetlog append --type myapp.config.changed --service checkout --env prod --data '{\"key\":\"timeout\",\"value\":30}' --id cfg-118"
    )]
    Append(AppendArgs),
    /// Keep one host of one environment on its desired release: watch the ledger, run a command
    /// for every directive, report the outcome. `--server` may list several URLs, comma-separated.
    #[command(
        after_help = "Example:\n  fleetlog agent --server http://127.0.0.1:7071,http://127.0.0.1:7072,http://127.0.0.1:7073 --host web-1 --service checkout --env prod --group canary --state-dir /var/lib/fleetlog-agent --exec 'deploy-checkout \"$FLEETLOG_RELEASE\"'"
    )]
    Agent(AgentArgs),
    /// Check the ledger without trusting the server: the signed checkpoint against a pinned key,
    /// consistency with the checkpoint seen last time, inclusion proofs of sampled (or named)
    /// events; or, offline, an export against a checkpoint; or the audit trail of a release.
    #[command(
        after_help = "Examples:\n  fleetlog verify --key \"$(curl -s http://127.0.0.1:7070/v1/checkpoint/key)\"\n  fleetlog verify --seq 14,19\n  fleetlog verify --release checkout@1.4.2\n  fleetlog verify --export ledger.ndjson --checkpoint checkpoint.txt"
    )]
    Verify(VerifyArgs),
    /// Make tokens for `serve --token-file`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a shell's completion script for fleetlog on standard output.
    #[command(
        after_help = "Examples:\n  fleetlog completions bash > /usr/share/bash-completion/completions/fleetlog\n  fleetlog completions zsh > /usr/local/share/zsh/site-functions/_fleetlog\n  fleetlog completions fish > /usr/share/fish/vendor_completions.d/fleetlog.fish"
    )]
    Completions(CompletionsArgs),
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The host this agent runs on, as registered in the fleet.
    #[arg(long)]
    pub host: String,
    /// The service whose release the agent keeps on the host.
    #[arg(long)]
    pub service: String,
    /// The environment the host belongs to.
    #[arg(long)]
    pub env: String,
    /// Shell command run for each directive, with FLEETLOG_SERVICE, FLEETLOG_ENV, FLEETLOG_RELEASE,
    /// FLEETLOG_SEQ, FLEETLOG_CAUSE (and FLEETLOG_HOST, FLEETLOG_DEPLOYMENT) set; exit 0 means running.
    #[arg(long)]
    pub exec: String,
    /// Where the agent keeps its position and current release (default ./fleetlog-agent-HOST).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Seconds the command may run before it is killed and reported failed.
    #[arg(long, default_value_t = 600)]
    pub exec_timeout: u64,
    /// Seconds before the first retry of a command that failed (the desired release is retried
    /// until it runs); each wait is drawn between half and all of its bound, which doubles with
    /// every failed attempt up to --retry-max-seconds. A restarted agent retries at once.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub retry_initial_seconds: f64,
    /// Seconds the bound of the wait between retries of a failed command grows to at most.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    pub retry_max_seconds: f64,
    /// Group the host registers in (for wave selection by group).
    #[arg(long)]
    pub group: Option<String>,
    /// A label the host registers with; repeatable.
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
    /// The host's own health check, run as `sh -c CMD` (FLEETLOG_HOST, FLEETLOG_SERVICE and
    /// FLEETLOG_ENV set): exit 0 is healthy. Only changes are reported, as `data.health`; a
    /// policy's `min_healthy` counts unhealthy hosts as not healthy.
    #[arg(long, value_name = "CMD")]
    pub check: Option<String>,
    /// Seconds between two runs of --check (also the most one run may take).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", requires = "check")]
    pub check_every: f64,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to serve the API and peer traffic on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Data directory.
    #[arg(long, default_value = "./fleetlog-data")]
    pub data: PathBuf,
    /// Run as member N of a cluster: wait to be initialised (`fleetlog cluster init`) or added
    /// (`fleetlog cluster add-learner`). Without it: a single-node cluster that initialises itself.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Address other nodes and clients reach this node at (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Dial peer ID at HOST:PORT instead of its member address (a proxy or tunnel); repeatable.
    #[arg(long = "peer-route", value_name = "ID=HOST:PORT")]
    pub peer_routes: Vec<String>,
    /// Secret every peer call must present; give every member the same one.
    #[arg(long, env = "FLEETLOG_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Raft log entries between snapshots; the log behind a snapshot is purged.
    #[arg(long, default_value_t = fleetlog_raft::consensus::node::SNAPSHOT_EVERY_ENTRIES)]
    pub snapshot_every: u64,
    /// Concurrent streams (watch and subscribe) this node serves; beyond it: 503 too_many_subscribers.
    #[arg(long, default_value_t = fleetlog_api::state::SUBSCRIBERS_MAX)]
    pub max_subscribers: usize,
    /// Free space (MiB) the data directory's filesystem must keep; below it appends get 503
    /// disk_full while reads and streams go on.
    #[arg(long, default_value_t = fleetlog_raft::storage::disk::RESERVE_BYTES / (1024 * 1024))]
    pub min_free_mib: u64,
    /// Seconds a client has to send a request head, and again its body (slow-loris defence);
    /// a late body gets 408 body_timeout, a late head a closed connection.
    #[arg(long, default_value_t = 30)]
    pub client_timeout_seconds: u64,
    /// Seconds a write to a client may make no progress (the client stopped reading) before its
    /// connection or stream is closed; a stream's client resumes with Last-Event-ID.
    #[arg(long, default_value_t = fleetlog_api::limits::SEND_TIMEOUT_SECONDS)]
    pub send_timeout_seconds: u64,
    /// Open connections (clients and peers) this node serves; beyond it: 503 too_many_connections.
    #[arg(long, default_value_t = fleetlog_api::limits::CONNECTIONS_MAX)]
    pub max_connections: usize,
    /// Seconds shutdown (SIGTERM) waits for open connections to finish their requests before
    /// dropping them.
    #[arg(long, default_value_t = fleetlog_api::limits::SHUTDOWN_GRACE_SECONDS)]
    pub shutdown_grace_seconds: u64,
    /// Seconds a webhook's receiver has to answer a delivery; no answer in time is a failed
    /// attempt, retried.
    #[arg(long, env = "FLEETLOG_WEBHOOK_TIMEOUT_SECONDS", default_value_t = fleetlog_api::webhooks::TIMEOUT.as_secs())]
    pub webhook_timeout_seconds: u64,
    /// The longest pause, in seconds, between two attempts at one webhook delivery (the pause
    /// doubles from 0.2 s after each failure).
    #[arg(long, env = "FLEETLOG_WEBHOOK_RETRY_MAX_SECONDS", default_value_t = fleetlog_api::webhooks::RETRY_PAUSE_MAX.as_secs())]
    pub webhook_retry_max_seconds: u64,
    /// Which alert labels name the service, env and host of an Alertmanager alert, as
    /// FIELD=LABEL pairs (default service=service,env=env,host=host). Give every node the same.
    #[arg(long, value_name = "FIELD=LABEL,...")]
    pub alert_labels: Option<String>,
    /// Serve TLS (API and peer traffic) with this certificate chain (PEM); needs --tls-key.
    /// Cluster members also need --tls-ca to check each other's certificates.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Tokens this server accepts (lines from `fleetlog token create`). Without it the server runs
    /// open, which it allows only on a loopback address unless --insecure-open is given.
    #[arg(long, env = "FLEETLOG_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Run without tokens even on a non-loopback address: every caller is admin.
    #[arg(long)]
    pub insecure_open: bool,
    /// Requests per second one token may make on this node (with one second's worth as a
    /// burst); beyond it: 429 rate_limited with Retry-After.
    #[arg(long, default_value_t = fleetlog_api::gate::REQUESTS_PER_SECOND_PER_TOKEN)]
    pub requests_per_second_per_token: u32,
    /// Streams one token may hold open on this node; beyond it: 429 too_many_streams_for_token.
    #[arg(long, default_value_t = fleetlog_api::gate::SUBSCRIBERS_PER_TOKEN)]
    pub max_subscribers_per_token: usize,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token: prints the token on the first line and its token-file line on the second.
    #[command(
        after_help = "Examples:\n  fleetlog token create --role deployer --name ci\n  fleetlog token create --role agent --name web-agents --hosts web-1,web-2 --expires 2027-01-01T00:00:00Z"
    )]
    Create(TokenCreateArgs),
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// What the token may do: admin, deployer, agent or auditor.
    #[arg(long)]
    pub role: String,
    /// The principal: the actor of every event appended with this token (default: ROLE-RANDOM).
    #[arg(long)]
    pub name: Option<String>,
    /// Hosts an agent token may act for, comma-separated (agents only, and required for them).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// RFC 3339 time after which the server refuses the token.
    #[arg(long)]
    pub expires: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Form a cluster from members started with `serve --node-id`.
    #[command(
        after_help = "Example:\n  fleetlog cluster init --server http://127.0.0.1:7071 --members 1=127.0.0.1:7071,2=127.0.0.1:7072,3=127.0.0.1:7073"
    )]
    Init(ClusterInitArgs),
    /// Add a node that copies the log without voting (a read replica, or a voter-to-be).
    #[command(after_help = "Example:\n  fleetlog cluster add-learner --node-id 4 --addr 127.0.0.1:7074")]
    AddLearner(ClusterAddLearnerArgs),
    /// Make a learner a voter.
    #[command(after_help = "Example:\n  fleetlog cluster promote --node-id 4")]
    Promote(ClusterNodeArgs),
    /// Remove a node from the cluster.
    #[command(after_help = "Example:\n  fleetlog cluster remove --node-id 2")]
    Remove(ClusterNodeArgs),
    /// Show the leader, the term, every node's log, applied index and lag, and the checkpoint key.
    #[command(after_help = "Example:\n  fleetlog cluster status")]
    Status,
}

#[derive(Args, Debug)]
pub struct ClusterInitArgs {
    /// Members as ID=HOST:PORT,ID=HOST:PORT,...
    #[arg(long, value_delimiter = ',', required = true)]
    pub members: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ClusterAddLearnerArgs {
    /// Id of the new node, as given to its `serve --node-id` (never reused).
    #[arg(long)]
    pub node_id: u64,
    /// Address the new node serves on.
    #[arg(long)]
    pub addr: String,
}

#[derive(Args, Debug)]
pub struct ClusterNodeArgs {
    /// Id of the node.
    #[arg(long)]
    pub node_id: u64,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Node N listens on 127.0.0.1:(base-port + N - 1).
    #[arg(long, default_value_t = 7071)]
    pub base_port: u16,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "./fleetlog-dev")]
    pub data: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// Record that a release of a service exists.
    #[command(
        after_help = "Example:\n  fleetlog release create --service checkout --release 1.4.2 --notes \"faster cart\" --commit 9f3c2a1 --id checkout-1.4.2"
    )]
    Create {
        /// The service the release belongs to.
        #[arg(long)]
        service: String,
        /// The release's name or version.
        #[arg(long)]
        release: String,
        /// Where the release's build can be found (an image, a package, a URL).
        #[arg(long)]
        artifact: Option<String>,
        /// Notes about the release.
        #[arg(long)]
        notes: Option<String>,
        /// A commit in the release (repeatable).
        #[arg(long = "commit")]
        commits: Vec<String>,
        /// When the release's newest commit was made (RFC 3339): change lead time starts there
        /// (`fleetlog dora`); without it, at the release's creation.
        #[arg(long)]
        committed_at: Option<String>,
        /// Idempotency key: retrying with the same id never appends twice.
        #[arg(long)]
        id: Option<String>,
    },
    /// Forbid deploying a release or rolling back to it.
    #[command(
        after_help = "Example:\n  fleetlog release block --service checkout --release 1.4.2 --reason \"checkout errors up 4x on canaries\""
    )]
    Block {
        /// The service the release belongs to.
        #[arg(long)]
        service: String,
        /// The release to block.
        #[arg(long)]
        release: String,
        /// Why the release is blocked.
        #[arg(long)]
        reason: String,
    },
    /// Allow a blocked release again.
    #[command(
        after_help = "Example:\n  fleetlog release unblock --service checkout --release 1.4.2 --reason \"cart timeout fixed in config\""
    )]
    Unblock {
        /// The service the release belongs to.
        #[arg(long)]
        service: String,
        /// The release to allow again.
        #[arg(long)]
        release: String,
        /// Why the release is allowed again.
        #[arg(long)]
        reason: String,
    },
    /// Releases of a service with their timelines.
    #[command(after_help = "Example:\n  fleetlog release list --service checkout")]
    List {
        /// The service whose releases to list.
        #[arg(long)]
        service: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TargetCommand {
    /// Add a host to the fleet of (service, env).
    #[command(
        after_help = "Example:\n  fleetlog target register --service checkout --env prod --host web-1 --group canary --label zone=eu-1a"
    )]
    Register {
        /// The service the host runs.
        #[arg(long)]
        service: String,
        /// The environment the host belongs to.
        #[arg(long)]
        env: String,
        /// The host's name.
        #[arg(long)]
        host: String,
        /// Group the host belongs to (waves can select hosts by group).
        #[arg(long)]
        group: Option<String>,
        /// A label as key=value (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove a host from the fleet (its history stays).
    #[command(after_help = "Example:\n  fleetlog target deregister --service checkout --env prod --host web-6")]
    Deregister {
        /// The service the host runs.
        #[arg(long)]
        service: String,
        /// The environment the host belongs to.
        #[arg(long)]
        env: String,
        /// The host to remove.
        #[arg(long)]
        host: String,
    },
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The service the host runs.
    #[arg(long)]
    pub service: String,
    /// The environment the host belongs to.
    #[arg(long)]
    pub env: String,
    /// The host reporting.
    #[arg(long)]
    pub host: String,
    /// The release the host runs or is installing.
    #[arg(long)]
    pub release: String,
    /// The host's state: applying, running or failed.
    #[arg(long)]
    pub status: String,
    /// Seq of the directive the host applied.
    #[arg(long, default_value_t = 0)]
    pub applied_seq: u64,
    /// A short note, such as why the release failed.
    #[arg(long)]
    pub message: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum DeployCommand {
    /// Start a deployment of a release in waves.
    #[command(
        after_help = "Examples:\n  fleetlog deploy start --service checkout --env prod --release 1.4.2 --id d-2 --wave canary:group=canary --wave rest:percent=100\n  fleetlog deploy start --service checkout --env staging --release 1.4.2 --wave all:percent=100 --force \"hosts register after the start\""
    )]
    Start {
        /// The service to deploy.
        #[arg(long)]
        service: String,
        /// The environment to deploy to.
        #[arg(long)]
        env: String,
        /// The release to deploy.
        #[arg(long)]
        release: String,
        /// NAME:percent=N, NAME:group=G or NAME:hosts=a,b (repeatable, in order).
        #[arg(long = "wave", required = true)]
        waves: Vec<String>,
        /// Deployment id (generated when absent).
        #[arg(long)]
        id: Option<String>,
        /// Go ahead where a guard would refuse (no registered host, a group matching no host),
        /// giving the reason, which is recorded in the event.
        #[arg(long, value_name = "REASON")]
        force: Option<String>,
        /// Break glass: start inside a scheduled freeze window, giving the reason, which is
        /// recorded with the deployment.
        #[arg(long = "override", value_name = "REASON")]
        freeze_override: Option<String>,
        /// Then follow the deployment until it ends, showing each wave's progress as its waves
        /// are started (exit code 0: completed; 1: a host failed or it was aborted; 2: timed out).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit code 2).
        #[arg(long, default_value_t = 3600)]
        timeout_seconds: u64,
    },
    /// Start a wave (or complete it with --complete); says how many hosts it selected.
    #[command(
        after_help = "Examples:\n  fleetlog deploy wave d-2 canary --wait --timeout-seconds 300\n  fleetlog deploy wave d-2 canary --complete\n  fleetlog deploy wave d-2 canary --complete --force \"web-2's disk is full, not the release\""
    )]
    Wave {
        /// The deployment's id.
        deployment: String,
        /// The wave's name.
        wave: String,
        /// Complete the wave instead of starting it.
        #[arg(long)]
        complete: bool,
        /// Go ahead where a guard would refuse (completing a wave with failed hosts, starting
        /// one whose group matches no host), giving the reason, which is recorded in the event.
        #[arg(long, value_name = "REASON")]
        force: Option<String>,
        /// Break glass: start the wave inside a scheduled freeze window, giving the reason,
        /// which is recorded with the deployment.
        #[arg(long = "override", value_name = "REASON", conflicts_with = "complete")]
        freeze_override: Option<String>,
        /// After starting the wave, wait for its hosts as `deploy wait` does (same exit codes).
        #[arg(long, conflicts_with = "complete")]
        wait: bool,
        /// With --wait: give up after this many seconds (exit code 2).
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Wait until the hosts of a wave (or of every started wave) have converged, showing their
    /// progress.
    ///
    /// Exit code 0: converged; 1: a host failed, or the deployment was aborted or rolled back;
    /// 2: timed out.
    #[command(after_help = "Example:\n  fleetlog deploy wait d-2 --wave canary --timeout-seconds 300")]
    Wait {
        /// The deployment's id.
        deployment: String,
        /// The wave to wait for (default: every wave started so far).
        #[arg(long)]
        wave: Option<String>,
        /// Give up after this many seconds (exit code 2).
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
        /// Milliseconds between two looks at the deployment.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// Complete a deployment whose waves are all completed (refused while hosts failed).
    #[command(
        after_help = "Examples:\n  fleetlog deploy complete d-1\n  fleetlog deploy complete d-2 --force \"web-2's disk is full, not the release\""
    )]
    Complete {
        /// The deployment's id.
        deployment: String,
        /// Complete it although hosts failed, giving the reason, which is recorded in the event.
        #[arg(long, value_name = "REASON")]
        force: Option<String>,
    },
    /// Abort a deployment (hosts keep their desired release; use rollback to revert).
    #[command(after_help = "Example:\n  fleetlog deploy abort d-2 --reason \"canary healthchecks failing\"")]
    Abort {
        /// The deployment's id.
        deployment: String,
        /// Why the deployment is aborted.
        #[arg(long)]
        reason: String,
    },
    /// Halt a deployment: no wave starts until it is resumed.
    #[command(after_help = "Example:\n  fleetlog deploy halt d-2 --reason \"latency up on the canaries, looking\"")]
    Halt {
        /// The deployment's id.
        deployment: String,
        /// Why the deployment is halted.
        #[arg(long)]
        reason: String,
    },
    /// Resume a halted deployment.
    #[command(after_help = "Example:\n  fleetlog deploy resume d-2 --reason \"a noisy neighbour, not the release\"")]
    Resume {
        /// The deployment's id.
        deployment: String,
        /// Why it goes on.
        #[arg(long, default_value = "resumed")]
        reason: String,
    },
    /// Why a deployment moved on, halted or rolled back by itself: every decision its policy
    /// made, with the gate, what it saw and the threshold, read from the log alone.
    #[command(after_help = "Example:\n  fleetlog deploy why d-2")]
    Why {
        /// The deployment's id.
        deployment: String,
    },
    /// One deployment's progress, or the latest deployments.
    #[command(
        after_help = "Examples:\n  fleetlog deploy status d-2\n  fleetlog deploy status d-2 --at-seq 18\n  fleetlog deploy status --service checkout --env prod"
    )]
    Status {
        /// The deployment's id (default: list the latest deployments).
        deployment: Option<String>,
        #[command(flatten)]
        moment: MomentArgs,
        /// List only deployments of this service.
        #[arg(long)]
        service: Option<String>,
        /// List only deployments to this environment.
        #[arg(long)]
        env: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The service to roll back.
    #[arg(long)]
    pub service: String,
    /// The environment to roll back.
    #[arg(long)]
    pub env: String,
    /// Why the environment is rolled back.
    #[arg(long)]
    pub reason: String,
    /// Target release (default: the last completed release before the one rolled back).
    #[arg(long)]
    pub release: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Register a receiver; its signing secret is printed once.
    #[command(
        after_help = "Example:\n  fleetlog webhook add --url https://hooks.example.com/fleetlog --events wave.,rollback --format fleetlog"
    )]
    Add {
        /// Where each event is POSTed (http:// or https://).
        #[arg(long)]
        url: String,
        /// Event types, or prefixes ending with a dot, comma-separated: `wave.,rollback`.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// What a receiver is sent: the event's JSON, or a CDEvents document.
        #[arg(long, value_enum, default_value_t = WebhookFormat::Fleetlog)]
        format: WebhookFormat,
    },
    /// The webhooks, with the last seq each receiver acknowledged and its last error.
    List,
    /// Stop sending to a webhook. Removing and adding again is how its secret is rotated.
    #[command(after_help = "Example:\n  fleetlog webhook remove wh-3f9a0c1d2e4b5a69")]
    Remove {
        /// The webhook's id, as `webhook list` shows it.
        id: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    Fleetlog,
    Cdevents,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Fleetlog => "fleetlog",
            WebhookFormat::Cdevents => "cdevents",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum FreezeCommand {
    /// Stop new deployments and waves to an environment (rollbacks are still allowed).
    #[command(
        after_help = "Example:\n  fleetlog freeze start --service checkout --env prod --reason \"holiday sales\""
    )]
    Start {
        /// The service to freeze.
        #[arg(long)]
        service: String,
        /// The environment to freeze.
        #[arg(long)]
        env: String,
        /// Why deployments are stopped.
        #[arg(long)]
        reason: String,
    },
    /// Allow deployments to a frozen environment again.
    #[command(
        after_help = "Example:\n  fleetlog freeze end --service checkout --env prod --reason \"sales are over\""
    )]
    End {
        /// The frozen service.
        #[arg(long)]
        service: String,
        /// The frozen environment.
        #[arg(long)]
        env: String,
        /// Why deployments are allowed again.
        #[arg(long, default_value = "freeze ended")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Replace the policy of an environment, from a JSON file, from flags, or both (flags win).
    #[command(
        after_help = "Examples:\n  fleetlog policy set --service checkout --env prod --bake-seconds 300 --first-wave-extra-bake-seconds 600 --min-healthy 90% --max-failed 1 --on-trip rollback --auto-advance\n  fleetlog policy set --service checkout --env prod --file policy.json\n\nAmounts: N hosts, or P% of the hosts a wave selected."
    )]
    Set {
        /// The service.
        #[arg(long)]
        service: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// A JSON file holding the policy object (the fields below, by the same names).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Seconds each wave must stay healthy after converging.
        #[arg(long)]
        bake_seconds: Option<u64>,
        /// Seconds the first wave bakes on top.
        #[arg(long)]
        first_wave_extra_bake_seconds: Option<u64>,
        /// Fewest healthy hosts a wave may have: N or P%.
        #[arg(long)]
        min_healthy: Option<String>,
        /// Most failed hosts a wave may have: N or P%.
        #[arg(long)]
        max_failed: Option<String>,
        /// Seconds from a wave's start for its hosts to converge.
        #[arg(long)]
        converge_deadline_seconds: Option<u64>,
        /// What a tripped gate does: rollback, halt or none.
        #[arg(long)]
        on_trip: Option<String>,
        /// Start the next wave by itself after a green bake.
        #[arg(long)]
        auto_advance: bool,
        /// What a gate without data does: halt or ignore.
        #[arg(long)]
        no_data: Option<String>,
        /// Alerts that count: LABEL=VALUE[,LABEL=VALUE] (repeatable; one matcher each).
        #[arg(long = "alert")]
        alerts: Vec<String>,
    },
    /// Show the policy of an environment, now or at a past moment.
    #[command(after_help = "Example:\n  fleetlog policy show --service checkout --env prod")]
    Show {
        /// The service.
        #[arg(long)]
        service: String,
        /// The environment.
        #[arg(long)]
        env: String,
        #[command(flatten)]
        moment: MomentArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum CalendarCommand {
    /// Replace the freeze calendar of an environment (--service and --env), or the global one
    /// (neither), from a JSON file, from flags, or both (the flags' windows come after the file's).
    #[command(
        after_help = "Examples:\n  fleetlog calendar set --service checkout --env prod --deny \"0 18 * * fri for 2d15h in Europe/Berlin\" --reason weekend\n  fleetlog calendar set --allow \"0 9 * * mon-fri for 8h in America/New_York\"\n  fleetlog calendar set --deny \"2026-12-24T00:00:00+01:00..2027-01-02T00:00:00+01:00\" --reason \"year end\"\n  fleetlog calendar set --service checkout --env prod --file calendar.json\n  fleetlog calendar set --service checkout --env prod --clear\n\nA window is CRON for DURATION in TIME_ZONE (five cron fields; durations like 90m, 8h, 2d12h; an IANA zone), or START..END (RFC 3339). Deny windows win over allow windows; with allow windows, deployments start waves only inside one. Rollbacks are always allowed."
    )]
    Set {
        /// The service (with --env); neither sets the global calendar.
        #[arg(long, requires = "env")]
        service: Option<String>,
        /// The environment (with --service).
        #[arg(long, requires = "service")]
        env: Option<String>,
        /// A JSON file: {"windows": [...]} or the list of windows itself.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// A window when no wave may start (repeatable).
        #[arg(long, value_name = "WINDOW")]
        deny: Vec<String>,
        /// A window when waves may start (repeatable); outside every allow window, none may.
        #[arg(long, value_name = "WINDOW")]
        allow: Vec<String>,
        /// Why the windows given by flags exist, shown when they refuse a deployment.
        #[arg(long)]
        reason: Option<String>,
        /// Set an empty calendar (no window).
        #[arg(long, conflicts_with_all = ["file", "deny", "allow"])]
        clear: bool,
    },
    /// Show the calendars (all, or those of one environment with whether it is frozen now).
    #[command(
        after_help = "Examples:\n  fleetlog calendar show\n  fleetlog calendar show --service checkout --env prod"
    )]
    Show {
        /// The service (with --env).
        #[arg(long, requires = "env")]
        service: Option<String>,
        /// The environment (with --service).
        #[arg(long, requires = "service")]
        env: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct DoraArgs {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only this environment (with --service).
    #[arg(long, requires = "service")]
    pub env: Option<String>,
    /// Start of the window (RFC 3339); default: 30 days before --until.
    #[arg(long)]
    pub since: Option<String>,
    /// End of the window (RFC 3339); default: now.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// firing, resolved, unmapped (matched no environment) or all.
    #[arg(long, default_value = "firing")]
    pub state: String,
    /// Only alerts of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only alerts of this environment.
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct MomentArgs {
    /// As of this seq.
    #[arg(long, conflicts_with = "at")]
    pub at_seq: Option<u64>,
    /// As of this time (RFC 3339): the state after the last event at or before it.
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Args, Debug)]
pub struct FleetArgs {
    /// Show only hosts of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Show only hosts of this environment.
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub moment: MomentArgs,
}

#[derive(Args, Debug)]
pub struct HostArgs {
    /// The host's name.
    pub host: String,
    #[command(flatten)]
    pub moment: MomentArgs,
}

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Event type, or a prefix ending in a dot (wave.).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events of this stream (such as checkout/prod).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only events of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only events of this environment.
    #[arg(long)]
    pub env: Option<String>,
    /// Only events about this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only events about this release.
    #[arg(long)]
    pub release: Option<String>,
    /// Only events of this deployment.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Only events appended by this actor (a token's name, or anonymous).
    #[arg(long)]
    pub actor: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Events at or before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Verifier string of the checkpoint key (`fleetlog cluster status` prints it). Pinned in the
    /// state file by the first successful run, so later runs may leave it out.
    #[arg(long, env = "FLEETLOG_CHECKPOINT_KEY")]
    pub key: Option<String>,
    /// Witness state: the pinned key and the last accepted checkpoint (default ~/.fleetlog/verify.json).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Events to prove included, comma-separated (default: a random sample, the first and the last).
    #[arg(long, value_delimiter = ',')]
    pub seq: Vec<u64>,
    /// Random events to prove when no --seq is given.
    #[arg(long, default_value_t = 16)]
    pub sample: usize,
    /// Offline: an NDJSON export (GET /v1/export) to recompute hash by hash; `-` reads stdin.
    #[arg(long, conflicts_with_all = ["release", "seq"])]
    pub export: Option<PathBuf>,
    /// Offline: the signed checkpoint (GET /v1/checkpoint) the export's root must match.
    #[arg(long, requires = "export")]
    pub checkpoint: Option<PathBuf>,
    /// Print the audit trail of SERVICE@RELEASE with every event proven included.
    #[arg(long, value_name = "SERVICE@RELEASE")]
    pub release: Option<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// From this moment: a seq, or an RFC 3339 time (the last event at or before it).
    #[arg(long)]
    pub from: String,
    /// To this moment (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Show only hosts of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Show only hosts of this environment.
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The log as it stood at this time (RFC 3339): the newest --limit events at or before it.
    #[arg(long, conflicts_with = "until")]
    pub at: Option<String>,
    /// First seq to read.
    #[arg(long, default_value_t = 1)]
    pub from_seq: u64,
    /// Events to print at most.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Start here instead of at the next new event.
    #[arg(long)]
    pub from_seq: Option<u64>,
}

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Event type, dotted lowercase (such as myapp.config.changed).
    #[arg(long = "type")]
    pub event_type: String,
    /// Stream to append to (default: SERVICE/ENV when both are given, else _global).
    #[arg(long)]
    pub stream: Option<String>,
    /// The service the event is about.
    #[arg(long)]
    pub service: Option<String>,
    /// The environment the event is about.
    #[arg(long)]
    pub env: Option<String>,
    /// The host the event is about.
    #[arg(long)]
    pub host: Option<String>,
    /// The release the event is about.
    #[arg(long)]
    pub release: Option<String>,
    /// The deployment the event is about.
    #[arg(long)]
    pub deployment: Option<String>,
    /// The event's data, a JSON object.
    #[arg(long)]
    pub data: Option<String>,
    /// Idempotency key: retrying with the same id never appends twice.
    #[arg(long)]
    pub id: Option<String>,
    /// Append only if the stream is at this version: any, no_stream, exists or a version number.
    #[arg(long)]
    pub expected_version: Option<String>,
}
