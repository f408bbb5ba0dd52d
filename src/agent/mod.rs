//! `fleetlog agent`: keeps one host of one (service, env) on its desired release.
//!
//! Three tasks: the watcher follows `/v1/watch/{host}` (reconnecting across servers and resuming
//! after the last seq it passed on), the main loop keeps the state and runs the command, and the
//! reporter delivers the newest report. The main loop saves the state before acting on it: a
//! directive is recorded as the target before its command starts, and as applied once the command
//! finished, so after a crash the agent neither skips a directive nor repeats a finished one.
//! A command that fails is retried after a growing, jittered pause (`--retry-initial-seconds`
//! doubling to `--retry-max-seconds`) until it succeeds or a newer directive replaces it; a
//! restarted agent retries at once. Every attempt is reported: `applying`, then `running` or
//! `failed`, each message starting with `attempt N`.
//!
//! With `--check CMD`, a fourth task runs the host's own health check every `--check-every`;
//! the main loop reports a verdict only when it differs from the health it said last (kept in
//! the state file, never said counting as healthy), as `host.reported` with `data.health`.

pub mod health;
pub mod reporter;
pub mod runner;
pub mod servers;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use anyhow::{bail, Context, Result};
use fleetlog_api::client::{ClientError, Credentials, SseMessage};
use fleetlog_types as types;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::agent::reporter::Report;
use crate::agent::runner::{Finished, Runner};
use crate::agent::servers::Servers;
use crate::agent::state::{Directive, Outcome, SaidHealth, StateFile};
use crate::backoff::{Backoff, RetryPolicy};
use crate::cli::AgentArgs;

/// With no message (heartbeats come every 5 s) for this long, the stream is taken for dead.
pub const STREAM_SILENCE_MAX: Duration = Duration::from_secs(15);

/// Which host of which environment this agent keeps.
#[derive(Clone, Debug)]
pub struct Identity {
    pub host: String,
    pub service: String,
    pub env: String,
}

/// What the watch stream told: the seq it is at, and this host's desired release if it changed.
#[derive(Debug)]
struct Update {
    position: u64,
    directive: Option<Directive>,
}

