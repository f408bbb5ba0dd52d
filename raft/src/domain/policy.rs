//! A release-safety policy of one (service, env): what each wave of a deployment there must show
//! before the next may start, and what happens when it does not. `policy.set` carries the whole
//! policy in `data.policy`; this module checks it and holds its stored form.
//!
//! Every refusal names the field it is about (`data.policy.min_healthy.percent`), so a deployer
//! fixing a policy file knows where to look.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::ledger::validate::{check_name, is_name_char, is_stream_char};
use crate::domain::limits::{LABELS_MAX, LABEL_VALUE_CHARS_MAX, NAME_CHARS_MAX};
use crate::domain::rejection::{Rejection, RejectionCode};

/// Longest bake or deadline a policy may set: a week.
pub const SECONDS_MAX: u64 = 7 * 24 * 3600;
/// Alert matchers in one policy.
pub const ALERT_MATCHERS_MAX: usize = 32;
/// Waves with their own settings in one policy.
pub const WAVE_OVERRIDES_MAX: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// What every wave must show, unless `waves` says otherwise for it.
    pub defaults: WaveGates,
    /// Seconds the first wave bakes on top of its bake time.
    pub first_wave_extra_bake_seconds: u64,
    /// Settings of particular waves, by wave name; a field a wave leaves out is the default's.
    pub waves: BTreeMap<String, WaveGatesOverride>,
    /// Which alerts count against a deployment: an alert counts when it carries every label of
    /// one matcher. None: every alert of the (service, env) counts.
    pub alerts: Option<Vec<BTreeMap<String, String>>>,
    pub on_trip: OnTrip,
    /// Whether the next wave starts by itself after a green bake.
    pub auto_advance: bool,
    pub no_data: NoData,
}

/// The gates of one wave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveGates {
    /// Seconds the wave must stay healthy after its hosts converged, before it counts as done.
    pub bake_seconds: u64,
    pub min_healthy: Option<Amount>,
    /// Most failed hosts the wave may have; None: none may fail.
    pub max_failed: Option<Amount>,
    /// Seconds from the wave's start for its hosts to converge; None: no deadline.
    pub converge_deadline_seconds: Option<u64>,
}

/// One wave's settings, each field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveGatesOverride {
    pub bake_seconds: Option<u64>,
    pub min_healthy: Option<Amount>,
    pub max_failed: Option<Amount>,
    pub converge_deadline_seconds: Option<u64>,
}

/// A number of hosts, absolute or relative to the hosts a wave selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Amount {
    Count(u64),
    /// Hundredths of a percent, 0 to 10,000, so the stored policy holds no float.
    Basis(u32),
}

impl Amount {
    /// The number of hosts this amounts to out of `selected`; a share rounds down.
    pub fn of(self, selected: u64) -> u64 {
        match self {
            Amount::Count(count) => count,
            Amount::Basis(basis) => selected.saturating_mul(u64::from(basis)) / 10_000,
        }
    }

    /// As a policy says it: `{"count": N}`, `{"percent": P}` or `{"ratio": R}` (whole numbers
    /// stay whole, as canonical JSON writes them).
    pub fn to_json(self, relative_as: &str) -> Value {
        let basis = match self {
            Amount::Count(count) => return serde_json::json!({ "count": count }),
            Amount::Basis(basis) => basis,
        };
        let scale = if relative_as == "percent" { 100 } else { 10_000 };
        let share: Value =
            if basis % scale == 0 { (basis / scale).into() } else { (f64::from(basis) / f64::from(scale)).into() };
        serde_json::json!({ relative_as: share })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnTrip {
    #[default]
    Rollback,
    Halt,
    Nothing,
}

impl OnTrip {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTrip::Rollback => "rollback",
            OnTrip::Halt => "halt",
            OnTrip::Nothing => "none",
        }
    }
}

/// What a gate does when it has no data over its window (no report, no health).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoData {
    #[default]
    Halt,
    Ignore,
}

impl NoData {
    pub fn as_str(self) -> &'static str {
        match self {
            NoData::Halt => "halt",
            NoData::Ignore => "ignore",
        }
    }
}

