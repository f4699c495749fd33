//! The delivery queue: claim, lease renewal and release, completion, supersede, replay.
//!
//! Claim order (the contract in [`Store::claim`](crate::store::Store::claim)): for one
//! (plugin, subject), only the **head** may run — the unfinished (pending, retrying or
//! running) delivery with the earliest `published_key`, ties broken by ingest order `seq` —
//! and only while none of that pair is running (a later event may already be running when
//! an earlier one arrives late; the earlier one then waits its turn). A head that is
//! retrying and not yet due holds its followers back: order beats throughput. Deliveries
//! without a subject are independent. `done` and `dead` deliveries no longer hold anyone
//! back; a replayed one becomes unfinished again and takes its place in the order.
//!
//! The claim scan goes plugin by plugin (a skip-scan over the queued-deliveries index), so
//! a plugin that cannot take more work (`max_running` reached, or 0 because it is not
//! loaded) costs nothing however long its backlog.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use crate::attempt::{Attempt, AttemptResult};
use crate::okta::Event;
use crate::store::common::{fmt_time, group_ids, landing, lease_end, log_json, now, published_key, superseded_note};
use crate::store::guard::{self, GuardCount, GuardRule, Verdict};
use crate::store::{Claim, ClaimBatch, HeldDelivery, Next, ReplayOutcome, Status, StoreError};

struct Candidate {
    seq: i64,
    id: String,
    plugin: String,
    attempts: u32,
    replay: bool,
    raw: String,
    event_type: String,
    began: bool,
    exempt: bool,
}

/// A guarded plugin's state as the store has it (see [`guard`]): first starts of the
/// guarded types in the current window, and whether any of its deliveries is held.
fn guard_count(
    tx: &rusqlite::Transaction<'_>,
    plugin: &str,
    rule: GuardRule,
    now_t: DateTime<Utc>,
) -> Result<GuardCount, StoreError> {
    let reset_at: Option<String> = tx
        .prepare_cached("SELECT reset_at FROM guard_resets WHERE plugin = ?1")?
        .query_row([plugin], |r| r.get(0))
        .optional()?;
    let reset_at = reset_at.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
    let since = fmt_time(rule.window_start(now_t, reset_at));
    let types = serde_json::to_string(&rule.event_types)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode the guard's event types: {e}")))?;
    let began: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
             WHERE d.plugin = ?1 AND d.started_at >= ?2 AND d.guard_exempt = 0
               AND e.event_type IN (SELECT value FROM json_each(?3))",
        )?
        .query_row(params![plugin, since, types], |r| r.get(0))?;
    let any_held: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'held' AND plugin = ?1)")?
        .query_row([plugin], |r| r.get(0))?;
    Ok(GuardCount::new(rule, u64::try_from(began).unwrap_or(0), any_held))
}

