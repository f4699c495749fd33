//! Ingest and the delivery queue on PostgreSQL: claim, lease renewal and release,
//! completion, supersede, replay. The rules are the SQLite store's (`sqlite/queue.rs`); what
//! differs is how they hold when several hosts run them at once.
//!
//! A claim runs in one READ COMMITTED transaction:
//!
//! 1. Per plugin with queued work, select the **heads** (the earliest unfinished delivery of
//!    each (plugin, subject), none of the pair running, due now) with
//!    `FOR UPDATE OF d SKIP LOCKED`.
//! 2. Mark them running with this host, a fresh lease token and the lease end; commit.
//!
//! Why that is enough for one runner per delivery and per-user order across hosts: a row
//! another claimer has locked is skipped, never waited for; a row another host claimed and
//! committed after this statement's snapshot is re-checked when locked (PostgreSQL re-reads
//! the newest version) and dropped, its status no longer queued. And whether a delivery is a
//! head depends only on its pair's statuses, which change only by committed transactions:
//! in any snapshot where the earlier delivery H1 is queued, the later H2 is not a head (so a
//! claimer that skipped the locked H1 does not take H2), and in any snapshot where H1 is
//! running, H2 is excluded too. The two-host tests (`tests/all/scale_out.rs`) and the store
//! suite's racing-hosts test check it.
//!
//! `max_running` caps what **this host** runs per plugin (its `max_concurrency`): each host
//! brings its own capacity.

use std::collections::HashMap;
use std::time::Duration;

use super::{prepared, Conn};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::attempt::{Attempt, AttemptResult};
use crate::okta::Event;
use crate::store::common::{fmt_time, group_ids, landing, lease_end, log_json, now, published_key, superseded_note};
use crate::store::guard::{self, GuardCount, GuardRule, Verdict};
use crate::store::{
    Claim, ClaimBatch, HeldDelivery, IngestReport, LogCursor, NewEvent, Next, ReplayOutcome, Source, Status,
    StoreError, LOG_CURSOR,
};

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Stores events (and, with `cursor`, moves the System Log cursor first, in the same
/// transaction; `None` when `cursor`'s holder lost the poller's lease: nothing stored).
pub(super) fn ingest(
    conn: &mut Conn,
    okta_delivery_id: Option<&str>,
    events: &[NewEvent],
    source: Source,
    cursor: Option<(&str, &LogCursor)>,
) -> Result<Option<IngestReport>, StoreError> {
    let received_at = now();
    let mut report = IngestReport::default();
    let (client, cache) = conn.parts();
    let mut tx = client.transaction()?;
    if let Some((holder, c)) = cursor {
        // Locks the row too: a host taking the lease over waits for this page's commit.
        let moved = tx.execute(
            "UPDATE log_cursor SET next_url = $1, filter = $2, last_published = $3, updated_at = $4
             WHERE name = $5 AND holder = $6",
            &[&c.next_url, &c.filter, &c.last_published, &received_at, &LOG_CURSOR, &holder],
        )?;
        if moved == 0 {
            return Ok(None); // the transaction rolls back when dropped
        }
    }
    let insert_event = prepared(
        cache,
        &mut tx,
        "INSERT INTO events (uuid, event_type, published, published_key, received_at,
                             okta_delivery_id, subject, group_ids, raw, subject_login, subject_name, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (uuid) DO NOTHING",
    )?;
    let insert_group = prepared(
        cache,
        &mut tx,
        "INSERT INTO event_groups (event_uuid, group_id, group_name, position) VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_uuid, group_id) DO NOTHING",
    )?;
    let insert_delivery = prepared(
        cache,
        &mut tx,
        "INSERT INTO deliveries (seq, id, event_uuid, plugin, subject, published_key, status,
                                 created_at, updated_at)
         SELECT n.seq, 'd_' || lpad(to_hex(n.seq), 16, '0'), $1, $2, $3, $4, 'pending', $5, $5
         FROM (SELECT nextval('delivery_seq') AS seq) n
         ON CONFLICT (event_uuid, plugin) DO NOTHING",
    )?;
    for new in events {
        let event = &new.event;
        let key = published_key(&event.published);
        let groups = serde_json::to_string(&group_ids(event))
            .map_err(|e| StoreError::Unavailable(format!("cannot encode group ids: {e}")))?;
        let subject = event.subject();
        let user = event.target("User");
        let inserted = tx.execute(
            &insert_event,
            &[
                &event.uuid,
                &event.event_type,
                &event.published,
                &key,
                &received_at,
                &okta_delivery_id,
                &subject,
                &groups,
                &event.raw,
                &user.and_then(|u| u.alternate_id.as_deref()),
                &user.and_then(|u| u.display_name.as_deref()),
                &source.as_str(),
            ],
        )?;
        if inserted == 0 {
            report.duplicates += 1;
            continue;
        }
        report.stored += 1;
        report.new_events.push(event.uuid.clone());
        for (position, group) in event.targets.iter().enumerate().filter(|(_, t)| t.kind == "UserGroup") {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            tx.execute(&insert_group, &[&event.uuid, &group.id, &group.display_name, &position])?;
        }
        for plugin in &new.plugins {
            let created = tx.execute(&insert_delivery, &[&event.uuid, plugin, &subject, &key, &received_at])?;
            report.deliveries += count(created);
        }
    }
    tx.commit()?;
    Ok(Some(report))
}

