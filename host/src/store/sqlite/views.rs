//! What the admin API and the operator console read, as SQLite queries: events with their
//! deliveries, delivery pages, attempt history, counts, the event search and the queue
//! summary. Paging, filters and shapes are decided in [`reads`](crate::store::reads).
//!
//! Both console reads run every few seconds while a console is open, so each is a handful
//! of indexed queries: the event list walks `events_received` backwards and stops after one
//! page; the per-minute chart reads only the last hour through `attempts_started`.

use rusqlite::params;
use rusqlite::params_from_iter;

use super::Sql;
use crate::store::reads::ReadTx;
use crate::store::rows::{
    attempt, delivery, event_head, event_summary, plugin_status_count, status_count, unsigned, ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS, EVENT_COLUMNS,
};
use crate::store::{AttemptView, DeliveryView, EventSummary, EventView, Status, StoreError};

impl ReadTx for Sql<'_> {
    fn event_head(&mut self, uuid: &str) -> Result<Option<EventView>, StoreError> {
        let found =
            self.all(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE uuid = ?1"), [uuid], |r| event_head(r))?;
        Ok(found.into_iter().next())
    }

    fn event_deliveries(&mut self, uuid: &str) -> Result<Vec<DeliveryView>, StoreError> {
        self.all(
            &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_uuid = ?1 ORDER BY seq"),
            [uuid],
            |r| delivery(r),
        )
    }

    fn delivery_page(
        &mut self,
        status: Option<Status>,
        after: &str,
        fetch: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let fetch = i64::try_from(fetch).unwrap_or(i64::MAX);
        match status {
            Some(status) => self.all(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ),
                params![status.as_str(), after, fetch],
                |r| delivery(r),
            ),
            None => self.all(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id > ?1 ORDER BY id LIMIT ?2"),
                params![after, fetch],
                |r| delivery(r),
            ),
        }
    }

    fn attempts(&mut self, delivery_id: &str) -> Result<Vec<AttemptView>, StoreError> {
        self.all(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ?1 ORDER BY number"),
            [delivery_id],
            |r| attempt(r),
        )
    }

    fn plugin_status_counts(&mut self) -> Result<Vec<(String, Status, u64)>, StoreError> {
        let rows = self.all(
            "SELECT plugin, status, COUNT(*) FROM deliveries GROUP BY plugin, status ORDER BY plugin, status",
            [],
            |r| plugin_status_count(r),
        )?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn busy(&mut self) -> Result<bool, StoreError> {
        Ok(self.0.query_row(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE status IN ('pending', 'running', 'retrying'))",
            [],
            |r| r.get(0),
        )?)
    }

    fn placeholder(&self, n: usize) -> String {
        format!("?{n}")
    }

    fn search(&mut self, sql: &str, args: &[String]) -> Result<Vec<EventSummary>, StoreError> {
        // Built per filter combination: not worth a slot in the statement cache.
        let mut stmt = self.0.prepare(sql)?;
        let mut rows = stmt.query(params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(event_summary(r)?);
        }
        Ok(out)
    }

    fn event_groups(&mut self, uuid: &str) -> Result<Vec<String>, StoreError> {
        self.all(
            "SELECT COALESCE(NULLIF(group_name, ''), group_id) FROM event_groups WHERE event_uuid = ?1 ORDER BY position",
            [uuid],
            |r| Ok(r.get(0)?),
        )
    }

    fn event_statuses(&mut self, uuid: &str) -> Result<Vec<(Status, u64)>, StoreError> {
        let rows =
            self.all("SELECT status, COUNT(*) FROM deliveries WHERE event_uuid = ?1 GROUP BY status", [uuid], |r| {
                status_count(r)
            })?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn oldest_waiting(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        self.all(
            "SELECT plugin, MIN(created_at) FROM deliveries WHERE status IN ('pending', 'retrying') GROUP BY plugin",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn attempts_per_minute(&mut self, since: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        self.all(
            "SELECT substr(started_at, 1, 16), COUNT(*), SUM(CASE WHEN result = 'done' THEN 0 ELSE 1 END)
             FROM attempts WHERE started_at >= ?1 AND result <> 'superseded' GROUP BY substr(started_at, 1, 16)",
            [since],
            |r| Ok((r.get(0)?, unsigned(r.get(1)?), unsigned(r.get(2)?))),
        )
    }
}