impl Policy {
    /// The gates of the wave named `wave`: its own settings over the defaults.
    pub fn gates(&self, wave: &str) -> WaveGates {
        let mut gates = self.defaults.clone();
        if let Some(own) = self.waves.get(wave) {
            gates.bake_seconds = own.bake_seconds.unwrap_or(gates.bake_seconds);
            gates.min_healthy = own.min_healthy.or(gates.min_healthy);
            gates.max_failed = own.max_failed.or(gates.max_failed);
            gates.converge_deadline_seconds = own.converge_deadline_seconds.or(gates.converge_deadline_seconds);
        }
        gates
    }

    /// The policy as JSON, in the shape `policy.set` takes.
    pub fn to_json(&self) -> Value {
        let mut object = gates_json(
            Some(self.defaults.bake_seconds),
            self.defaults.min_healthy,
            self.defaults.max_failed,
            self.defaults.converge_deadline_seconds,
        );
        object.insert("first_wave_extra_bake_seconds".into(), self.first_wave_extra_bake_seconds.into());
        if !self.waves.is_empty() {
            let waves: Map<String, Value> = self
                .waves
                .iter()
                .map(|(name, own)| {
                    let gates =
                        gates_json(own.bake_seconds, own.min_healthy, own.max_failed, own.converge_deadline_seconds);
                    (name.clone(), Value::Object(gates))
                })
                .collect();
            object.insert("waves".into(), Value::Object(waves));
        }
        if let Some(alerts) = &self.alerts {
            object.insert("alerts".into(), serde_json::to_value(alerts).unwrap_or(Value::Null));
        }
        object.insert("on_trip".into(), self.on_trip.as_str().into());
        object.insert("auto_advance".into(), self.auto_advance.into());
        object.insert("no_data".into(), self.no_data.as_str().into());
        Value::Object(object)
    }
}

fn gates_json(
    bake_seconds: Option<u64>,
    min_healthy: Option<Amount>,
    max_failed: Option<Amount>,
    converge_deadline_seconds: Option<u64>,
) -> Map<String, Value> {
    let mut object = Map::new();
    if let Some(seconds) = bake_seconds {
        object.insert("bake_seconds".into(), seconds.into());
    }
    if let Some(amount) = min_healthy {
        object.insert("min_healthy".into(), amount.to_json("percent"));
    }
    if let Some(amount) = max_failed {
        object.insert("max_failed".into(), amount.to_json("ratio"));
    }
    if let Some(seconds) = converge_deadline_seconds {
        object.insert("converge_deadline_seconds".into(), seconds.into());
    }
    object
}

/// Checks `data.policy` and returns the policy it describes.
pub fn parse(value: Value) -> Result<Policy, Rejection> {
    let mut object = expect_object(value, "data.policy")?;
    let mut policy = Policy {
        defaults: WaveGates {
            bake_seconds: seconds(&mut object, "data.policy", "bake_seconds")?.unwrap_or(0),
            min_healthy: amount(&mut object, "data.policy", "min_healthy", "percent")?,
            max_failed: amount(&mut object, "data.policy", "max_failed", "ratio")?,
            converge_deadline_seconds: seconds(&mut object, "data.policy", "converge_deadline_seconds")?,
        },
        first_wave_extra_bake_seconds: seconds(&mut object, "data.policy", "first_wave_extra_bake_seconds")?
            .unwrap_or(0),
        ..Policy::default()
    };
    if let Some(waves) = object.remove("waves") {
        let waves = expect_object(waves, "data.policy.waves")?;
        if waves.len() > WAVE_OVERRIDES_MAX {
            return Err(invalid("data.policy.waves", format!("names at most {WAVE_OVERRIDES_MAX} waves")));
        }
        for (name, settings) in waves {
            let path = format!("data.policy.waves.{name}");
            check_name("data.policy.waves key", &name, NAME_CHARS_MAX, is_name_char)
                .map_err(|rejection| rejection.on(&path))?;
            let mut settings = expect_object(settings, &path)?;
            let own = WaveGatesOverride {
                bake_seconds: seconds(&mut settings, &path, "bake_seconds")?,
                min_healthy: amount(&mut settings, &path, "min_healthy", "percent")?,
                max_failed: amount(&mut settings, &path, "max_failed", "ratio")?,
                converge_deadline_seconds: seconds(&mut settings, &path, "converge_deadline_seconds")?,
            };
            no_leftovers(settings, &path)?;
            policy.waves.insert(name, own);
        }
    }
    if let Some(alerts) = object.remove("alerts") {
        policy.alerts = Some(alert_matchers(alerts)?);
    }
    if let Some(on_trip) = object.remove("on_trip") {
        policy.on_trip = match on_trip.as_str() {
            Some("rollback") => OnTrip::Rollback,
            Some("halt") => OnTrip::Halt,
            Some("none") => OnTrip::Nothing,
            _ => return Err(invalid("data.policy.on_trip", "must be \"rollback\", \"halt\" or \"none\"")),
        };
    }
    if let Some(auto_advance) = object.remove("auto_advance") {
        policy.auto_advance =
            auto_advance.as_bool().ok_or_else(|| invalid("data.policy.auto_advance", "must be true or false"))?;
    }
    if let Some(no_data) = object.remove("no_data") {
        policy.no_data = match no_data.as_str() {
            Some("halt") => NoData::Halt,
            Some("ignore") => NoData::Ignore,
            _ => return Err(invalid("data.policy.no_data", "must be \"halt\" or \"ignore\"")),
        };
    }
    no_leftovers(object, "data.policy")?;
    Ok(policy)
}

