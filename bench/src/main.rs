//! `fleetlog-bench`: load generators that measure a running fleetlog over real HTTP (side by side
//! with etcd where a comparison means something), and `rollback`, which times the apply step
//! in-process. A binary of its own: the production `fleetlog` carries no load generator.

mod alert;
mod append;
mod catchup;
mod cli;
mod compare;
mod etcd;
mod fanout;
mod fleet;
mod floor;
mod leader_kill;
mod load;
mod proofs;
mod rollback;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{BenchCommand, Cli};

fn main() {
    let filter = EnvFilter::try_from_env("FLEETLOG_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("start the async runtime");
    if let Err(error) = runtime.block_on(run(cli)) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let server = cli.server.as_str();
    match cli.command {
        BenchCommand::Alert(args) => alert::run(server, args).await,
        BenchCommand::Append(args) => append::run(server, args).await,
        BenchCommand::Compare(args) => compare::run(&fleetlog_executable(cli.fleetlog)?, args).await,
        BenchCommand::Catchup(args) => catchup::run(server, args).await,
        BenchCommand::Fleet(args) => fleet::run(server, args).await,
        BenchCommand::Fanout(args) => fanout::run(server, args).await,
        BenchCommand::Proofs(args) => proofs::run(server, args).await,
        BenchCommand::Rollback(args) => rollback::run(args).await,
    }
}

/// `--fleetlog`, or the `fleetlog` next to this program (cargo builds both into one directory,
/// `make install` installs both into one).
fn fleetlog_executable(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe().context("cannot find this program's path")?.with_file_name("fleetlog"),
    };
    anyhow::ensure!(path.is_file(), "no fleetlog executable at {} (give one with --fleetlog)", path.display());
    Ok(path)
}
