//! Commands that read: fleet, host, deployments, releases, history, tail.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use fleetlog_api::client::{Client, ClientError};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::cli::{
    AlertsArgs, DiffArgs, DoraArgs, FilterArgs, FleetArgs, HistoryArgs, HostArgs, MomentArgs, Output, TailArgs,
};
use crate::output::{cell, print, Table};

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
    print(output, &response, |view| {
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
        for host in view["hosts"].as_array().into_iter().flatten() {
            table.row(vec![
                cell(&host["host"]),
                cell(&host["service"]),
                cell(&host["env"]),
                cell(&host["group"]),
                cell(&host["desired_release"]),
                cell(&host["observed_release"]),
                cell(&host["status"]),
                if host["converged"] == Value::Bool(true) { "yes".into() } else { "no".into() },
                failure_cell(&host["failure"]),
            ]);
        }
        let summary = &view["summary"];
        format!(
            "{}as of seq {}: {} hosts, {} converged, {} failing; desired {}; observed {}\n",
            table.render(),
            cell(&view["as_of_seq"]),
            cell(&summary["total"]),
            cell(&summary["converged"]),
            cell(&summary["failing"]),
            counts(&summary["desired"]),
            counts(&summary["observed"]),
        )
    });
    Ok(())
}

fn counts(value: &Value) -> String {
    let parts: Vec<String> =
        value.as_object().into_iter().flatten().map(|(release, count)| format!("{release}×{}", cell(count))).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

pub async fn host(client: &Client, output: Output, args: HostArgs) -> Result<()> {
    let response = client.get(&format!("/v1/hosts/{}", args.host), &moment_query(&args.moment)).await?;
    print(output, &response, |view| {
        let mut table =
            Table::new(&["SERVICE", "ENV", "REGISTERED", "DESIRED", "CAUSE", "OBSERVED", "STATUS", "FAILED INSTALL"]);
        let mut failures = String::new();
        for target in view["targets"].as_array().into_iter().flatten() {
            table.row(vec![
                cell(&target["service"]),
                cell(&target["env"]),
                cell(&target["registered"]),
                cell(&target["desired_release"]),
                cell(&target["desired_cause"]),
                cell(&target["observed_release"]),
                cell(&target["status"]),
                failure_cell(&target["failure"]),
            ]);
            let failure = &target["failure"];
            if !failure.is_null() {
                failures.push_str(&format!(
                    "{}/{}: installing {} failed (attempt {}) at seq {}, {}: {}\n",
                    cell(&target["service"]),
                    cell(&target["env"]),
                    cell(&failure["release"]),
                    cell(&failure["attempt"]),
                    cell(&failure["seq"]),
                    cell(&failure["time"]),
                    failure["message"].as_str().unwrap_or("no message"),
                ));
            }
        }
        let mut history = Table::new(&["SEQ", "SERVICE", "ENV", "DESIRED", "OBSERVED", "STATUS"]);
        for version in view["history"].as_array().into_iter().flatten() {
            history.row(vec![
                cell(&version["changed_seq"]),
                cell(&version["service"]),
                cell(&version["env"]),
                cell(&version["desired_release"]),
                cell(&version["observed_release"]),
                cell(&version["status"]),
            ]);
        }
        format!("{}{failures}\nrecent changes:\n{}", table.render(), history.render())
    });
    Ok(())
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
            print(output, &response, render_deployment);
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
            print(output, &response, |list| {
                let mut table = Table::new(&["DEPLOYMENT", "SERVICE", "ENV", "RELEASE", "STATE", "STARTED", "BY"]);
                for deployment in list["deployments"].as_array().into_iter().flatten() {
                    table.row(vec![
                        cell(&deployment["deployment"]),
                        cell(&deployment["service"]),
                        cell(&deployment["env"]),
                        cell(&deployment["release"]),
                        cell(&deployment["state"]),
                        cell(&deployment["started"]["time"]),
                        cell(&deployment["started"]["actor"]),
                    ]);
                }
                table.render()
            });
        }
    }
    Ok(())
}