pub async fn run(servers: &str, credentials: &Credentials, args: AgentArgs) -> Result<()> {
    if args.exec_timeout == 0 {
        bail!("--exec-timeout must be at least 1 second");
    }
    let retry = retry_policy(&args)?;
    let identity = Identity { host: args.host.clone(), service: args.service.clone(), env: args.env.clone() };
    let servers = Arc::new(Servers::new(servers, credentials, &identity.host)?);
    let state_directory =
        args.state_dir.clone().unwrap_or_else(|| format!("./fleetlog-agent-{}", identity.host).into());
    let file = StateFile::new(&state_directory)?;
    let mut state = file.load(&identity.host, &identity.service, &identity.env)?;
    tracing::info!(
        host = %identity.host, service = %identity.service, env = %identity.env,
        state = %file.path().display(), position = state.position,
        current = ?state.current.as_ref().map(|applied| &applied.directive.release),
        pending = ?state.pending().map(|directive| &directive.release), attempts = state.attempts,
        "agent starting"
    );

    register(&servers, &identity, &args).await?;
    let reports = reporter::spawn(servers.clone(), identity.clone());
    let (updates_sender, mut updates) = mpsc::channel(256);
    tokio::spawn(watch(servers.clone(), identity.clone(), state.position, updates_sender));

    let runner = Arc::new(Runner {
        command: args.exec.clone(),
        host: identity.host.clone(),
        service: identity.service.clone(),
        env: identity.env.clone(),
        timeout: Duration::from_secs(args.exec_timeout),
    });
    let mut running: Option<tokio::task::JoinHandle<(Directive, u32, Finished)>> = None;
    let mut checks = match &args.check {
        Some(command) => Some(health::spawn(health::Check {
            command: command.clone(),
            every: check_interval(args.check_every)?,
            identity: identity.clone(),
        })),
        None => None,
    };
    // The newest report sent, which a change of health is sent with.
    let mut last_report: Option<Report> = None;
    let mut shutdown = std::pin::pin!(crate::serve::shutdown_signal());
    loop {
        if running.is_none() {
            if let Some(directive) = state.due(Instant::now()).cloned() {
                let attempt = state.start();
                file.save(&state)?;
                tracing::info!(release = %directive.release, seq = directive.seq, cause = %directive.cause, attempt, "applying");
                let report = Report {
                    seq: directive.seq,
                    release: directive.release.clone(),
                    status: "applying",
                    message: Some(format!("attempt {attempt}")),
                    attempt,
                    health: state.health,
                };
                last_report = Some(report.clone());
                reports.send_replace(Some(report));
                let runner = runner.clone();
                running = Some(tokio::spawn(async move {
                    let finished = runner.run(&directive).await;
                    (directive, attempt, finished)
                }));
            }
        }
        // Set while a failed command waits for its retry (a newer directive clears it).
        let retry_at = state.retry_at().filter(|_| running.is_none()).map(tokio::time::Instant::from_std);
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else { bail!("the watcher stopped") };
                if state.take(update.position, update.directive) {
                    file.save(&state)?;
                }
            }
            finished = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                let (directive, attempt, finished) = finished.context("the command's task failed")?;
                let pause = state.finish(directive.clone(), finished.outcome).map(|failed| retry.pause(failed));
                if let Some(pause) = pause {
                    state.defer(Instant::now() + pause);
                }
                file.save(&state)?;
                let message = match (finished.outcome, pause) {
                    (Outcome::Running, _) => {
                        tracing::info!(release = %directive.release, seq = directive.seq, attempt, elapsed = ?finished.elapsed, "applied");
                        format!("attempt {attempt}: {}", finished.message)
                    }
                    (Outcome::Failed, Some(pause)) => {
                        tracing::warn!(release = %directive.release, seq = directive.seq, attempt, retry_in = ?pause, message = %finished.message, "failed; will retry");
                        format!("attempt {attempt} failed, retrying in {:.1} s: {}", pause.as_secs_f64(), finished.message)
                    }
                    (Outcome::Failed, None) => {
                        tracing::warn!(release = %directive.release, seq = directive.seq, attempt, message = %finished.message, "failed; a newer directive replaced it");
                        format!("attempt {attempt} failed: {}", finished.message)
                    }
                };
                let report = Report {
                    seq: directive.seq,
                    release: directive.release,
                    status: finished.outcome.as_str(),
                    message: Some(message),
                    attempt,
                    health: state.health,
                };
                last_report = Some(report.clone());
                reports.send_replace(Some(report));
            }
            verdict = next_verdict(&mut checks), if checks.is_some() => {
                let said = state.health.is_none_or(|health| health.healthy);
                if verdict.healthy == said {
                    continue;
                }
                // A report names a release: before the first directive there is nothing to say
                // it with, and the next verdict tries again.
                let Some(mut report) = last_report.clone().or_else(|| report_of(&state)) else { continue };
                let changes = state.health.map_or(0, |health| health.changes) + 1;
                state.health = Some(SaidHealth { healthy: verdict.healthy, changes });
                file.save(&state)?;
                if verdict.healthy {
                    tracing::info!(message = %verdict.message, "the health check passes again");
                } else {
                    tracing::warn!(message = %verdict.message, "the health check fails");
                }
                report.health = state.health;
                report.message = Some(format!("health check: {}", verdict.message));
                last_report = Some(report.clone());
                reports.send_replace(Some(report));
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                // The retry is due: the top of the loop starts it.
            }
            _ = &mut shutdown => {
                tracing::info!("agent stopping");
                return Ok(());
            }
        }
    }
}

/// The next verdict of the health check (only polled when there is a check).
async fn next_verdict(checks: &mut Option<tokio::sync::watch::Receiver<Option<health::Verdict>>>) -> health::Verdict {
    let Some(receiver) = checks.as_mut() else { return std::future::pending().await };
    loop {
        if receiver.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(verdict) = receiver.borrow_and_update().clone() {
            return verdict;
        }
    }
}

/// What this host last reported, rebuilt from the state after a restart: the last directive
/// whose command finished, and how.
fn report_of(state: &state::AgentState) -> Option<Report> {
    let applied = state.current.as_ref()?;
    Some(Report {
        seq: applied.directive.seq,
        release: applied.directive.release.clone(),
        status: applied.outcome.as_str(),
        message: None,
        attempt: 0,
        health: state.health,
    })
}

