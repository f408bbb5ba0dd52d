//! Which hosts a wave selects, resolved at apply time against the hosts registered for the
//! deployment's (service, env) at that seq. Deterministic: hosts are visited in name order.

use super::validate::Selector;
use super::{reject, Step};
use crate::records::{DeploymentRecord, HostRecord};
use crate::rejection::RejectionCode;

/// Positions in `hosts` (all hosts of the environment, ordered by name) that wave `wave_index`
/// selects. A host already selected by an earlier wave of the same deployment is not selected
/// again, so a wave may select nobody new.
pub(crate) fn select_hosts(deployment: &DeploymentRecord, wave_index: usize, hosts: &[HostRecord]) -> Step<Vec<usize>> {
    let already_selected = |host: &HostRecord| {
        host.desired.as_ref().and_then(|desired| desired.deployment.as_deref()) == Some(deployment.id.as_str())
    };
    let candidates = || {
        hosts
            .iter()
            .enumerate()
            .filter(|(_, host)| host.registered && !already_selected(host))
            .map(|(position, _)| position)
    };
    let selected = match &deployment.waves[wave_index].selector {
        Selector::Hosts(names) => {
            let mut positions = Vec::with_capacity(names.len());
            for name in names {
                match hosts.binary_search_by(|host| host.host.as_str().cmp(name)) {
                    Ok(position) if hosts[position].registered => {
                        if !already_selected(&hosts[position]) {
                            positions.push(position);
                        }
                    }
                    _ => {
                        return reject(
                            RejectionCode::UnknownHost,
                            format!("host {name:?} is not registered for {}/{}", deployment.service, deployment.env),
                        )
                    }
                }
            }
            positions.sort_unstable();
            positions.dedup();
            positions
        }
        Selector::Group(group) => {
            candidates().filter(|position| hosts[*position].group.as_ref() == Some(group)).collect()
        }
        Selector::Percent(percent) => {
            let registered = hosts.iter().filter(|host| host.registered).count() as u64;
            let wanted = (registered * u64::from(*percent)).div_ceil(100);
            let missing = wanted.saturating_sub(deployment.selected_total) as usize;
            candidates().take(missing).collect()
        }
    };
    Ok(selected)
}
