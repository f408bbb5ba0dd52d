//! Freeze calendars: scheduled windows in which deployments may not start new waves (`deny`), or
//! outside of which they may not (`allow`). `freeze.calendar.set` carries a whole calendar for one
//! (service, env) or for every environment; this module checks it and tells whether a calendar
//! freezes a given log time.
//!
//! A window is either recurring (a five-field cron start, a duration and an IANA time zone) or
//! one-off (two RFC 3339 times). Recurring windows are read in their zone's wall-clock time, so a
//! 09:00 start stays at 09:00 across daylight-saving changes:
//! - a start in the hour skipped when clocks go forward opens at the first minute after the gap
//!   (crontab does the same), so a window is never lost;
//! - a start in the hour repeated when clocks go back opens once, at its first occurrence.
//!
//! Evaluated at an event's own log time, every replica reaches the same answer.

pub mod cron;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::domain::limits::REASON_CHARS_MAX;
use crate::domain::records::CalendarRecord;
use crate::domain::rejection::{Rejection, RejectionCode};
use cron::Cron;

/// Windows in one calendar.
pub const WINDOWS_MAX: usize = 64;
/// Longest recurring window: a week. Longer freezes are one-off intervals.
pub const RECURRING_MINUTES_MAX: u32 = 7 * 24 * 60;

const MINUTE_MICROS: i64 = 60_000_000;
/// How far back the latest wall-clock minute is looked for before a walk starts: more than any
/// zone's clocks ever go back at once (two hours).
const LOOKBACK_MINUTES: i64 = 3 * 60;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    pub windows: Vec<Window>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub kind: WindowKind,
    pub schedule: Schedule,
    /// Why the window exists ("weekend", "year-end freeze"), shown when it refuses a deployment.
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    Deny,
    Allow,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Deny => "deny",
            WindowKind::Allow => "allow",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    Recurring { cron_text: String, cron: Cron, duration_minutes: u32, time_zone: String },
    Once { start: String, end: String, start_micros: i64, end_micros: i64 },
}

/// Why a calendar freezes a moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frozen {
    /// A deny window is open, until `until_micros` (the latest end among the open occurrences).
    Denied { window: usize, until_micros: i64 },
    /// The calendar has allow windows and none is open.
    OutsideAllowed,
}

impl Calendar {
    /// Whether this calendar freezes the moment `time_micros`, and why. Deny wins over allow.
    pub fn frozen_at(&self, time_micros: i64) -> Option<Frozen> {
        let mut allowed = None;
        for (index, window) in self.windows.iter().enumerate() {
            match (window.kind, window.open_until(time_micros)) {
                (WindowKind::Deny, Some(until_micros)) => return Some(Frozen::Denied { window: index, until_micros }),
                (WindowKind::Allow, open) => allowed = Some(allowed.unwrap_or(false) || open.is_some()),
                (WindowKind::Deny, None) => {}
            }
        }
        (allowed == Some(false)).then_some(Frozen::OutsideAllowed)
    }

    /// The calendar as JSON, in the shape `freeze.calendar.set` takes in `data.windows`.
    pub fn windows_json(&self) -> Value {
        Value::Array(self.windows.iter().map(Window::to_json).collect())
    }

    /// Says why `frozen` freezes, for a refusal or a listing.
    pub fn describe(&self, frozen: &Frozen) -> String {
        match frozen {
            Frozen::Denied { window, until_micros } => {
                let window = &self.windows[*window];
                let reason = window.reason.as_deref().map(|reason| format!(" ({reason})")).unwrap_or_default();
                format!("deny window {}{reason} is open until {}", window.summary(), micros_text(*until_micros))
            }
            Frozen::OutsideAllowed => "no allow window is open".to_string(),
        }
    }
}

/// Why the first of `calendars` that freezes `time_micros` does, naming the calendar; None when
/// none does.
pub fn freeze_reason(calendars: &[CalendarRecord], time_micros: i64) -> Option<String> {
    calendars.iter().find_map(|record| {
        let frozen = record.calendar.frozen_at(time_micros)?;
        Some(format!("{} calendar: {}", record.scope(), record.calendar.describe(&frozen)))
    })
}

