//! DORA's four keys of software delivery, computed from the ledger's own records over a time
//! window, and each placed in a performance band of the 2024 Accelerate State of DevOps report.
//!
//! Exact, not estimated: every figure comes from the deployments, releases and recoveries the
//! ledger recorded as their events were applied.
//! - Deployment frequency: deployments completed in the window, per day.
//! - Change lead time: for each of those, from its release's commit (`committed_at`) or, without
//!   one, its creation, to the deployment's completion; the median.
//! - Change fail rate: of the deployments started in the window, the share halted or rolled back
//!   (by a person or by the policy).
//! - Failed deployment recovery time: from the failure decision (the halt, or else the rollback)
//!   to the moment every registered host ran the rollback's target again; the median of the
//!   failures in the window.

use crate::domain::records::{DeploymentRecord, DeploymentState, RecoveryRecord, ReleaseRecord};

const HOUR_MICROS: i64 = 3_600_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// A performance band of the 2024 report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Band {
    Elite,
    High,
    Medium,
    Low,
}

impl Band {
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Elite => "elite",
            Band::High => "high",
            Band::Medium => "medium",
            Band::Low => "low",
        }
    }
}

/// One deployment as the figures used it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentFacts {
    pub id: String,
    pub service: String,
    pub env: String,
    pub release: String,
    pub started_seq: u64,
    pub ended_seq: Option<u64>,
    pub completed: bool,
    pub failed: bool,
    /// For a completed deployment: seconds from commit (or creation) to completion.
    pub lead_seconds: Option<f64>,
    /// Whether the lead time starts at the release's commit (else at its creation).
    pub lead_from_commit: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dora {
    pub days: f64,
    pub completed: u64,
    pub per_day: f64,
    pub frequency_band: Band,
    /// Median lead time in seconds, over `lead_samples` deployments; None without any.
    pub lead_median_seconds: Option<f64>,
    pub lead_samples: u64,
    pub lead_band: Option<Band>,
    pub started: u64,
    pub failed: u64,
    pub fail_rate: Option<f64>,
    pub fail_band: Option<Band>,
    pub recovery_median_seconds: Option<f64>,
    pub recovery_samples: u64,
    pub recovery_band: Option<Band>,
    pub deployments: Vec<DeploymentFacts>,
    pub recoveries: Vec<RecoveryRecord>,
}

/// Whether a deployment failed: halted at some point (now, or resumed since) or rolled back.
pub fn failed(deployment: &DeploymentRecord) -> bool {
    deployment.rolled_back_by.is_some() || deployment.halted.is_some() || deployment.resumed_seq.is_some()
}

/// The four keys over `[since_micros, until_micros)`, from `deployments` (any order), their
/// releases (`release_of`) and `recoveries`.
pub fn compute(
    deployments: &[DeploymentRecord],
    release_of: impl Fn(&str, &str) -> Option<ReleaseRecord>,
    recoveries: &[RecoveryRecord],
    since_micros: i64,
    until_micros: i64,
) -> Dora {
    let within = |micros: i64| since_micros <= micros && micros < until_micros;
    let days = (until_micros - since_micros) as f64 / DAY_MICROS as f64;
    let mut facts = Vec::new();
    let mut leads = Vec::new();
    for deployment in deployments {
        let ended = deployment.ended.as_ref();
        let completed =
            deployment.state == DeploymentState::Completed && ended.is_some_and(|end| within(end.time_micros));
        let started = within(deployment.started.time_micros);
        if !completed && !started {
            continue;
        }
        let mut lead_from_commit = false;
        let lead_seconds = match (completed, ended, release_of(&deployment.service, &deployment.release)) {
            (true, Some(end), Some(release)) => {
                lead_from_commit = release.committed_micros.is_some();
                let from = release.committed_micros.unwrap_or(release.created.time_micros);
                Some((end.time_micros - from).max(0) as f64 / 1e6)
            }
            _ => None,
        };
        leads.extend(lead_seconds);
        facts.push(DeploymentFacts {
            id: deployment.id.clone(),
            service: deployment.service.clone(),
            env: deployment.env.clone(),
            release: deployment.release.clone(),
            started_seq: deployment.started.seq,
            ended_seq: ended.map(|end| end.seq),
            completed,
            // Counted for the fail rate only when started in the window.
            failed: started && failed(deployment),
            lead_seconds,
            lead_from_commit,
        });
    }
    facts.sort_by_key(|facts| facts.started_seq);
    let completed = facts.iter().filter(|facts| facts.completed).count() as u64;
    let started: Vec<&DeploymentRecord> =
        deployments.iter().filter(|deployment| within(deployment.started.time_micros)).collect();
    let failed_count = started.iter().filter(|deployment| failed(deployment)).count() as u64;
    let per_day = if days > 0.0 { completed as f64 / days } else { 0.0 };
    let fail_rate = (!started.is_empty()).then(|| failed_count as f64 / started.len() as f64);

    let mut recovered: Vec<RecoveryRecord> =
        recoveries.iter().filter(|recovery| within(recovery.failure.time_micros)).cloned().collect();
    recovered.sort_by_key(|recovery| recovery.failure.seq);
    let recovery_times: Vec<f64> = recovered
        .iter()
        .map(|recovery| (recovery.recovered.time_micros - recovery.failure.time_micros).max(0) as f64 / 1e6)
        .collect();
    let lead_median_seconds = median(&leads);
    let recovery_median_seconds = median(&recovery_times);
    Dora {
        days,
        completed,
        per_day,
        frequency_band: frequency_band(per_day),
        lead_median_seconds,
        lead_samples: leads.len() as u64,
        lead_band: lead_median_seconds.map(lead_band),
        started: started.len() as u64,
        failed: failed_count,
        fail_rate,
        fail_band: fail_rate.map(fail_band),
        recovery_median_seconds,
        recovery_samples: recovery_times.len() as u64,
        recovery_band: recovery_median_seconds.map(recovery_band),
        deployments: facts,
        recoveries: recovered,
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 })
}

