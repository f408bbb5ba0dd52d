//! `fleetlog cluster …`: membership commands, each one call to any node of the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fleetlog_api::client::Client;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{ClusterCommand, Output};
use crate::output::{cell, print, Table};

/// Adding a learner returns once it has caught up, which takes a while on a large ledger.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(900);

pub async fn run(client: &Client, output: Output, command: ClusterCommand) -> Result<()> {
    let status = match command {
        ClusterCommand::Init(args) => {
            let members = parse_members(&args.members)?;
            client.call(Method::POST, "/v1/cluster/init", Some(&json!({ "members": members })), CHANGE_TIMEOUT).await?
        }
        ClusterCommand::AddLearner(args) => {
            let body = json!({ "node_id": args.node_id, "addr": args.addr });
            client.call(Method::POST, "/v1/cluster/learners", Some(&body), CHANGE_TIMEOUT).await?
        }
        ClusterCommand::Promote(args) => {
            let path = format!("/v1/cluster/members/{}/promote", args.node_id);
            client.call(Method::POST, &path, None, CHANGE_TIMEOUT).await?
        }
        ClusterCommand::Remove(args) => {
            let path = format!("/v1/cluster/members/{}", args.node_id);
            client.call(Method::DELETE, &path, None, CHANGE_TIMEOUT).await?
        }
        ClusterCommand::Status => client.get("/v1/cluster", &[]).await?,
    };
    print(output, &status, render_status);
    Ok(())
}

/// `1=HOST:PORT,2=HOST:PORT` as the API's members object.
pub fn parse_members(members: &[String]) -> Result<BTreeMap<String, String>> {
    let mut parsed = BTreeMap::new();
    for member in members {
        let (id, address) = member.split_once('=').with_context(|| format!("member {member:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("member id {id:?} is not a number"))?;
        if parsed.insert(id.to_string(), address.trim().to_string()).is_some() {
            bail!("member {id} is given twice");
        }
    }
    Ok(parsed)
}

pub fn render_status(status: &Value) -> String {
    let mut text = format!(
        "cluster {}  leader {}  term {}\n",
        cell(&status["cluster_id"]),
        cell(&status["leader_id"]),
        cell(&status["term"])
    );
    let mut table = Table::new(&["NODE", "ADDRESS", "ROLE", "LAST LOG", "APPLIED", "LAG", "REACHABLE"]);
    for node in status["nodes"].as_array().into_iter().flatten() {
        table.row(vec![
            cell(&node["id"]),
            cell(&node["addr"]),
            cell(&node["role"]),
            cell(&node["last_log_index"]),
            cell(&node["applied_index"]),
            cell(&node["lag"]),
            if node["reachable"] == true { "yes".into() } else { "no".into() },
        ]);
    }
    text.push_str(&table.render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_refuse_repeats() {
        let members = parse_members(&["1=127.0.0.1:7071".into(), "2=127.0.0.1:7072".into()]).unwrap();
        assert_eq!(members.get("2").map(String::as_str), Some("127.0.0.1:7072"));
        assert!(parse_members(&["1=a:1".into(), "1=b:2".into()]).is_err());
        assert!(parse_members(&["x=a:1".into()]).is_err());
        assert!(parse_members(&["127.0.0.1:7071".into()]).is_err());
    }
}
