//! A host's desired release, resolved at read time from its registration and its environment's
//! desired layer ([`LayerRecord`]), both as of the same seq. Pure and in memory: no host record
//! is written when a wave starts or a rollback lands, so those cost the same at any fleet size.

use serde::{Deserialize, Serialize};

use crate::domain::ledger::validate::HostStatus;
use crate::domain::records::{Assignment, Desired, HostRecord, LayerRecord, StartedWave, WaveRule};

/// The type of the event behind a desired release set by a wave.
pub const CAUSE_WAVE: &str = "wave.started";
/// The type of the event behind a desired release set by a rollback.
pub const CAUSE_ROLLBACK: &str = "rollback";

/// What `host` should run under `layer`; `None` for a host that is not registered or that no
/// assignment since its registration reaches.
pub fn resolve(layer: &LayerRecord, host: &HostRecord) -> Option<Desired> {
    if !host.registered {
        return None;
    }
    resolve_registration(layer, host)
}

/// What `layer` assigns to the host's registration, registered now or not: the views show a
/// host that left with what it had when it left (`layer` as of its deregistration).
pub fn resolve_registration(layer: &LayerRecord, host: &HostRecord) -> Option<Desired> {
    for assignment in layer.assignments.iter().rev() {
        match assignment {
            Assignment::Rollback { release, seq } => {
                // Everything older is older still: it cannot reach this host either.
                return (host.registered_seq < *seq).then(|| Desired {
                    release: release.clone(),
                    seq: *seq,
                    cause: CAUSE_ROLLBACK.to_string(),
                    deployment: None,
                    wave: None,
                });
            }
            Assignment::Deployment { id, release, waves } => {
                if let Some(wave) = selecting_wave(waves, host) {
                    return Some(Desired {
                        release: release.clone(),
                        seq: wave.seq,
                        cause: CAUSE_WAVE.to_string(),
                        deployment: Some(id.clone()),
                        wave: Some(wave.index),
                    });
                }
            }
        }
    }
    None
}

/// The first of a deployment's started waves (in wave order) that selected `host`.
pub fn selecting_wave<'a>(waves: &'a [StartedWave], host: &HostRecord) -> Option<&'a StartedWave> {
    waves.iter().find(|wave| host.registered_seq < wave.seq && wave.rule.selects(host))
}

impl WaveRule {
    /// Whether this rule takes `host`, given the host was registered before the wave started
    /// and no earlier wave of the deployment took it.
    pub fn selects(&self, host: &HostRecord) -> bool {
        match self {
            WaveRule::Hosts(names) => names.binary_search(&host.host).is_ok(),
            WaveRule::Group(group) => host.group.as_deref() == Some(group.as_str()),
            WaveRule::UpTo(last) => host.host.as_str() <= last.as_str(),
            WaveRule::All => true,
            WaveRule::Nobody => false,
        }
    }
}

/// A change of one host's desired release, sent to the agent watching that host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    pub host: String,
    pub service: String,
    pub env: String,
    pub release: String,
    pub seq: u64,
    pub cause: String,
    pub deployment: Option<String>,
}

impl Directive {
    /// The directive that a resolved desired release of `host` stands for.
    pub fn new(host: &HostRecord, desired: &Desired) -> Directive {
        Directive {
            host: host.host.clone(),
            service: host.service.clone(),
            env: host.env.clone(),
            release: desired.release.clone(),
            seq: desired.seq,
            cause: desired.cause.clone(),
            deployment: desired.deployment.clone(),
        }
    }
}

/// Whether `layer`, as an event at `seq` left it, changes `host`'s desired release away from
/// `before` (its release just before `seq`): then the host's agent gets this directive.
pub fn directive_at(layer: &LayerRecord, host: &HostRecord, seq: u64, before: Option<&str>) -> Option<Directive> {
    let desired = resolve(layer, host)?;
    (desired.seq == seq && before != Some(desired.release.as_str())).then(|| Directive::new(host, &desired))
}

