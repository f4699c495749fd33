//! The blast-radius guard's rule (docs/contract.md, "Guard"), written once for both stores.
//!
//! A group rule that removes 300 users fires 300 removals within seconds; a mistake there
//! deletes 300 guest accounts before anyone looks. The guard counts, per plugin, the
//! deliveries of the guarded event types that **began** (were claimed for their first run)
//! inside the last `window`; once `max_per_window` have begun, each further one is parked as
//! `held` instead of claimed, and the guard stays tripped while any `held` delivery of the
//! plugin is waiting for an operator (release or discard), however old the window is.
//!
//! The state is derived from the store at every claim (the count of recent first starts of
//! the guarded types since the later of `now - window` and the last release, and whether any
//! delivery is held), so it survives restarts and holds across hosts sharing one store. The
//! SQL drivers only gather those two facts; whether a candidate runs or is held is decided
//! here, by [`GuardCount::admit`], for both.
//!
//! Exempt from the guard: retries and lease take-overs of a delivery that already began (it
//! was counted when it began), operator replays, and deliveries an operator released.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// `[plugins.<name>.guard]` as the store applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRule {
    /// Event types the guard counts and holds (others pass untouched).
    pub event_types: Vec<String>,
    /// First starts of those types allowed within one window (≥ 1).
    pub max_per_window: u32,
    /// The window's length (≥ 1 s).
    pub window: Duration,
}

impl GuardRule {
    /// Whether deliveries of `event_type` are counted and held by this rule.
    pub fn guards(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|t| t == event_type)
    }

    /// Where the counted window starts at `now`: the later of `now - window` and the last
    /// release (`reset_at`), which starts a fresh window.
    pub fn window_start(&self, now: DateTime<Utc>, reset_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let back = TimeDelta::from_std(self.window).unwrap_or(TimeDelta::MAX);
        let start = now.checked_sub_signed(back).unwrap_or(DateTime::<Utc>::MIN_UTC);
        match reset_at {
            Some(r) if r > start => r,
            _ => start,
        }
    }
}

/// What a claim does with one candidate delivery of a guarded plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Claim it and run it.
    Run,
    /// Park it as `held`; `trips` is true for the first delivery held while nothing was
    /// held before (the moment the guard trips: one warning, one count in the metric).
    Hold { trips: bool },
}

/// One candidate as the guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub event_type: &'a str,
    /// It began before (a retry, or a claim taken back after a crash): counted already.
    pub began: bool,
    /// An operator released or replayed it: it runs whatever the count.
    pub exempt: bool,
}

/// A plugin's guard state during one claim: read from the store at its start, updated as
/// candidates are admitted, so a claim of many candidates cannot overshoot the limit.
#[derive(Debug, Clone)]
pub struct GuardCount {
    rule: GuardRule,
    /// First starts of guarded types inside the window (including those admitted now).
    began: u64,
    /// Whether any delivery of the plugin is held (including those held now).
    tripped: bool,
}

impl GuardCount {
    /// The state as the store has it: `began` first starts of the rule's types since
    /// [`GuardRule::window_start`], and whether any delivery of the plugin is held.
    pub fn new(rule: GuardRule, began: u64, any_held: bool) -> GuardCount {
        GuardCount { rule, began, tripped: any_held }
    }

    /// Decides one candidate, in claim order, and counts it.
    pub fn admit(&mut self, c: Candidate<'_>) -> Verdict {
        if c.exempt || c.began || !self.rule.guards(c.event_type) {
            return Verdict::Run;
        }
        if self.tripped || self.began >= u64::from(self.rule.max_per_window) {
            let trips = !self.tripped;
            self.tripped = true;
            return Verdict::Hold { trips };
        }
        self.began += 1;
        Verdict::Run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(max: u32) -> GuardRule {
        GuardRule {
            event_types: vec!["group.user_membership.remove".into()],
            max_per_window: max,
            window: Duration::from_secs(600),
        }
    }

    fn fresh(t: &str) -> Candidate<'_> {
        Candidate { event_type: t, began: false, exempt: false }
    }

    #[test]
    fn the_sixth_of_five_is_held_and_trips_once() {
        let mut g = GuardCount::new(rule(5), 0, false);
        for _ in 0..5 {
            assert_eq!(g.admit(fresh("group.user_membership.remove")), Verdict::Run);
        }
        assert_eq!(g.admit(fresh("group.user_membership.remove")), Verdict::Hold { trips: true });
        assert_eq!(g.admit(fresh("group.user_membership.remove")), Verdict::Hold { trips: false });
        // Other types, retries, released and replayed deliveries pass.
        assert_eq!(g.admit(fresh("group.user_membership.add")), Verdict::Run);
        let retry = Candidate { began: true, ..fresh("group.user_membership.remove") };
        assert_eq!(g.admit(retry), Verdict::Run);
        let released = Candidate { exempt: true, ..fresh("group.user_membership.remove") };
        assert_eq!(g.admit(released), Verdict::Run);
    }

    #[test]
    fn a_held_delivery_keeps_the_guard_tripped_whatever_the_count() {
        let mut g = GuardCount::new(rule(5), 0, true);
        assert_eq!(g.admit(fresh("group.user_membership.remove")), Verdict::Hold { trips: false });
    }

    #[test]
    fn a_release_starts_a_fresh_window() {
        let r = rule(5);
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(r.window_start(now, None), now - TimeDelta::seconds(600));
        let released = now - TimeDelta::seconds(60);
        assert_eq!(r.window_start(now, Some(released)), released);
        let long_ago = now - TimeDelta::seconds(6000);
        assert_eq!(r.window_start(now, Some(long_ago)), now - TimeDelta::seconds(600));
    }
}
