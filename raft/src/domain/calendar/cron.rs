//! Five-field cron schedules (minute, hour, day of month, month, day of week), as crontab(5)
//! writes them: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, and month and
//! day names (`jan`, `mon`). Day 7 is Sunday, like 0. As in crontab, when both the day of month and
//! the day of week are restricted, a day matching either one matches.

use chrono::{Datelike, NaiveDateTime, Timelike};

/// A parsed schedule: the set of allowed values of each field, as bits.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Whether each day field was given as `*` (crontab's either-day rule depends on it).
    any_day_of_month: bool,
    any_day_of_week: bool,
}

struct FieldSpec {
    name: &'static str,
    low: u32,
    high: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec { name: "minute", low: 0, high: 59, names: &[] };
const HOUR: FieldSpec = FieldSpec { name: "hour", low: 0, high: 23, names: &[] };
const DAY_OF_MONTH: FieldSpec = FieldSpec { name: "day of month", low: 1, high: 31, names: &[] };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    low: 1,
    high: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
// 7 is accepted for Sunday and folded onto 0 after parsing.
const DAY_OF_WEEK: FieldSpec =
    FieldSpec { name: "day of week", low: 0, high: 7, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

impl Cron {
    /// Parses a five-field expression; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "needs 5 fields (minute hour day-of-month month day-of-week), {:?} has {}",
                text,
                fields.len()
            ));
        }
        let days_of_week = parse_field(fields[4], &DAY_OF_WEEK)?;
        let sunday = (days_of_week | (days_of_week >> 7)) & 1;
        Ok(Cron {
            minutes: parse_field(fields[0], &MINUTE)?,
            hours: parse_field(fields[1], &HOUR)? as u32,
            days_of_month: parse_field(fields[2], &DAY_OF_MONTH)? as u32,
            months: parse_field(fields[3], &MONTH)? as u16,
            days_of_week: ((days_of_week & 0x7f) | sunday) as u8,
            any_day_of_month: fields[2] == "*",
            any_day_of_week: fields[4] == "*",
        })
    }

    /// Whether the schedule fires at this wall-clock minute (seconds are ignored).
    pub fn matches(&self, local: &NaiveDateTime) -> bool {
        let bit = |set: u64, value: u32| set & (1u64 << value) != 0;
        if !bit(self.minutes, local.minute())
            || !bit(u64::from(self.hours), local.hour())
            || !bit(u64::from(self.months), local.month())
        {
            return false;
        }
        let day_of_month = bit(u64::from(self.days_of_month), local.day());
        let day_of_week = bit(u64::from(self.days_of_week), local.weekday().num_days_from_sunday());
        match (self.any_day_of_month, self.any_day_of_week) {
            (false, false) => day_of_month || day_of_week,
            _ => day_of_month && day_of_week,
        }
    }
}

/// The allowed values of one field, bit `v` set for value `v`.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|step| *step > 0)
                    .ok_or_else(|| format!("{}: step {step:?} is not a whole number above 0", spec.name))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (spec.low, spec.high)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, spec)?, value(high, spec)?)
        } else {
            let single = value(range, spec)?;
            // `5/15` means from 5 to the end in steps of 15, as in crontab.
            (single, if item.contains('/') { spec.high } else { single })
        };
        if low > high {
            return Err(format!("{}: range {range:?} runs backwards", spec.name));
        }
        for allowed in (low..=high).step_by(step as usize) {
            set |= 1u64 << allowed;
        }
    }
    Ok(set)
}

fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = spec.names.iter().position(|name| *name == lower) {
        // Month names count from 1, day names from 0 (Sunday).
        return Ok(index as u32 + spec.low);
    }
    match text.parse::<u32>() {
        Ok(number) if (spec.low..=spec.high).contains(&number) => Ok(number),
        _ => Err(format!("{}: {text:?} is not a value from {} to {}", spec.name, spec.low, spec.high)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("a test time")
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        let cron = Cron::parse("*/15 9-17 * * mon-fri").unwrap();
        assert!(cron.matches(&at("2026-12-07 09:00"))); // a Monday
        assert!(cron.matches(&at("2026-12-07 17:45")));
        assert!(!cron.matches(&at("2026-12-07 18:00")));
        assert!(!cron.matches(&at("2026-12-07 09:10")));
        assert!(!cron.matches(&at("2026-12-06 09:00"))); // a Sunday

        let cron = Cron::parse("0 0 1,15 JAN,jul *").unwrap();
        assert!(cron.matches(&at("2027-01-15 00:00")));
        assert!(cron.matches(&at("2027-07-01 00:00")));
        assert!(!cron.matches(&at("2027-02-01 00:00")));

        let cron = Cron::parse("5/20 * * * *").unwrap();
        for (minute, expected) in [(5, true), (25, true), (45, true), (0, false), (50, false)] {
            assert_eq!(cron.matches(&at(&format!("2026-12-07 10:{minute:02}"))), expected, "minute {minute}");
        }
    }

    #[test]
    fn sunday_is_0_and_7_and_either_day_field_may_match() {
        let by_seven = Cron::parse("0 12 * * 7").unwrap();
        let by_zero = Cron::parse("0 12 * * 0").unwrap();
        assert_eq!(by_seven, by_zero);
        assert!(by_seven.matches(&at("2026-12-06 12:00")));

        // Day 13 of the month or any Friday, as crontab reads it.
        let cron = Cron::parse("0 0 13 * fri").unwrap();
        assert!(cron.matches(&at("2026-12-13 00:00"))); // a Sunday the 13th
        assert!(cron.matches(&at("2026-12-11 00:00"))); // a Friday the 11th
        assert!(!cron.matches(&at("2026-12-12 00:00")));
        // With the day of week left open, only the day of month counts.
        let cron = Cron::parse("0 0 13 * *").unwrap();
        assert!(!cron.matches(&at("2026-12-11 00:00")));
    }

    #[test]
    fn malformed_expressions_name_their_field() {
        for (text, expected) in [
            ("* * * *", "needs 5 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day of week"),
            ("*/0 * * * *", "step"),
            ("10-5 * * * *", "backwards"),
            ("* * * smarch *", "month"),
            ("a * * * *", "minute"),
            ("1,,2 * * * *", "minute"),
        ] {
            let error = Cron::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