impl Window {
    /// If the window is open at `time_micros`: when the occurrence open then ends.
    pub fn open_until(&self, time_micros: i64) -> Option<i64> {
        match &self.schedule {
            Schedule::Once { start_micros, end_micros, .. } => {
                (*start_micros <= time_micros && time_micros < *end_micros).then_some(*end_micros)
            }
            Schedule::Recurring { cron, duration_minutes, time_zone, .. } => {
                let zone: chrono_tz::Tz = time_zone.parse().ok()?;
                let duration = i64::from(*duration_minutes) * MINUTE_MICROS;
                // The starts that cover `time_micros` fall on whole minutes after it less the
                // duration, up to it. Walk them forward, keeping the latest wall-clock minute seen
                // (a jump back repeats minutes already seen, which start nothing).
                let first = (time_micros - duration).div_euclid(MINUTE_MICROS) * MINUTE_MICROS + MINUTE_MICROS;
                let mut seen = wall_clock(zone, first - MINUTE_MICROS)?;
                for minutes_back in 2..=LOOKBACK_MINUTES {
                    seen = seen.max(wall_clock(zone, first - minutes_back * MINUTE_MICROS)?);
                }
                let mut latest = None;
                let mut start = first;
                while start <= time_micros {
                    let local = wall_clock(zone, start)?;
                    if local > seen {
                        if starts_between(cron, &seen, &local) {
                            latest = Some(start);
                        }
                        seen = local;
                    }
                    start += MINUTE_MICROS;
                }
                latest.map(|start| start + duration)
            }
        }
    }

    fn summary(&self) -> String {
        match &self.schedule {
            Schedule::Recurring { cron_text, duration_minutes, time_zone, .. } => {
                format!("\"{cron_text}\" for {} in {time_zone}", duration_text(*duration_minutes))
            }
            Schedule::Once { start, end, .. } => format!("from {start} to {end}"),
        }
    }

    fn to_json(&self) -> Value {
        let mut object = match &self.schedule {
            Schedule::Recurring { cron_text, duration_minutes, time_zone, .. } => json!({
                "kind": self.kind.as_str(), "cron": cron_text, "duration": duration_text(*duration_minutes),
                "time_zone": time_zone,
            }),
            Schedule::Once { start, end, .. } => json!({"kind": self.kind.as_str(), "start": start, "end": end}),
        };
        if let (Some(reason), Some(object)) = (&self.reason, object.as_object_mut()) {
            object.insert("reason".into(), reason.clone().into());
        }
        object
    }
}

/// Whether the schedule starts a window in the UTC minute whose wall-clock time is `local`, the
/// latest wall-clock minute before it being `before`: it does if it matches a wall-clock minute
/// after `before` up to `local`. That is one minute, except across a jump forward, where the
/// skipped minutes start here.
fn starts_between(cron: &Cron, before: &NaiveDateTime, local: &NaiveDateTime) -> bool {
    let mut minute = *before + chrono::Duration::minutes(1);
    while minute <= *local {
        if cron.matches(&minute) {
            return true;
        }
        minute += chrono::Duration::minutes(1);
    }
    false
}

fn wall_clock(zone: chrono_tz::Tz, time_micros: i64) -> Option<NaiveDateTime> {
    let utc = DateTime::<Utc>::from_timestamp_micros(time_micros)?;
    Some(zone.from_utc_datetime(&utc.naive_utc()).naive_local())
}

