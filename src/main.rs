use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: the server makes many small, short-lived allocations on
/// several threads, and glibc spent about a fifth of a loaded leader's CPU on them (see
/// docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let filter = EnvFilter::try_from_env("FLEETLOG_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = fleetlog::cli::Cli::parse();
    if let Err(error) = fleetlog::run(cli).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
