use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: the server makes many small, short-lived allocations on
/// several threads, and glibc spent about a fifth of a loaded leader's CPU on them (see
/// docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long an exiting process waits for its databases to finish closing.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() {
    let filter = EnvFilter::try_from_env("FLEETLOG_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = fleetlog::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("start the async runtime");
    let result = runtime.block_on(fleetlog::run(cli));
    // Dropping the runtime drops every task and the database handles they hold; the last handle
    // may go on another thread, so wait for RocksDB to close before the process exits.
    drop(runtime);
    if !fleetlog_raft::storage::db::wait_until_closed(CLOSE_WAIT) {
        tracing::warn!("a database was still open when the process exited");
    }
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
