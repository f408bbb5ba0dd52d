//! Commands that append: releases, targets, reports, deployments, rollbacks, freezes, events.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use fleetlog_api::client::Client;
use fleetlog_types as types;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cli::{
    AppendArgs, CalendarCommand, DeployCommand, FreezeCommand, Output, PolicyCommand, ReleaseCommand, ReportArgs,
    RollbackArgs, TargetCommand,
};
use crate::output::{cell, print, Table};
use crate::reads;
use crate::wait::Goal;

/// Prints the event a typed command appended.
fn print_appended(output: Output, response: &Value) -> Result<()> {
    print(output, response, |response: &types::CommandAnswer| {
        let event = &response.event;
        let replay = if response.duplicate { " (already in the ledger)" } else { "" };
        let mut line = format!("seq {} {}", event.seq, event.event_type);
        let envelope = [
            ("service", &event.service),
            ("env", &event.env),
            ("host", &event.host),
            ("release", &event.release),
            ("deployment", &event.deployment),
        ];
        for (field, value) in envelope {
            if let Some(value) = value {
                line.push_str(&format!(" {field}={value}"));
            }
        }
        format!("{line}{replay}\n")
    })
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect::<Map<_, _>>()),
        other => other,
    }
}

pub async fn release(client: &Client, output: Output, command: ReleaseCommand) -> Result<()> {
    let response = match command {
        ReleaseCommand::Create { service, release, artifact, notes, commits, committed_at, id } => {
            let commits = if commits.is_empty() { Value::Null } else { json!(commits) };
            let body = json!({
                "service": service, "release": release, "artifact": artifact, "notes": notes,
                "commits": commits, "committed_at": committed_at, "id": id,
            });
            client.post("/v1/releases", &without_nulls(body)).await?
        }
        ReleaseCommand::Block { service, release, reason } => {
            client
                .post(&format!("/v1/services/{service}/releases/{release}/block"), &json!({ "reason": reason }))
                .await?
        }
        ReleaseCommand::Unblock { service, release, reason } => {
            client
                .post(&format!("/v1/services/{service}/releases/{release}/unblock"), &json!({ "reason": reason }))
                .await?
        }
        ReleaseCommand::List { service } => {
            let response = client.get(&format!("/v1/services/{service}/releases"), &[]).await?;
            return print(output, &response, reads::render_releases);
        }
    };
    print_appended(output, &response)
}

pub async fn target(client: &Client, output: Output, command: TargetCommand) -> Result<()> {
    let response = match command {
        TargetCommand::Register { service, env, host, group, labels } => {
            let mut label_map = Map::new();
            for label in labels {
                let (key, value) =
                    label.split_once('=').with_context(|| format!("label {label:?} is not key=value"))?;
                label_map.insert(key.to_string(), Value::String(value.to_string()));
            }
            let labels = if label_map.is_empty() { Value::Null } else { Value::Object(label_map) };
            let body = json!({ "service": service, "env": env, "host": host, "group": group, "labels": labels });
            client.post("/v1/targets", &without_nulls(body)).await?
        }
        TargetCommand::Deregister { service, env, host } => {
            client.delete(&format!("/v1/targets/{service}/{env}/{host}"), &json!({})).await?
        }
    };
    print_appended(output, &response)
}

pub async fn report(client: &Client, output: Output, args: ReportArgs) -> Result<()> {
    let body = json!({
        "service": args.service, "env": args.env, "host": args.host, "release": args.release,
        "status": args.status, "applied_seq": args.applied_seq, "message": args.message,
    });
    let response = client.post("/v1/reports", &without_nulls(body)).await?;
    print_appended(output, &response)
}

/// Parses `NAME:percent=N`, `NAME:group=G` or `NAME:hosts=a,b`.
pub fn parse_wave(text: &str) -> Result<Value> {
    let (name, selector) = text.split_once(':').with_context(|| format!("wave {text:?} is not NAME:SELECTOR"))?;
    let (kind, value) = selector.split_once('=').with_context(|| format!("wave {text:?}: selector is kind=value"))?;
    Ok(match kind {
        "percent" => {
            json!({ "name": name, "percent": value.parse::<u64>().with_context(|| format!("wave {text:?}: percent is a number"))? })
        }
        "group" => json!({ "name": name, "group": value }),
        "hosts" => json!({ "name": name, "hosts": value.split(',').collect::<Vec<_>>() }),
        other => bail!("wave {text:?}: selector {other:?} is not percent, group or hosts"),
    })
}

/// Between two looks at a deployment while `deploy wave --wait` waits.
const WAIT_INTERVAL: Duration = Duration::from_millis(500);

