use super::*;

fn micros(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).expect("a test time").timestamp_micros()
}

fn calendar(windows: Value) -> Calendar {
    parse(windows).expect("a valid calendar")
}

fn frozen(calendar: &Calendar, time: &str) -> bool {
    calendar.frozen_at(micros(time)).is_some()
}

#[test]
fn a_start_skipped_when_clocks_go_forward_opens_right_after_the_gap() {
    // Berlin, 2026-03-29: at 02:00 CET clocks jump to 03:00 CEST (01:00 UTC); 02:30 never happens.
    let nightly =
        calendar(json!([{"kind": "deny", "cron": "30 2 * * *", "duration": "1h", "time_zone": "Europe/Berlin"}]));
    // The day before, 02:30 CET is 01:30 UTC.
    assert!(!frozen(&nightly, "2026-03-28T01:29:59Z"));
    assert!(frozen(&nightly, "2026-03-28T01:30:00Z"));
    assert!(frozen(&nightly, "2026-03-28T02:29:59Z"));
    assert!(!frozen(&nightly, "2026-03-28T02:30:00Z"));
    // On the day, the window opens at 03:00 CEST, the first minute after the gap.
    assert!(!frozen(&nightly, "2026-03-29T00:59:59Z"));
    assert!(frozen(&nightly, "2026-03-29T01:00:00Z"));
    assert!(frozen(&nightly, "2026-03-29T01:59:59Z"));
    assert!(!frozen(&nightly, "2026-03-29T02:00:00Z"));
    // The day after, 02:30 CEST is 00:30 UTC.
    assert!(!frozen(&nightly, "2026-03-30T00:29:59Z"));
    assert!(frozen(&nightly, "2026-03-30T00:30:00Z"));
}

#[test]
fn a_start_in_the_hour_repeated_when_clocks_go_back_opens_once() {
    // Berlin, 2026-10-25: at 03:00 CEST clocks go back to 02:00 CET (01:00 UTC); 02:30 happens
    // twice, at 00:30 and 01:30 UTC.
    let nightly =
        calendar(json!([{"kind": "deny", "cron": "30 2 * * *", "duration": "1h", "time_zone": "Europe/Berlin"}]));
    assert!(!frozen(&nightly, "2026-10-25T00:29:59Z"));
    assert!(frozen(&nightly, "2026-10-25T00:30:00Z"));
    assert!(frozen(&nightly, "2026-10-25T01:29:59Z"));
    // The second 02:30 starts nothing: the window does not open twice on one night.
    assert!(!frozen(&nightly, "2026-10-25T01:30:00Z"));
    assert!(!frozen(&nightly, "2026-10-25T02:00:00Z"));
    // The day after, 02:30 CET is 01:30 UTC.
    assert!(frozen(&nightly, "2026-10-26T01:30:00Z"));
}

#[test]
fn business_hours_follow_the_wall_clock_across_a_daylight_saving_change() {
    // New York, 2026-11-01: clocks go back from EDT (UTC-4) to EST (UTC-5).
    let office = calendar(json!([
        {"kind": "allow", "cron": "0 9 * * mon-fri", "duration": "8h", "time_zone": "America/New_York"}
    ]));
    // Friday before: 09:30 EDT is 13:30 UTC.
    assert!(!frozen(&office, "2026-10-30T13:30:00Z"));
    assert!(frozen(&office, "2026-10-30T12:59:59Z"));
    assert!(frozen(&office, "2026-10-30T21:00:00Z"));
    // Monday after: 13:30 UTC is 08:30 EST, before the office opens; 14:00 UTC is 09:00 EST.
    assert_eq!(office.frozen_at(micros("2026-11-02T13:30:00Z")), Some(Frozen::OutsideAllowed));
    assert!(!frozen(&office, "2026-11-02T14:00:00Z"));
    assert!(!frozen(&office, "2026-11-02T21:59:59Z"));
    assert!(frozen(&office, "2026-11-02T22:00:00Z"));
    // Saturday: closed all day.
    assert!(frozen(&office, "2026-10-31T15:00:00Z"));
}

