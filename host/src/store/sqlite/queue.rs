//! The delivery queue's SQL on SQLite: claim, lease renewal and release, completion,
//! supersede, replay. What each step decides is in [`queue_rules`](crate::store::queue_rules);
//! this file only says how SQLite reads and writes the rows.
//!
//! The claim order (which delivery of a user may run) is [`heads_sql`], shared with
//! PostgreSQL.
//!
//! The claim scan goes plugin by plugin (a skip-scan over the queued-deliveries index), so
//! a plugin that cannot take more work (`max_running` reached, or 0 because it is not
//! loaded) costs nothing however long its backlog.

use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::{params, OptionalExtension};

use super::Sql;
use crate::store::queue_rules::{heads_sql, AttemptRow, Candidate, Finished, LeaseRow, QueueTx};
use crate::store::StoreError;

impl QueueTx for Sql<'_> {
    fn plugins_with_work(&mut self) -> Result<Vec<String>, StoreError> {
        // Named index: one seek per plugin. Left to itself, the planner may pick the
        // status index and read every queued delivery for each plugin.
        let mut next_plugin = self.0.prepare_cached(
            "SELECT MIN(plugin) FROM deliveries INDEXED BY deliveries_queued
             WHERE status IN ('pending', 'retrying') AND plugin > ?1",
        )?;
        let mut plugins = Vec::new();
        let mut last = String::new();
        while let Some(p) = next_plugin.query_row([&last], |r| r.get::<_, Option<String>>(0))? {
            last.clone_from(&p);
            plugins.push(p);
        }
        Ok(plugins)
    }

    fn running_here(&mut self, host_id: &str) -> Result<HashMap<String, usize>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT plugin, COUNT(*) FROM deliveries WHERE status = 'running' AND lease_owner = ?1 GROUP BY plugin",
        )?;
        let rows = stmt.query_map([host_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.map(|r| r.map(|(p, n)| (p, usize::try_from(n).unwrap_or(0)))).collect::<Result<_, _>>()?)
    }

    fn heads(&mut self, plugin: &str, now: &str, room: usize) -> Result<Vec<Candidate>, StoreError> {
        static HEADS: LazyLock<String> = LazyLock::new(|| heads_sql(|n| format!("?{n}")));
        self.all(&HEADS, params![plugin, now, i64::try_from(room).unwrap_or(i64::MAX)], |r| {
            Candidate::from_columns(plugin, r)
        })
    }

    fn guard_reset_at(&mut self, plugin: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT reset_at FROM guard_resets WHERE plugin = ?1")?
            .query_row([plugin], |r| r.get(0))
            .optional()?)
    }

    fn guarded_starts_since(&mut self, plugin: &str, since: &str, event_types: &[String]) -> Result<u64, StoreError> {
        let types = serde_json::to_string(event_types)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode the guard's event types: {e}")))?;
        let began: i64 = self
            .0
            .prepare_cached(
                "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
                 WHERE d.plugin = ?1 AND d.started_at >= ?2 AND d.guard_exempt = 0
                   AND e.event_type IN (SELECT value FROM json_each(?3))",
            )?
            .query_row(params![plugin, since, types], |r| r.get(0))?;
        Ok(u64::try_from(began).unwrap_or(0))
    }

    fn any_held(&mut self, plugin: &str) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'held' AND plugin = ?1)")?
            .query_row([plugin], |r| r.get(0))?)
    }

    fn mark_running(
        &mut self,
        delivery_id: &str,
        host_id: &str,
        lease_token: &str,
        until: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE deliveries
                 SET status = 'running', lease_owner = ?2, lease_token = ?3, lease_until = ?4,
                     next_attempt_at = NULL, updated_at = ?5, started_at = COALESCE(started_at, ?5)
                 WHERE id = ?1",
            )?
            .execute(params![delivery_id, host_id, lease_token, until, now])?;
        Ok(())
    }

    fn hold(&mut self, delivery_id: &str, now: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE deliveries SET status = 'held', next_attempt_at = NULL, updated_at = ?2 WHERE id = ?1",
            )?
            .execute(params![delivery_id, now])?;
        Ok(())
    }

    fn bury(&mut self, delivery_id: &str, error: &str, now: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE deliveries SET status = 'dead', last_error = ?2, next_attempt_at = NULL, updated_at = ?3
                 WHERE id = ?1",
            )?
            .execute(params![delivery_id, error, now])?;
        Ok(())
    }

    fn renew(&mut self, delivery_id: &str, lease_token: &str, until: &str, now: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute(
            "UPDATE deliveries SET lease_until = ?3, updated_at = ?4
             WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
            params![delivery_id, lease_token, until, now],
        )?)
    }

    fn release(&mut self, delivery_id: &str, lease_token: &str, now: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute(
            "UPDATE deliveries
             SET status = 'pending', lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?3
             WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
            params![delivery_id, lease_token, now],
        )?)
    }

    fn release_expired(&mut self, before: &str, now: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute(&format!("{RELEASE_RUNNING} lease_until < ?1"), params![before, now])?)
    }

    fn release_host(&mut self, host_id: &str, now: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute(&format!("{RELEASE_RUNNING} lease_owner = ?1"), params![host_id, now])?)
    }

    fn lease_row(&mut self, delivery_id: &str) -> Result<Option<LeaseRow>, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT status, lease_token, attempts, last_error, replay FROM deliveries WHERE id = ?1",
                [delivery_id],
                |r| {
                    Ok(LeaseRow {
                        status: r.get(0)?,
                        lease_token: r.get(1)?,
                        attempts: r.get(2)?,
                        last_error: r.get(3)?,
                        replay: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    fn last_attempt_number(&mut self, delivery_id: &str) -> Result<i64, StoreError> {
        Ok(self.0.query_row(
            "SELECT COALESCE(MAX(number), 0) FROM attempts WHERE delivery_id = ?1",
            [delivery_id],
            |r| r.get(0),
        )?)
    }

    fn record_attempt(&mut self, a: &AttemptRow<'_>) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO attempts (delivery_id, number, plugin_version, plugin_sha256, started_at,
                                       duration_ms, result, error, log)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                a.delivery_id,
                a.number,
                a.plugin_version,
                a.plugin_sha256,
                a.started_at,
                a.duration_ms,
                a.result,
                a.error,
                a.log
            ])?;
        Ok(())
    }

    fn finish(&mut self, f: &Finished<'_>) -> Result<(), StoreError> {
        let l = &f.landing;
        self.0.execute(
            "UPDATE deliveries
             SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5,
                 plugin_version = COALESCE(?6, plugin_version), superseded_by = ?7, replay = ?8,
                 lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?9
             WHERE id = ?1",
            params![
                f.delivery_id,
                l.status.as_str(),
                f.attempts,
                l.next_attempt_at,
                l.last_error,
                f.plugin_version,
                l.superseded_by,
                l.replay,
                f.now
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
        let mut stmt = self.0.prepare_cached(
            "SELECT e.uuid, e.event_type, e.group_ids
             FROM deliveries d JOIN events e ON e.uuid = d.event_uuid
             WHERE d.plugin = ?1 AND d.subject = ?2 AND d.status = 'done'
               AND d.published_key > ?3 AND d.superseded_by IS NULL AND d.event_uuid <> ?4
             ORDER BY d.published_key DESC, d.seq DESC",
        )?;
        let rows =
            stmt.query_map(params![plugin, subject, published_key, uuid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn status_of(&mut self, delivery_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.0.query_row("SELECT status FROM deliveries WHERE id = ?1", [delivery_id], |r| r.get(0)).optional()?)
    }

    fn requeue_for_replay(&mut self, delivery_id: &str, now: &str) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE deliveries
             SET status = 'pending', replay = 1, guard_exempt = 1, next_attempt_at = NULL, superseded_by = NULL,
                 lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?2
             WHERE id = ?1",
            params![delivery_id, now],
        )?;
        Ok(())
    }

    fn requeue_held(&mut self, plugin: &str, now: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute(
            "UPDATE deliveries SET status = 'pending', guard_exempt = 1, next_attempt_at = NULL, updated_at = ?2
             WHERE status = 'held' AND plugin = ?1",
            params![plugin, now],
        )?)
    }

    fn reset_guard(&mut self, plugin: &str, now: &str) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO guard_resets (plugin, reset_at) VALUES (?1, ?2)
             ON CONFLICT (plugin) DO UPDATE SET reset_at = excluded.reset_at",
            params![plugin, now],
        )?;
        Ok(())
    }

    fn discard_held(&mut self, plugin: &str, now: &str) -> Result<usize, StoreError> {
        Ok(self.0.execute(
            "UPDATE deliveries SET status = 'discarded', next_attempt_at = NULL, updated_at = ?2
             WHERE status = 'held' AND plugin = ?1",
            params![plugin, now],
        )?)
    }
}

/// Back to pending, lease cleared: the start of both sweeps' statement (`?2` is now).
const RELEASE_RUNNING: &str = "UPDATE deliveries
     SET status = 'pending', next_attempt_at = NULL,
         lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = ?2
     WHERE status = 'running' AND ";