fn invalid(field: &str, what: impl std::fmt::Display) -> Rejection {
    Rejection::new(RejectionCode::InvalidPolicy, format!("{field} {what}")).on(field)
}

fn expect_object(value: Value, field: &str) -> Result<Map<String, Value>, Rejection> {
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(invalid(field, "must be an object")),
    }
}

fn no_leftovers(object: Map<String, Value>, path: &str) -> Result<(), Rejection> {
    match object.keys().next() {
        Some(name) => {
            let field = format!("{path}.{name}");
            Err(Rejection::new(RejectionCode::InvalidPolicy, format!("{field} is not a policy field")).on(&field))
        }
        None => Ok(()),
    }
}

fn seconds(object: &mut Map<String, Value>, path: &str, name: &str) -> Result<Option<u64>, Rejection> {
    let field = format!("{path}.{name}");
    match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(seconds) if seconds <= SECONDS_MAX => Ok(Some(seconds)),
            _ => Err(invalid(&field, format!("must be a whole number of seconds, 0 to {SECONDS_MAX}"))),
        },
    }
}

/// `{"count": N}`, or a share of the wave's hosts: `{"<relative>": X}` where `relative` is
/// `percent` (0 to 100) or `ratio` (0 to 1), with at most two decimals of a percent.
fn amount(
    object: &mut Map<String, Value>,
    path: &str,
    name: &str,
    relative: &str,
) -> Result<Option<Amount>, Rejection> {
    let field = format!("{path}.{name}");
    let expected = format!("must be {{\"count\": N}} or {{\"{relative}\": X}}");
    let value = match object.remove(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let Value::Object(inner) = value else { return Err(invalid(&field, expected)) };
    if inner.len() != 1 {
        return Err(invalid(&field, expected));
    }
    let (kind, number) = inner.into_iter().next().expect("one entry");
    if kind == "count" {
        return match number.as_u64() {
            Some(count) => Ok(Some(Amount::Count(count))),
            None => Err(invalid(&format!("{field}.count"), "must be a whole number ≥ 0")),
        };
    }
    if kind != relative {
        return Err(invalid(&field, expected));
    }
    let scale = if relative == "percent" { 100.0 } else { 10_000.0 };
    let basis = number.as_f64().map(|share| share * scale).filter(|basis| (0.0..=10_000.0).contains(basis));
    match basis {
        Some(basis) if (basis - basis.round()).abs() < 1e-6 => Ok(Some(Amount::Basis(basis.round() as u32))),
        _ => {
            let range = if relative == "percent" { "0 to 100, to two decimals" } else { "0 to 1, to four decimals" };
            Err(invalid(&format!("{field}.{relative}"), format!("must be {range}")))
        }
    }
}

fn alert_matchers(value: Value) -> Result<Vec<BTreeMap<String, String>>, Rejection> {
    let field = "data.policy.alerts";
    let Value::Array(items) = value else {
        return Err(invalid(field, "must be an array of label matchers, e.g. [{\"severity\": \"critical\"}]"));
    };
    if items.len() > ALERT_MATCHERS_MAX {
        return Err(invalid(field, format!("holds at most {ALERT_MATCHERS_MAX} matchers")));
    }
    let mut matchers = Vec::with_capacity(items.len());
    for (position, item) in items.into_iter().enumerate() {
        let path = format!("{field}[{position}]");
        let labels = expect_object(item, &path)?;
        if labels.is_empty() || labels.len() > LABELS_MAX {
            return Err(invalid(&path, format!("must name 1 to {LABELS_MAX} labels")));
        }
        let mut matcher = BTreeMap::new();
        for (label, value) in labels {
            check_name("alert label", &label, NAME_CHARS_MAX, is_stream_char)
                .map_err(|rejection| rejection.on(&path))?;
            match value {
                Value::String(text) if text.chars().count() <= LABEL_VALUE_CHARS_MAX => {
                    matcher.insert(label, text);
                }
                _ => {
                    return Err(invalid(
                        &format!("{path}.{label}"),
                        format!("must be a string of at most {LABEL_VALUE_CHARS_MAX} characters"),
                    ))
                }
            }
        }
        matchers.push(matcher);
    }
    Ok(matchers)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused_field(value: Value) -> String {
        let rejection = parse(value).expect_err("refused");
        assert_eq!(rejection.code, RejectionCode::InvalidPolicy, "{rejection:?}");
        rejection.field.expect("names a field")
    }

    #[test]
    fn a_whole_policy_reads_back_as_it_was_written() {
        let written = json!({
            "bake_seconds": 300,
            "min_healthy": {"percent": 90},
            "max_failed": {"ratio": 0.05},
            "converge_deadline_seconds": 900,
            "first_wave_extra_bake_seconds": 600,
            "waves": {"canary": {"bake_seconds": 1200, "max_failed": {"count": 0}}},
            "alerts": [{"severity": "critical"}],
            "on_trip": "halt",
            "auto_advance": true,
            "no_data": "ignore"
        });
        let policy = parse(written.clone()).unwrap();
        assert_eq!(policy.to_json(), written);
        assert_eq!(policy.gates("canary").bake_seconds, 1200);
        assert_eq!(policy.gates("canary").max_failed, Some(Amount::Count(0)));
        assert_eq!(policy.gates("canary").min_healthy, Some(Amount::Basis(9_000)));
        assert_eq!(policy.gates("rest").max_failed, Some(Amount::Basis(500)));
        assert_eq!(Amount::Basis(500).of(40), 2);
    }

    #[test]
    fn an_empty_policy_takes_the_defaults() {
        let policy = parse(json!({})).unwrap();
        assert_eq!(policy, Policy::default());
        assert_eq!(policy.on_trip, OnTrip::Rollback);
        assert_eq!(policy.no_data, NoData::Halt);
        assert!(!policy.auto_advance);
    }

    #[test]
    fn each_malformed_field_is_named() {
        assert_eq!(refused_field(json!([])), "data.policy");
        assert_eq!(refused_field(json!({"bake_seconds": -1})), "data.policy.bake_seconds");
        assert_eq!(refused_field(json!({"bake_seconds": 1e9})), "data.policy.bake_seconds");
        assert_eq!(refused_field(json!({"min_healthy": {"percent": 101}})), "data.policy.min_healthy.percent");
        assert_eq!(refused_field(json!({"min_healthy": {"ratio": 0.5}})), "data.policy.min_healthy");
        assert_eq!(refused_field(json!({"max_failed": {"count": 1.5}})), "data.policy.max_failed.count");
        assert_eq!(refused_field(json!({"max_failed": {"ratio": 0.123456}})), "data.policy.max_failed.ratio");
        assert_eq!(refused_field(json!({"on_trip": "panic"})), "data.policy.on_trip");
        assert_eq!(refused_field(json!({"no_data": true})), "data.policy.no_data");
        assert_eq!(refused_field(json!({"auto_advance": "yes"})), "data.policy.auto_advance");
        assert_eq!(refused_field(json!({"alerts": {"severity": "critical"}})), "data.policy.alerts");
        assert_eq!(refused_field(json!({"alerts": [{"severity": 3}]})), "data.policy.alerts[0].severity");
        assert_eq!(refused_field(json!({"waves": {"canary": {"bake": 3}}})), "data.policy.waves.canary.bake");
        assert_eq!(refused_field(json!({"bake": 3})), "data.policy.bake");
    }
}