#[test]
fn deny_wins_over_allow_and_names_its_window() {
    let calendar = calendar(json!([
        {"kind": "allow", "cron": "0 0 * * *", "duration": "1d", "time_zone": "UTC"},
        {"kind": "deny", "cron": "0 18 * * fri", "duration": "2d15h", "time_zone": "UTC", "reason": "weekend"},
    ]));
    assert!(!frozen(&calendar, "2026-12-10T12:00:00Z")); // a Thursday
    let sunday = calendar.frozen_at(micros("2026-12-13T12:00:00Z")).expect("frozen on Sunday");
    assert_eq!(sunday, Frozen::Denied { window: 1, until_micros: micros("2026-12-14T09:00:00Z") });
    let text = calendar.describe(&sunday);
    assert!(text.contains("weekend") && text.contains("2026-12-14T09:00:00Z"), "{text}");
    assert!(!frozen(&calendar, "2026-12-14T09:00:00Z"));
}

#[test]
fn one_off_intervals_are_half_open_and_keep_their_offsets() {
    let holidays =
        calendar(json!([{"kind": "deny", "start": "2026-12-24T00:00:00+01:00", "end": "2026-12-27T00:00:00+01:00"}]));
    assert!(!frozen(&holidays, "2026-12-23T22:59:59Z"));
    assert!(frozen(&holidays, "2026-12-23T23:00:00Z"));
    assert!(frozen(&holidays, "2026-12-26T22:59:59Z"));
    assert!(!frozen(&holidays, "2026-12-26T23:00:00Z"));
    // An empty calendar freezes nothing.
    assert!(!frozen(&calendar(json!([])), "2026-12-24T12:00:00Z"));
}

#[test]
fn a_calendar_reads_back_in_the_shape_it_was_set() {
    let windows = json!([
        {"kind": "deny", "cron": "0 18 * * fri", "duration": "2d15h", "time_zone": "Europe/Berlin", "reason": "weekend"},
        {"kind": "allow", "start": "2026-12-24T00:00:00+01:00", "end": "2026-12-27T00:00:00+01:00"},
    ]);
    assert_eq!(calendar(windows.clone()).windows_json(), windows);
    for (text, minutes) in [("90m", 90), ("1h30m", 90), ("2d", 2880), ("7d", 10080), ("1d1m", 1441)] {
        assert_eq!(parse_duration(text), Some(minutes), "{text}");
        assert_eq!(parse_duration(&duration_text(minutes)), Some(minutes), "{text}");
    }
}

#[test]
fn a_malformed_calendar_is_refused_naming_the_field() {
    let cases = [
        (json!({"kind": "deny"}), RejectionCode::InvalidCalendar, "data.windows"),
        (
            json!([{"cron": "* * * * *", "duration": "1h", "time_zone": "UTC"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].kind",
        ),
        (
            json!([{"kind": "deny", "start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z"},
                   {"kind": "deny", "cron": "0 25 * * *", "duration": "1h", "time_zone": "UTC"}]),
            RejectionCode::InvalidCron,
            "data.windows[1].cron",
        ),
        (
            json!([{"kind": "deny", "cron": "0 2 * * *", "duration": "1h", "time_zone": "Mars/Olympus_Mons"}]),
            RejectionCode::InvalidTimeZone,
            "data.windows[0].time_zone",
        ),
        (
            json!([{"kind": "deny", "cron": "0 2 * * *", "duration": "8d", "time_zone": "UTC"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].duration",
        ),
        (
            json!([{"kind": "deny", "cron": "0 2 * * *", "duration": "1h1d", "time_zone": "UTC"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].duration",
        ),
        (
            json!([{"kind": "deny", "cron": "0 2 * * *", "duration": "0m", "time_zone": "UTC"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].duration",
        ),
        (
            json!([{"kind": "deny", "cron": "0 2 * * *", "duration": "5é", "time_zone": "UTC"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].duration",
        ),
        (
            json!([{"kind": "deny", "cron": "0 2 * * *", "time_zone": "UTC"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].duration",
        ),
        (
            json!([{"kind": "deny", "start": "2026-12-25T00:00:00Z", "end": "2026-12-24T00:00:00Z"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].end",
        ),
        (
            json!([{"kind": "deny", "start": "Christmas", "end": "2026-12-24T00:00:00Z"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].start",
        ),
        (
            json!([{"kind": "deny", "cron": "0 2 * * *", "duration": "1h", "time_zone": "UTC", "end": "2026-12-24T00:00:00Z"}]),
            RejectionCode::InvalidCalendar,
            "data.windows[0].end",
        ),
        (json!([{"kind": "deny"}]), RejectionCode::InvalidCalendar, "data.windows[0]"),
    ];
    for (windows, code, field) in cases {
        let rejection = parse(windows.clone()).expect_err(&windows.to_string());
        assert_eq!((rejection.code, rejection.field.as_deref()), (code, Some(field)), "{windows}: {rejection:?}");
    }
}
