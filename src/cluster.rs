//! `fleetlog cluster …`: membership commands, each one call to any node of the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fleetlog_api::client::Client;
use fleetlog_types as types;
use reqwest::Method;
use serde_json::json;

use crate::cli::{ClusterCommand, Output};
use crate::output::{cell, print, Table};

/// Adding a learner returns once it has caught up, which takes a while on a large ledger.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(900);

pub async fn run(client: &Client, output: Output, command: ClusterCommand) -> Result<()> {
    let status = match command {
        ClusterCommand::Init(args) => {
            let members = parse_node_addresses(&args.members, "--members")?;
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
    print(output, &status, render_status)
}

/// `ID=HOST:PORT` items (`cluster init --members`, `serve --peer-route`) by node id; `flag` names
/// the option in errors.
pub fn parse_node_addresses(items: &[String], flag: &str) -> Result<BTreeMap<u64, String>> {
    let mut parsed = BTreeMap::new();
    for item in items {
        let (id, address) = item.split_once('=').with_context(|| format!("{flag} {item:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().with_context(|| format!("{flag} {item:?}: {id:?} is not a node id"))?;
        let address = address.trim();
        if id == 0 || address.is_empty() {
            bail!("{flag} {item:?}: node ids are positive and the address is HOST:PORT");
        }
        if parsed.insert(id, address.to_string()).is_some() {
            bail!("{flag}: node {id} is given twice");
        }
    }
    Ok(parsed)
}

pub fn render_status(status: &types::ClusterStatus) -> String {
    let mut text =
        format!("cluster {}  leader {}  term {}\n", cell(&status.cluster_id), cell(&status.leader_id), status.term);
    let mut table = Table::new(&["NODE", "ADDRESS", "ROLE", "LAST LOG", "APPLIED", "LAG", "REACHABLE"]);
    for node in &status.nodes {
        table.row(vec![
            cell(&node.id),
            cell(&node.addr),
            cell(&node.role),
            cell(&node.last_log_index),
            cell(&node.applied_index),
            cell(&node.lag),
            if node.reachable { "yes".into() } else { "no".into() },
        ]);
    }
    text.push_str(&table.render());
    text.push_str(&format!("checkpoint key: {}\n", cell(&status.checkpoint_key)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_refuse_repeats() {
        let parse = |items: &[&str]| {
            parse_node_addresses(&items.iter().map(|item| item.to_string()).collect::<Vec<_>>(), "--members")
        };
        let members = parse(&["1=127.0.0.1:7071", "2=127.0.0.1:7072"]).unwrap();
        assert_eq!(members.get(&2).map(String::as_str), Some("127.0.0.1:7072"));
        assert!(parse(&["1=a:1", "1=b:2"]).is_err());
        assert!(parse(&["x=a:1"]).is_err());
        assert!(parse(&["0=a:1"]).is_err());
        assert!(parse(&["3="]).is_err());
        assert!(parse(&["127.0.0.1:7071"]).is_err());
    }
}