/// Elite: more than once a day ("on demand"); high: at least weekly; medium: at least monthly.
pub fn frequency_band(per_day: f64) -> Band {
    if per_day > 1.0 {
        Band::Elite
    } else if per_day * 7.0 >= 1.0 {
        Band::High
    } else if per_day * 30.0 >= 1.0 {
        Band::Medium
    } else {
        Band::Low
    }
}

/// Elite: under a day; high: under a week; medium: under a month; low: longer.
pub fn lead_band(seconds: f64) -> Band {
    let days = seconds / 86_400.0;
    if days < 1.0 {
        Band::Elite
    } else if days < 7.0 {
        Band::High
    } else if days < 30.0 {
        Band::Medium
    } else {
        Band::Low
    }
}

/// The 2024 clusters' change fail rates are 5% (elite), 20% (high), 10% (medium) and 40% (low):
/// not in band order. A rate takes the band of the nearest of them.
pub fn fail_band(rate: f64) -> Band {
    let clusters = [(Band::Elite, 0.05), (Band::Medium, 0.10), (Band::High, 0.20), (Band::Low, 0.40)];
    clusters
        .iter()
        .min_by(|(_, left), (_, right)| (rate - left).abs().total_cmp(&(rate - right).abs()))
        .map_or(Band::Low, |(band, _)| *band)
}

