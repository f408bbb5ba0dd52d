//! `fleetlog bench alert`: how long from an Alertmanager alert received to the policy's rollback
//! committed. It sets up its own service on the server (a release pair, hosts, a policy that
//! counts critical alerts and bakes for an hour), then for each round starts a deployment, waits
//! for the policy to start its canaries, reports them running, posts an alert and times until
//! the deployment reads as rolled back (`GET /v1/deployments/{id}`, linearizable). The time
//! includes the evaluator's wait (it looks 20 ms after each applied change, and every 250 ms) and
//! the poll (every 5 ms).
//!
//! With `--agents N`, N simulated agents (the watchers of `bench fanout`) watch hosts of the
//! service, each deployment goes to every host in one wave, and each round also times the alert
//! until the median and the last agent received the rollback's directive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cli::BenchAlertArgs;
use crate::{fanout, leader_kill};

/// Longest one step may take before the bench gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<Value> {
        let response = self.http.request(method, format!("{}{path}", self.base)).json(body).send().await?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {answer}");
        }
        Ok(answer)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        Ok(response.error_for_status()?.json().await?)
    }

    /// Polls the deployment every 5 ms until `done` says so; a failed read (a node electing a
    /// leader answers 503) is tried again.
    async fn until(&self, deployment: &str, what: &str, done: impl Fn(&Value) -> bool) -> Result<()> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let view = self.get(&format!("/v1/deployments/{deployment}")).await.unwrap_or(Value::Null);
            if done(&view) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what} did not happen within {STEP_TIMEOUT:?}: {view}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub async fn run(server: &str, args: BenchAlertArgs) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let urls: Vec<String> = server.split(',').map(|url| url.trim().trim_end_matches('/').to_string()).collect();
    if args.kill_leader && urls.len() < 3 {
        bail!("--kill-leader needs the URL of every node of a 3-node (or larger) cluster in --server");
    }
    let mut api = Api { http: crate::fleet::http_client(2)?, base: urls[0].clone() };
    // A service of its own per run, so a server can be measured more than once.
    let service = format!("bench-alert-{}", std::process::id());
    let env = "prod";
    let hosts = args.hosts.max(args.agents as u64);
    let host_name = |index: u64| format!("{service}-h{index}");
    for release in ["1.0", "2.0"] {
        api.post("/v1/releases", &json!({"service": service, "release": release})).await?;
    }
    // Registered a thousand to an event batch.
    let indexes: Vec<u64> = (1..=hosts).collect();
    for chunk in indexes.chunks(1_000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|index| {
                let group = if *index <= 2 { "canary" } else { "main" };
                json!({"type": "target.registered", "host": host_name(*index), "service": service, "env": env,
                       "data": {"group": group}})
            })
            .collect();
        api.post("/v1/events", &json!({ "events": events })).await.context("registering the hosts")?;
    }
    let report = |host: String, release: &str| json!({"host": host, "service": service, "env": env, "release": release, "status": "running", "applied_seq": 1});
    // 1.0 ran, so a rollback has a release to go back to: a deployment of it, completed.
    let waves = json!([{"name": "all", "percent": 100}]);
    // Deployment ids are global: this run's carry its service's name.
    let base = format!("{service}-base");
    let start = json!({"deployment": base, "service": service, "env": env, "release": "1.0", "waves": waves});
    api.post("/v1/deployments", &start).await?;
    api.post(&format!("/v1/deployments/{base}/waves/all/start"), &json!({})).await?;
    api.post("/v1/reports", &report(host_name(1), "1.0")).await?;
    api.post(&format!("/v1/deployments/{base}/waves/all/complete"), &json!({})).await?;
    api.post(&format!("/v1/deployments/{base}/complete"), &json!({})).await?;
    let policy = json!({"policy": {"bake_seconds": 3600, "auto_advance": true, "alerts": [{"severity": "critical"}]}});
    api.send(reqwest::Method::PUT, &format!("/v1/policies/{service}/{env}"), &policy).await?;

    let watchers = match args.agents {
        0 => None,
        agents => {
            let address = fanout::socket_address(&api.base)?;
            let names: Arc<Vec<String>> = Arc::new((1..=agents as u64).map(host_name).collect());
            let watchers =
                fanout::connect_watchers("fleetlog", &[address], agents, args.connect_parallel, move |slot| {
                    let host = names[slot.index].clone();
                    fanout::watch_host(slot, host)
                })
                .await?;
            eprintln!("{agents} agents watching, connected in {:.1} s", watchers.connect_time.as_secs_f64());
            Some(watchers)
        }
    };

    let mut latency = Histogram::<u64>::new(3)?;
    let mut last_agent = Histogram::<u64>::new(3)?;
    let mut median_agent = Histogram::<u64>::new(3)?;
    let mut missing = 0;
    for round in 0..args.rounds {
        let deployment = format!("{service}-{round}");
        // With agents, the release goes to every host at once, so the rollback reaches all of
        // them; without, to the canaries.
        let waves = match watchers {
            Some(_) => json!([{"name": "all", "percent": 100}]),
            None => json!([{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]),
        };
        let body = json!({"deployment": deployment, "service": service, "env": env, "release": "2.0", "waves": waves});
        if let Some(watchers) = &watchers {
            watchers.receipts.reset();
        }
        let deployed = Instant::now();
        api.post("/v1/deployments", &body).await?;
        api.until(&deployment, "the first wave's start", |view| view["waves"][0]["state"] == "started").await?;
        match &watchers {
            // Every agent has its 2.0 directive before the alert comes.
            Some(watchers) => {
                watchers.receipts.collect(deployed).await;
            }
            None => {
                for index in [1, 2] {
                    api.post("/v1/reports", &report(host_name(index), "2.0")).await?;
                }
            }
        }
        let alert = json!({"version": "4", "status": "firing", "alerts": [{
            "status": "firing", "fingerprint": format!("{service}-{round}"), "startsAt": "2026-12-07T00:00:00Z",
            "labels": {"service": service, "env": env, "severity": "critical"}}]});
        // The evaluator also ticks every 250 ms, and the wave started on a tick: a random
        // pause keeps the alert from always arriving at the same point of it.
        let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if let Some(watchers) = &watchers {
            watchers.receipts.reset();
        }
        if args.kill_leader {
            let (leader, survivor) = leader_and_survivor(&api, &urls).await?;
            let process = leader_kill::ServeProcess::find(leader.base.trim_start_matches("http://"))?;
            let sent = Instant::now();
            leader.post("/v1/alerts/alertmanager", &alert).await.context("posting the alert")?;
            process.kill();
            survivor
                .until(&deployment, "the rollback after the leader's death", |view| view["state"] == "aborted")
                .await?;
            latency.record(sent.elapsed().as_micros() as u64)?;
            process.restart()?;
            api = survivor;
            wait_whole(&api, urls.len()).await?;
            continue;
        }
        let sent = Instant::now();
        api.post("/v1/alerts/alertmanager", &alert).await.context("posting the alert")?;
        api.until(&deployment, "the rollback", |view| view["state"] == "aborted").await?;
        latency.record(sent.elapsed().as_micros() as u64)?;
        if let Some(watchers) = &watchers {
            let received = watchers.receipts.collect(sent).await;
            missing += args.agents - received.len();
            if let (Some(last), Some(median)) = (received.last(), received.get(received.len() / 2)) {
                last_agent.record(last.as_micros() as u64)?;
                median_agent.record(median.as_micros() as u64)?;
            }
        }
    }
    if let Some(mut watchers) = watchers {
        watchers.tasks.abort_all();
    }
    let millis = |micros: u64| micros as f64 / 1000.0;
    let quantiles = |histogram: &Histogram<u64>| {
        json!({
            "p50": millis(histogram.value_at_quantile(0.5)),
            "p99": millis(histogram.value_at_quantile(0.99)),
            "max": millis(histogram.max()),
        })
    };
    let mut result = json!({"rounds": args.rounds, "alert_to_rollback_ms": quantiles(&latency)});
    if args.kill_leader {
        result["leader_killed_after_each_alert"] = json!(true);
    }
    if args.agents > 0 {
        result["agents"] = json!(args.agents);
        result["alert_to_last_agent_ms"] = quantiles(&last_agent);
        result["alert_to_median_agent_ms"] = quantiles(&median_agent);
        result["rollback_directives_missing"] = json!(missing);
    }
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// The leader (from `GET /v1/cluster`) and another node of `urls`.
async fn leader_and_survivor(api: &Api, urls: &[String]) -> Result<(Api, Api)> {
    let cluster = api.get("/v1/cluster").await?;
    let leader_id = cluster["leader_id"].as_u64().context("no leader now")?;
    let nodes = cluster["nodes"].as_array().context("no nodes in /v1/cluster")?;
    let address = nodes
        .iter()
        .find(|node| node["id"].as_u64() == Some(leader_id))
        .and_then(|node| node["addr"].as_str())
        .context("the leader's address")?;
    let leader_url = format!("http://{address}");
    let survivor = urls.iter().find(|url| **url != leader_url).context("a node other than the leader")?;
    let with_base = |base: &str| Api { http: api.http.clone(), base: base.to_string() };
    Ok((with_base(&leader_url), with_base(survivor)))
}

/// Waits until every one of `nodes` is reachable and caught up again.
async fn wait_whole(api: &Api, nodes: usize) -> Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Ok(cluster) = api.get("/v1/cluster").await {
            let members = cluster["nodes"].as_array().cloned().unwrap_or_default();
            let whole = members.len() == nodes
                && members.iter().all(|node| node["reachable"] == true && node["lag"].as_u64() == Some(0));
            if whole {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster was not whole again within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
