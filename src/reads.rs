//! Commands that read: fleet, host, deployments, releases, history, tail.

use std::io::IsTerminal;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use fleetlog_api::client::{Client, ClientError};
use fleetlog_types as types;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::backoff::Backoff;
use crate::cli::{
    AlertsArgs, DiffArgs, DoraArgs, FilterArgs, FleetArgs, HistoryArgs, HostArgs, MomentArgs, Output, TailArgs,
};
use crate::output::{cell, print, Cell, Table};

pub fn moment_query(moment: &MomentArgs) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(seq) = moment.at_seq {
        query.push(("at_seq", seq.to_string()));
    }
    if let Some(time) = &moment.at {
        query.push(("at_time", time.clone()));
    }
    query
}

fn filter_query(filter: &FilterArgs) -> Vec<(&'static str, String)> {
    let fields = [
        ("type", &filter.event_type),
        ("stream", &filter.stream),
        ("service", &filter.service),
        ("env", &filter.env),
        ("host", &filter.host),
        ("release", &filter.release),
        ("deployment", &filter.deployment),
        ("actor", &filter.actor),
        ("since", &filter.since),
        ("until", &filter.until),
    ];
    fields.into_iter().filter_map(|(name, value)| value.clone().map(|value| (name, value))).collect()
}

pub async fn fleet(client: &Client, output: Output, args: FleetArgs) -> Result<()> {
    let mut query = moment_query(&args.moment);
    if let Some(service) = args.service {
        query.push(("service", service));
    }
    if let Some(env) = args.env {
        query.push(("env", env));
    }
    let response = client.get("/v1/fleet", &query).await?;
    print(output, &response, |view: &types::FleetView| {
        let mut table = Table::new(&[
            "HOST",
            "SERVICE",
            "ENV",
            "GROUP",
            "DESIRED",
            "OBSERVED",
            "STATUS",
            "CONVERGED",
            "FAILED INSTALL",
        ]);
        for host in &view.hosts {
            table.row(vec![
                cell(&host.host),
                cell(&host.service),
                cell(&host.env),
                cell(&host.group),
                cell(&host.desired_release),
                cell(&host.observed_release),
                cell(&host.status),
                if host.converged { "yes".into() } else { "no".into() },
                failure_cell(host.failure.as_ref()),
            ]);
        }
        let summary = &view.summary;
        format!(
            "{}as of seq {}: {} hosts, {} converged, {} failing; desired {}; observed {}\n",
            table.render(),
            view.as_of_seq,
            summary.total,
            summary.converged,
            summary.failing,
            counts(&summary.desired),
            counts(&summary.observed),
        )
    })
}

