//! Commands that append: releases, targets, reports, deployments, rollbacks, freezes, events.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use fleetlog_api::client::Client;
use serde_json::{json, Map, Value};

use crate::cli::{
    AppendArgs, DeployCommand, FreezeCommand, Output, ReleaseCommand, ReportArgs, RollbackArgs, TargetCommand,
};
use crate::output::{cell, print, Table};
use crate::reads;
use crate::wait::Goal;

/// Prints the event a typed command appended.
fn print_appended(output: Output, response: &Value) {
    print(output, response, |response| {
        let event = &response["event"];
        let replay = if response["duplicate"] == Value::Bool(true) { " (already in the ledger)" } else { "" };
        let mut line = format!("seq {} {}", cell(&event["seq"]), cell(&event["type"]));
        for field in ["service", "env", "host", "release", "deployment"] {
            if !event[field].is_null() {
                line.push_str(&format!(" {field}={}", cell(&event[field])));
            }
        }
        format!("{line}{replay}\n")
    });
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect::<Map<_, _>>()),
        other => other,
    }
}

pub async fn release(client: &Client, output: Output, command: ReleaseCommand) -> Result<()> {
    let response = match command {
        ReleaseCommand::Create { service, release, artifact, notes, commits, id } => {
            let commits = if commits.is_empty() { Value::Null } else { json!(commits) };
            let body = json!({
                "service": service, "release": release, "artifact": artifact, "notes": notes,
                "commits": commits, "id": id,
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
            print(output, &response, reads::render_releases);
            return Ok(());
        }
    };
    print_appended(output, &response);
    Ok(())
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
    print_appended(output, &response);
    Ok(())
}

pub async fn report(client: &Client, output: Output, args: ReportArgs) -> Result<()> {
    let body = json!({
        "service": args.service, "env": args.env, "host": args.host, "release": args.release,
        "status": args.status, "applied_seq": args.applied_seq, "message": args.message,
    });
    let response = client.post("/v1/reports", &without_nulls(body)).await?;
    print_appended(output, &response);
    Ok(())
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
        DeployCommand::Start { service, env, release, waves, id, force, wait, timeout_seconds } => {
            let waves = waves.iter().map(|wave| parse_wave(wave)).collect::<Result<Vec<_>>>()?;
            let body = json!({
                "service": service, "env": env, "release": release, "waves": waves, "deployment": id,
                "force_reason": force,
            });
            let response = client.post("/v1/deployments", &without_nulls(body)).await?;
            print_appended(output, &response);
            if !wait {
                return Ok(());
            }
            let deployment = response["event"]["deployment"].as_str().context("the server named no deployment")?;
            let timeout = Duration::from_secs(timeout_seconds);
            return crate::wait::wait(client, output, deployment, Goal::Ended, timeout, WAIT_INTERVAL).await;
        }
        DeployCommand::Wave { deployment, wave, complete, force, wait, timeout_seconds } => {
            let action = if complete { "complete" } else { "start" };
            let body = without_nulls(json!({ "force_reason": force }));
            let response = client.post(&format!("/v1/deployments/{deployment}/waves/{wave}/{action}"), &body).await?;
            print_appended(output, &response);
            if complete {
                return Ok(());
            }
            if matches!(output, Output::Table) {
                let view = client.get(&format!("/v1/deployments/{deployment}"), &[]).await?;
                let selected = view["waves"]
                    .as_array()
                    .and_then(|waves| waves.iter().find(|started| started["name"] == wave.as_str()))
                    .and_then(|started| started["hosts"]["selected"].as_u64());
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
        DeployCommand::Status { deployment, moment, service, env } => {
            return reads::deployment_status(client, output, deployment, moment, service, env).await;
        }
    };
    print_appended(output, &response);
    Ok(())
}

pub async fn rollback(client: &Client, output: Output, args: RollbackArgs) -> Result<()> {
    let body = json!({ "service": args.service, "env": args.env, "reason": args.reason, "release": args.release });
    let response = client.post("/v1/rollbacks", &without_nulls(body)).await?;
    print_appended(output, &response);
    Ok(())
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
    print_appended(output, &response);
    Ok(())
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
    print(output, &response, |response| {
        let mut table = Table::new(&["SEQ", "ID", "HASH"]);
        for event in response["events"].as_array().into_iter().flatten() {
            table.row(vec![cell(&event["seq"]), cell(&event["id"]), cell(&event["hash"])]);
        }
        table.render()
    });
    Ok(())
}
