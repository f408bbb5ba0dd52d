//! An independent model of the ledger's deployment rules, for tests and the simulator.
//!
//! The ledger resolves a host's desired release at read time from one layer per environment, so
//! that a rollback is one write whatever the fleet's size. This model does it the naive way:
//! every wave and rollback writes each host it reaches. It is written from the rules as the user
//! documentation states them, not from the ledger's code, so the two agreeing on accepts,
//! refusals and views means something. Only the rules of one environment are modelled:
//! releases, targets, deployments and their waves (halts included), rollbacks, reports,
//! freezes, and of policies the failed hosts they allow a wave. The rest of policies (their
//! decisions are events the model takes like any other), alerts, webhooks and client events are
//! accepted without modelling them: they change no view this model compares.
//!
//! - [`LedgerModel::apply`] takes an event as the ledger would, or refuses it with the ledger's
//!   rejection code.
//! - [`LedgerModel::differences`] (in [`compare`]) lists where a ledger's views disagree with
//!   the model's.

mod compare;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::domain::event::ProposedEvent;
use crate::domain::records::{DeploymentState, WaveState};

pub use compare::resolved_desired;

/// Accepted, or refused with the ledger's rejection code.
pub type Verdict = Result<(), &'static str>;

/// What a host should run: the release, the (deployment, wave index) that set it (`None` after
/// a rollback), and the seq of the event that set it.
pub type ModelDesired = (String, Option<(String, usize)>, u64);

/// A deployment as the model keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDeployment {
    pub release: String,
    /// Each wave's name, selector (the wave's object without its name) and state.
    pub waves: Vec<(String, Value, WaveState)>,
    pub state: DeploymentState,
    pub halted: bool,
    /// Hosts selected by its waves so far, each counted when its wave started.
    pub selected_total: u64,
    /// Hosts each wave selected when it started, by wave index.
    pub wave_selected: BTreeMap<usize, u64>,
    /// Converged and failed counts of each wave, as they were when the deployment ended.
    pub ended_counts: Option<BTreeMap<usize, (u64, u64)>>,
    /// The guards its events overrode, in order.
    pub overrides: Vec<&'static str>,
}

/// The ledger of one environment (`service`/`env`), modelled.
#[derive(Debug, Default)]
pub struct LedgerModel {
    pub service: String,
    pub env: String,
    /// Release name → blocked.
    pub releases: BTreeMap<String, bool>,
    /// Host → (registered, group).
    pub hosts: BTreeMap<String, (bool, String)>,
    pub desired: BTreeMap<String, ModelDesired>,
    /// Host → (release, status) it last reported.
    pub observed: BTreeMap<String, (String, String)>,
    /// The release each host last reported running.
    pub running: BTreeMap<String, String>,
    /// Each host's failed install since it last reported running: release and attempt.
    pub failures: BTreeMap<String, (String, u32)>,
    /// Releases some host reported running.
    pub ran: BTreeSet<String>,
    pub deployments: BTreeMap<String, ModelDeployment>,
    /// Completed deployments, in the order they completed.
    pub completed: Vec<String>,
    pub active: Option<String>,
    pub frozen: bool,
    /// (host, seq, release): each change of a host's desired release to another release.
    pub directives: Vec<(String, u64, String)>,
    /// The `policy` object of the environment's last `policy.set`.
    pub policy: Option<Value>,
}

/// The parts of an event the rules read.
struct Facts<'a> {
    event: &'a ProposedEvent,
    data: serde_json::Map<String, Value>,
}

impl Facts<'_> {
    fn field(value: &Option<String>) -> Result<String, &'static str> {
        value.clone().ok_or("missing_field")
    }

    fn forced(&self) -> bool {
        self.data.get("force_reason").is_some_and(|reason| !reason.is_null())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.data.get(name).and_then(Value::as_str)
    }
}

impl LedgerModel {
    pub fn new(service: &str, env: &str) -> LedgerModel {
        LedgerModel { service: service.into(), env: env.into(), ..LedgerModel::default() }
    }

