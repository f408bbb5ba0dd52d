//! The simulator as CI runs it: a fixed set of seeds passes every invariant, a seed replays to
//! the same trace byte for byte, and a known bug put back is found.

use std::time::Duration;

use fleetlog_sim::{run, Bug, RunOptions, RunReport, Workload};

fn options(seed: u64, seconds: u64) -> RunOptions {
    RunOptions { seed, duration: Duration::from_secs(seconds), keep_trace: true, bug: None, workload: Workload::Fleet }
}

/// Seeds CI runs on every change; each simulates two minutes of faults and traffic.
const FIXED_SEEDS: std::ops::Range<u64> = 0..40;

/// Seeds that once found a bug, with the simulated seconds that found it: they stay in the set
/// (docs/simulation.md, "What it has found"). They were found before the simulator had agents
/// and policies, and run without them, so that they replay the schedules that found them.
/// - 1443: a leader an interrupted removal left outside the membership changed it anyway.
/// - 3609, 3969: a wiped machine came back under its old id (now: a new id; the node refuses
///   old ids).
/// - 419: a restarted node acknowledged entries that the crashed process had written but not
///   synced, and a power loss then took them (now: opening the disk makes them durable).
const REGRESSION_SEEDS: &[(u64, u64)] = &[(419, 300), (1443, 300), (3609, 300), (3969, 300)];

/// Seeds that found a bug with the whole workload (agents and policies), which they run with.
/// - 68: node 3 installed a snapshot up to seq 942 while agent h3 watched it live from seq 711;
///   the watch skipped every directive the snapshot covered (823 to 931). Now an install tells
///   every host watcher to read its host from disk again.
const FLEET_REGRESSION_SEEDS: &[(u64, u64)] = &[(68, 300)];

fn failures(reports: &[RunReport]) -> Vec<String> {
    reports
        .iter()
        .filter(|report| !report.violations.is_empty())
        .map(|report| {
            format!(
                "seed {}: {} (replay: cargo run --profile sim -p fleetlog-sim -- --seed {} --seconds {} --trace, \
                 with --clients-only for a regression seed)",
                report.seed,
                report.violations[0],
                report.seed,
                report.simulated.as_secs()
            )
        })
        .collect()
}

#[test]
fn the_fixed_seeds_break_no_invariant() {
    let mut reports = Vec::new();
    for seed in FIXED_SEEDS {
        reports.push(run(&options(seed, 120)));
    }
    for (seed, seconds) in REGRESSION_SEEDS {
        reports.push(run(&RunOptions { workload: Workload::ClientsOnly, ..options(*seed, *seconds) }));
    }
    for (seed, seconds) in FLEET_REGRESSION_SEEDS {
        reports.push(run(&options(*seed, *seconds)));
    }
    let failed = failures(&reports);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The runs did work: appends were acknowledged, reads answered, the ledger grew.
    for report in &reports {
        assert!(
            report.appends_acknowledged > 10,
            "seed {} acknowledged {} appends",
            report.seed,
            report.appends_acknowledged
        );
        assert!(report.head_seq > 10, "seed {} ends at head {}", report.seed, report.head_seq);
    }
    assert!(reports.iter().map(|report| report.reads_answered).sum::<usize>() > 100);
    // The fleet did work too: agents heard directives, policies decided steps by themselves.
    let heard: usize = reports.iter().map(|report| report.directives_heard).sum();
    let decided: usize = reports.iter().map(|report| report.policy_decisions).sum();
    assert!(heard > 100, "the agents heard {heard} directives in all");
    assert!(decided > 10, "the policy evaluator appended {decided} decisions in all");
    // Seed 1443 still reaches the state it was kept for: a leader outside the membership it is
    // asked to change (now it hands leadership over instead of changing it).
    let seed_1443 = reports.iter().find(|report| report.seed == 1443).expect("seed 1443 ran");
    let handover = seed_1443.trace.iter().any(|line| line.contains("leads outside the membership"));
    assert!(handover, "seed 1443 no longer puts a leader outside its membership");
    // Seed 68 still installs a snapshot on node 3 under agent h3's live watch of it.
    let seed_68 = reports.iter().find(|report| report.seed == 68).expect("seed 68 ran");
    let mut watching_live = false;
    let mut installed_under_watch = false;
    for line in &seed_68.trace {
        if line.contains("agent h3: watches") || line.contains("agent h3: restarted") {
            watching_live = line.contains("agent h3: watches node 3 live");
        }
        installed_under_watch |= watching_live && line.contains("node 3 installed a snapshot");
    }
    assert!(installed_under_watch, "seed 68 no longer installs a snapshot under a live watch");
}

#[test]
fn a_seed_replays_to_the_same_trace_byte_for_byte() {
    let first = run(&options(7, 45));
    let again = run(&options(7, 45));
    assert!(first.trace.len() > 100, "a trace of {} lines", first.trace.len());
    assert_eq!(first.trace_digest, again.trace_digest);
    assert_eq!(first.trace.join("\n").into_bytes(), again.trace.join("\n").into_bytes());
    let other = run(&options(8, 45));
    assert_ne!(other.trace_digest, first.trace_digest, "another seed, another run");
}

/// Reporting appended entries durable before their sync is found: two replicas end up applying
/// different entries at one index, or acknowledged events go missing.
#[test]
fn acknowledging_before_the_sync_is_found() {
    let found = (0..40).find_map(|seed| {
        let report = run(&RunOptions { bug: Some(Bug::AckBeforeSync), ..options(seed, 300) });
        report.violations.first().map(|violation| (seed, violation.clone()))
    });
    let (seed, violation) = found.expect("some seed of the first 40 finds the acknowledgement before the sync");
    eprintln!("seed {seed} found it: {violation}");
}

/// A snapshot build overwriting a newer install is found: seed 249 of five simulated minutes,
/// the first of seeds 0..999 to find it (`make sim SEEDS=1000 BUG=stale-snapshot-wins`), breaks
/// the invariant that a kept snapshot covers the purged log, and the same seed without the bug
/// passes. (Nothing else in CI puts this bug back.)
const STALE_SNAPSHOT_SEED: u64 = 249;

#[test]
fn a_stale_snapshot_winning_is_found() {
    let with_bug = run(&RunOptions { bug: Some(Bug::StaleSnapshotWins), ..options(STALE_SNAPSHOT_SEED, 300) });
    let first = with_bug.violations.first().cloned().unwrap_or_default();
    assert!(
        first.contains("but its snapshot stops at"),
        "seed {STALE_SNAPSHOT_SEED} with the bug: {:?}",
        with_bug.violations
    );
    let without = run(&options(STALE_SNAPSHOT_SEED, 300));
    assert!(without.violations.is_empty(), "seed {STALE_SNAPSHOT_SEED} without the bug: {:?}", without.violations);
}

/// A watch that resumes at the new node's head instead of after the agent's position loses the
/// directives announced while the agent moved: seed 0 finds it (every one of seeds 0..19 does,
/// `make sim SEEDS=20 BUG=watch-resumes-at-head`), and passes without it.
#[test]
fn a_watch_resuming_past_the_agents_position_is_found() {
    let with_bug = run(&RunOptions { bug: Some(Bug::WatchResumesAtHead), ..options(0, 120) });
    let found = with_bug.violations.iter().any(|violation| violation.contains("missing"));
    assert!(found, "seed 0 with the bug: {:?}", with_bug.violations);
    let without = run(&options(0, 120));
    assert!(without.violations.is_empty(), "seed 0 without the bug: {:?}", without.violations);
    assert!(without.directives_heard > 0, "the agents heard nothing");
}
