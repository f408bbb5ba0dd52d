//! Which hosts a starting wave selects, recorded as a rule in the environment's desired layer
//! (see [`crate::domain::desired`]) rather than written to every host.
//!
//! The rule selects, among the hosts registered when the wave starts and not selected by an
//! earlier wave of the deployment: the named hosts, the hosts of a group, or the first hosts in
//! name order up to the percent asked. A percent of 100 takes every host without visiting any;
//! the other selectors read (never write) about as many hosts as they select.

use super::validate::Selector;
use super::{reject, Step};
use crate::domain::desired::{observed_mark, selecting_wave, Mark};
use crate::domain::keys::{leading_text, prefix_end, Key, RecordTag};
use crate::domain::kv::{Direction, KvRead, Space};
use crate::domain::records::{self, DeploymentRecord, HostRecord, ReleaseCounts, StartedWave, Tally, WaveRule};
use crate::domain::rejection::RejectionCode;

/// What a starting wave selected: its rule, how many hosts, and how many of those already run
/// (or failed) the deployment's release.
#[derive(Debug)]
pub(crate) struct Selection {
    pub rule: WaveRule,
    pub selected: u64,
    pub converged: u64,
    pub unhealthy: u64,
    pub failed: u64,
}

impl Selection {
    fn new(rule: WaveRule) -> Selection {
        Selection { rule, selected: 0, converged: 0, unhealthy: 0, failed: 0 }
    }

    fn take(&mut self, host: &HostRecord, release: &str) {
        self.selected += 1;
        match observed_mark(host, release) {
            Some(Mark::Converged) => self.converged += 1,
            Some(Mark::Unhealthy) => {
                self.converged += 1;
                self.unhealthy += 1;
            }
            Some(Mark::Failed) => self.failed += 1,
            None => {}
        }
    }
}

/// Resolves wave `wave_index` of `deployment`, whose earlier waves are `earlier`, against the
/// hosts registered in its environment now (`tally` counts them).
pub(crate) fn select(
    state: &dyn KvRead,
    deployment: &DeploymentRecord,
    wave_index: usize,
    earlier: &[StartedWave],
    tally: &Tally,
) -> Step<Selection> {
    let (service, env, release) = (&deployment.service, &deployment.env, &deployment.release);
    // Every registered host is a candidate unless an earlier wave of this deployment took it.
    let candidate = |host: &HostRecord| host.registered && selecting_wave(earlier, host).is_none();
    match &deployment.waves[wave_index].selector {
        Selector::Hosts(names) => {
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let mut selection = Selection::new(WaveRule::Hosts(sorted.clone()));
            for name in &sorted {
                match records::host(state, service, env, name)? {
                    Some(host) if host.registered => {
                        if candidate(&host) {
                            selection.take(&host, release);
                        }
                    }
                    _ => {
                        return reject(
                            RejectionCode::UnknownHost,
                            format!("host {name:?} is not registered for {service}/{env}"),
                        )
                    }
                }
            }
            Ok(selection)
        }
        Selector::Group(group) => {
            let mut selection = Selection::new(WaveRule::Group(group.clone()));
            for name in group_members(state, service, env, group)? {
                if let Some(host) = records::host(state, service, env, &name)? {
                    if candidate(&host) {
                        selection.take(&host, release);
                    }
                }
            }
            Ok(selection)
        }
        Selector::Percent(100) => {
            // Every registered host: those not selected yet are the registered ones minus those
            // this deployment still holds; their reports are the environment's counts minus
            // what the earlier waves count.
            let mut earlier = ReleaseCounts::default();
            for wave in &deployment.waves[..wave_index] {
                earlier.running += wave.converged;
                earlier.unhealthy += wave.unhealthy;
                earlier.failed += wave.failed;
            }
            let counts = tally.observed.get(release).copied().unwrap_or_default();
            let remaining = |total: u64, held: u64, what: &str| {
                total.checked_sub(held).unwrap_or_else(|| {
                    crate::domain::invariant::violated(format!(
                        "deployment {:?}: {what} counted by its earlier waves ({held}) exceed those of {service}/{env} ({total})",
                        deployment.id
                    ))
                })
            };
            Ok(Selection {
                rule: WaveRule::All,
                selected: remaining(tally.registered, deployment.selected_now, "registered hosts"),
                converged: remaining(counts.running, earlier.running, "hosts running the release"),
                unhealthy: remaining(counts.unhealthy, earlier.unhealthy, "unhealthy hosts running the release"),
                failed: remaining(counts.failed, earlier.failed, "hosts failed on the release"),
            })
        }
        Selector::Percent(percent) => {
            let wanted = (tally.registered * u64::from(*percent)).div_ceil(100);
            let missing = wanted.saturating_sub(deployment.selected_total);
            if missing == 0 {
                return Ok(Selection::new(WaveRule::Nobody));
            }
            // The first `missing` candidates in name order; all of them if there are fewer.
            let mut selection = Selection::new(WaveRule::All);
            let prefix = Key::record(RecordTag::Host).text(service).text(env);
            let mut last = None;
            state.scan(
                Space::State,
                prefix.bytes(),
                &prefix_end(prefix.bytes()),
                Direction::Forward,
                &mut |_, value| {
                    let host: HostRecord = crate::domain::codec::decode(value)?;
                    if candidate(&host) {
                        selection.take(&host, release);
                        last = Some(host.host);
                    }
                    Ok(selection.selected < missing)
                },
            )?;
            if selection.selected == missing {
                if let Some(last) = last {
                    selection.rule = WaveRule::UpTo(last);
                }
            }
            Ok(selection)
        }
    }
}

/// Whether `group` has a registered host in (service, env): one step of the group index.
pub(crate) fn group_has_members(state: &dyn KvRead, service: &str, env: &str, group: &str) -> crate::Result<bool> {
    let prefix = Key::record(RecordTag::HostGroup).text(service).text(env).text(group);
    let mut found = false;
    state.scan(Space::State, prefix.bytes(), &prefix_end(prefix.bytes()), Direction::Forward, &mut |_, _| {
        found = true;
        Ok(false)
    })?;
    Ok(found)
}

/// Names of the registered hosts of `group` in (service, env), in name order.
fn group_members(state: &dyn KvRead, service: &str, env: &str, group: &str) -> crate::Result<Vec<String>> {
    let prefix = Key::record(RecordTag::HostGroup).text(service).text(env).text(group);
    let mut names = Vec::new();
    state.scan(Space::State, prefix.bytes(), &prefix_end(prefix.bytes()), Direction::Forward, &mut |key, _| {
        let (name, _) = leading_text(&key[prefix.bytes().len()..])
            .ok_or_else(|| crate::Error::Corrupt(format!("group index of {service}/{env} is malformed")))?;
        names.push(name.to_string());
        Ok(true)
    })?;
    Ok(names)
}