pub async fn deploy(client: &Client, output: Output, command: DeployCommand) -> Result<()> {
    let response = match command {
        DeployCommand::Start { service, env, release, waves, id, force, freeze_override, wait, timeout_seconds } => {
            let waves = waves.iter().map(|wave| parse_wave(wave)).collect::<Result<Vec<_>>>()?;
            let body = json!({
                "service": service, "env": env, "release": release, "waves": waves, "deployment": id,
                "force_reason": force, "override_reason": freeze_override,
            });
            let response = client.post("/v1/deployments", &without_nulls(body)).await?;
            print_appended(output, &response)?;
            if !wait {
                return Ok(());
            }
            let answer = types::CommandAnswer::<types::Event>::deserialize(&response)?;
            let deployment = answer.event.deployment.context("the server named no deployment")?;
            let timeout = Duration::from_secs(timeout_seconds);
            return crate::wait::wait(client, output, &deployment, Goal::Ended, timeout, WAIT_INTERVAL).await;
        }
        DeployCommand::Wave { deployment, wave, complete, force, freeze_override, wait, timeout_seconds } => {
            let action = if complete { "complete" } else { "start" };
            let body = without_nulls(json!({ "force_reason": force, "override_reason": freeze_override }));
            let response = client.post(&format!("/v1/deployments/{deployment}/waves/{wave}/{action}"), &body).await?;
            print_appended(output, &response)?;
            if complete {
                return Ok(());
            }
            if matches!(output, Output::Table) {
                let view: types::DeploymentDetail =
                    client.get_as(&format!("/v1/deployments/{deployment}"), &[]).await?;
                let selected = view
                    .deployment
                    .waves
                    .iter()
                    .find(|started| started.name == wave)
                    .map(|started| started.hosts.selected);
                if let Some(selected) = selected {
                    println!("wave {wave} selected {selected} host{}", if selected == 1 { "" } else { "s" });
                }
            }
            if wait {
                let timeout = Duration::from_secs(timeout_seconds);
                return crate::wait::wait(client, output, &deployment, Goal::Wave(&wave), timeout, WAIT_INTERVAL).await;
            }
            return Ok(());
        }
        DeployCommand::Wait { deployment, wave, timeout_seconds, interval_ms } => {
            let (timeout, interval) =
                (Duration::from_secs(timeout_seconds), Duration::from_millis(interval_ms.max(50)));
            let goal = match &wave {
                Some(wave) => Goal::Wave(wave),
                None => Goal::StartedWaves,
            };
            return crate::wait::wait(client, output, &deployment, goal, timeout, interval).await;
        }
        DeployCommand::Complete { deployment, force } => {
            let body = without_nulls(json!({ "force_reason": force }));
            client.post(&format!("/v1/deployments/{deployment}/complete"), &body).await?
        }
        DeployCommand::Abort { deployment, reason } => {
            client.post(&format!("/v1/deployments/{deployment}/abort"), &json!({ "reason": reason })).await?
        }
        DeployCommand::Halt { deployment, reason } => {
            client.post(&format!("/v1/deployments/{deployment}/halt"), &json!({ "reason": reason })).await?
        }
        DeployCommand::Resume { deployment, reason } => {
            client.post(&format!("/v1/deployments/{deployment}/resume"), &json!({ "reason": reason })).await?
        }
        DeployCommand::Why { deployment } => return reads::decisions(client, output, &deployment).await,
        DeployCommand::Status { deployment, moment, service, env } => {
            return reads::deployment_status(client, output, deployment, moment, service, env).await;
        }
    };
    print_appended(output, &response)
}

pub async fn rollback(client: &Client, output: Output, args: RollbackArgs) -> Result<()> {
    let body = json!({ "service": args.service, "env": args.env, "reason": args.reason, "release": args.release });
    let response = client.post("/v1/rollbacks", &without_nulls(body)).await?;
    print_appended(output, &response)
}

pub async fn freeze(client: &Client, output: Output, command: FreezeCommand) -> Result<()> {
    let response = match command {
        FreezeCommand::Start { service, env, reason } => {
            client.post("/v1/freezes", &json!({ "service": service, "env": env, "reason": reason })).await?
        }
        FreezeCommand::End { service, env, reason } => {
            client.delete(&format!("/v1/freezes/{service}/{env}"), &json!({ "reason": reason })).await?
        }
    };
    print_appended(output, &response)
}