fn micros_text(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `2d12h30m` style: days, hours and minutes, the zero ones left out.
pub fn duration_text(minutes: u32) -> String {
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let mut text = String::new();
    for (amount, unit) in [(days, "d"), (hours, "h"), (minutes, "m")] {
        if amount > 0 {
            text.push_str(&format!("{amount}{unit}"));
        }
    }
    text
}

/// Minutes in a duration written `90m`, `2h`, `1h30m`, `2d12h`: whole days, hours and minutes,
/// in that order.
fn parse_duration(text: &str) -> Option<u32> {
    let mut total: u32 = 0;
    let mut rest = text;
    let mut units = ["d", "h", "m"].iter().zip([1440u32, 60, 1]).peekable();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let amount: u32 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        // Skip to the unit written; one written out of order or twice is refused.
        loop {
            let (name, scale) = units.next()?;
            if name.starts_with(unit) {
                total = total.checked_add(amount.checked_mul(scale)?)?;
                break;
            }
        }
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(total)
}

/// Checks `data.windows` and returns the calendar it describes.
pub fn parse(windows: Value) -> Result<Calendar, Rejection> {
    let Value::Array(items) = windows else {
        return Err(invalid("data.windows", "must be a list of windows"));
    };
    if items.len() > WINDOWS_MAX {
        return Err(invalid("data.windows", format!("holds at most {WINDOWS_MAX} windows, not {}", items.len())));
    }
    let windows = items.into_iter().enumerate().map(|(index, item)| window(item, index)).collect::<Result<_, _>>()?;
    Ok(Calendar { windows })
}

fn window(item: Value, index: usize) -> Result<Window, Rejection> {
    let path = format!("data.windows[{index}]");
    let Value::Object(mut object) = item else {
        return Err(invalid(&path, "must be an object"));
    };
    let kind = match text(&mut object, &path, "kind")?.as_deref() {
        Some("deny") => WindowKind::Deny,
        Some("allow") => WindowKind::Allow,
        _ => return Err(invalid(&format!("{path}.kind"), "must be \"deny\" or \"allow\"")),
    };
    let reason = text(&mut object, &path, "reason")?;
    if reason.as_ref().is_some_and(|reason| reason.chars().count() > REASON_CHARS_MAX) {
        return Err(invalid(&format!("{path}.reason"), format!("is longer than {REASON_CHARS_MAX} characters")));
    }
    let schedule = if object.contains_key("cron") {
        recurring(&mut object, &path)?
    } else if object.contains_key("start") {
        once(&mut object, &path)?
    } else {
        return Err(invalid(&path, "needs either cron, duration and time_zone, or start and end"));
    };
    if let Some(field) = object.keys().next() {
        let field = format!("{path}.{field}");
        return Err(invalid(&field, "is not a window field (or mixes a recurring and a one-off window)"));
    }
    Ok(Window { kind, schedule, reason })
}

fn recurring(object: &mut Map<String, Value>, path: &str) -> Result<Schedule, Rejection> {
    let cron_text = text(object, path, "cron")?.unwrap_or_default();
    let cron = Cron::parse(&cron_text).map_err(|why| {
        Rejection::new(RejectionCode::InvalidCron, format!("{path}.cron {why}")).on(&format!("{path}.cron"))
    })?;
    let duration_field = format!("{path}.duration");
    let duration_text = text(object, path, "duration")?.ok_or_else(|| invalid(&duration_field, "is required"))?;
    let duration_minutes = parse_duration(&duration_text)
        .filter(|minutes| (1..=RECURRING_MINUTES_MAX).contains(minutes))
        .ok_or_else(|| {
            invalid(
                &duration_field,
                format!("must be like 90m, 8h or 2d12h, from 1 minute to 7 days, not {duration_text:?}"),
            )
        })?;
    let zone_field = format!("{path}.time_zone");
    let time_zone = text(object, path, "time_zone")?.ok_or_else(|| invalid(&zone_field, "is required"))?;
    if time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(Rejection::new(
            RejectionCode::InvalidTimeZone,
            format!("{zone_field} {time_zone:?} is not an IANA time zone name (like Europe/Berlin or UTC)"),
        )
        .on(&zone_field));
    }
    Ok(Schedule::Recurring { cron_text, cron, duration_minutes, time_zone })
}

fn once(object: &mut Map<String, Value>, path: &str) -> Result<Schedule, Rejection> {
    let mut moment = |name: &str| -> Result<(String, i64), Rejection> {
        let field = format!("{path}.{name}");
        let value = text(object, path, name)?.ok_or_else(|| invalid(&field, "is required"))?;
        // The ledger stores times to the microsecond; a longer text would not round-trip.
        let parsed = (value.len() <= 40).then(|| DateTime::parse_from_rfc3339(&value).ok()).flatten();
        let parsed = parsed.ok_or_else(|| invalid(&field, format!("must be an RFC 3339 time, not {value:?}")))?;
        Ok((value, parsed.timestamp_micros()))
    };
    let (start, start_micros) = moment("start")?;
    let (end, end_micros) = moment("end")?;
    if end_micros <= start_micros {
        return Err(invalid(&format!("{path}.end"), "must be after start"));
    }
    Ok(Schedule::Once { start, end, start_micros, end_micros })
}

fn text(object: &mut Map<String, Value>, path: &str, name: &str) -> Result<Option<String>, Rejection> {
    match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text)),
        Some(_) => Err(invalid(&format!("{path}.{name}"), "must be a non-empty string")),
    }
}

fn invalid(field: &str, what: impl std::fmt::Display) -> Rejection {
    Rejection::new(RejectionCode::InvalidCalendar, format!("{field} {what}")).on(field)
}

#[cfg(test)]
mod tests;
