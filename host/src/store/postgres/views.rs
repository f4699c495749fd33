//! What the admin API and the operator console read, as PostgreSQL queries. Paging, filters
//! and shapes are decided in [`reads`](crate::store::reads), for both stores.

use postgres::types::ToSql;
use postgres::GenericClient;

use super::Sql;
use crate::store::reads::ReadTx;
use crate::store::rows::{
    attempt, delivery, event_head, event_summary, plugin_status_count, status_count, unsigned, ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS, EVENT_COLUMNS,
};
use crate::store::{AttemptView, DeliveryView, EventSummary, EventView, Status, StoreError};

impl<C: GenericClient> ReadTx for Sql<'_, C> {
    fn event_head(&mut self, uuid: &str) -> Result<Option<EventView>, StoreError> {
        let row = self.row(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE uuid = $1"), &[&uuid])?;
        row.as_ref().map(event_head).transpose()
    }

    fn event_deliveries(&mut self, uuid: &str) -> Result<Vec<DeliveryView>, StoreError> {
        let rows = self
            .rows(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_uuid = $1 ORDER BY seq"), &[&uuid])?;
        rows.iter().map(delivery).collect()
    }

    fn delivery_page(
        &mut self,
        status: Option<Status>,
        after: &str,
        fetch: usize,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let fetch = i64::try_from(fetch).unwrap_or(i64::MAX);
        let rows = match status {
            Some(status) => self.rows(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"
                ),
                &[&status.as_str(), &after, &fetch],
            )?,
            None => self.rows(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id > $1 ORDER BY id LIMIT $2"),
                &[&after, &fetch],
            )?,
        };
        rows.iter().map(delivery).collect()
    }

    fn attempts(&mut self, delivery_id: &str) -> Result<Vec<AttemptView>, StoreError> {
        let rows = self.rows(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY number"),
            &[&delivery_id],
        )?;
        rows.iter().map(attempt).collect()
    }

    fn plugin_status_counts(&mut self) -> Result<Vec<(String, Status, u64)>, StoreError> {
        let rows = self.rows(
            "SELECT plugin, status, COUNT(*) FROM deliveries GROUP BY plugin, status ORDER BY plugin, status",
            &[],
        )?;
        let counted: Vec<_> = rows.iter().map(plugin_status_count).collect::<Result<_, _>>()?;
        Ok(counted.into_iter().flatten().collect())
    }

    fn busy(&mut self) -> Result<bool, StoreError> {
        let row = self
            .row("SELECT EXISTS (SELECT 1 FROM deliveries WHERE status IN ('pending', 'running', 'retrying'))", &[])?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    fn placeholder(&self, n: usize) -> String {
        format!("${n}")
    }

    fn search(&mut self, sql: &str, args: &[String]) -> Result<Vec<EventSummary>, StoreError> {
        // Built per filter combination: not worth a prepared statement of its own.
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(sql, &params)?;
        rows.iter().map(event_summary).collect()
    }

    fn event_groups(&mut self, uuid: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.rows(
            "SELECT COALESCE(NULLIF(group_name, ''), group_id) FROM event_groups WHERE event_uuid = $1 ORDER BY position",
            &[&uuid],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn event_statuses(&mut self, uuid: &str) -> Result<Vec<(Status, u64)>, StoreError> {
        let rows =
            self.rows("SELECT status, COUNT(*) FROM deliveries WHERE event_uuid = $1 GROUP BY status", &[&uuid])?;
        let counted: Vec<_> = rows.iter().map(status_count).collect::<Result<_, _>>()?;
        Ok(counted.into_iter().flatten().collect())
    }

    fn oldest_waiting(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.rows(
            "SELECT plugin, MIN(created_at) FROM deliveries WHERE status IN ('pending', 'retrying') GROUP BY plugin",
            &[],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn attempts_per_minute(&mut self, since: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let rows = self.rows(
            "SELECT substr(started_at, 1, 16), COUNT(*), SUM(CASE WHEN result = 'done' THEN 0 ELSE 1 END)
             FROM attempts WHERE started_at >= $1 AND result <> 'superseded' GROUP BY substr(started_at, 1, 16)",
            &[&since],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), unsigned(r.get(1)), unsigned(r.get(2)))).collect())
    }
}
