//! Where a ledger's views disagree with the model's.

use std::collections::BTreeMap;

use super::{LedgerModel, ModelDesired};
use crate::domain::kv::KvRead;
use crate::domain::records::{self, WaveState};
use crate::domain::views;

/// Every host of `hosts` with a desired release, as the ledger resolves it as of `at_seq` (now
/// when `None`), in the model's terms.
pub fn resolved_desired(
    kv: &dyn KvRead,
    hosts: &[&str],
    at_seq: Option<u64>,
) -> crate::Result<BTreeMap<String, ModelDesired>> {
    let mut desired = BTreeMap::new();
    for host in hosts {
        for record in views::host_state(kv, host, at_seq)? {
            if let Some(d) = record.desired {
                let set_by = d.deployment.zip(d.wave.map(|wave| wave as usize));
                desired.insert(host.to_string(), (d.release, set_by, d.seq));
            }
        }
    }
    Ok(desired)
}

/// One line for each way the pair differs, naming what.
fn differ<T: PartialEq + std::fmt::Debug>(found: &mut Vec<String>, what: &str, ledger: T, model: T) {
    if ledger != model {
        found.push(format!("{what}: the ledger has {ledger:?}, the model {model:?}"));
    }
}

impl LedgerModel {
    /// Where the views of `kv` (at its head, which must be where the model is) disagree with
    /// the model: every host's desired release (with the wave that set it and its seq), its
    /// registration, observed and running release and failed install, and the directives an
    /// agent of it is sent; every deployment's state, waves, counters and overridden guards;
    /// every release's block; the environment's freeze and active deployment. `hosts` are the
    /// hosts to look at (a host the model has never seen must have no record).
    pub fn differences(&self, kv: &dyn KvRead, hosts: &[&str]) -> crate::Result<Vec<String>> {
        let mut found = Vec::new();
        let (service, env) = (self.service.as_str(), self.env.as_str());
        let desired: BTreeMap<String, ModelDesired> = self
            .desired
            .iter()
            .filter(|(host, _)| hosts.contains(&host.as_str()))
            .map(|(h, d)| (h.clone(), d.clone()))
            .collect();
        differ(&mut found, "desired releases", resolved_desired(kv, hosts, None)?, desired);
        let head = records::head(kv)?.seq;
        for host in hosts {
            let record = records::host(kv, service, env, host)?;
            match (self.hosts.get(*host), record) {
                (None, None) => continue,
                (None, Some(_)) => found.push(format!("host {host}: the ledger has it, the model does not")),
                (Some(_), None) => found.push(format!("host {host}: the model has it, the ledger does not")),
                (Some((registered, group)), Some(record)) => {
                    differ(&mut found, &format!("host {host} registered"), record.registered, *registered);
                    differ(&mut found, &format!("host {host} group"), record.group.as_deref(), Some(group.as_str()));
                    let observed = record.observed.map(|o| (o.release, o.status.as_str().to_string()));
                    differ(&mut found, &format!("host {host} observed"), observed.as_ref(), self.observed.get(*host));
                    differ(
                        &mut found,
                        &format!("host {host} running"),
                        record.running.as_ref(),
                        self.running.get(*host),
                    );
                    let failure = record.failure.map(|failure| (failure.release, failure.attempt));
                    differ(
                        &mut found,
                        &format!("host {host} failed install"),
                        failure.as_ref(),
                        self.failures.get(*host),
                    );
                }
            }
            let (directives, _) = views::directives_between(kv, host, 1, head, usize::MAX)?;
            let directives: Vec<(u64, String)> = directives.into_iter().map(|d| (d.seq, d.release)).collect();
            differ(&mut found, &format!("host {host} directives"), directives, self.directives_of(host));
        }
        for (id, expected) in &self.deployments {
            let Some(record) = records::deployment(kv, id)? else {
                found.push(format!("deployment {id}: the model has it, the ledger does not"));
                continue;
            };
            differ(&mut found, &format!("deployment {id} state"), record.state, expected.state);
            differ(&mut found, &format!("deployment {id} halted"), record.halted.is_some(), expected.halted);
            let waves: Vec<WaveState> = record.waves.iter().map(|wave| wave.state).collect();
            let expected_waves: Vec<WaveState> = expected.waves.iter().map(|wave| wave.2).collect();
            differ(&mut found, &format!("deployment {id} waves"), waves, expected_waves);
            differ(&mut found, &format!("deployment {id} selected"), record.selected_total, expected.selected_total);
            let overrides: Vec<&str> = record.overrides.iter().map(|item| item.guard.as_str()).collect();
            differ(&mut found, &format!("deployment {id} guards overridden"), overrides, expected.overrides.clone());
            for (index, wave) in record.waves.iter().enumerate() {
                let counts = (wave.selected, wave.converged, wave.failed);
                let what = format!("deployment {id} wave {index}: selected, converged, failed");
                differ(&mut found, &what, counts, self.wave_counts(id, index));
            }
        }
        for (release, blocked) in &self.releases {
            match records::release(kv, service, release)? {
                None => found.push(format!("release {release}: the model has it, the ledger does not")),
                Some(record) => {
                    differ(&mut found, &format!("release {release} blocked"), record.blocked.is_some(), *blocked)
                }
            }
        }
        let environment = records::environment(kv, service, env)?;
        differ(&mut found, "environment frozen", environment.freeze.is_some(), self.frozen);
        differ(&mut found, "environment's active deployment", environment.active_deployment, self.active.clone());
        Ok(found)
    }
}