pub async fn policy(client: &Client, output: Output, command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Set {
            service,
            env,
            file,
            bake_seconds,
            first_wave_extra_bake_seconds,
            min_healthy,
            max_failed,
            converge_deadline_seconds,
            on_trip,
            auto_advance,
            no_data,
            alerts,
        } => {
            let mut policy = match &file {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                    match serde_json::from_str::<Value>(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?
                    {
                        Value::Object(object) => object,
                        _ => bail!("{} must hold a JSON object (the policy)", path.display()),
                    }
                }
                None => Map::new(),
            };
            let mut set = |name: &str, value: Value| {
                policy.insert(name.to_string(), value);
            };
            if let Some(seconds) = bake_seconds {
                set("bake_seconds", json!(seconds));
            }
            if let Some(seconds) = first_wave_extra_bake_seconds {
                set("first_wave_extra_bake_seconds", json!(seconds));
            }
            if let Some(text) = min_healthy {
                set("min_healthy", amount(&text, "--min-healthy", "percent")?);
            }
            if let Some(text) = max_failed {
                set("max_failed", amount(&text, "--max-failed", "ratio")?);
            }
            if let Some(seconds) = converge_deadline_seconds {
                set("converge_deadline_seconds", json!(seconds));
            }
            if let Some(on_trip) = on_trip {
                set("on_trip", json!(on_trip));
            }
            if auto_advance {
                set("auto_advance", json!(true));
            }
            if let Some(no_data) = no_data {
                set("no_data", json!(no_data));
            }
            if !alerts.is_empty() {
                let matchers = alerts.iter().map(|text| alert_matcher(text)).collect::<Result<Vec<Value>>>()?;
                set("alerts", Value::Array(matchers));
            }
            let response = client
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/policies/{service}/{env}"),
                    Some(&json!({ "policy": policy })),
                    Duration::from_secs(60),
                )
                .await?;
            print_appended(output, &response)?;
        }
        PolicyCommand::Show { service, env, moment } => {
            let response = client.get(&format!("/v1/policies/{service}/{env}"), &reads::moment_query(&moment)).await?;
            print(output, &response, render_policy)?;
        }
    }
    Ok(())
}

/// `N` hosts, or `P%` of a wave's hosts, as the policy's JSON says it (`relative`: `percent` or
/// `ratio`).
fn amount(text: &str, flag: &str, relative: &str) -> Result<Value> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent.trim().parse().with_context(|| format!("{flag}: {text:?} is not a percentage"))?;
        if relative == "percent" {
            return Ok(json!({ "percent": whole_if_whole(percent) }));
        }
        return Ok(json!({ "ratio": whole_if_whole(percent / 100.0) }));
    }
    let count: u64 = text.parse().with_context(|| format!("{flag}: {text:?} is neither N nor P%"))?;
    Ok(json!({ "count": count }))
}

/// Canonical JSON writes a whole number without a fraction; so does this.
fn whole_if_whole(number: f64) -> Value {
    if number.fract() == 0.0 && (0.0..1e15).contains(&number) {
        json!(number as u64)
    } else {
        json!(number)
    }
}

/// `label=value,label=value` → `{"label": "value", …}`.
fn alert_matcher(text: &str) -> Result<Value> {
    let mut matcher = Map::new();
    for pair in text.split(',') {
        let Some((label, value)) = pair.split_once('=') else {
            bail!("--alert {text:?}: each part is LABEL=VALUE");
        };
        matcher.insert(label.trim().to_string(), json!(value.trim()));
    }
    Ok(Value::Object(matcher))
}

fn render_policy(view: &types::PolicyView) -> String {
    let mut text =
        format!("policy of {}/{} (set at seq {} by {})\n", view.service, view.env, view.set.seq, view.set.actor);
    let mut table = Table::new(&["setting", "value"]);
    // Every setting the policy has, in the order the server writes them.
    if let Ok(Value::Object(fields)) = serde_json::to_value(&view.policy) {
        for (name, value) in fields {
            let shown = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            table.row(vec![name.clone(), shown]);
        }
    }
    text.push_str(&table.render());
    text
}

pub async fn append(client: &Client, output: Output, args: AppendArgs) -> Result<()> {
    let data: Value = match &args.data {
        Some(text) => serde_json::from_str(text).context("--data is not JSON")?,
        None => Value::Null,
    };
    let event = json!({
        "id": args.id, "type": args.event_type, "stream": args.stream, "service": args.service, "env": args.env,
        "host": args.host, "release": args.release, "deployment": args.deployment, "data": data,
    });
    let expected: Value = match args.expected_version.as_deref() {
        None => Value::Null,
        Some(text) => match text.parse::<u64>() {
            Ok(version) => json!(version),
            Err(_) => json!(text),
        },
    };
    let body = without_nulls(json!({ "events": [without_nulls(event)], "expected_version": expected }));
    let response = client.post("/v1/events", &body).await?;
    print(output, &response, |answer: &types::AppendAnswer| {
        let mut table = Table::new(&["SEQ", "ID", "HASH"]);
        for event in &answer.events {
            table.row(vec![cell(&event.seq), cell(&event.id), cell(&event.hash)]);
        }
        table.render()
    })
}