/// Takes or renews the poller's lease (one statement, so two hosts racing for an expired
/// lease cannot both win: the row lock orders them and the second sees the first's lease).
pub(super) fn log_lease(
    conn: &mut Conn,
    holder: &str,
    at: DateTime<Utc>,
    lease: Duration,
) -> Result<Option<LogCursor>, StoreError> {
    let rows = conn.rows(
        "INSERT INTO log_cursor (name, holder, lease_until, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until,
                                          updated_at = excluded.updated_at
         WHERE log_cursor.holder IS NULL OR log_cursor.holder = excluded.holder
               OR log_cursor.lease_until < excluded.updated_at
         RETURNING next_url, filter, last_published",
        &[&LOG_CURSOR, &holder, &fmt_time(lease_end(at, lease)), &fmt_time(at)],
    )?;
    Ok(rows.first().map(|r| LogCursor { next_url: r.get(0), filter: r.get(1), last_published: r.get(2) }))
}

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

/// A guarded plugin's state as the store has it (see [`guard`]). Hosts sharing the store
/// take a per-plugin advisory lock first (held to the end of the claim's transaction), so
/// two claiming at once count each other's starts and cannot both take the last place.
fn guard_count(
    tx: &mut postgres::Transaction<'_>,
    cache: &mut HashMap<String, postgres::Statement>,
    plugin: &str,
    rule: GuardRule,
    now_t: DateTime<Utc>,
) -> Result<GuardCount, StoreError> {
    let lock = prepared(cache, tx, "SELECT pg_advisory_xact_lock(hashtext('hookhost guard ' || $1)::BIGINT)")?;
    tx.query(&lock, &[&plugin])?;
    let reset = prepared(cache, tx, "SELECT reset_at FROM guard_resets WHERE plugin = $1")?;
    let reset_at = tx
        .query_opt(&reset, &[&plugin])?
        .and_then(|r| DateTime::parse_from_rfc3339(&r.get::<_, String>(0)).ok())
        .map(|t| t.with_timezone(&Utc));
    let since = fmt_time(rule.window_start(now_t, reset_at));
    let began = prepared(
        cache,
        tx,
        "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
         WHERE d.plugin = $1 AND d.started_at >= $2 AND NOT d.guard_exempt AND e.event_type = ANY($3)",
    )?;
    let began: i64 = tx.query_one(&began, &[&plugin, &since, &rule.event_types])?.get(0);
    let held = prepared(cache, tx, "SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'held' AND plugin = $1)")?;
    let any_held: bool = tx.query_one(&held, &[&plugin])?.get(0);
    Ok(GuardCount::new(rule, u64::try_from(began).unwrap_or(0), any_held))
}

