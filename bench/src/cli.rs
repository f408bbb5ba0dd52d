//! `fleetlog-bench`'s arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Load generators and measures for fleetlog. They live in a binary of their own so the
/// production binary carries none of them (nor the etcd installer `compare` and `fanout` use).
#[derive(Parser, Debug)]
#[command(name = "fleetlog-bench", version, about = "Load generators that measure fleetlog, side by side with etcd")]
pub struct Cli {
    /// Server to measure: a URL, or a comma-separated list (`fanout` and `alert` spread over them).
    #[arg(long, global = true, env = "FLEETLOG_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// The `fleetlog` executable the benches that start their own cluster run (`compare`);
    /// default: the one next to this program.
    #[arg(long, global = true, env = "FLEETLOG_EXECUTABLE")]
    pub fleetlog: Option<PathBuf>,
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Alert received to rollback committed: rounds of a deployment whose canaries an
    /// Alertmanager alert makes the policy roll back (on a service of its own on the server).
    Alert(BenchAlertArgs),
    /// Closed-loop appends against any fleetlog: latency percentiles (HdrHistogram), events/s
    /// and the CPU time the servers spent per event.
    Append(BenchAppendArgs),
    /// Start a fresh 3-node fleetlog cluster and a fresh 3-member etcd cluster here (installing
    /// Debian's etcd-server if missing), run the same closed-loop single-event load against each,
    /// alternating, and print both and the ratio for each client count.
    Compare(BenchCompareArgs),
    /// Catch-up read: one subscriber reads the ledger from `--from-seq` to the head (from disk)
    /// over `GET /v1/subscribe`; prints events/s.
    Catchup(BenchCatchupArgs),
    /// Time the fleet view of many registered hosts, now and at a past seq.
    Fleet(BenchFleetArgs),
    /// Watch fan-out: N simulated agents (one connection each) watch their hosts, a rollback is
    /// appended, and the time until the first, median and last agent received it is printed;
    /// then the same with etcd watchers. `--server` may list several nodes; agents spread over them.
    Fanout(BenchFanoutArgs),
    /// Latency of inclusion proofs, consistency proofs and past checkpoints on the server's
    /// ledger as it is (every inclusion proof is also verified).
    Proofs(BenchProofsArgs),
    /// Apply cost of a rollback and of a wave selecting every host, at N registered hosts:
    /// in-process (no server, `--server` is ignored), a fresh single-node ledger in a temporary
    /// directory per N, one command per Raft entry through the real state machine.
    Rollback(BenchRollbackArgs),
}

#[derive(Args, Debug)]
pub struct BenchRollbackArgs {
    /// Registered host counts to measure, comma-separated; each gets a fresh ledger.
    #[arg(long, default_value = "1000,10000,100000")]
    pub hosts: String,
    /// Wave starts and rollbacks timed at each host count (p50 and max are printed).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Host registrations per Raft entry while setting up (in requests of at most 1,000 events).
    #[arg(long, default_value_t = 2_000)]
    pub registrations_per_entry: usize,
    /// Directory to make each host count's ledger in (removed afterwards); default: the
    /// system's temporary directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchAlertArgs {
    /// Deployments rolled back by an alert.
    #[arg(long, default_value_t = 50)]
    pub rounds: u64,
    /// Hosts registered (the first two are the canaries).
    #[arg(long, default_value_t = 10)]
    pub hosts: u64,
    /// Simulated agents (one watch connection each, on hosts of their own): each deployment
    /// then goes to every host in one wave, and the bench also times the alert until the last
    /// agent received the rollback's directive. 0: no agents, canaries only.
    #[arg(long, default_value_t = 0)]
    pub agents: usize,
    /// With --agents: agents connecting at once.
    #[arg(long, default_value_t = 200)]
    pub connect_parallel: usize,
    /// Kill the leader (SIGKILL) right after it acknowledged each alert, time the rollback as
    /// a survivor serves it, then start the killed node again. Needs every node's URL in
    /// --server and the nodes running on this machine (`benches/cluster.sh up`).
    #[arg(long, conflicts_with = "agents")]
    pub kill_leader: bool,
}

#[derive(Args, Debug)]
pub struct BenchProofsArgs {
    /// Requests of each kind.
    #[arg(long, default_value_t = 1_000)]
    pub requests: u64,
    /// Read the node's own applied state (`consistency=local`) instead of a linearizable read.
    #[arg(long)]
    pub local: bool,
}

#[derive(Args, Debug)]
pub struct BenchFanoutArgs {
    /// Simulated agents, each with its own connection and host.
    #[arg(long, default_value_t = 1_000)]
    pub agents: usize,
    /// Hosts registered in the environment rolled back (at least `--agents`; the first
    /// `--agents` of them are watched): the rollback's cost should not depend on it.
    #[arg(long)]
    pub hosts: Option<usize>,
    /// Rollbacks to time (alternating between two releases).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// `auto`: also measure a local 3-member etcd cluster started for the run when `etcd` is
    /// installed; `off`: skip; or client URLs of a running etcd cluster, comma-separated.
    #[arg(long, default_value = "auto")]
    pub etcd: String,
    /// Connections being opened at once while the watchers connect.
    #[arg(long, default_value_t = 200)]
    pub connect_parallel: usize,
    /// Also print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip the loopback floor (one write to each of `--agents` loopback connections, or as
    /// many as this process's open-file limit leaves room for, measured after the rounds).
    #[arg(long)]
    pub no_floor: bool,
}

#[derive(Args, Debug)]
pub struct BenchAppendArgs {
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Approximate bytes of each event's data.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Events to append in all.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// HTTP connections the clients share (default: one per client). HTTP/1.1 carries one
    /// request at a time, so clients sharing a connection take turns on it.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Also stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<f64>,
}

#[derive(Args, Debug)]
pub struct BenchCatchupArgs {
    /// First seq to read.
    #[arg(long, default_value_t = 1)]
    pub from_seq: u64,
    /// Events to read (default: up to the head at the start).
    #[arg(long)]
    pub events: Option<u64>,
}

#[derive(Args, Debug)]
pub struct BenchCompareArgs {
    /// Client counts to measure, comma-separated.
    #[arg(long, default_value = "1,16,256")]
    pub clients: String,
    /// Connections per system (default: one per client).
    #[arg(long)]
    pub connections: Option<usize>,
    /// A/B pairs per client count; the order alternates from one pair to the next.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Length of each run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Bytes of each event's data and of each put's value.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Also print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchFleetArgs {
    /// Hosts registered in the (service, env) whose fleet view is timed.
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// Hosts registered in all, the others in environments of `--hosts` each (at least `--hosts`).
    #[arg(long)]
    pub registered: Option<usize>,
    /// Fleet requests per measurement.
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
}
