//! `fleetlog-sim`: runs seeds of the cluster simulation and says which failed, how to replay
//! them, and the first invariant each broke.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;
use fleetlog_sim::{run, Bug, RunOptions, RunReport, Workload};

#[derive(Parser, Debug)]
#[command(name = "fleetlog-sim", about = "Deterministic simulation of a fleetlog cluster under seeded faults")]
struct Arguments {
    /// Run this one seed (print its trace with --trace).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --first on.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Simulated seconds of faults and workload per seed (settling comes on top).
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Seeds run at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print the trace of --seed.
    #[arg(long)]
    trace: bool,
    /// Put a known bug back (ack-before-sync, stale-snapshot-wins, watch-resumes-at-head), to
    /// see how soon the simulation finds it.
    #[arg(long)]
    bug: Option<Bug>,
    /// Run clients and subscribers only, without agents and policies, as the simulator did
    /// before it had them (the seeds that found bugs then replay with it).
    #[arg(long)]
    clients_only: bool,
}

/// Runs one seed, turning a panic into a violation.
fn run_caught(options: &RunOptions) -> RunReport {
    match std::panic::catch_unwind(AssertUnwindSafe(|| run(options))) {
        Ok(report) => report,
        Err(panic) => RunReport {
            seed: options.seed,
            nodes: 0,
            violations: vec![format!(
                "the simulation panicked: {}",
                fleetlog_sim::take_last_panic()
                    .unwrap_or_else(|| fleetlog_raft::domain::invariant::panic_text(&*panic))
            )],
            trace: Vec::new(),
            trace_lines: 0,
            trace_digest: String::new(),
            simulated: Duration::ZERO,
            appends_acknowledged: 0,
            reads_answered: 0,
            head_seq: 0,
            directives_heard: 0,
            policy_decisions: 0,
        },
    }
}

fn workload(arguments: &Arguments) -> Workload {
    if arguments.clients_only {
        Workload::ClientsOnly
    } else {
        Workload::Fleet
    }
}

fn replay_command(seed: u64, seconds: u64, bug: Option<Bug>, workload: Workload) -> String {
    let program =
        std::env::current_exe().map(|path| path.display().to_string()).unwrap_or_else(|_| "fleetlog-sim".into());
    let bug = match bug {
        Some(Bug::AckBeforeSync) => " --bug ack-before-sync",
        Some(Bug::StaleSnapshotWins) => " --bug stale-snapshot-wins",
        Some(Bug::WatchResumesAtHead) => " --bug watch-resumes-at-head",
        None => "",
    };
    let workload = if workload == Workload::ClientsOnly { " --clients-only" } else { "" };
    format!("{program} --seed {seed} --seconds {seconds}{bug}{workload} --trace")
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    // openraft's log, for reading one seed's run closely; its lines carry no time because the
    // wall clock means nothing in a simulation (the trace has the simulated time).
    if let Ok(filter) = std::env::var("FLEETLOG_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .without_time()
            .with_writer(std::io::stderr)
            .init();
    }
    let duration = Duration::from_secs(arguments.seconds);
    if let Some(seed) = arguments.seed {
        let report = run_caught(&RunOptions {
            seed,
            duration,
            keep_trace: arguments.trace,
            bug: arguments.bug,
            workload: workload(&arguments),
        });
        for line in &report.trace {
            println!("{line}");
        }
        println!(
            "seed {seed}: {} nodes, head {}, {} appends acknowledged, {} reads, {} directives heard, {} policy \
             decisions, {:.0} simulated s, trace {} lines, digest {}",
            report.nodes,
            report.head_seq,
            report.appends_acknowledged,
            report.reads_answered,
            report.directives_heard,
            report.policy_decisions,
            report.simulated.as_secs_f64(),
            report.trace_lines,
            report.trace_digest
        );
        return match report.violations.first() {
            None => ExitCode::SUCCESS,
            Some(first) => {
                println!("VIOLATED: {first}");
                ExitCode::FAILURE
            }
        };
    }

    let jobs = arguments.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    let next = Arc::new(AtomicU64::new(arguments.first));
    let Some(end) = arguments.first.checked_add(arguments.seeds) else {
        eprintln!("fleetlog-sim: --first {} plus --seeds {} is past the last seed", arguments.first, arguments.seeds);
        return ExitCode::from(2);
    };
    let (reports, received) = mpsc::channel();
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, reports, bug, workload) = (next.clone(), reports.clone(), arguments.bug, workload(&arguments));
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return;
                }
                let report = run_caught(&RunOptions { seed, duration, keep_trace: false, bug, workload });
                if reports.send(report).is_err() {
                    return;
                }
            })
        })
        .collect();
    drop(reports);
    let mut failed = Vec::new();
    let mut simulated = Duration::ZERO;
    let mut done = 0u64;
    for report in received {
        done += 1;
        simulated += report.simulated;
        if let Some(first) = report.violations.first() {
            println!("seed {} FAILED: {first}", report.seed);
            println!(
                "  replay: {}",
                replay_command(report.seed, arguments.seconds, arguments.bug, workload(&arguments))
            );
            failed.push(report.seed);
        }
        if done.is_multiple_of(100) {
            eprintln!("{done} seeds run, {} failed, {:.0} s", failed.len(), started.elapsed().as_secs_f64());
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
    let real = started.elapsed();
    failed.sort_unstable();
    println!(
        "{done} seeds ({}..{end}) of {} simulated s each, {jobs} at a time: {} failed; {:.0} simulated s in {:.1} real s ({:.0}x, {:.0}x per core)",
        arguments.first,
        arguments.seconds,
        failed.len(),
        simulated.as_secs_f64(),
        real.as_secs_f64(),
        simulated.as_secs_f64() / real.as_secs_f64(),
        simulated.as_secs_f64() / real.as_secs_f64() / jobs as f64
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}