/// `--check-every`: how often the check runs, and how long one run may take.
fn check_interval(seconds: f64) -> Result<Duration> {
    match Duration::try_from_secs_f64(seconds) {
        Ok(every) if every >= Duration::from_millis(100) && every <= Duration::from_secs(24 * 3600) => Ok(every),
        _ => bail!("--check-every must be between 0.1 and 86400 seconds, not {seconds}"),
    }
}

/// The retry pauses from `--retry-initial-seconds` and `--retry-max-seconds`.
fn retry_policy(args: &AgentArgs) -> Result<RetryPolicy> {
    const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);
    let seconds = |flag: &str, value: f64| -> Result<Duration> {
        match Duration::try_from_secs_f64(value) {
            Ok(duration) if duration >= Duration::from_millis(1) && duration <= LONGEST => Ok(duration),
            _ => bail!("{flag} must be between 0.001 and {} seconds, not {value}", LONGEST.as_secs()),
        }
    };
    let initial = seconds("--retry-initial-seconds", args.retry_initial_seconds)?;
    let max = seconds("--retry-max-seconds", args.retry_max_seconds)?;
    if max < initial {
        bail!(
            "--retry-max-seconds ({}) is below --retry-initial-seconds ({})",
            args.retry_max_seconds,
            args.retry_initial_seconds
        );
    }
    Ok(RetryPolicy { initial, max })
}

/// Registers the host for (service, env). The event id is derived from the registration, so
/// restarting the agent does not add an event each time.
async fn register(servers: &Servers, identity: &Identity, args: &AgentArgs) -> Result<()> {
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let Some((name, value)) = label.split_once('=') else { bail!("--label wants NAME=VALUE, not {label:?}") };
        labels.insert(name.to_string(), value.to_string());
    }
    let mut body = Registration {
        host: &identity.host,
        service: &identity.service,
        env: &identity.env,
        group: args.group.as_deref(),
        labels: (!labels.is_empty()).then_some(labels),
        id: None,
    };
    // The id is a digest of the body's JSON without it, as agents have always derived it.
    let digest = Sha256::digest(serde_json::to_string(&body)?.as_bytes());
    let id = hex::encode(&digest[..16]);
    body.id = Some(format!("agent-register-{id}"));
    match servers.post::<types::CommandAnswer>("/v1/targets", &body).await {
        Ok(answer) => {
            tracing::info!(seq = answer.seq, "registered");
            Ok(())
        }
        Err(error) => Err(error).context("registering the target failed"),
    }
}

/// The body of `POST /v1/targets`.
#[derive(serde::Serialize)]
struct Registration<'a> {
    host: &'a str,
    service: &'a str,
    env: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// Follows the host's watch stream for ever, passing on what concerns this (service, env).
async fn watch(servers: Arc<Servers>, identity: Identity, mut position: u64, updates: mpsc::Sender<Update>) {
    let mut backoff = Backoff::new();
    loop {
        let client = servers.current();
        let path = format!("/v1/watch/{}", identity.host);
        // Resume after the last seq passed on; with none yet, start with the host's whole state.
        let resume = (position > 0).then_some(position);
        let mut retry = None;
        match client.stream(&path, &[], resume).await {
            Ok(stream) => {
                // Heartbeats come at least every 5 s: nothing at all for longer means the
                // server or the way to it is gone, even when the connection looks open.
                let mut stream = stream.with_silence_limit(STREAM_SILENCE_MAX);
                tracing::info!(server = client.base(), resume = ?resume, "watching");
                loop {
                    let message = match stream.next().await {
                        Ok(Some(message)) => message,
                        Ok(None) => {
                            tracing::warn!(server = client.base(), "the server closed the stream");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "the stream failed");
                            break;
                        }
                    };
                    backoff.reset();
                    match parse(&identity, &message) {
                        Ok(Some(update)) => {
                            position = position.max(update.position);
                            if updates.send(update).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(error) => tracing::warn!(%error, "ignoring a watch message"),
                    }
                }
                retry = stream.retry();
            }
            Err(ClientError::Transport { url, reason }) => tracing::warn!(%url, %reason, "cannot reach the server"),
            Err(error) => tracing::warn!(server = client.base(), %error, "the server refused the watch"),
        }
        servers.next_after(client);
        // The longer of our own backoff and the delay the server asked for with `retry:`.
        let waiting = std::time::Instant::now();
        backoff.wait().await;
        if let Some(delay) = retry {
            tokio::time::sleep(delay.saturating_sub(waiting.elapsed())).await;
        }
    }
}