    /// Applies `event` as the event at `seq`, if the rules accept it; a refusal changes nothing.
    pub fn apply(&mut self, event: &ProposedEvent, seq: u64) -> Verdict {
        let data = match serde_json::from_str::<Value>(&event.data) {
            Ok(Value::Object(map)) => map,
            _ => return Err("data_not_object"),
        };
        let facts = Facts { event, data };
        match event.event_type.as_str() {
            "release.created" => {
                let release = Facts::field(&event.release)?;
                if self.releases.contains_key(&release) {
                    return Err("release_exists");
                }
                self.releases.insert(release, false);
            }
            "release.blocked" | "release.unblocked" => {
                let block = event.event_type == "release.blocked";
                let blocked = self.releases.get_mut(&Facts::field(&event.release)?).ok_or("unknown_release")?;
                match (block, *blocked) {
                    (true, true) => return Err("release_already_blocked"),
                    (false, false) => return Err("release_not_blocked"),
                    _ => *blocked = block,
                }
            }
            "target.registered" => {
                let host = Facts::field(&event.host)?;
                let group = facts.text("group").unwrap_or_default().to_string();
                // A registration that begins anew (new host, back after a deregistration, or
                // another group) is reached only by what comes after it.
                if self.hosts.get(&host) != Some(&(true, group.clone())) {
                    self.desired.remove(&host);
                }
                self.hosts.insert(host, (true, group));
            }
            // A host that leaves keeps, in the views, the desired release it had then.
            "target.deregistered" => match self.hosts.get_mut(&Facts::field(&event.host)?) {
                Some((registered @ true, _)) => *registered = false,
                _ => return Err("unknown_host"),
            },
            "deployment.started" => self.deployment_started(&facts)?,
            "wave.started" => self.wave_started(&facts, seq)?,
            "wave.completed" => self.wave_completed(&facts)?,
            "deployment.completed" | "deployment.aborted" => self.deployment_ended(&facts)?,
            "deployment.halted" | "deployment.resumed" => {
                let halting = event.event_type == "deployment.halted";
                let (id, deployment) = self.active_deployment(&facts)?;
                match (halting, deployment.halted) {
                    (true, true) => return Err("deployment_halted"),
                    (false, false) => return Err("deployment_not_halted"),
                    _ => {}
                }
                self.deployments.get_mut(&id).expect("active deployment").halted = halting;
            }
            "policy.set" => self.policy = facts.data.get("policy").cloned(),
            "rollback" => self.rollback(&facts, seq)?,
            "host.reported" => self.host_reported(&facts)?,
            "freeze.started" | "freeze.ended" => match (event.event_type == "freeze.started", self.frozen) {
                (true, true) => return Err("already_frozen"),
                (false, false) => return Err("not_frozen"),
                (start, _) => self.frozen = start,
            },
            // Not modelled: no view the model compares changes.
            _ => {}
        }
        Ok(())
    }

    /// Each change of `host`'s desired release: (seq, release), in seq order.
    pub fn directives_of(&self, host: &str) -> Vec<(u64, String)> {
        self.directives
            .iter()
            .filter(|(name, _, _)| name == host)
            .map(|(_, seq, release)| (*seq, release.clone()))
            .collect()
    }

    /// A wave's counters as the model defines them: the hosts it selected, and of the hosts whose
    /// desired release this wave sets, those running it (converged) and those that failed it;
    /// once the deployment has ended, what they were then.
    pub fn wave_counts(&self, deployment: &str, wave: usize) -> (u64, u64, u64) {
        let selected = self.deployments[deployment].wave_selected.get(&wave).copied().unwrap_or(0);
        if let Some(ended) = &self.deployments[deployment].ended_counts {
            let (converged, failed) = ended.get(&wave).copied().unwrap_or_default();
            return (selected, converged, failed);
        }
        let (mut converged, mut failed) = (0, 0);
        for (host, (release, set_by, _)) in &self.desired {
            // Only registered hosts count.
            if set_by.as_ref() != Some(&(deployment.to_string(), wave)) || !self.hosts[host].0 {
                continue;
            }
            match self.observed.get(host) {
                Some((observed, status)) if observed == release && status == "running" => converged += 1,
                Some((observed, status)) if observed == release && status == "failed" => failed += 1,
                _ => {}
            }
        }
        (selected, converged, failed)
    }