pub(super) fn claim(
    conn: &mut Connection,
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
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

    let mut plugins = Vec::new();
    {
        // Named index: one seek per plugin. Left to itself, the planner may pick the
        // status index and read every queued delivery for each plugin.
        let mut next_plugin = tx.prepare_cached(
            "SELECT MIN(plugin) FROM deliveries INDEXED BY deliveries_queued
             WHERE status IN ('pending', 'retrying') AND plugin > ?1",
        )?;
        let mut last = String::new();
        while let Some(p) = next_plugin.query_row([&last], |r| r.get::<_, Option<String>>(0))? {
            last.clone_from(&p);
            plugins.push(p);
        }
    }
    let running: HashMap<String, usize> = {
        let mut stmt = tx.prepare_cached(
            "SELECT plugin, COUNT(*) FROM deliveries WHERE status = 'running' AND lease_owner = ?1 GROUP BY plugin",
        )?;
        let rows = stmt.query_map([host_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| r.map(|(p, n)| (p, n.max(0) as usize))).collect::<Result<_, _>>()?
    };

    let mut candidates: Vec<Candidate> = Vec::new();
    let mut guards: HashMap<String, GuardCount> = HashMap::new();
    {
        let mut heads = tx.prepare_cached(
            "SELECT d.seq, d.id, d.attempts, d.replay, e.raw, e.event_type, d.started_at IS NOT NULL, d.guard_exempt
             FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
             WHERE d.status IN ('pending', 'retrying') AND d.plugin = ?1
               AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?2)
               AND (d.subject IS NULL OR (
                     NOT EXISTS (SELECT 1 FROM deliveries r
                                 WHERE r.plugin = d.plugin AND r.subject = d.subject
                                   AND r.status = 'running')
                 AND NOT EXISTS (SELECT 1 FROM deliveries o
                                 WHERE o.plugin = d.plugin AND o.subject = d.subject
                                   AND o.status IN ('pending', 'retrying', 'held')
                                   AND (o.published_key < d.published_key
                                        OR (o.published_key = d.published_key AND o.seq < d.seq)))))
             ORDER BY d.seq
             LIMIT ?3",
        )?;
        for plugin in plugins {
            let room = max_running(&plugin).saturating_sub(running.get(&plugin).copied().unwrap_or(0)).min(limit);
            if room == 0 {
                continue;
            }
            if let Some(rule) = guard_rule(&plugin) {
                guards.insert(plugin.clone(), guard_count(&tx, &plugin, rule, now_t)?);
            }
            let rows = heads.query_map(params![plugin, now_s, room as i64], |r| {
                Ok(Candidate {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    plugin: plugin.clone(),
                    attempts: r.get(2)?,
                    replay: r.get(3)?,
                    raw: r.get(4)?,
                    event_type: r.get(5)?,
                    began: r.get(6)?,
                    exempt: r.get(7)?,
                })
            })?;
            for row in rows {
                candidates.push(row?);
            }
        }
    }
    // Oldest first across plugins.
    candidates.sort_by_key(|c| c.seq);

    let mut claims = Vec::with_capacity(candidates.len().min(limit));
    let mut held = Vec::new();
    {
        let mut take = tx.prepare_cached(
            "UPDATE deliveries
             SET status = 'running', lease_owner = ?2, lease_token = ?3, lease_until = ?4,
                 next_attempt_at = NULL, updated_at = ?5, started_at = COALESCE(started_at, ?5)
             WHERE id = ?1",
        )?;
        let mut park = tx.prepare_cached(
            "UPDATE deliveries SET status = 'held', next_attempt_at = NULL, updated_at = ?2 WHERE id = ?1",
        )?;
        let mut unreadable = tx.prepare_cached(
            "UPDATE deliveries SET status = 'dead', last_error = ?2, next_attempt_at = NULL, updated_at = ?3
             WHERE id = ?1",
        )?;
        for c in candidates {
            if claims.len() >= limit {
                break;
            }
            if let Some(g) = guards.get_mut(&c.plugin) {
                let seen = guard::Candidate { event_type: &c.event_type, began: c.began, exempt: c.exempt || c.replay };
                if let Verdict::Hold { trips } = g.admit(seen) {
                    park.execute(params![c.id, now_s])?;
                    held.push(HeldDelivery { delivery_id: c.id, plugin: c.plugin, trips });
                    continue;
                }
            }
            let event =
                serde_json::from_str::<Value>(&c.raw).map_err(|e| e.to_string()).and_then(|v| Event::from_value(&v));
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    // Only a hand-edited database gets here; running it again cannot help.
                    unreadable.execute(params![c.id, format!("the stored event cannot be read: {e}"), now_s])?;
                    continue;
                }
            };
            let lease_token = format!("{:016x}", fastrand::u64(..));
            take.execute(params![c.id, host_id, lease_token, until, now_s])?;
            claims.push(Claim {
                delivery_id: c.id,
                plugin: c.plugin,
                event,
                attempts: c.attempts,
                lease_token,
                replay: c.replay,
            });
        }
    }
    tx.commit()?;
    Ok(ClaimBatch { claims, held })
}

/// An operator's release: held → pending, exempt from the guard, and a fresh window.
pub(super) fn release_held(conn: &mut Connection, plugin: &str, now_t: DateTime<Utc>) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_s = fmt_time(now_t);
    let n = tx.execute(
        "UPDATE deliveries SET status = 'pending', guard_exempt = 1, next_attempt_at = NULL, updated_at = ?2
         WHERE status = 'held' AND plugin = ?1",
        params![plugin, now_s],
    )?;
    tx.execute(
        "INSERT INTO guard_resets (plugin, reset_at) VALUES (?1, ?2)
         ON CONFLICT (plugin) DO UPDATE SET reset_at = excluded.reset_at",
        params![plugin, now_s],
    )?;
    tx.commit()?;
    Ok(n)
}

/// An operator's discard: held → discarded (never run; the history keeps them).
pub(super) fn discard_held(conn: &mut Connection, plugin: &str, now_t: DateTime<Utc>) -> Result<usize, StoreError> {
    let n = conn.execute(
        "UPDATE deliveries SET status = 'discarded', next_attempt_at = NULL, updated_at = ?2
         WHERE status = 'held' AND plugin = ?1",
        params![plugin, fmt_time(now_t)],
    )?;
    Ok(n)
}

pub(super) fn renew(
    conn: &Connection,
    delivery_id: &str,
    lease_token: &str,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE deliveries SET lease_until = ?3, updated_at = ?4
         WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
        params![delivery_id, lease_token, fmt_time(until), now()],
    )?;
    Ok(n == 1)
}

pub(super) fn release(conn: &Connection, delivery_id: &str, lease_token: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE deliveries
         SET status = 'pending', lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?3
         WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
        params![delivery_id, lease_token, now()],
    )?;
    Ok(n == 1)
}

pub(super) fn release_claims(
    conn: &Connection,
    now_t: DateTime<Utc>,
    host_id: Option<&str>,
) -> Result<usize, StoreError> {
    const SET: &str = "UPDATE deliveries
         SET status = 'pending', next_attempt_at = NULL,
             lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?2
         WHERE status = 'running' AND ";
    let n = match host_id {
        None => conn.execute(&format!("{SET} lease_until < ?1"), params![fmt_time(now_t), now()])?,
        Some(host) => conn.execute(&format!("{SET} lease_owner = ?1"), params![host, now()])?,
    };
    Ok(n)
}