fn counts(hosts_per_release: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = hosts_per_release.iter().map(|(release, count)| format!("{release}×{count}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

pub async fn host(client: &Client, output: Output, args: HostArgs) -> Result<()> {
    let response = client.get(&format!("/v1/hosts/{}", args.host), &moment_query(&args.moment)).await?;
    print(output, &response, |view: &types::HostDocument| {
        let mut table =
            Table::new(&["SERVICE", "ENV", "REGISTERED", "DESIRED", "CAUSE", "OBSERVED", "STATUS", "FAILED INSTALL"]);
        let mut failures = String::new();
        for target in &view.targets {
            table.row(vec![
                cell(&target.service),
                cell(&target.env),
                cell(&target.registered),
                cell(&target.desired_release),
                cell(&target.desired_cause),
                cell(&target.observed_release),
                cell(&target.status),
                failure_cell(target.failure.as_ref()),
            ]);
            if let Some(failure) = &target.failure {
                failures.push_str(&format!(
                    "{}/{}: installing {} failed (attempt {}) at seq {}, {}: {}\n",
                    target.service,
                    target.env,
                    failure.release,
                    failure.attempt,
                    failure.seq,
                    failure.time,
                    failure.message.as_deref().unwrap_or("no message"),
                ));
            }
        }
        let mut history = Table::new(&["SEQ", "SERVICE", "ENV", "DESIRED", "OBSERVED", "STATUS"]);
        for version in &view.history {
            history.row(vec![
                cell(&version.changed_seq),
                cell(&version.service),
                cell(&version.env),
                cell(&version.desired_release),
                cell(&version.observed_release),
                cell(&version.status),
            ]);
        }
        format!("{}{failures}\nrecent changes:\n{}", table.render(), history.render())
    })
}

pub async fn deployment_status(
    client: &Client,
    output: Output,
    deployment: Option<String>,
    moment: MomentArgs,
    service: Option<String>,
    env: Option<String>,
) -> Result<()> {
    match deployment {
        Some(id) => {
            let response = client.get(&format!("/v1/deployments/{id}"), &moment_query(&moment)).await?;
            print(output, &response, render_deployment)
        }
        None => {
            let mut query = Vec::new();
            if let Some(service) = service {
                query.push(("service", service));
            }
            if let Some(env) = env {
                query.push(("env", env));
            }
            let response = client.get("/v1/deployments", &query).await?;
            print(output, &response, |list: &types::DeploymentList| {
                let mut table = Table::new(&["DEPLOYMENT", "SERVICE", "ENV", "RELEASE", "STATE", "STARTED", "BY"]);
                for deployment in &list.deployments {
                    table.row(vec![
                        cell(&deployment.deployment),
                        cell(&deployment.service),
                        cell(&deployment.env),
                        cell(&deployment.release),
                        cell(&deployment.state),
                        cell(&deployment.started.time),
                        cell(&deployment.started.actor),
                    ]);
                }
                table.render()
            })
        }
    }
}

fn render_deployment(detail: &types::DeploymentDetail) -> String {
    let deployment = &detail.deployment;
    let mut text = format!(
        "deployment {} of {}@{} to {}: {}\n",
        deployment.deployment, deployment.service, deployment.release, deployment.env, deployment.state,
    );
    let mut table = Table::new(&["WAVE", "SELECTOR", "STATE", "SELECTED", "CONVERGED", "FAILED", "STARTED BY"]);
    for wave in &deployment.waves {
        table.row(vec![
            cell(&wave.name),
            serde_json::to_string(&wave.selector).unwrap_or_default(),
            cell(&wave.state),
            cell(&wave.hosts.selected),
            cell(&wave.hosts.converged),
            cell(&wave.hosts.failed),
            cell(&wave.started.as_ref().map(|step| &step.actor)),
        ]);
    }
    text.push_str(&table.render());
    if let Some(reason) = &deployment.end_reason {
        text.push_str(&format!("ended: {reason}\n"));
    }
    if !detail.failures.is_empty() {
        text.push_str("failed hosts:\n");
        for failure in &detail.failures {
            text.push_str(&format!(
                "  {} (wave {}): attempt {} at seq {} ({}): {}; runs {}\n",
                failure.host,
                cell(&failure.wave),
                cell(&failure.attempt),
                cell(&failure.seq),
                cell(&failure.time),
                failure.message.as_deref().unwrap_or("no message"),
                cell(&failure.observed_release),
            ));
        }
    }
    if !deployment.overrides.is_empty() {
        text.push_str("guards overridden:\n");
        for item in &deployment.overrides {
            text.push_str(&format!("  seq {}: {} ({})\n", item.seq, item.guard, item.reason));
        }
    }
    text
}

/// A host's failed install in one cell: release, attempt and message.
fn failure_cell(failure: Option<&types::FailureView>) -> String {
    let Some(failure) = failure else {
        return "-".to_string();
    };
    // A table cell keeps the start of the message; `fleetlog host` shows it whole.
    const SHOWN_CHARS: usize = 40;
    let message = failure.message.as_deref().unwrap_or("no message");
    let shown: String = match message.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_string(),
    };
    format!("{} #{}: {shown}", failure.release, failure.attempt)
}

pub fn render_releases(view: &types::ReleasesView) -> String {
    let mut text = String::new();
    text.push_str(&format!("RELEASES ({}), oldest first, each with its timeline\n", view.releases.len()));
    for release in &view.releases {
        let blocked = match &release.blocked_reason {
            Some(reason) if release.blocked => format!(" [blocked: {reason}]"),
            _ if release.blocked => " [blocked]".to_string(),
            _ => String::new(),
        };
        text.push_str(&format!("{}@{}{}\n", release.service, release.release, blocked));
        for (field, value) in [("artifact", &release.artifact), ("notes", &release.notes)] {
            if let Some(value) = value {
                text.push_str(&format!("  {field}: {value}\n"));
            }
        }
        for entry in &release.timeline {
            let mut line = format!("  seq {:>6}  {}  {:<20} by {}", entry.seq, entry.time, entry.kind, entry.actor);
            let fields = [
                ("env", &entry.env),
                ("deployment", &entry.deployment),
                ("wave", &entry.wave),
                ("detail", &entry.detail),
            ];
            for (field, value) in fields {
                if let Some(value) = value {
                    line.push_str(&format!(" {field}={value}"));
                }
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    text.push_str("\nENVIRONMENTS\n");
    let mut environments = Table::new(&["ENV", "DESIRED", "ACTIVE DEPLOYMENT", "FROZEN"]);
    for environment in &view.environments {
        environments.row(vec![
            cell(&environment.env),
            cell(&environment.desired_release),
            cell(&environment.active_deployment),
            cell(&environment.frozen),
        ]);
    }
    text.push_str(&environments.render());
    text
}

fn event_line(event: &types::Event) -> String {
    let mut line =
        format!("{:>6}  {}  {:<22} {:<18} {}", event.seq, event.time, event.event_type, event.stream, event.actor,);
    for (field, value) in [("host", &event.host), ("release", &event.release), ("deployment", &event.deployment)] {
        if let Some(value) = value {
            line.push_str(&format!(" {field}={value}"));
        }
    }
    if !event.data.is_empty() {
        line.push_str(&format!(" {}", serde_json::to_string(&event.data).unwrap_or_default()));
    }
    line
}

pub async fn history(client: &Client, output: Output, args: HistoryArgs) -> Result<()> {
    let mut filter = args.filter.clone();
    let mut from_seq = args.from_seq;
    // `--at T` with no starting point asks for the newest events at or before T.
    let mut newest_only = false;
    if let Some(at) = &args.at {
        filter.until = Some(at.clone());
        if from_seq == 1 {
            if filter_query(&filter).len() == 1 {
                let last = seq_at_time(client, at).await?;
                from_seq = last.saturating_sub(args.limit.saturating_sub(1)).max(1);
            } else {
                newest_only = true;
            }
        }
    }
    let mut remaining = args.limit;
    let mut events = std::collections::VecDeque::new();
    // Long reads show progress on a terminal; short ones and pipes stay quiet.
    let progress = if args.limit > 10_000 && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(args.limit)
    } else {
        indicatif::ProgressBar::hidden()
    };
    while remaining > 0 {
        let mut query = filter_query(&filter);
        query.push(("from_seq", from_seq.to_string()));
        query.push(("limit", remaining.min(10_000).to_string()));
        // Each event is kept as the text the server sent: `--output json` prints it as it is.
        let page: types::EventPage<Box<RawValue>> = client.get_as("/v1/events", &query).await?;
        let batch = page.events;
        if newest_only {
            // Keep reading to the moment, holding only the newest `limit`.
            events.extend(batch);
            while events.len() as u64 > args.limit {
                events.pop_front();
            }
        } else {
            remaining = remaining.saturating_sub(batch.len() as u64);
            progress.inc(batch.len() as u64);
            events.extend(batch);
        }
        let next = page.next_seq;
        if next <= from_seq || next > page.head_seq {
            break;
        }
        from_seq = next;
    }
    progress.finish_and_clear();
    match output {
        Output::Json => {
            for event in &events {
                println!("{}", event.get());
            }
        }
        Output::Table => {
            for event in &events {
                let event: types::Event = serde_json::from_str(event.get()).context("an event of unexpected shape")?;
                println!("{}", event_line(&event));
            }
        }
    }
    Ok(())
}

/// Seq of the last event at or before `time` (0 when there is none).
async fn seq_at_time(client: &Client, time: &str) -> Result<u64> {
    let moment = chrono::DateTime::parse_from_rfc3339(time)
        .with_context(|| format!("--at {time:?} is not an RFC 3339 time such as 2026-11-28T06:00:00Z"))?;
    let after = (moment + chrono::Duration::microseconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let page: types::EventPage = client.get_as("/v1/events", &[("since", after), ("limit", "1".into())]).await?;
    Ok(match page.events.first() {
        Some(first_after) => first_after.seq - 1,
        None => page.head_seq,
    })
}

/// `fleetlog diff`: hosts whose registration, desired or observed release changed.
pub async fn diff(client: &Client, output: Output, args: DiffArgs) -> Result<()> {
    let mut query = vec![("from", args.from)];
    for (name, value) in [("to", args.to), ("service", args.service), ("env", args.env)] {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let response = client.get("/v1/fleet/diff", &query).await?;
    print(output, &response, |diff: &types::FleetDiff| {
        let mut table = Table::new(&["HOST", "SERVICE", "ENV", "DESIRED", "OBSERVED", "REGISTERED"]);
        // One member of the host before and after: "a → b" when it changed. A host without a
        // record before shows "-" there.
        fn change<T: Cell>(change: &types::HostChange, member: impl Fn(&types::HostView) -> T) -> String {
            let before = cell(&change.before.as_ref().map(&member));
            let after = cell(&member(&change.after));
            if before == after {
                after
            } else {
                format!("{before} → {after}")
            }
        }
        for host in &diff.hosts {
            table.row(vec![
                cell(&host.host),
                cell(&host.service),
                cell(&host.env),
                change(host, |view| cell(&view.desired_release)),
                change(host, |view| cell(&view.observed_release)),
                change(host, |view| view.registered),
            ]);
        }
        format!(
            "{}{} hosts changed between seq {} and seq {}\n",
            table.render(),
            diff.changed,
            diff.from_seq,
            diff.to_seq
        )
    })
}

/// Follows the log, reconnecting with `Last-Event-ID` after a dropped connection.
pub async fn tail(client: &Client, output: Output, args: TailArgs) -> Result<()> {
    let mut last_seen: Option<u64> = args.from_seq.and_then(|seq| seq.checked_sub(1));
    let mut backoff = Backoff::new();
    loop {
        let mut query = filter_query(&args.filter);
        if last_seen.is_none() {
            if let Some(from_seq) = args.from_seq {
                query.push(("from_seq", from_seq.to_string()));
            }
        }
        let mut stream = match client.stream("/v1/subscribe", &query, last_seen.filter(|seq| *seq > 0)).await {
            Ok(stream) => stream,
            Err(ClientError::Transport { url, reason }) => {
                eprintln!("cannot reach {url} ({reason}); retrying");
                backoff.wait().await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        backoff.reset();
        loop {
            match stream.next().await {
                Ok(Some(message)) => {
                    if message.data.is_empty() {
                        continue;
                    }
                    if let Some(id) = message.id.as_deref().and_then(|id| id.parse::<u64>().ok()) {
                        last_seen = Some(id);
                    }
                    match output {
                        Output::Json => println!("{}", message.data),
                        Output::Table => match serde_json::from_str::<types::Event>(&message.data) {
                            Ok(event) => println!("{}", event_line(&event)),
                            Err(error) => eprintln!("an event of unexpected shape ({error}): {}", message.data),
                        },
                    }
                }
                Ok(None) | Err(_) => {
                    eprintln!("stream closed; reconnecting");
                    // A server that asked for a reconnection delay with `retry:` gets it.
                    if let Some(delay) = stream.retry() {
                        tokio::time::sleep(delay).await;
                    }
                    break;
                }
            }
        }
    }
}

/// The decisions the policy made for `deployment` (`GET /v1/deployments/{id}/decisions`), oldest
/// first.
pub async fn decisions(client: &Client, output: Output, deployment: &str) -> Result<()> {
    // The events as the server sent them, for `--output json`.
    let answer: types::DecisionList<Box<RawValue>> =
        client.get_as(&format!("/v1/deployments/{deployment}/decisions"), &[]).await?;
    let document = serde_json::json!({ "deployment": deployment, "decisions": answer.events });
    print(output, &document, |document: &Decisions| {
        if document.decisions.is_empty() {
            return format!("the policy made no decision for {deployment}\n");
        }
        let mut text = String::new();
        for event in &document.decisions {
            let data: types::PolicyEventData =
                serde_json::from_value(Value::Object(event.data.clone())).unwrap_or_default();
            text.push_str(&format!(
                "seq {} {} {}: {}\n",
                event.seq,
                event.time,
                event.event_type,
                data.reason.as_deref().unwrap_or("the policy moved the rollout on"),
            ));
            let Some(decision) = data.decision else { continue };
            // `alerts`: the alerts an alert gate counted, each with its fingerprint and labels.
            let fields: [(&str, Option<String>); 6] = [
                ("gate", decision.gate.as_ref().map(json_text)),
                ("wave", decision.wave.as_ref().map(json_text)),
                ("alerts", decision.alerts.as_ref().map(json_text)),
                ("observed", decision.observed.as_ref().map(json_text)),
                ("threshold", decision.threshold.as_ref().map(json_text)),
                ("policy_seq", decision.policy_seq.as_ref().map(json_text)),
            ];
            for (field, value) in fields {
                if let Some(value) = value {
                    text.push_str(&format!("    {field}: {value}\n"));
                }
            }
        }
        text
    })
}

/// A decision's input as the evaluator wrote it, in JSON.
fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// What `fleetlog deploy why --output json` prints: the deployment and its decision events.
#[derive(serde::Deserialize)]
struct Decisions {
    decisions: Vec<types::Event>,
}

/// The alerts received, as a table: which environment each counts against, and when it fired.
pub async fn alerts(client: &Client, output: Output, args: AlertsArgs) -> Result<()> {
    let mut query = vec![("state", args.state)];
    query.extend(args.service.map(|service| ("service", service)));
    query.extend(args.env.map(|env| ("env", env)));
    let response = client.get("/v1/alerts", &query).await?;
    print(output, &response, |response: &types::AlertList| {
        if response.alerts.is_empty() {
            return "no alert\n".to_string();
        }
        let mut table = Table::new(&["STATE", "ENVIRONMENT", "HOST", "ALERT", "FINGERPRINT", "FIRED SEQ", "SINCE"]);
        for alert in &response.alerts {
            let environment = match (&alert.service, &alert.env) {
                (Some(service), Some(env)) => format!("{service}/{env}"),
                (Some(service), None) => service.to_string(),
                _ => "(unmapped)".to_string(),
            };
            table.row(vec![
                cell(&alert.state),
                environment,
                alert.host.clone().unwrap_or_default(),
                cell(&alert.labels.get("alertname")),
                cell(&alert.fingerprint),
                cell(&alert.fired.as_ref().map(|fired| fired.seq)),
                cell(&alert.starts_at),
            ]);
        }
        table.render()
    })
}

/// DORA's four keys, as a table with the 2024 report's band of each.
pub async fn dora(client: &Client, output: Output, args: DoraArgs) -> Result<()> {
    let mut query = Vec::new();
    for (name, value) in [("service", args.service), ("env", args.env), ("since", args.since), ("until", args.until)] {
        query.extend(value.map(|value| (name, value)));
    }
    let response = client.get("/v1/dora", &query).await?;
    print(output, &response, |report: &types::DoraReport| {
        let scope = match (&report.service, &report.env) {
            (Some(service), Some(env)) => format!("{service}/{env}"),
            (Some(service), None) => service.to_string(),
            _ => "every service".to_string(),
        };
        let mut text = format!(
            "{scope}, {} to {} ({:.1} days); bands of the {}\n",
            report.since, report.until, report.days, report.bands_from
        );
        let mut table = Table::new(&["KEY", "VALUE", "FROM", "BAND"]);
        let frequency = &report.deployment_frequency;
        table.row(vec![
            "deployment frequency".into(),
            format!("{:.2}/day", frequency.per_day),
            format!("{} completed", frequency.completed),
            cell(&frequency.band),
        ]);
        let lead = &report.change_lead_time;
        table.row(vec![
            "change lead time".into(),
            duration_text(lead.median_seconds),
            format!("median of {}", lead.samples),
            cell(&lead.band),
        ]);
        let fail = &report.change_fail_rate;
        table.row(vec![
            "change fail rate".into(),
            fail.rate.map_or("-".into(), |rate| format!("{:.1}%", rate * 100.0)),
            format!("{} of {} deployments", fail.failed, fail.started),
            cell(&fail.band),
        ]);
        let recovery = &report.failed_deployment_recovery_time;
        table.row(vec![
            "failed deployment recovery time".into(),
            duration_text(recovery.median_seconds),
            format!("median of {}", recovery.samples),
            cell(&recovery.band),
        ]);
        text.push_str(&table.render());
        text
    })
}

/// Seconds as `42s`, `3.5h` or `2.1d`; `-` for none.
fn duration_text(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_string(),
        Some(seconds) if seconds < 120.0 => format!("{seconds:.0}s"),
        Some(seconds) if seconds < 7_200.0 => format!("{:.1}m", seconds / 60.0),
        Some(seconds) if seconds < 172_800.0 => format!("{:.1}h", seconds / 3_600.0),
        Some(seconds) => format!("{:.1}d", seconds / 86_400.0),
    }
}
