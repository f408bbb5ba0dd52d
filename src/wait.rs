//! `fleetlog deploy wait` (and `deploy wave … --wait`): follows a deployment's waves until their
//! hosts have converged, one has failed, or the time is up, and ends with an exit code a script
//! can act on.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use fleetlog_api::client::Client;
use fleetlog_types as types;
use serde::Deserialize;

use crate::cli::Output;

/// Exit code when every host of the waves waited for converged.
pub const EXIT_CONVERGED: i32 = 0;
/// Exit code when a host failed, or the deployment was aborted or rolled back.
pub const EXIT_FAILED: i32 = 1;
/// Exit code when the time ran out first.
pub const EXIT_TIMED_OUT: i32 = 2;

/// How a wait ended without converging: the process exits with `code`.
#[derive(Debug)]
pub struct WaitEnded {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for WaitEnded {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for WaitEnded {}

/// One wave's progress as the deployment view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Progress {
    name: String,
    state: String,
    selected: u64,
    converged: u64,
    failed: u64,
}

impl Progress {
    fn line(&self, terminal: bool) -> String {
        let counts =
            format!("{} of {} converged, {} failed ({})", self.converged, self.selected, self.failed, self.state);
        if !terminal {
            return format!("wave {}: {counts}", self.name);
        }
        const WIDTH: u64 = 30;
        let filled = (self.converged * WIDTH).checked_div(self.selected).unwrap_or(WIDTH) as usize;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH as usize - filled));
        format!("wave {:<12} [{bar}] {counts}", self.name)
    }
}

fn waves_of(deployment: &types::Deployment) -> Vec<Progress> {
    deployment
        .waves
        .iter()
        .map(|wave| Progress {
            name: wave.name.clone(),
            state: wave.state.clone(),
            selected: wave.hosts.selected,
            converged: wave.hosts.converged,
            failed: wave.hosts.failed,
        })
        .collect()
}

/// What a wait waits for.
#[derive(Clone, Copy, Debug)]
pub enum Goal<'a> {
    /// The hosts of one wave converged.
    Wave(&'a str),
    /// The hosts of every wave started so far converged (at least one wave started).
    StartedWaves,
    /// The deployment completed (`deploy start --wait`): waves are followed as they start.
    Ended,
}

/// Waits for `goal` of `deployment`, failing early when a watched host failed or the
/// deployment was aborted.
pub async fn wait(
    client: &Client,
    output: Output,
    deployment: &str,
    goal: Goal<'_>,
    timeout: Duration,
    interval: Duration,
) -> Result<()> {
    let wave = match goal {
        Goal::Wave(name) => Some(name),
        Goal::StartedWaves | Goal::Ended => None,
    };
    let terminal = matches!(output, Output::Table) && std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut shown: Vec<Progress> = Vec::new();
    loop {
        // Kept as sent for `--output json`, and read into its type for everything else.
        let view = client.get(&format!("/v1/deployments/{deployment}"), &[]).await?;
        let detail = types::DeploymentDetail::deserialize(&view)?;
        let all = waves_of(&detail.deployment);
        let watched: Vec<Progress> = match wave {
            Some(name) => match all.iter().find(|progress| progress.name == name) {
                Some(progress) => vec![progress.clone()],
                None => {
                    let names: Vec<&str> = all.iter().map(|progress| progress.name.as_str()).collect();
                    return Err(ended(
                        EXIT_FAILED,
                        format!("deployment {deployment} has no wave {name:?}; its waves: {}", names.join(", ")),
                    ));
                }
            },
            None => all.iter().filter(|progress| progress.state != "pending").cloned().collect(),
        };
        if matches!(output, Output::Table) && watched != shown {
            show(&watched, &shown, terminal);
            shown = watched.clone();
        }
        let state = detail.deployment.state.as_str();
        if let Some(failed) = watched.iter().find(|progress| progress.failed > 0) {
            return Err(ended(
                EXIT_FAILED,
                format!(
                    "wave {} of {deployment}: {} host(s) failed; `fleetlog fleet --service {} --env {}` shows which",
                    failed.name, failed.failed, detail.deployment.service, detail.deployment.env
                ),
            ));
        }
        if state == "aborted" {
            let reason = detail.deployment.end_reason.as_deref().unwrap_or("no reason given");
            return Err(ended(EXIT_FAILED, format!("deployment {deployment} was aborted: {reason}")));
        }
        let pending = wave.is_some() && watched.iter().all(|progress| progress.state == "pending");
        let converged = watched.iter().all(|progress| progress.converged >= progress.selected);
        let reached = match goal {
            Goal::Ended => state == "completed",
            Goal::Wave(_) | Goal::StartedWaves => {
                !pending && converged && (!watched.is_empty() || state == "completed")
            }
        };
        if reached {
            if matches!(output, Output::Json) {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                let word = if matches!(goal, Goal::Ended) { "completed" } else { "converged" };
                println!("{word}: {}", summary(&watched));
            }
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(ended(
                EXIT_TIMED_OUT,
                format!("timed out after {:.0} s: {}", timeout.as_secs_f64(), summary(&watched)),
            ));
        }
        tokio::time::sleep(interval.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

fn ended(code: i32, message: String) -> anyhow::Error {
    WaitEnded { code, message }.into()
}

fn summary(waves: &[Progress]) -> String {
    if waves.is_empty() {
        return "no wave has started".to_string();
    }
    let parts: Vec<String> = waves
        .iter()
        .map(|progress| format!("wave {} {} of {} converged", progress.name, progress.converged, progress.selected))
        .collect();
    parts.join(", ")
}

/// Prints the waves: redrawn in place on a terminal, a line per change otherwise.
fn show(waves: &[Progress], before: &[Progress], terminal: bool) {
    let mut stdout = std::io::stdout().lock();
    if terminal {
        // Move up over the lines drawn last time and draw them again.
        if !before.is_empty() {
            let _ = write!(stdout, "\x1b[{}A", before.len());
        }
        for progress in waves {
            let _ = writeln!(stdout, "\x1b[2K{}", progress.line(true));
        }
    } else {
        for progress in waves.iter().filter(|progress| !before.contains(progress)) {
            let _ = writeln!(stdout, "{}", progress.line(false));
        }
    }
    let _ = stdout.flush();
}