pub(super) fn claim(
    conn: &mut Conn,
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
    let (client, cache) = conn.parts();
    let mut tx = client.transaction()?;

    // Plugins with queued work: a loose index scan over `deliveries_queued` (one seek each).
    let plugins_with_work = prepared(
        cache,
        &mut tx,
        "WITH RECURSIVE p (plugin) AS (
                 SELECT MIN(plugin) FROM deliveries WHERE status IN ('pending', 'retrying')
                 UNION ALL
                 SELECT (SELECT MIN(d.plugin) FROM deliveries d
                         WHERE d.status IN ('pending', 'retrying') AND d.plugin > p.plugin)
                 FROM p WHERE p.plugin IS NOT NULL)
             SELECT plugin FROM p WHERE plugin IS NOT NULL",
    )?;
    let plugins: Vec<String> = tx.query(&plugins_with_work, &[])?.iter().map(|r| r.get(0)).collect();
    let running_here = prepared(
        cache,
        &mut tx,
        "SELECT plugin, COUNT(*) FROM deliveries WHERE status = 'running' AND lease_owner = $1 GROUP BY plugin",
    )?;
    let running: HashMap<String, usize> = tx
        .query(&running_here, &[&host_id])?
        .iter()
        .map(|r| (r.get::<_, String>(0), usize::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
        .collect();

    let heads = prepared(
        cache,
        &mut tx,
        "SELECT d.seq, d.id, d.attempts, d.replay, e.raw, e.event_type, d.started_at IS NOT NULL, d.guard_exempt
         FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
         WHERE d.status IN ('pending', 'retrying') AND d.plugin = $1
           AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= $2)
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
         LIMIT $3
         FOR UPDATE OF d SKIP LOCKED",
    )?;
    let mut candidates = Vec::new();
    let mut guards: HashMap<String, GuardCount> = HashMap::new();
    for plugin in plugins {
        let room = max_running(&plugin).saturating_sub(running.get(&plugin).copied().unwrap_or(0)).min(limit);
        if room == 0 {
            continue;
        }
        if let Some(rule) = guard_rule(&plugin) {
            guards.insert(plugin.clone(), guard_count(&mut tx, cache, &plugin, rule, now_t)?);
        }
        let room = i64::try_from(room).unwrap_or(i64::MAX);
        for r in tx.query(&heads, &[&plugin, &now_s, &room])? {
            candidates.push(Candidate {
                seq: r.get(0),
                id: r.get(1),
                plugin: plugin.clone(),
                attempts: u32::try_from(r.get::<_, i64>(2)).unwrap_or(u32::MAX),
                replay: r.get(3),
                raw: r.get(4),
                event_type: r.get(5),
                began: r.get(6),
                exempt: r.get(7),
            });
        }
    }
    // Oldest first across plugins. Rows locked above but not taken are unlocked at commit.
    candidates.sort_by_key(|c| c.seq);

    let take = prepared(
        cache,
        &mut tx,
        "UPDATE deliveries
         SET status = 'running', lease_owner = $2, lease_token = $3, lease_until = $4,
             next_attempt_at = NULL, updated_at = $5, started_at = COALESCE(started_at, $5)
         WHERE id = $1",
    )?;
    let park = prepared(
        cache,
        &mut tx,
        "UPDATE deliveries SET status = 'held', next_attempt_at = NULL, updated_at = $2 WHERE id = $1",
    )?;
    let unreadable = prepared(
        cache,
        &mut tx,
        "UPDATE deliveries SET status = 'dead', last_error = $2, next_attempt_at = NULL, updated_at = $3
         WHERE id = $1",
    )?;

    let mut claims = Vec::with_capacity(candidates.len().min(limit));
    let mut held = Vec::new();
    for c in candidates {
        if claims.len() >= limit {
            break;
        }
        if let Some(g) = guards.get_mut(&c.plugin) {
            let seen = guard::Candidate { event_type: &c.event_type, began: c.began, exempt: c.exempt || c.replay };
            if let Verdict::Hold { trips } = g.admit(seen) {
                tx.execute(&park, &[&c.id, &now_s])?;
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
                tx.execute(&unreadable, &[&c.id, &format!("the stored event cannot be read: {e}"), &now_s])?;
                continue;
            }
        };
        let lease_token = format!("{:016x}", fastrand::u64(..));
        tx.execute(&take, &[&c.id, &host_id, &lease_token, &until, &now_s])?;
        claims.push(Claim {
            delivery_id: c.id,
            plugin: c.plugin,
            event,
            attempts: c.attempts,
            lease_token,
            replay: c.replay,
        });
    }
    tx.commit()?;
    Ok(ClaimBatch { claims, held })
}