/// Reads one watch message: the host's state (first message of a fresh stream) or a directive.
fn parse(identity: &Identity, message: &SseMessage) -> Result<Option<Update>> {
    let kind = message.event.as_deref().unwrap_or("");
    if kind != "state" && kind != "directive" {
        return Ok(None);
    }
    let ours = |service: &str, env: &str| service == identity.service && env == identity.env;
    if kind == "state" {
        let state: types::WatchState =
            serde_json::from_str(&message.data).context("the state message is not a host's state")?;
        let directive =
            state.targets.into_iter().find(|target| ours(&target.service, &target.env)).and_then(|target| {
                Some(Directive {
                    seq: target.desired_seq?,
                    release: target.desired_release?.into_owned(),
                    cause: target.desired_cause.map(Cow::into_owned).unwrap_or_default(),
                    deployment: target.deployment.map(Cow::into_owned),
                })
            });
        return Ok(Some(Update { position: state.seq, directive }));
    }
    let directive: types::Directive =
        serde_json::from_str(&message.data).context("the directive message is not a directive")?;
    let seq = directive.seq;
    let directive = ours(&directive.service, &directive.env).then(|| Directive {
        seq,
        release: directive.release.into_owned(),
        cause: directive.cause.into_owned(),
        deployment: directive.deployment.map(Cow::into_owned),
    });
    Ok(Some(Update { position: seq, directive }))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn identity() -> Identity {
        Identity { host: "web-1".into(), service: "checkout".into(), env: "prod".into() }
    }

    fn message(event: &str, data: Value) -> SseMessage {
        SseMessage { id: None, event: Some(event.into()), data: data.to_string(), retry: None }
    }

    /// The host object of a watch's state, as the server writes it.
    fn target(service: &str, desired: Option<(&str, u64)>, cause: Option<&str>, deployment: Option<&str>) -> Value {
        json!({"host": "web-1", "service": service, "env": "prod", "group": null, "labels": {}, "registered": true,
               "desired_release": desired.map(|(release, _)| release), "desired_seq": desired.map(|(_, seq)| seq),
               "desired_cause": cause, "deployment": deployment, "observed_release": null, "status": null,
               "reported_release": null, "message": null, "applied_seq": null, "reported_seq": null,
               "reported_at": null, "failure": null, "health": null, "converged": false, "changed_seq": 1})
    }

    #[test]
    fn takes_its_own_environment_from_a_state_and_ignores_others() {
        let state = json!({"seq": 40, "host": "web-1", "targets": [
            target("search", Some(("9", 39)), Some("rollback"), None),
            target("checkout", Some(("1.2", 30)), Some("wave.started"), Some("d-1")),
        ]});
        let update = parse(&identity(), &message("state", state)).unwrap().unwrap();
        assert_eq!(update.position, 40);
        let directive = update.directive.unwrap();
        assert_eq!(
            (directive.seq, directive.release.as_str(), directive.deployment.as_deref()),
            (30, "1.2", Some("d-1"))
        );

        let other = json!({"seq": 41, "host": "web-1", "service": "search", "env": "prod", "release": "10",
                           "cause": "rollback", "deployment": null});
        let update = parse(&identity(), &message("directive", other)).unwrap().unwrap();
        assert_eq!((update.position, update.directive), (41, None));
    }

    #[test]
    fn a_state_with_nothing_desired_only_moves_the_position() {
        let state = json!({"seq": 7, "host": "web-1", "targets": [target("checkout", None, None, None)]});
        let update = parse(&identity(), &message("state", state)).unwrap().unwrap();
        assert_eq!((update.position, update.directive), (7, None));
        assert!(parse(&identity(), &SseMessage { retry: Some(1_000), ..SseMessage::default() }).unwrap().is_none());
    }
}