fn render_deployment(deployment: &Value) -> String {
    let mut text = format!(
        "deployment {} of {}@{} to {}: {}\n",
        cell(&deployment["deployment"]),
        cell(&deployment["service"]),
        cell(&deployment["release"]),
        cell(&deployment["env"]),
        cell(&deployment["state"]),
    );
    let mut table = Table::new(&["WAVE", "SELECTOR", "STATE", "SELECTED", "CONVERGED", "FAILED", "STARTED BY"]);
    for wave in deployment["waves"].as_array().into_iter().flatten() {
        table.row(vec![
            cell(&wave["name"]),
            wave["selector"].to_string(),
            cell(&wave["state"]),
            cell(&wave["hosts"]["selected"]),
            cell(&wave["hosts"]["converged"]),
            cell(&wave["hosts"]["failed"]),
            cell(&wave["started"]["actor"]),
        ]);
    }
    text.push_str(&table.render());
    if !deployment["end_reason"].is_null() {
        text.push_str(&format!("ended: {}\n", cell(&deployment["end_reason"])));
    }
    let failures = deployment["failures"].as_array().map_or(&[][..], Vec::as_slice);
    if !failures.is_empty() {
        text.push_str("failed hosts:\n");
        for failure in failures {
            text.push_str(&format!(
                "  {} (wave {}): attempt {} at seq {} ({}): {}; runs {}\n",
                cell(&failure["host"]),
                cell(&failure["wave"]),
                cell(&failure["attempt"]),
                cell(&failure["seq"]),
                cell(&failure["time"]),
                failure["message"].as_str().unwrap_or("no message"),
                cell(&failure["observed_release"]),
            ));
        }
    }
    let overrides = deployment["overrides"].as_array().map_or(&[][..], Vec::as_slice);
    if !overrides.is_empty() {
        text.push_str("guards overridden:\n");
        for item in overrides {
            text.push_str(&format!(
                "  seq {}: {} ({})\n",
                cell(&item["seq"]),
                cell(&item["guard"]),
                cell(&item["reason"])
            ));
        }
    }
    text
}

/// A host's failed install in one cell: release, attempt and message.
fn failure_cell(failure: &Value) -> String {
    if failure.is_null() {
        return "-".to_string();
    }
    // A table cell keeps the start of the message; `fleetlog host` shows it whole.
    const SHOWN_CHARS: usize = 40;
    let message = failure["message"].as_str().unwrap_or("no message");
    let shown: String = match message.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_string(),
    };
    format!("{} #{}: {shown}", cell(&failure["release"]), cell(&failure["attempt"]))
}