/// An operator's release: held → pending, exempt from the guard, and a fresh window.
pub(super) fn release_held(conn: &mut Conn, plugin: &str, now_t: DateTime<Utc>) -> Result<usize, StoreError> {
    let now_s = fmt_time(now_t);
    let mut tx = conn.transaction()?;
    let n = tx.execute(
        "UPDATE deliveries SET status = 'pending', guard_exempt = TRUE, next_attempt_at = NULL, updated_at = $2
         WHERE status = 'held' AND plugin = $1",
        &[&plugin, &now_s],
    )?;
    tx.execute(
        "INSERT INTO guard_resets (plugin, reset_at) VALUES ($1, $2)
         ON CONFLICT (plugin) DO UPDATE SET reset_at = excluded.reset_at",
        &[&plugin, &now_s],
    )?;
    tx.commit()?;
    Ok(count(n))
}

/// An operator's discard: held → discarded (never run; the history keeps them).
pub(super) fn discard_held(conn: &mut Conn, plugin: &str, now_t: DateTime<Utc>) -> Result<usize, StoreError> {
    let n = conn.exec(
        "UPDATE deliveries SET status = 'discarded', next_attempt_at = NULL, updated_at = $2
         WHERE status = 'held' AND plugin = $1",
        &[&plugin, &fmt_time(now_t)],
    )?;
    Ok(count(n))
}

pub(super) fn renew(
    conn: &mut Conn,
    delivery_id: &str,
    lease_token: &str,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = conn.exec(
        "UPDATE deliveries SET lease_until = $3, updated_at = $4
         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        &[&delivery_id, &lease_token, &fmt_time(until), &now()],
    )?;
    Ok(n == 1)
}

pub(super) fn release(conn: &mut Conn, delivery_id: &str, lease_token: &str) -> Result<bool, StoreError> {
    let n = conn.exec(
        "UPDATE deliveries
         SET status = 'pending', lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $3
         WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        &[&delivery_id, &lease_token, &now()],
    )?;
    Ok(n == 1)
}

pub(super) fn release_claims(
    conn: &mut Conn,
    now_t: DateTime<Utc>,
    host_id: Option<&str>,
) -> Result<usize, StoreError> {
    const SET: &str = "UPDATE deliveries
         SET status = 'pending', next_attempt_at = NULL,
             lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $2
         WHERE status = 'running' AND ";
    let n = match host_id {
        None => conn.exec(&format!("{SET} lease_until < $1"), &[&fmt_time(now_t), &now()])?,
        Some(host) => conn.exec(&format!("{SET} lease_owner = $1"), &[&host, &now()])?,
    };
    Ok(count(n))
}