    /// The failed hosts the policy allows wave `index` of `deployment` before its completion
    /// needs a force: its `max_failed` (the wave's own, else the policy's), of the hosts the wave
    /// selected; none without a policy.
    fn failures_allowed(&self, deployment: &ModelDeployment, index: usize) -> u64 {
        let Some(policy) = &self.policy else { return 0 };
        let wave = &deployment.waves[index].0;
        let own = policy.get("waves").and_then(|waves| waves.get(wave)).and_then(|gates| gates.get("max_failed"));
        let Some(limit) = own.or_else(|| policy.get("max_failed")) else { return 0 };
        let selected = deployment.wave_selected.get(&index).copied().unwrap_or(0);
        // A share rounds down: 50% of 3 hosts allows 1.
        let share = |of: f64| (selected as f64 * of + 1e-9).floor() as u64;
        if let Some(count) = limit.get("count").and_then(Value::as_u64) {
            count
        } else if let Some(percent) = limit.get("percent").and_then(Value::as_f64) {
            share(percent / 100.0)
        } else {
            limit.get("ratio").and_then(Value::as_f64).map_or(0, share)
        }
    }

    fn deployable(&self, release: &str) -> Verdict {
        match self.releases.get(release) {
            None => Err("unknown_release"),
            Some(true) => Err("release_blocked"),
            Some(false) => Ok(()),
        }
    }

    /// A guard: `Err(code)` unless forced, in which case the override is noted.
    fn guard(overrides: &mut Vec<&'static str>, code: &'static str, force: bool) -> Verdict {
        if !force {
            return Err(code);
        }
        overrides.push(code);
        Ok(())
    }

    /// Whether a wave's selector is a group no registered host belongs to.
    fn empty_group(&self, selector: &Value) -> bool {
        selector
            .get("group")
            .and_then(Value::as_str)
            .is_some_and(|group| !self.hosts.values().any(|(registered, of)| *registered && of == group))
    }

    fn registered(&self) -> Vec<String> {
        self.hosts.iter().filter(|(_, (registered, _))| *registered).map(|(host, _)| host.clone()).collect()
    }

