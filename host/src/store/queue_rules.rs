//! The queue's decisions, written once for both stores: what a claim takes and in which
//! order, which candidates a plugin's guard parks as `held`, where a delivery lands after an
//! attempt, which statuses a replay accepts, what a release or discard of held deliveries
//! changes, and which later event supersedes an earlier one.
//!
//! A driver only runs SQL: it implements [`QueueTx`] (each method one statement, in the
//! transaction the driver opened), and the store's [`Queue`](super::Queue) implementation
//! ([`driver`](super::driver)) calls the functions below, which make every choice over
//! plain rows. So the rules are unit-tested without a database (see the tests at the end,
//! over an in-memory [`QueueTx`]), and a new delivery status changes this file and each
//! driver's SQL, not two copies of the rule.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::common::{fmt_time, group_ids, landing, lease_end, now, published_key, superseded_note, Landing};
use super::guard::{self, GuardCount, GuardRule, Verdict};
use super::rows::{small, Columns};
use super::{Claim, ClaimBatch, HeldDelivery, Next, ReplayOutcome, Status, StoreError};
use crate::attempt::{Attempt, AttemptResult};
use crate::okta::Event;

/// A delivery a claim may take: the head of its (plugin, subject), due now.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// Ingest order; a claim takes candidates oldest first across plugins.
    pub seq: i64,
    pub id: String,
    pub plugin: String,
    pub attempts: u32,
    pub replay: bool,
    /// The stored event, as Okta sent it.
    pub raw: String,
    pub event_type: String,
    /// It began before (a retry, or a claim taken back after a crash).
    pub began: bool,
    /// An operator released or replayed it: the guard lets it run.
    pub exempt: bool,
}

/// What a driver's `heads` query selects (from `deliveries d JOIN events e`), in the order
/// [`Candidate::from_columns`] reads it.
pub(crate) const CANDIDATE_COLUMNS: &str =
    "d.seq, d.id, d.attempts, d.replay, e.raw, e.event_type, d.started_at IS NOT NULL, d.guard_exempt";

impl Candidate {
    pub(crate) fn from_columns(plugin: &str, r: &impl Columns) -> Result<Candidate, StoreError> {
        Ok(Candidate {
            seq: r.int(0)?,
            id: r.text(1)?,
            plugin: plugin.to_owned(),
            attempts: small(r.int(2)?),
            replay: r.flag(3)?,
            raw: r.text(4)?,
            event_type: r.text(5)?,
            began: r.flag(6)?,
            exempt: r.flag(7)?,
        })
    }
}

/// What a claim picks from: deliveries waiting for a first run or a retry.
pub(crate) const CLAIMABLE: [Status; 2] = [Status::Pending, Status::Retrying];

/// What keeps a user's later deliveries waiting behind an earlier one (besides one running):
/// queued, or parked by the guard (a held delivery keeps its place in its user's order).
pub(crate) const ORDERED_BEHIND: [Status; 3] = [Status::Pending, Status::Retrying, Status::Held];

/// `('a', 'b')`: statuses as an SQL list.
fn status_list(statuses: &[Status]) -> String {
    let names: Vec<String> = statuses.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", names.join(", "))
}

/// The claim order as one query both drivers run (`param(n)` is the driver's name for
/// parameter `n`): the **heads** of plugin `param(1)`, due at `param(2)`, at most
/// `param(3)`, oldest first, selecting [`CANDIDATE_COLUMNS`].
///
/// For one (plugin, subject), only the head may run: the unfinished delivery with the
/// earliest `published_key`, ties broken by ingest order `seq`, and only while none of that
/// pair is running (a later event may already be running when an earlier one arrives late;
/// the earlier one then waits its turn). A head that is retrying and not yet due holds its
/// followers back: order beats throughput. Deliveries without a subject are independent;
/// `done`, `dead` and `discarded` ones hold nobody back.
pub(crate) fn heads_sql(param: impl Fn(usize) -> String) -> String {
    let (claimable, behind) = (status_list(&CLAIMABLE), status_list(&ORDERED_BEHIND));
    let (plugin, now, room) = (param(1), param(2), param(3));
    format!(
        "SELECT {CANDIDATE_COLUMNS}
         FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
         WHERE d.status IN {claimable} AND d.plugin = {plugin}
           AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= {now})
           AND (d.subject IS NULL OR (
                 NOT EXISTS (SELECT 1 FROM deliveries r
                             WHERE r.plugin = d.plugin AND r.subject = d.subject
                               AND r.status = 'running')
             AND NOT EXISTS (SELECT 1 FROM deliveries o
                             WHERE o.plugin = d.plugin AND o.subject = d.subject
                               AND o.status IN {behind}
                               AND (o.published_key < d.published_key
                                    OR (o.published_key = d.published_key AND o.seq < d.seq)))))
         ORDER BY d.seq
         LIMIT {room}"
    )
}