/// Elite: under an hour; high (the 2024 high and medium clusters alike): under a day; low:
/// longer.
pub fn recovery_band(seconds: f64) -> Band {
    if seconds < 3_600.0 {
        Band::Elite
    } else if seconds < 86_400.0 {
        Band::High
    } else {
        Band::Low
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::records::{Block, Step};

    const DAY: i64 = DAY_MICROS;

    fn step(seq: u64, micros: i64) -> Step {
        Step { seq, time_micros: micros, actor: "ci".into() }
    }

    fn deployment(
        id: &str,
        release: &str,
        seq: u64,
        started: i64,
        ended: Option<i64>,
        state: DeploymentState,
    ) -> DeploymentRecord {
        DeploymentRecord {
            id: id.into(),
            service: "shop".into(),
            env: "prod".into(),
            release: release.into(),
            state,
            waves: Vec::new(),
            started: step(seq, started),
            ended: ended.map(|micros| step(seq + 1, micros)),
            end_reason: None,
            rolled_back_by: None,
            selected_total: 0,
            selected_now: 0,
            overrides: Vec::new(),
            halted: None,
            resumed_seq: None,
        }
    }

    fn release(name: &str, created: i64, committed: Option<i64>) -> ReleaseRecord {
        ReleaseRecord {
            service: "shop".into(),
            release: name.into(),
            created: step(1, created),
            blocked: None,
            artifact: None,
            notes: None,
            committed_micros: committed,
        }
    }

    #[test]
    fn the_four_keys_come_from_the_records_in_the_window() {
        use DeploymentState::*;
        let mut rolled_back = deployment("d-3", "3.0", 30, 5 * DAY, Some(5 * DAY + HOUR_MICROS), Aborted);
        rolled_back.rolled_back_by = Some(32);
        let mut resumed = deployment("d-4", "4.0", 40, 6 * DAY, Some(7 * DAY), Completed);
        resumed.resumed_seq = Some(41);
        let mut halted = deployment("d-5", "5.0", 50, 8 * DAY, None, Active);
        halted.halted = Some(Block { reason: "latency".into(), step: step(51, 8 * DAY) });
        let deployments = [
            // Before the window: neither counted nor started in it.
            deployment("d-0", "0.9", 5, -3 * DAY, Some(-2 * DAY), Completed),
            // Started before the window, completed in it: counts for frequency and lead time.
            deployment("d-1", "1.0", 10, -DAY, Some(DAY / 2), Completed),
            deployment("d-2", "2.0", 20, 2 * DAY, Some(2 * DAY + 2 * HOUR_MICROS), Completed),
            rolled_back,
            resumed,
            halted,
        ];
        let releases =
            [release("1.0", -2 * DAY, None), release("2.0", DAY, Some(DAY / 2)), release("4.0", 5 * DAY, None)];
        let release_of = |_: &str, name: &str| releases.iter().find(|release| release.release == name).cloned();
        let recoveries = [RecoveryRecord {
            service: "shop".into(),
            env: "prod".into(),
            deployment: Some("d-3".into()),
            failure: step(31, 5 * DAY + HOUR_MICROS),
            target: "2.0".into(),
            recovered: step(35, 5 * DAY + HOUR_MICROS + 90 * 1_000_000),
        }];
        let dora = compute(&deployments, release_of, &recoveries, 0, 10 * DAY);

        assert_eq!(dora.completed, 3, "d-1, d-2 and d-4 completed in the window");
        assert!((dora.per_day - 0.3).abs() < 1e-9);
        assert_eq!(dora.frequency_band, Band::High);
        // Leads: d-1 from creation 2.5 days, d-2 from its commit 1.5 days + 2 h, d-4 2 days.
        assert_eq!(dora.lead_samples, 3);
        assert_eq!(dora.lead_median_seconds, Some(2.0 * 86_400.0));
        assert_eq!(dora.lead_band, Some(Band::High));
        let d2 = dora.deployments.iter().find(|facts| facts.id == "d-2").unwrap();
        assert!(d2.lead_from_commit);
        // Started in the window: d-2, d-3, d-4, d-5; failed: d-3 (rolled back), d-4 (halted,
        // resumed), d-5 (halted).
        assert_eq!((dora.started, dora.failed), (4, 3));
        assert_eq!(dora.fail_band, Some(Band::Low));
        assert_eq!((dora.recovery_samples, dora.recovery_median_seconds), (1, Some(90.0)));
        assert_eq!(dora.recovery_band, Some(Band::Elite));

        let empty = compute(&[], |_, _| None, &[], 0, DAY);
        assert_eq!((empty.frequency_band, empty.lead_band, empty.fail_rate), (Band::Low, None, None));
    }

    #[test]
    fn bands_follow_the_2024_report() {
        assert_eq!(frequency_band(3.0), Band::Elite);
        assert_eq!(frequency_band(1.0 / 7.0), Band::High);
        assert_eq!(frequency_band(1.0 / 30.0), Band::Medium);
        assert_eq!(frequency_band(1.0 / 90.0), Band::Low);
        assert_eq!(lead_band(3_600.0), Band::Elite);
        assert_eq!(lead_band(40.0 * 86_400.0), Band::Low);
        // The clusters' fail rates: 5% elite, 10% medium, 20% high, 40% low.
        assert_eq!(fail_band(0.0), Band::Elite);
        assert_eq!(fail_band(0.09), Band::Medium);
        assert_eq!(fail_band(0.22), Band::High);
        assert_eq!(fail_band(0.75), Band::Low);
        assert_eq!(recovery_band(1_800.0), Band::Elite);
        assert_eq!(recovery_band(7_200.0), Band::High);
        assert_eq!(recovery_band(2.0 * 86_400.0), Band::Low);
    }
}
