//! What both backends compute the same way, whatever SQL they speak: the stored forms of
//! times, the log column, where a delivery lands after an attempt, and the console's chart
//! buckets. Keeping it here keeps SQLite and PostgreSQL from drifting apart.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde_json::Value;

use super::{MinuteAttempts, Next, Status};
use crate::attempt::Attempt;
use crate::okta::Event;

/// Now as RFC 3339 UTC with milliseconds.
pub(crate) fn now() -> String {
    fmt_time(Utc::now())
}

/// A time as stored and shown: RFC 3339 UTC with milliseconds (fixed width, so sortable).
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The sortable form of an Okta `published` time: UTC with nanoseconds, fixed width, so
/// two events compare by instant whatever offset Okta wrote. A value that is not RFC 3339
/// (only possible for a hand-made [`Event`]; parsed events are checked) is kept as is.
pub(crate) fn published_key(published: &str) -> String {
    match DateTime::parse_from_rfc3339(published) {
        Ok(t) => t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Nanos, true),
        Err(_) => published.to_owned(),
    }
}

/// `published` shown as RFC 3339 UTC with milliseconds, like every other time.
pub(crate) fn show_published(published: &str) -> String {
    DateTime::parse_from_rfc3339(published)
        .map(|t| fmt_time(t.with_timezone(&Utc)))
        .unwrap_or_else(|_| published.to_owned())
}

/// Okta group ids the event names (its `UserGroup` targets): what supersede compares.
pub(crate) fn group_ids(event: &Event) -> Vec<String> {
    event.targets.iter().filter(|t| t.kind == "UserGroup").map(|t| t.id.clone()).collect()
}

/// A lease longer than this is clipped (it only has to outlive one renewal interval).
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// When a lease taken at `t` for `lease` ends.
pub(crate) fn lease_end(t: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    let d = TimeDelta::from_std(lease.min(MAX_LEASE)).unwrap_or(TimeDelta::zero());
    t.checked_add_signed(d).unwrap_or(t)
}

/// The attempt's log lines as stored: a JSON array, plus a host line counting drops.
pub(crate) fn log_json(a: &Attempt) -> String {
    let mut lines = serde_json::to_value(&a.log).unwrap_or_else(|_| Value::Array(Vec::new()));
    if a.log_dropped > 0 {
        if let Value::Array(v) = &mut lines {
            v.push(serde_json::json!({
                "at_ms": u64::try_from(a.duration.as_millis()).unwrap_or(u64::MAX),
                "level": "warn",
                "source": "host",
                "message": format!(
                    "{} more log lines were dropped ([limits] max_log_lines / max_log_bytes)",
                    a.log_dropped
                ),
            }));
        }
    }
    lines.to_string()
}

/// The row a completed delivery is left as (the columns `complete` writes besides attempts).
pub(crate) struct Landing {
    pub status: Status,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub superseded_by: Option<String>,
    pub replay: bool,
}

/// Where a delivery lands after an attempt that failed with `failure` (`None`: it succeeded
/// or did not run). A retry keeps the replay mark (the run it was asked for has not
/// succeeded yet); the previous error stays when no attempt ran.
pub(crate) fn landing(next: &Next, failure: Option<String>, old_error: Option<String>, replay: bool) -> Landing {
    let (status, next_attempt_at, last_error, superseded_by, replay) = match next {
        Next::Done => (Status::Done, None, None, None, false),
        Next::Retry { at } => (Status::Retrying, Some(fmt_time(*at)), failure.or(old_error), None, replay),
        Next::Dead => (Status::Dead, None, failure.or(old_error), None, false),
        Next::Superseded { by_event } => (Status::Done, None, None, Some(by_event.clone()), false),
    };
    Landing { status, next_attempt_at, last_error, superseded_by, replay }
}

/// The history row of a superseded delivery names the event that made it stale.
pub(crate) fn superseded_note(by_event: &str) -> String {
    format!("superseded by event {by_event}")
}

/// How many one-minute buckets the console's chart has.
pub(crate) const CHART_MINUTES: i64 = 60;

/// The first minute the chart shows when it is `now` (the last is the minute `now` is in).
pub(crate) fn chart_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    this_minute - TimeDelta::minutes(CHART_MINUTES - 1)
}

/// The chart's buckets from `first`, filled from counts keyed by a stored time's minute
/// prefix (`YYYY-MM-DDTHH:MM`, what SQL groups by), zeros where nothing ran.
pub(crate) fn chart(first: DateTime<Utc>, per_minute: &BTreeMap<String, (u64, u64)>) -> Vec<MinuteAttempts> {
    (0..CHART_MINUTES)
        .map(|i| {
            let text = fmt_time(first + TimeDelta::minutes(i));
            let (attempts, failed) = per_minute.get(&text[..16]).copied().unwrap_or((0, 0));
            MinuteAttempts { minute: text, attempts, failed }
        })
        .collect()
}

/// Whole seconds from a stored time to `now` (0 if the clock went back).
pub(crate) fn age_secs(now: DateTime<Utc>, stored: &str) -> Option<u64> {
    DateTime::parse_from_rfc3339(stored)
        .ok()
        .map(|t| u64::try_from((now - t.with_timezone(&Utc)).num_seconds()).unwrap_or(0))
}