pub(super) fn complete(
    conn: &mut Connection,
    delivery_id: &str,
    lease_token: &str,
    attempt: Option<&Attempt>,
    next: &Next,
) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row = tx
        .query_row(
            "SELECT status, lease_token, attempts, last_error, replay FROM deliveries WHERE id = ?1",
            [delivery_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((status, token, mut attempts, old_error, replay)) = row else {
        return Ok(false);
    };
    if status != "running" || token.as_deref() != Some(lease_token) {
        return Ok(false);
    }
    let mut number: u32 =
        tx.query_row("SELECT COALESCE(MAX(number), 0) FROM attempts WHERE delivery_id = ?1", [delivery_id], |r| {
            r.get(0)
        })?;
    let now_s = now();
    let mut record = tx.prepare_cached(
        "INSERT INTO attempts (delivery_id, number, plugin_version, plugin_sha256, started_at,
                               duration_ms, result, error, log)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut failure = None;
    if let Some(a) = attempt {
        number += 1;
        attempts += 1;
        let error = match &a.result {
            AttemptResult::Done { .. } => None,
            other => Some(other.describe()),
        };
        record.execute(params![
            delivery_id,
            number,
            a.plugin_version,
            a.plugin_sha256,
            fmt_time(DateTime::<Utc>::from(a.started_at)),
            i64::try_from(a.duration.as_millis()).unwrap_or(i64::MAX),
            a.result.kind(),
            error,
            log_json(a),
        ])?;
        failure = error;
    }
    if let Next::Superseded { by_event } = next {
        // Nothing ran: the history row says why, and which event made this one stale.
        number += 1;
        record.execute(params![
            delivery_id,
            number,
            "",
            "",
            now_s,
            0,
            "superseded",
            superseded_note(by_event),
            "[]"
        ])?;
    }
    let landing = landing(next, failure, old_error, replay);
    drop(record);
    tx.execute(
        "UPDATE deliveries
         SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5,
             plugin_version = COALESCE(?6, plugin_version), superseded_by = ?7, replay = ?8,
             lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?9
         WHERE id = ?1",
        params![
            delivery_id,
            landing.status.as_str(),
            attempts,
            landing.next_attempt_at,
            landing.last_error,
            attempt.map(|a| a.plugin_version.as_str()),
            landing.superseded_by,
            landing.replay,
            now_s,
        ],
    )?;
    tx.commit()?;
    Ok(true)
}

/// Supersede (docs/contract.md, "Supersede"): a later-published event for the same plugin and subject
/// that **ran** to `done` (a delivery that was itself superseded does not count: it did
/// nothing, and the event that superseded it is found directly), and that concerns one of
/// this event's groups or is a `user.lifecycle.*` event. The latest such event is named.
pub(super) fn newer_done(conn: &Connection, plugin: &str, event: &Event) -> Result<Option<String>, StoreError> {
    let Some(subject) = event.subject() else {
        return Ok(None);
    };
    let mine = group_ids(event);
    let mut stmt = conn.prepare_cached(
        "SELECT e.uuid, e.event_type, e.group_ids
         FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
         WHERE d.plugin = ?1 AND d.subject = ?2 AND d.status = 'done'
           AND d.published_key > ?3 AND d.superseded_by IS NULL AND d.event_uuid <> ?4
         ORDER BY d.published_key DESC, d.seq DESC",
    )?;
    let rows = stmt.query_map(params![plugin, subject, published_key(&event.published), event.uuid], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    for row in rows {
        let (uuid, event_type, groups) = row?;
        let groups: Vec<String> = serde_json::from_str(&groups).unwrap_or_default();
        if event_type.starts_with("user.lifecycle.") || groups.iter().any(|g| mine.contains(g)) {
            return Ok(Some(uuid));
        }
    }
    Ok(None)
}

pub(super) fn replay(conn: &mut Connection, delivery_id: &str) -> Result<ReplayOutcome, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let status: Option<String> =
        tx.query_row("SELECT status FROM deliveries WHERE id = ?1", [delivery_id], |r| r.get(0)).optional()?;
    let Some(status) = status else {
        return Ok(ReplayOutcome::NotFound);
    };
    let status = Status::parse(&status)
        .ok_or_else(|| StoreError::Unavailable(format!("delivery {delivery_id} has unknown status {status:?}")))?;
    if !matches!(status, Status::Done | Status::Dead | Status::Held | Status::Discarded) {
        return Ok(ReplayOutcome::Conflict(status));
    }
    tx.execute(
        "UPDATE deliveries
         SET status = 'pending', replay = 1, guard_exempt = 1, next_attempt_at = NULL, superseded_by = NULL,
             lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?2
         WHERE id = ?1",
        params![delivery_id, now()],
    )?;
    tx.commit()?;
    Ok(ReplayOutcome::Accepted)
}