/// `host` with its desired release filled in from `layer`.
pub fn with_desired(layer: &LayerRecord, mut host: HostRecord) -> HostRecord {
    host.desired = resolve(layer, &host);
    host
}

/// How a host counts toward the wave that set its desired release: converged, converged but
/// failing its own health check, or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Converged,
    /// Running the release, and its agent's `--check` says the host is unhealthy.
    Unhealthy,
    Failed,
}

/// The deployment wave a host counts toward and how, given its resolved desired release.
pub fn mark(host: &HostRecord, desired: Option<&Desired>) -> Option<((String, u32), Mark)> {
    let desired = desired?;
    let wave = (desired.deployment.clone()?, desired.wave?);
    let mark = observed_mark(host, &desired.release)?;
    Some((wave, mark))
}

/// How the host's last report counts for `release`: running it, or failed installing it.
pub fn observed_mark(host: &HostRecord, release: &str) -> Option<Mark> {
    let observed = host.observed.as_ref()?;
    if observed.release != release {
        return None;
    }
    match observed.status {
        HostStatus::Running if host.health.as_ref().is_some_and(|health| !health.healthy) => Some(Mark::Unhealthy),
        HostStatus::Running => Some(Mark::Converged),
        HostStatus::Failed => Some(Mark::Failed),
        HostStatus::Applying => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn host(name: &str, group: &str, registered_seq: u64) -> HostRecord {
        HostRecord {
            host: name.into(),
            service: "s".into(),
            env: "e".into(),
            registered: true,
            group: Some(group.into()),
            labels: BTreeMap::new(),
            registered_seq,
            desired: None,
            observed: None,
            running: None,
            failure: None,
            health: None,
            changed_seq: registered_seq,
        }
    }

    fn deployment(id: &str, release: &str, waves: Vec<(u64, WaveRule)>) -> Assignment {
        Assignment::Deployment {
            id: id.into(),
            release: release.into(),
            waves: waves
                .into_iter()
                .enumerate()
                .map(|(index, (seq, rule))| StartedWave { index: index as u32, seq, rule })
                .collect(),
        }
    }

    #[test]
    fn the_newest_assignment_that_reaches_a_host_wins() {
        let layer = LayerRecord {
            assignments: vec![
                Assignment::Rollback { release: "1.0".into(), seq: 10 },
                deployment("d", "2.0", vec![(20, WaveRule::Group("canary".into())), (30, WaveRule::UpTo("m".into()))]),
            ],
        };
        let release = |host: &HostRecord| resolve(&layer, host).map(|desired| (desired.release, desired.seq));
        assert_eq!(release(&host("a", "canary", 5)), Some(("2.0".into(), 20)));
        assert_eq!(release(&host("b", "main", 5)), Some(("2.0".into(), 30)));
        assert_eq!(release(&host("z", "main", 5)), Some(("1.0".into(), 10)), "past the percent cut: the rollback");
        assert_eq!(release(&host("a", "canary", 25)), Some(("2.0".into(), 30)), "registered after the canary wave");
        assert_eq!(release(&host("z", "main", 15)), None, "registered after the rollback, not selected");
        let mut gone = host("a", "canary", 5);
        gone.registered = false;
        assert_eq!(release(&gone), None);
    }

    #[test]
    fn an_earlier_wave_of_the_same_deployment_keeps_its_hosts() {
        let layer = LayerRecord {
            assignments: vec![deployment("d", "2.0", vec![(20, WaveRule::UpTo("c".into())), (30, WaveRule::All)])],
        };
        let desired = resolve(&layer, &host("b", "g", 1)).unwrap();
        assert_eq!((desired.wave, desired.seq, desired.cause.as_str()), (Some(0), 20, CAUSE_WAVE));
        assert_eq!(resolve(&layer, &host("x", "g", 1)).unwrap().wave, Some(1));
    }
}
