//! Ingest and the delivery queue's SQL on PostgreSQL: claim, lease renewal and release,
//! completion, supersede, replay. What each step decides is in
//! [`queue_rules`](crate::store::queue_rules), for both stores; what differs here is how the
//! statements hold when several hosts run them at once.
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
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::GenericClient;

use super::{Conn, Sql};
use crate::store::common::{fmt_time, lease_end, now};
use crate::store::intake::{store_events, EventRow, IngestTx};
use crate::store::queue_rules::{heads_sql, AttemptRow, Candidate, Finished, LeaseRow, QueueTx};
use crate::store::{IngestReport, LogCursor, NewEvent, Source, StoreError, LOG_CURSOR};

/// Stores events (and, with `cursor`, moves the System Log cursor first, in the same
/// transaction; `None` when `cursor`'s holder lost the poller's lease: nothing stored).
pub(super) fn ingest(
    conn: &mut Conn,
    okta_delivery_id: Option<&str>,
    events: &[NewEvent],
    source: Source,
    cursor: Option<(&str, &LogCursor)>,
) -> Result<Option<IngestReport>, StoreError> {
    let (client, statements) = conn.parts();
    let mut tx = client.transaction()?;
    if let Some((holder, c)) = cursor {
        // Locks the row too: a host taking the lease over waits for this page's commit.
        let moved = tx.execute(
            "UPDATE log_cursor SET next_url = $1, filter = $2, last_published = $3, updated_at = $4
             WHERE name = $5 AND holder = $6",
            &[&c.next_url, &c.filter, &c.last_published, &now(), &LOG_CURSOR, &holder],
        )?;
        if moved == 0 {
            return Ok(None); // the transaction rolls back when dropped
        }
    }
    let report = store_events(&mut Sql { client: &mut tx, statements }, okta_delivery_id, events, source)?;
    tx.commit()?;
    Ok(Some(report))
}

impl<C: GenericClient> IngestTx for Sql<'_, C> {
    fn insert_event(&mut self, row: &EventRow<'_>) -> Result<bool, StoreError> {
        let event = row.event;
        let inserted = self.exec(
            "INSERT INTO events (uuid, event_type, published, published_key, received_at,
                                 okta_delivery_id, subject, group_ids, raw, subject_login, subject_name, source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (uuid) DO NOTHING",
            &[
                &event.uuid,
                &event.event_type,
                &event.published,
                &row.published_key,
                &row.received_at,
                &row.okta_delivery_id,
                &row.subject,
                &row.group_ids,
                &event.raw,
                &row.subject_login,
                &row.subject_name,
                &row.source.as_str(),
            ],
        )?;
        Ok(inserted == 1)
    }

    fn insert_group(
        &mut self,
        event_uuid: &str,
        group_id: &str,
        group_name: Option<&str>,
        position: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO event_groups (event_uuid, group_id, group_name, position) VALUES ($1, $2, $3, $4)
             ON CONFLICT (event_uuid, group_id) DO NOTHING",
            &[&event_uuid, &group_id, &group_name, &position],
        )?;
        Ok(())
    }

    /// The id comes from the shared sequence, so hosts never hand out the same one.
    fn insert_delivery(&mut self, row: &EventRow<'_>, plugin: &str) -> Result<bool, StoreError> {
        let created = self.exec(
            "INSERT INTO deliveries (seq, id, event_uuid, plugin, subject, published_key, status,
                                     created_at, updated_at)
             SELECT n.seq, 'd_' || lpad(to_hex(n.seq), 16, '0'), $1, $2, $3, $4, 'pending', $5, $5
             FROM (SELECT nextval('delivery_seq') AS seq) n
             ON CONFLICT (event_uuid, plugin) DO NOTHING",
            &[&row.event.uuid, &plugin, &row.subject, &row.published_key, &row.received_at],
        )?;
        Ok(created == 1)
    }
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