pub fn render_releases(view: &Value) -> String {
    let mut text = String::new();
    let releases = view["releases"].as_array().map_or(&[][..], Vec::as_slice);
    text.push_str(&format!("RELEASES ({}), oldest first, each with its timeline\n", releases.len()));
    for release in releases {
        let blocked = match release["blocked_reason"].as_str() {
            Some(reason) if release["blocked"] == Value::Bool(true) => format!(" [blocked: {reason}]"),
            _ if release["blocked"] == Value::Bool(true) => " [blocked]".to_string(),
            _ => String::new(),
        };
        text.push_str(&format!("{}@{}{}\n", cell(&release["service"]), cell(&release["release"]), blocked));
        for field in ["artifact", "notes"] {
            if let Some(value) = release[field].as_str() {
                text.push_str(&format!("  {field}: {value}\n"));
            }
        }
        for entry in release["timeline"].as_array().into_iter().flatten() {
            let mut line = format!(
                "  seq {:>6}  {}  {:<20} by {}",
                cell(&entry["seq"]),
                cell(&entry["time"]),
                cell(&entry["kind"]),
                cell(&entry["actor"])
            );
            for field in ["env", "deployment", "wave", "detail"] {
                if !entry[field].is_null() {
                    line.push_str(&format!(" {field}={}", cell(&entry[field])));
                }
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    text.push_str("\nENVIRONMENTS\n");
    let mut environments = Table::new(&["ENV", "DESIRED", "ACTIVE DEPLOYMENT", "FROZEN"]);
    for environment in view["environments"].as_array().into_iter().flatten() {
        environments.row(vec![
            cell(&environment["env"]),
            cell(&environment["desired_release"]),
            cell(&environment["active_deployment"]),
            cell(&environment["frozen"]),
        ]);
    }
    text.push_str(&environments.render());
    text
}

fn event_line(event: &Value) -> String {
    let mut line = format!(
        "{:>6}  {}  {:<22} {:<18} {}",
        cell(&event["seq"]),
        cell(&event["time"]),
        cell(&event["type"]),
        cell(&event["stream"]),
        cell(&event["actor"]),
    );
    for field in ["host", "release", "deployment"] {
        if !event[field].is_null() {
            line.push_str(&format!(" {field}={}", cell(&event[field])));
        }
    }
    if event["data"].as_object().is_some_and(|data| !data.is_empty()) {
        line.push_str(&format!(" {}", event["data"]));
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
        let page = client.get("/v1/events", &query).await?;
        let batch = page["events"].as_array().cloned().unwrap_or_default();
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
        let next = page["next_seq"].as_u64().unwrap_or(from_seq);
        let head = page["head_seq"].as_u64().unwrap_or(0);
        if next <= from_seq || next > head {
            break;
        }
        from_seq = next;
    }
    progress.finish_and_clear();
    match output {
        Output::Json => {
            for event in &events {
                println!("{event}");
            }
        }
        Output::Table => {
            for event in &events {
                println!("{}", event_line(event));
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
    let page = client.get("/v1/events", &[("since", after), ("limit", "1".into())]).await?;
    Ok(match page["events"].get(0).and_then(|event| event["seq"].as_u64()) {
        Some(first_after) => first_after - 1,
        None => page["head_seq"].as_u64().unwrap_or(0),
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
    print(output, &response, |diff| {
        let mut table = Table::new(&["HOST", "SERVICE", "ENV", "DESIRED", "OBSERVED", "REGISTERED"]);
        let change = |host: &Value, field: &str| {
            let before = cell(&host["before"][field]);
            let after = cell(&host["after"][field]);
            if before == after {
                after
            } else {
                format!("{before} → {after}")
            }
        };
        for host in diff["hosts"].as_array().into_iter().flatten() {
            table.row(vec![
                cell(&host["host"]),
                cell(&host["service"]),
                cell(&host["env"]),
                change(host, "desired_release"),
                change(host, "observed_release"),
                change(host, "registered"),
            ]);
        }
        format!(
            "{}{} hosts changed between seq {} and seq {}\n",
            table.render(),
            cell(&diff["changed"]),
            cell(&diff["from_seq"]),
            cell(&diff["to_seq"])
        )
    });
    Ok(())
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
                        Output::Table => {
                            let event: Value = serde_json::from_str(&message.data).unwrap_or(Value::Null);
                            println!("{}", event_line(&event));
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    eprintln!("stream closed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// The decisions the policy made for `deployment` (`GET /v1/deployments/{id}/decisions`), oldest
/// first.
pub async fn decisions(client: &Client, output: Output, deployment: &str) -> Result<()> {
    let answer = client.get(&format!("/v1/deployments/{deployment}/decisions"), &[]).await?;
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    let document = serde_json::json!({ "deployment": deployment, "decisions": events });
    print(output, &document, |document| {
        let decisions = document["decisions"].as_array().map_or(&[][..], Vec::as_slice);
        if decisions.is_empty() {
            return format!("the policy made no decision for {deployment}\n");
        }
        let mut text = String::new();
        for event in decisions {
            let decision = &event["data"]["decision"];
            text.push_str(&format!(
                "seq {} {} {}: {}\n",
                cell(&event["seq"]),
                cell(&event["time"]),
                cell(&event["type"]),
                event["data"]["reason"].as_str().unwrap_or("the policy moved the rollout on"),
            ));
            // `alerts`: the alerts an alert gate counted, each with its fingerprint and labels.
            for field in ["gate", "wave", "alerts", "observed", "threshold", "policy_seq"] {
                if !decision[field].is_null() {
                    text.push_str(&format!("    {field}: {}\n", decision[field]));
                }
            }
        }
        text
    });
    Ok(())
}

/// The alerts received, as a table: which environment each counts against, and when it fired.
pub async fn alerts(client: &Client, output: Output, args: AlertsArgs) -> Result<()> {
    let mut query = vec![("state", args.state)];
    query.extend(args.service.map(|service| ("service", service)));
    query.extend(args.env.map(|env| ("env", env)));
    let response = client.get("/v1/alerts", &query).await?;
    print(output, &response, |response| {
        let alerts = response["alerts"].as_array().cloned().unwrap_or_default();
        if alerts.is_empty() {
            return "no alert\n".to_string();
        }
        let mut table = Table::new(&["STATE", "ENVIRONMENT", "HOST", "ALERT", "FINGERPRINT", "FIRED SEQ", "SINCE"]);
        for alert in &alerts {
            let environment = match (alert["service"].as_str(), alert["env"].as_str()) {
                (Some(service), Some(env)) => format!("{service}/{env}"),
                (Some(service), None) => service.to_string(),
                _ => "(unmapped)".to_string(),
            };
            let host = if alert["host"].is_null() { String::new() } else { cell(&alert["host"]) };
            table.row(vec![
                cell(&alert["state"]),
                environment,
                host,
                cell(&alert["labels"]["alertname"]),
                cell(&alert["fingerprint"]),
                cell(&alert["fired"]["seq"]),
                cell(&alert["starts_at"]),
            ]);
        }
        table.render()
    });
    Ok(())
}

/// DORA's four keys, as a table with the 2024 report's band of each.
pub async fn dora(client: &Client, output: Output, args: DoraArgs) -> Result<()> {
    let mut query = Vec::new();
    for (name, value) in [("service", args.service), ("env", args.env), ("since", args.since), ("until", args.until)] {
        query.extend(value.map(|value| (name, value)));
    }
    let response = client.get("/v1/dora", &query).await?;
    print(output, &response, |response| {
        let scope = match (response["service"].as_str(), response["env"].as_str()) {
            (Some(service), Some(env)) => format!("{service}/{env}"),
            (Some(service), None) => service.to_string(),
            _ => "every service".to_string(),
        };
        let mut text = format!(
            "{scope}, {} to {} ({:.1} days); bands of the {}\n",
            cell(&response["since"]),
            cell(&response["until"]),
            response["days"].as_f64().unwrap_or(0.0),
            cell(&response["bands_from"])
        );
        let mut table = Table::new(&["KEY", "VALUE", "FROM", "BAND"]);
        let frequency = &response["deployment_frequency"];
        table.row(vec![
            "deployment frequency".into(),
            format!("{:.2}/day", frequency["per_day"].as_f64().unwrap_or(0.0)),
            format!("{} completed", cell(&frequency["completed"])),
            cell(&frequency["band"]),
        ]);
        let lead = &response["change_lead_time"];
        table.row(vec![
            "change lead time".into(),
            duration_text(lead["median_seconds"].as_f64()),
            format!("median of {}", cell(&lead["samples"])),
            band_text(&lead["band"]),
        ]);
        let fail = &response["change_fail_rate"];
        table.row(vec![
            "change fail rate".into(),
            fail["rate"].as_f64().map_or("-".into(), |rate| format!("{:.1}%", rate * 100.0)),
            format!("{} of {} deployments", cell(&fail["failed"]), cell(&fail["started"])),
            band_text(&fail["band"]),
        ]);
        let recovery = &response["failed_deployment_recovery_time"];
        table.row(vec![
            "failed deployment recovery time".into(),
            duration_text(recovery["median_seconds"].as_f64()),
            format!("median of {}", cell(&recovery["samples"])),
            band_text(&recovery["band"]),
        ]);
        text.push_str(&table.render());
        text
    });
    Ok(())
}

fn band_text(band: &Value) -> String {
    if band.is_null() {
        "-".to_string()
    } else {
        cell(band)
    }
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