pub async fn calendar(client: &Client, output: Output, command: CalendarCommand) -> Result<()> {
    match command {
        CalendarCommand::Set { service, env, file, deny, allow, reason, clear } => {
            let mut windows = match &file {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                    let value: Value =
                        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
                    match value {
                        Value::Array(windows) => windows,
                        Value::Object(mut object) => match object.remove("windows") {
                            Some(Value::Array(windows)) => windows,
                            _ => bail!("{} must hold {{\"windows\": [...]}} or a list of windows", path.display()),
                        },
                        _ => bail!("{} must hold {{\"windows\": [...]}} or a list of windows", path.display()),
                    }
                }
                None => Vec::new(),
            };
            for (kind, texts) in [("deny", &deny), ("allow", &allow)] {
                for text in texts {
                    windows.push(serde_json::to_value(window_from_flag(kind, text, reason.as_deref())?)?);
                }
            }
            if windows.is_empty() && !clear {
                bail!("give windows (--deny, --allow or --file), or --clear to remove every window");
            }
            let body = without_nulls(json!({"service": service, "env": env, "windows": windows}));
            let response =
                client.call(reqwest::Method::PUT, "/v1/calendars", Some(&body), Duration::from_secs(60)).await?;
            print_appended(output, &response)?;
        }
        CalendarCommand::Show { service, env } => {
            let mut query = Vec::new();
            if let (Some(service), Some(env)) = (service, env) {
                query = vec![("service", service), ("env", env)];
            }
            let response = client.get("/v1/calendars", &query).await?;
            print(output, &response, render_calendars)?;
        }
    }
    Ok(())
}

/// `CRON for DURATION in ZONE` or `START..END` → a window of `kind`.
fn window_from_flag(kind: &str, text: &str, reason: Option<&str>) -> Result<types::Window> {
    let flag = format!("--{kind} {text:?}");
    let owned = |text: &str| Some(text.trim().to_string());
    let window = if let Some((cron, rest)) = text.split_once(" for ") {
        let Some((duration, zone)) = rest.split_once(" in ") else {
            bail!("{flag}: write CRON for DURATION in TIME_ZONE, e.g. \"0 18 * * fri for 2d15h in Europe/Berlin\"");
        };
        types::Window { cron: owned(cron), duration: owned(duration), time_zone: owned(zone), ..Default::default() }
    } else if let Some((start, end)) = text.split_once("..") {
        types::Window { start: owned(start), end: owned(end), ..Default::default() }
    } else {
        bail!("{flag}: write CRON for DURATION in TIME_ZONE, or START..END (RFC 3339)");
    };
    Ok(types::Window { kind: kind.to_string(), reason: reason.map(str::to_string), ..window })
}

fn render_calendars(list: &types::CalendarList) -> String {
    let mut text = String::new();
    if let Some(scope) = &list.scope {
        let (service, env) = (&scope.service, &scope.env);
        text.push_str(&match scope.frozen {
            true => format!("{service}/{env} is FROZEN now: {}\n", cell(&scope.why)),
            false => format!("{service}/{env} is not frozen now\n"),
        });
    }
    if list.calendars.is_empty() {
        text.push_str("no calendar\n");
        return text;
    }
    let mut table = Table::new(&["CALENDAR", "#", "KIND", "WHEN", "REASON", "OPEN NOW"]);
    for calendar in &list.calendars {
        if calendar.windows.is_empty() {
            table.row(vec![
                cell(&calendar.scope),
                "-".into(),
                "-".into(),
                "(no window)".into(),
                String::new(),
                String::new(),
            ]);
        }
        for (index, window) in calendar.windows.iter().enumerate() {
            let when = match &window.cron {
                Some(cron) => format!("{cron} for {} in {}", cell(&window.duration), cell(&window.time_zone)),
                None => format!("{}..{}", cell(&window.start), cell(&window.end)),
            };
            let open_now = calendar
                .open_now
                .iter()
                .find(|open| open.window == index as u64)
                .map(|open| format!("until {}", open.until))
                .unwrap_or_default();
            let reason = window.reason.clone().unwrap_or_default();
            table.row(vec![cell(&calendar.scope), index.to_string(), cell(&window.kind), when, reason, open_now]);
        }
    }
    text.push_str(&table.render());
    text
}