/// What `complete` reads of a delivery before deciding (a driver that shares its store with
/// other hosts locks the row with it).
#[derive(Debug, Clone)]
pub(crate) struct LeaseRow {
    pub status: String,
    pub lease_token: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub replay: bool,
}

/// One row of a delivery's history.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRow<'a> {
    pub delivery_id: &'a str,
    pub number: i64,
    pub plugin_version: &'a str,
    pub plugin_sha256: &'a str,
    pub started_at: String,
    pub duration_ms: i64,
    /// [`AttemptResult::kind`], or `superseded`.
    pub result: &'a str,
    pub error: Option<String>,
    /// The log lines as JSON text.
    pub log: String,
}

/// How `complete` leaves a delivery (its lease is cleared with it).
pub(crate) struct Finished<'a> {
    pub delivery_id: &'a str,
    pub attempts: i64,
    /// The version that ran this attempt; `None` keeps the stored one.
    pub plugin_version: Option<&'a str>,
    pub landing: Landing,
    pub now: String,
}

/// One open transaction of a driver, as the queue's rules use it. Every method is one SQL
/// statement (or one query) and decides nothing; times are the stored text form
/// ([`fmt_time`]); counts are rows changed.
pub(crate) trait QueueTx {
    // Claim.
    /// Plugins with a pending or retrying delivery, by name.
    fn plugins_with_work(&mut self) -> Result<Vec<String>, StoreError>;
    /// Running deliveries of `host_id`, per plugin.
    fn running_here(&mut self, host_id: &str) -> Result<HashMap<String, usize>, StoreError>;
    /// Up to `room` heads of `plugin` due at `now` ([`heads_sql`], the claim order),
    /// in `seq` order.
    fn heads(&mut self, plugin: &str, now: &str, room: usize) -> Result<Vec<Candidate>, StoreError>;
    /// Orders guard counts of `plugin` among hosts sharing the store until the transaction
    /// ends. Nothing to do where the store has one writer.
    fn lock_guard(&mut self, _plugin: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// When an operator last released `plugin`'s held deliveries.
    fn guard_reset_at(&mut self, plugin: &str) -> Result<Option<String>, StoreError>;
    /// Deliveries of `plugin` of one of `event_types` that began at or after `since`, not
    /// counting those an operator released or replayed.
    fn guarded_starts_since(&mut self, plugin: &str, since: &str, event_types: &[String]) -> Result<u64, StoreError>;
    /// Whether any delivery of `plugin` is held.
    fn any_held(&mut self, plugin: &str) -> Result<bool, StoreError>;
    /// Marks a candidate running for `host_id` with a lease until `until` (and records when
    /// it first began).
    fn mark_running(
        &mut self,
        delivery_id: &str,
        host_id: &str,
        lease_token: &str,
        until: &str,
        now: &str,
    ) -> Result<(), StoreError>;
    /// Parks a candidate as held.
    fn hold(&mut self, delivery_id: &str, now: &str) -> Result<(), StoreError>;
    /// Ends a candidate dead with `error` without running it.
    fn bury(&mut self, delivery_id: &str, error: &str, now: &str) -> Result<(), StoreError>;

    // Leases.
    fn renew(&mut self, delivery_id: &str, lease_token: &str, until: &str, now: &str) -> Result<usize, StoreError>;
    /// A running delivery with this lease token back to pending, its lease cleared.
    fn release(&mut self, delivery_id: &str, lease_token: &str, now: &str) -> Result<usize, StoreError>;
    /// Every running delivery whose lease ended before `before` back to pending.
    fn release_expired(&mut self, before: &str, now: &str) -> Result<usize, StoreError>;
    /// Every running delivery of `host_id` back to pending.
    fn release_host(&mut self, host_id: &str, now: &str) -> Result<usize, StoreError>;

    // Complete.
    fn lease_row(&mut self, delivery_id: &str) -> Result<Option<LeaseRow>, StoreError>;
    /// The highest attempt number of the delivery's history (0 for none).
    fn last_attempt_number(&mut self, delivery_id: &str) -> Result<i64, StoreError>;
    fn record_attempt(&mut self, row: &AttemptRow<'_>) -> Result<(), StoreError>;
    fn finish(&mut self, row: &Finished<'_>) -> Result<(), StoreError>;

    /// For supersede: `(uuid, event_type, group_ids as JSON)` of the events of `plugin`
    /// and `subject` published after `published_key` (other than `uuid`) whose delivery
    /// ran to done and was not itself superseded, latest first.
    fn done_later(
        &mut self,
        plugin: &str,
        subject: &str,
        published_key: &str,
        uuid: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError>;

    // Replay and the operator's answers to the guard.
    fn status_of(&mut self, delivery_id: &str) -> Result<Option<String>, StoreError>;
    /// The delivery back to pending, marked as a replay and exempt from the guard.
    fn requeue_for_replay(&mut self, delivery_id: &str, now: &str) -> Result<(), StoreError>;
    /// `plugin`'s held deliveries back to pending, exempt from the guard.
    fn requeue_held(&mut self, plugin: &str, now: &str) -> Result<usize, StoreError>;
    /// Records a release of `plugin`'s held deliveries at `now` (the guard's window restarts).
    fn reset_guard(&mut self, plugin: &str, now: &str) -> Result<(), StoreError>;
    /// `plugin`'s held deliveries to discarded.
    fn discard_held(&mut self, plugin: &str, now: &str) -> Result<usize, StoreError>;
}

/// Whether an operator may replay a delivery in `status`: finished, held or discarded
/// (pending, running and retrying ones are already on their way).
pub(crate) fn replayable(status: Status) -> bool {
    matches!(status, Status::Done | Status::Dead | Status::Held | Status::Discarded)
}

/// A fresh lease token (what renew and complete must present).
fn lease_token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// [`Queue::claim_guarded`]: selects candidates plugin by plugin (within each plugin's room
/// under `max_running`), oldest first across plugins, asks the guard about each, and marks
/// each one running or held.
pub(crate) fn claim(
    tx: &mut dyn QueueTx,
    host_id: &str,
    now_t: DateTime<Utc>,
    lease: Duration,
    limit: usize,
    max_running: &(dyn Fn(&str) -> usize + Sync),
    guard_rule: &(dyn Fn(&str) -> Option<GuardRule> + Sync),
) -> Result<ClaimBatch, StoreError> {
    if limit == 0 {
        return Ok(ClaimBatch::default());
    }
    let now_s = fmt_time(now_t);
    let until = fmt_time(lease_end(now_t, lease));
    let running = tx.running_here(host_id)?;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut guards: HashMap<String, GuardCount> = HashMap::new();
    for plugin in tx.plugins_with_work()? {
        let room = max_running(&plugin).saturating_sub(running.get(&plugin).copied().unwrap_or(0)).min(limit);
        if room == 0 {
            continue;
        }
        if let Some(rule) = guard_rule(&plugin) {
            let count = guard_count(tx, &plugin, rule, now_t)?;
            guards.insert(plugin.clone(), count);
        }
        candidates.extend(tx.heads(&plugin, &now_s, room)?);
    }
    // Oldest first across plugins.
    candidates.sort_by_key(|c| c.seq);

    let mut batch = ClaimBatch { claims: Vec::with_capacity(candidates.len().min(limit)), held: Vec::new() };
    for c in candidates {
        if batch.claims.len() >= limit {
            break;
        }
        if let Some(g) = guards.get_mut(&c.plugin) {
            let seen = guard::Candidate { event_type: &c.event_type, began: c.began, exempt: c.exempt || c.replay };
            if let Verdict::Hold { trips } = g.admit(seen) {
                tx.hold(&c.id, &now_s)?;
                batch.held.push(HeldDelivery { delivery_id: c.id, plugin: c.plugin, trips });
                continue;
            }
        }
        let event =
            serde_json::from_str::<Value>(&c.raw).map_err(|e| e.to_string()).and_then(|v| Event::from_value(&v));
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // Only a hand-edited database gets here; running it again cannot help.
                tx.bury(&c.id, &format!("the stored event cannot be read: {e}"), &now_s)?;
                continue;
            }
        };
        let lease_token = lease_token();
        tx.mark_running(&c.id, host_id, &lease_token, &until, &now_s)?;
        batch.claims.push(Claim {
            delivery_id: c.id,
            plugin: c.plugin,
            event,
            attempts: c.attempts,
            lease_token,
            replay: c.replay,
        });
    }
    Ok(batch)
}

/// A guarded plugin's state as the store has it (see [`guard`]): first starts of the
/// guarded types in the current window, and whether any of its deliveries is held.
fn guard_count(
    tx: &mut dyn QueueTx,
    plugin: &str,
    rule: GuardRule,
    now_t: DateTime<Utc>,
) -> Result<GuardCount, StoreError> {
    tx.lock_guard(plugin)?;
    let reset_at =
        tx.guard_reset_at(plugin)?.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
    let since = fmt_time(rule.window_start(now_t, reset_at));
    let began = tx.guarded_starts_since(plugin, &since, &rule.event_types)?;
    let any_held = tx.any_held(plugin)?;
    Ok(GuardCount::new(rule, began, any_held))
}

/// [`Queue::complete`]: records the attempt (and, for a superseded delivery, the history
/// row saying why it did not run) and lands the delivery where `next` says, if the claim is
/// still the caller's.
pub(crate) fn complete(
    tx: &mut dyn QueueTx,
    delivery_id: &str,
    lease_token: &str,
    attempt: Option<&Attempt>,
    next: &Next,
) -> Result<bool, StoreError> {
    let Some(row) = tx.lease_row(delivery_id)? else {
        return Ok(false);
    };
    if row.status != Status::Running.as_str() || row.lease_token.as_deref() != Some(lease_token) {
        return Ok(false);
    }
    let mut number = tx.last_attempt_number(delivery_id)?;
    let mut attempts = row.attempts;
    let now_s = now();
    let mut failure = None;
    if let Some(a) = attempt {
        number += 1;
        attempts += 1;
        let error = match &a.result {
            AttemptResult::Done { .. } => None,
            other => Some(other.describe()),
        };
        tx.record_attempt(&AttemptRow {
            delivery_id,
            number,
            plugin_version: &a.plugin_version,
            plugin_sha256: &a.plugin_sha256,
            started_at: fmt_time(DateTime::<Utc>::from(a.started_at)),
            duration_ms: i64::try_from(a.duration.as_millis()).unwrap_or(i64::MAX),
            result: a.result.kind(),
            error: error.clone(),
            log: super::common::log_json(a),
        })?;
        failure = error;
    }
    if let Next::Superseded { by_event } = next {
        // Nothing ran: the history row says why, and which event made this one stale.
        number += 1;
        tx.record_attempt(&AttemptRow {
            delivery_id,
            number,
            plugin_version: "",
            plugin_sha256: "",
            started_at: now_s.clone(),
            duration_ms: 0,
            result: "superseded",
            error: Some(superseded_note(by_event)),
            log: "[]".into(),
        })?;
    }
    tx.finish(&Finished {
        delivery_id,
        attempts,
        plugin_version: attempt.map(|a| a.plugin_version.as_str()),
        landing: landing(next, failure, row.last_error, row.replay),
        now: now_s,
    })?;
    Ok(true)
}

/// [`Queue::newer_done`], supersede (docs/contract.md, "Supersede"): a later-published
/// event for the same plugin and subject that **ran** to `done` (a delivery that was itself
/// superseded does not count: it did nothing, and the event that superseded it is found
/// directly), and that concerns one of this event's groups or is a `user.lifecycle.*`
/// event. The latest such event is named.
pub(crate) fn newer_done(tx: &mut dyn QueueTx, plugin: &str, event: &Event) -> Result<Option<String>, StoreError> {
    let Some(subject) = event.subject() else {
        return Ok(None);
    };
    let mine = group_ids(event);
    let later = tx.done_later(plugin, subject, &published_key(&event.published), &event.uuid)?;
    Ok(later.into_iter().find_map(|(uuid, event_type, groups)| {
        let groups: Vec<String> = serde_json::from_str(&groups).unwrap_or_default();
        (event_type.starts_with("user.lifecycle.") || groups.iter().any(|g| mine.contains(g))).then_some(uuid)
    }))
}

/// [`Queue::replay`]: a replayable delivery back to pending, marked as a replay.
pub(crate) fn replay(tx: &mut dyn QueueTx, delivery_id: &str) -> Result<ReplayOutcome, StoreError> {
    let Some(status) = tx.status_of(delivery_id)? else {
        return Ok(ReplayOutcome::NotFound);
    };
    let status = Status::parse(&status)
        .ok_or_else(|| StoreError::Unavailable(format!("delivery {delivery_id} has unknown status {status:?}")))?;
    if !replayable(status) {
        return Ok(ReplayOutcome::Conflict(status));
    }
    tx.requeue_for_replay(delivery_id, &now())?;
    Ok(ReplayOutcome::Accepted)
}

/// [`Queue::release_held`]: held → pending, exempt from the guard, and a fresh window.
pub(crate) fn release_held(tx: &mut dyn QueueTx, plugin: &str, now_t: DateTime<Utc>) -> Result<usize, StoreError> {
    let now_s = fmt_time(now_t);
    let released = tx.requeue_held(plugin, &now_s)?;
    tx.reset_guard(plugin, &now_s)?;
    Ok(released)
}

#[cfg(test)]
mod tests;
