//! `fleetlog webhook add|list|remove`: registering receivers of the log (decision 102).

use anyhow::Result;
use fleetlog_api::client::Client;
use fleetlog_types as types;
use serde_json::json;

use crate::cli::{Output, WebhookCommand};
use crate::output::{cell, print, Table};

pub async fn run(client: &Client, output: Output, command: WebhookCommand) -> Result<()> {
    match command {
        WebhookCommand::Add { url, events, format } => {
            let request = types::WebhookRequest { url, events, format: Some(format.as_str().to_string()) };
            let response = client.post("/v1/webhooks", &serde_json::to_value(&request)?).await?;
            print(output, &response, |created: &types::WebhookCreated| {
                format!(
                    "webhook {} added at seq {}: {} ({}) for {}\n\
                     secret: {}\n\
                     Store this secret now: it is not shown again. Receivers check Fleetlog-Signature with it;\n\
                     to rotate it, remove the webhook and add it again.\n",
                    created.webhook.id,
                    created.webhook.added_seq,
                    created.webhook.url,
                    created.webhook.format,
                    created.webhook.events.join(","),
                    created.secret,
                )
            })
        }
        WebhookCommand::List => {
            let response = client.get("/v1/webhooks", &[]).await?;
            print(output, &response, |list: &types::WebhookList| {
                if list.webhooks.is_empty() {
                    return "no webhook\n".to_string();
                }
                let mut table = Table::new(&["ID", "URL", "EVENTS", "FORMAT", "ADDED SEQ", "ACKED SEQ", "LAST ERROR"]);
                for webhook in &list.webhooks {
                    table.row(vec![
                        webhook.id.clone(),
                        webhook.url.clone(),
                        webhook.events.join(","),
                        webhook.format.clone(),
                        webhook.added_seq.to_string(),
                        webhook.acknowledged_seq.to_string(),
                        cell(&webhook.last_error),
                    ]);
                }
                table.render()
            })
        }
        WebhookCommand::Remove { id } => {
            let response = client.delete(&format!("/v1/webhooks/{id}"), &json!({})).await?;
            print(output, &response, |removed: &types::WebhookRemoved| {
                format!("webhook {} removed at seq {}\n", removed.id, removed.seq)
            })
        }
    }
}