pub(super) fn complete(
    conn: &mut Conn,
    delivery_id: &str,
    lease_token: &str,
    attempt: Option<&Attempt>,
    next: &Next,
) -> Result<bool, StoreError> {
    let (client, cache) = conn.parts();
    let mut tx = client.transaction()?;
    // Locks the row: a sweep or replay on another host waits for this decision.
    let lock = prepared(
        cache,
        &mut tx,
        "SELECT status, lease_token, attempts, last_error, replay FROM deliveries WHERE id = $1 FOR UPDATE",
    )?;
    let Some(row) = tx.query_opt(&lock, &[&delivery_id])? else {
        return Ok(false);
    };
    let status: String = row.get(0);
    let token: Option<String> = row.get(1);
    let mut attempts: i64 = row.get(2);
    let old_error: Option<String> = row.get(3);
    let replay: bool = row.get(4);
    if status != "running" || token.as_deref() != Some(lease_token) {
        return Ok(false);
    }
    let last_number =
        prepared(cache, &mut tx, "SELECT COALESCE(MAX(number), 0)::BIGINT FROM attempts WHERE delivery_id = $1")?;
    let mut number: i64 = tx.query_one(&last_number, &[&delivery_id])?.get(0);
    let now_s = now();
    let record = prepared(
        cache,
        &mut tx,
        "INSERT INTO attempts (delivery_id, number, plugin_version, plugin_sha256, started_at,
                               duration_ms, result, error, log)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )?;
    let mut failure = None;
    if let Some(a) = attempt {
        number += 1;
        attempts += 1;
        let error = match &a.result {
            AttemptResult::Done { .. } => None,
            other => Some(other.describe()),
        };
        tx.execute(
            &record,
            &[
                &delivery_id,
                &number,
                &a.plugin_version,
                &a.plugin_sha256,
                &fmt_time(DateTime::<Utc>::from(a.started_at)),
                &i64::try_from(a.duration.as_millis()).unwrap_or(i64::MAX),
                &a.result.kind(),
                &error,
                &log_json(a),
            ],
        )?;
        failure = error;
    }
    if let Next::Superseded { by_event } = next {
        number += 1;
        tx.execute(
            &record,
            &[&delivery_id, &number, &"", &"", &now_s, &0_i64, &"superseded", &Some(superseded_note(by_event)), &"[]"],
        )?;
    }
    let landing = landing(next, failure, old_error, replay);
    let finish = prepared(
        cache,
        &mut tx,
        "UPDATE deliveries
         SET status = $2, attempts = $3, next_attempt_at = $4, last_error = $5,
             plugin_version = COALESCE($6, plugin_version), superseded_by = $7, replay = $8,
             lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $9
         WHERE id = $1",
    )?;
    tx.execute(
        &finish,
        &[
            &delivery_id,
            &landing.status.as_str(),
            &attempts,
            &landing.next_attempt_at,
            &landing.last_error,
            &attempt.map(|a| a.plugin_version.as_str()),
            &landing.superseded_by,
            &landing.replay,
            &now_s,
        ],
    )?;
    tx.commit()?;
    Ok(true)
}

/// Supersede: see the SQLite store's `newer_done` for the rule; the query is the same.
pub(super) fn newer_done(conn: &mut Conn, plugin: &str, event: &Event) -> Result<Option<String>, StoreError> {
    let Some(subject) = event.subject() else {
        return Ok(None);
    };
    let mine = group_ids(event);
    let rows = conn.rows(
        "SELECT e.uuid, e.event_type, e.group_ids
         FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
         WHERE d.plugin = $1 AND d.subject = $2 AND d.status = 'done'
           AND d.published_key > $3 AND d.superseded_by IS NULL AND d.event_uuid <> $4
         ORDER BY d.published_key DESC, d.seq DESC",
        &[&plugin, &subject, &published_key(&event.published), &event.uuid],
    )?;
    for r in rows {
        let (uuid, event_type, groups): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let groups: Vec<String> = serde_json::from_str(&groups).unwrap_or_default();
        if event_type.starts_with("user.lifecycle.") || groups.iter().any(|g| mine.contains(g)) {
            return Ok(Some(uuid));
        }
    }
    Ok(None)
}

pub(super) fn replay(conn: &mut Conn, delivery_id: &str) -> Result<ReplayOutcome, StoreError> {
    let mut tx = conn.transaction()?;
    let Some(row) = tx.query_opt("SELECT status FROM deliveries WHERE id = $1 FOR UPDATE", &[&delivery_id])? else {
        return Ok(ReplayOutcome::NotFound);
    };
    let status: String = row.get(0);
    let status = Status::parse(&status)
        .ok_or_else(|| StoreError::Unavailable(format!("delivery {delivery_id} has unknown status {status:?}")))?;
    if !matches!(status, Status::Done | Status::Dead | Status::Held | Status::Discarded) {
        return Ok(ReplayOutcome::Conflict(status));
    }
    tx.execute(
        "UPDATE deliveries
         SET status = 'pending', replay = TRUE, guard_exempt = TRUE, next_attempt_at = NULL, superseded_by = NULL,
             lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $2
         WHERE id = $1",
        &[&delivery_id, &now()],
    )?;
    tx.commit()?;
    Ok(ReplayOutcome::Accepted)
}