impl<C: GenericClient> QueueTx for Sql<'_, C> {
    fn plugins_with_work(&mut self) -> Result<Vec<String>, StoreError> {
        // A loose index scan over `deliveries_queued` (one seek each).
        let rows = self.rows(
            "WITH RECURSIVE p (plugin) AS (
                     SELECT MIN(plugin) FROM deliveries WHERE status IN ('pending', 'retrying')
                     UNION ALL
                     SELECT (SELECT MIN(d.plugin) FROM deliveries d
                             WHERE d.status IN ('pending', 'retrying') AND d.plugin > p.plugin)
                     FROM p WHERE p.plugin IS NOT NULL)
                 SELECT plugin FROM p WHERE plugin IS NOT NULL",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn running_here(&mut self, host_id: &str) -> Result<HashMap<String, usize>, StoreError> {
        let rows = self.rows(
            "SELECT plugin, COUNT(*) FROM deliveries WHERE status = 'running' AND lease_owner = $1 GROUP BY plugin",
            &[&host_id],
        )?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), usize::try_from(r.get::<_, i64>(1)).unwrap_or(0))).collect())
    }

    /// `FOR UPDATE OF d SKIP LOCKED`: a head another host is claiming is skipped, never
    /// waited for. Rows locked here but not taken are unlocked at commit.
    fn heads(&mut self, plugin: &str, now: &str, room: usize) -> Result<Vec<Candidate>, StoreError> {
        static HEADS: LazyLock<String> =
            LazyLock::new(|| format!("{} FOR UPDATE OF d SKIP LOCKED", heads_sql(|n| format!("${n}"))));
        let room = i64::try_from(room).unwrap_or(i64::MAX);
        let rows = self.rows(&HEADS, &[&plugin, &now, &room])?;
        rows.iter().map(|r| Candidate::from_columns(plugin, r)).collect()
    }

    /// Hosts sharing the store take a per-plugin advisory lock (held to the end of the
    /// claim's transaction), so two claiming at once count each other's starts and cannot
    /// both take the last place.
    fn lock_guard(&mut self, plugin: &str) -> Result<(), StoreError> {
        self.rows("SELECT pg_advisory_xact_lock(hashtext('hookhost guard ' || $1)::BIGINT)", &[&plugin])?;
        Ok(())
    }

    fn guard_reset_at(&mut self, plugin: &str) -> Result<Option<String>, StoreError> {
        Ok(self.row("SELECT reset_at FROM guard_resets WHERE plugin = $1", &[&plugin])?.map(|r| r.get(0)))
    }

    fn guarded_starts_since(&mut self, plugin: &str, since: &str, event_types: &[String]) -> Result<u64, StoreError> {
        let began: Option<i64> = self
            .row(
                "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
                 WHERE d.plugin = $1 AND d.started_at >= $2 AND NOT d.guard_exempt AND e.event_type = ANY($3)",
                &[&plugin, &since, &event_types],
            )?
            .map(|r| r.get(0));
        Ok(began.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    fn any_held(&mut self, plugin: &str) -> Result<bool, StoreError> {
        let row =
            self.row("SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'held' AND plugin = $1)", &[&plugin])?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    fn mark_running(
        &mut self,
        delivery_id: &str,
        host_id: &str,
        lease_token: &str,
        until: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deliveries
             SET status = 'running', lease_owner = $2, lease_token = $3, lease_until = $4,
                 next_attempt_at = NULL, updated_at = $5, started_at = COALESCE(started_at, $5)
             WHERE id = $1",
            &[&delivery_id, &host_id, &lease_token, &until, &now],
        )?;
        Ok(())
    }

    fn hold(&mut self, delivery_id: &str, now: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deliveries SET status = 'held', next_attempt_at = NULL, updated_at = $2 WHERE id = $1",
            &[&delivery_id, &now],
        )?;
        Ok(())
    }

    fn bury(&mut self, delivery_id: &str, error: &str, now: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deliveries SET status = 'dead', last_error = $2, next_attempt_at = NULL, updated_at = $3
             WHERE id = $1",
            &[&delivery_id, &error, &now],
        )?;
        Ok(())
    }

    fn renew(&mut self, delivery_id: &str, lease_token: &str, until: &str, now: &str) -> Result<usize, StoreError> {
        self.exec(
            "UPDATE deliveries SET lease_until = $3, updated_at = $4
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            &[&delivery_id, &lease_token, &until, &now],
        )
    }

    fn release(&mut self, delivery_id: &str, lease_token: &str, now: &str) -> Result<usize, StoreError> {
        self.exec(
            "UPDATE deliveries
             SET status = 'pending', lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $3
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            &[&delivery_id, &lease_token, &now],
        )
    }

    fn release_expired(&mut self, before: &str, now: &str) -> Result<usize, StoreError> {
        self.exec(&format!("{RELEASE_RUNNING} lease_until < $1"), &[&before, &now])
    }

    fn release_host(&mut self, host_id: &str, now: &str) -> Result<usize, StoreError> {
        self.exec(&format!("{RELEASE_RUNNING} lease_owner = $1"), &[&host_id, &now])
    }

    /// Locks the row: a sweep or replay on another host waits for this decision.
    fn lease_row(&mut self, delivery_id: &str) -> Result<Option<LeaseRow>, StoreError> {
        let row = self.row(
            "SELECT status, lease_token, attempts, last_error, replay FROM deliveries WHERE id = $1 FOR UPDATE",
            &[&delivery_id],
        )?;
        Ok(row.map(|r| LeaseRow {
            status: r.get(0),
            lease_token: r.get(1),
            attempts: r.get(2),
            last_error: r.get(3),
            replay: r.get(4),
        }))
    }

    fn last_attempt_number(&mut self, delivery_id: &str) -> Result<i64, StoreError> {
        let row =
            self.row("SELECT COALESCE(MAX(number), 0)::BIGINT FROM attempts WHERE delivery_id = $1", &[&delivery_id])?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    fn record_attempt(&mut self, a: &AttemptRow<'_>) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO attempts (delivery_id, number, plugin_version, plugin_sha256, started_at,
                                   duration_ms, result, error, log)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &a.delivery_id,
                &a.number,
                &a.plugin_version,
                &a.plugin_sha256,
                &a.started_at,
                &a.duration_ms,
                &a.result,
                &a.error,
                &a.log,
            ],
        )?;
        Ok(())
    }

    fn finish(&mut self, f: &Finished<'_>) -> Result<(), StoreError> {
        let l = &f.landing;
        self.exec(
            "UPDATE deliveries
             SET status = $2, attempts = $3, next_attempt_at = $4, last_error = $5,
                 plugin_version = COALESCE($6, plugin_version), superseded_by = $7, replay = $8,
                 lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $9
             WHERE id = $1",
            &[
                &f.delivery_id,
                &l.status.as_str(),
                &f.attempts,
                &l.next_attempt_at,
                &l.last_error,
                &f.plugin_version,
                &l.superseded_by,
                &l.replay,
                &f.now,
            ],
        )?;
        Ok(())
    }

    fn done_later(
        &mut self,
        plugin: &str,
        subject: &str,
        published_key: &str,
        uuid: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = self.rows(
            "SELECT e.uuid, e.event_type, e.group_ids
             FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
             WHERE d.plugin = $1 AND d.subject = $2 AND d.status = 'done'
               AND d.published_key > $3 AND d.superseded_by IS NULL AND d.event_uuid <> $4
             ORDER BY d.published_key DESC, d.seq DESC",
            &[&plugin, &subject, &published_key, &uuid],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Locks the row, like [`lease_row`](Self::lease_row).
    fn status_of(&mut self, delivery_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.row("SELECT status FROM deliveries WHERE id = $1 FOR UPDATE", &[&delivery_id])?.map(|r| r.get(0)))
    }

    fn requeue_for_replay(&mut self, delivery_id: &str, now: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deliveries
             SET status = 'pending', replay = TRUE, guard_exempt = TRUE, next_attempt_at = NULL, superseded_by = NULL,
                 lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $2
             WHERE id = $1",
            &[&delivery_id, &now],
        )?;
        Ok(())
    }

    fn requeue_held(&mut self, plugin: &str, now: &str) -> Result<usize, StoreError> {
        self.exec(
            "UPDATE deliveries SET status = 'pending', guard_exempt = TRUE, next_attempt_at = NULL, updated_at = $2
             WHERE status = 'held' AND plugin = $1",
            &[&plugin, &now],
        )
    }

    fn reset_guard(&mut self, plugin: &str, now: &str) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO guard_resets (plugin, reset_at) VALUES ($1, $2)
             ON CONFLICT (plugin) DO UPDATE SET reset_at = excluded.reset_at",
            &[&plugin, &now],
        )?;
        Ok(())
    }

    fn discard_held(&mut self, plugin: &str, now: &str) -> Result<usize, StoreError> {
        self.exec(
            "UPDATE deliveries SET status = 'discarded', next_attempt_at = NULL, updated_at = $2
             WHERE status = 'held' AND plugin = $1",
            &[&plugin, &now],
        )
    }
}

/// Back to pending, lease cleared: the start of both sweeps' statement (`$2` is now).
const RELEASE_RUNNING: &str = "UPDATE deliveries
     SET status = 'pending', next_attempt_at = NULL,
         lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $2
     WHERE status = 'running' AND ";