    /// The deployment an event names, which must be the environment's active one.
    fn active_deployment(&self, facts: &Facts<'_>) -> Result<(String, ModelDeployment), &'static str> {
        let id = Facts::field(&facts.event.deployment)?;
        let deployment = self.deployments.get(&id).ok_or("unknown_deployment")?;
        if deployment.state != DeploymentState::Active {
            return Err("deployment_not_active");
        }
        Ok((id, deployment.clone()))
    }

    /// Freezes the counters of deployment `id` as it ends.
    fn end(&mut self, id: &str, state: DeploymentState) {
        let waves = self.deployments[id].waves.len();
        let counts = (0..waves)
            .map(|wave| {
                let (_, converged, failed) = self.wave_counts(id, wave);
                (wave, (converged, failed))
            })
            .collect();
        let deployment = self.deployments.get_mut(id).expect("deployment that ends");
        deployment.ended_counts = Some(counts);
        deployment.state = state;
    }

    /// Sets a host's desired release the naive way, noting a directive when the release changes.
    fn assign(&mut self, host: &str, desired: ModelDesired) {
        let before = self.desired.get(host).map(|(release, _, _)| release.clone());
        if before.as_deref() != Some(desired.0.as_str()) {
            self.directives.push((host.to_string(), desired.2, desired.0.clone()));
        }
        self.desired.insert(host.to_string(), desired);
    }

    fn deployment_started(&mut self, facts: &Facts<'_>) -> Verdict {
        let id = Facts::field(&facts.event.deployment)?;
        let release = Facts::field(&facts.event.release)?;
        if self.deployments.contains_key(&id) {
            return Err("deployment_exists");
        }
        self.deployable(&release)?;
        if self.active.is_some() {
            return Err("deployment_active");
        }
        if self.frozen {
            return Err("frozen");
        }
        let waves: Vec<(String, Value, WaveState)> = facts
            .data
            .get("waves")
            .and_then(Value::as_array)
            .ok_or("missing_field")?
            .iter()
            .map(|wave| {
                let mut selector = wave.as_object().cloned().unwrap_or_default();
                let name = selector.remove("name").and_then(|name| name.as_str().map(str::to_string));
                (name.unwrap_or_default(), Value::Object(selector), WaveState::Pending)
            })
            .collect();
        let mut overrides = Vec::new();
        if self.registered().is_empty() {
            Self::guard(&mut overrides, "no_hosts", facts.forced())?;
        } else if waves.iter().any(|(_, selector, _)| self.empty_group(selector)) {
            Self::guard(&mut overrides, "selector_matches_nobody", facts.forced())?;
        }
        let deployment = ModelDeployment {
            release,
            waves,
            state: DeploymentState::Active,
            halted: false,
            selected_total: 0,
            wave_selected: BTreeMap::new(),
            ended_counts: None,
            overrides,
        };
        self.deployments.insert(id.clone(), deployment);
        self.active = Some(id);
        Ok(())
    }

    fn wave_index(deployment: &ModelDeployment, facts: &Facts<'_>) -> Result<usize, &'static str> {
        let name = facts.text("wave").ok_or("missing_field")?;
        deployment.waves.iter().position(|wave| wave.0 == name).ok_or("unknown_wave")
    }

    fn wave_started(&mut self, facts: &Facts<'_>, seq: u64) -> Verdict {
        let (id, deployment) = self.active_deployment(facts)?;
        let index = Self::wave_index(&deployment, facts)?;
        if deployment.waves[..index].iter().any(|wave| wave.2 != WaveState::Completed)
            || deployment.waves[index].2 != WaveState::Pending
        {
            return Err("wave_out_of_order");
        }
        if deployment.halted {
            return Err("deployment_halted");
        }
        if self.frozen {
            return Err("frozen");
        }
        self.deployable(&deployment.release)?;
        let mut overrides = deployment.overrides.clone();
        let selector = &deployment.waves[index].1;
        if self.empty_group(selector) {
            Self::guard(&mut overrides, "selector_matches_nobody", facts.forced())?;
        }
        let registered = self.registered();
        // Hosts whose desired release an earlier wave of this deployment sets are not selected
        // again. (Only registered hosts are candidates: what a host that left keeps does not
        // count.)
        let held = |host: &String| {
            self.desired.get(host).and_then(|(_, set_by, _)| set_by.as_ref()).is_some_and(|(by, _)| *by == id)
        };
        let fresh: Vec<String> = registered.iter().filter(|host| !held(host)).cloned().collect();
        let chosen: Vec<String> = if let Some(group) = selector.get("group").and_then(Value::as_str) {
            fresh.into_iter().filter(|host| self.hosts[host].1 == group).collect()
        } else if let Some(percent) = selector.get("percent").and_then(Value::as_u64) {
            if percent == 100 {
                fresh
            } else {
                // Percentages count the registered hosts; the first ones by name are taken.
                let wanted = (registered.len() as u64 * percent).div_ceil(100);
                let missing = wanted.saturating_sub(deployment.selected_total) as usize;
                fresh.into_iter().take(missing).collect()
            }
        } else {
            let names: Vec<String> = selector
                .get("hosts")
                .and_then(Value::as_array)
                .ok_or("missing_field")?
                .iter()
                .filter_map(|name| name.as_str().map(str::to_string))
                .collect();
            if names.iter().any(|name| !registered.contains(name)) {
                return Err("unknown_host");
            }
            let mut names: Vec<String> = names.into_iter().filter(|name| !held(name)).collect();
            names.sort();
            names.dedup();
            names
        };
        let deployment = self.deployments.get_mut(&id).expect("active deployment");
        deployment.overrides = overrides;
        deployment.waves[index].2 = WaveState::Started;
        deployment.wave_selected.insert(index, chosen.len() as u64);
        deployment.selected_total += chosen.len() as u64;
        let release = deployment.release.clone();
        for host in chosen {
            self.assign(&host, (release.clone(), Some((id.clone(), index)), seq));
        }
        Ok(())
    }

    fn wave_completed(&mut self, facts: &Facts<'_>) -> Verdict {
        let (id, deployment) = self.active_deployment(facts)?;
        let index = Self::wave_index(&deployment, facts)?;
        match deployment.waves[index].2 {
            WaveState::Pending => return Err("wave_not_started"),
            WaveState::Completed => return Err("wave_already_completed"),
            WaveState::Started => {}
        }
        let mut overrides = deployment.overrides.clone();
        if self.wave_counts(&id, index).2 > self.failures_allowed(&deployment, index) {
            Self::guard(&mut overrides, "hosts_failed", facts.forced())?;
        }
        let deployment = self.deployments.get_mut(&id).expect("active deployment");
        deployment.overrides = overrides;
        deployment.waves[index].2 = WaveState::Completed;
        Ok(())
    }

    fn deployment_ended(&mut self, facts: &Facts<'_>) -> Verdict {
        let (id, deployment) = self.active_deployment(facts)?;
        if facts.event.event_type == "deployment.completed" {
            if deployment.waves.iter().any(|wave| wave.2 != WaveState::Completed) {
                return Err("waves_incomplete");
            }
            let over = (0..deployment.waves.len())
                .any(|wave| self.wave_counts(&id, wave).2 > self.failures_allowed(&deployment, wave));
            let mut overrides = deployment.overrides.clone();
            if over {
                Self::guard(&mut overrides, "hosts_failed", facts.forced())?;
            }
            self.deployments.get_mut(&id).expect("active deployment").overrides = overrides;
            self.end(&id, DeploymentState::Completed);
            self.completed.push(id);
        } else {
            self.end(&id, DeploymentState::Aborted);
        }
        self.active = None;
        Ok(())
    }

    fn rollback(&mut self, facts: &Facts<'_>, seq: u64) -> Verdict {
        let from = match &self.active {
            Some(id) => Some(self.deployments[id].release.clone()),
            None => self.completed.last().map(|id| self.deployments[id].release.clone()),
        };
        let target = match &facts.event.release {
            Some(release) => {
                self.deployable(release)?;
                release.clone()
            }
            None => {
                let from = from.ok_or("no_rollback_target")?;
                // The newest completed deployment's release that some host reported running,
                // other than the one rolled back from, and not blocked.
                self.completed
                    .iter()
                    .rev()
                    .map(|id| self.deployments[id].release.clone())
                    .filter(|release| self.ran.contains(release))
                    .find(|release| *release != from && !self.releases[release])
                    .ok_or("no_rollback_target")?
            }
        };
        if let Some(id) = self.active.take() {
            self.end(&id, DeploymentState::Aborted);
        }
        for host in self.registered() {
            self.assign(&host, (target.clone(), None, seq));
        }
        Ok(())
    }

    fn host_reported(&mut self, facts: &Facts<'_>) -> Verdict {
        let host = Facts::field(&facts.event.host)?;
        let release = Facts::field(&facts.event.release)?;
        if !self.hosts.get(&host).is_some_and(|(registered, _)| *registered) {
            return Err("unknown_host");
        }
        let status = facts.text("status").ok_or("missing_field")?.to_string();
        match status.as_str() {
            "running" => {
                self.ran.insert(release.clone());
                self.running.insert(host.clone(), release.clone());
                self.failures.remove(&host);
            }
            "failed" => {
                let attempt = match self.failures.get(&host) {
                    Some((failed, attempt)) if *failed == release => attempt + 1,
                    _ => 1,
                };
                self.failures.insert(host.clone(), (release.clone(), attempt));
            }
            _ => {}
        }
        self.observed.insert(host, (release, status));
        Ok(())
    }
}
