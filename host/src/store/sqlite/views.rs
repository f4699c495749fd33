//! What the admin API reads: events with their deliveries, delivery pages, attempt history,
//! counts.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::common::show_published;
use crate::store::{AttemptView, DeliveryView, EventView, Status, StoreError};

/// Largest page [`deliveries`] returns, whatever `limit` asks for.
const MAX_PAGE: usize = 1000;

const DELIVERY_COLUMNS: &str = "id, event_uuid, plugin, plugin_version, status, attempts, next_attempt_at, last_error";

fn delivery(r: &Row<'_>) -> rusqlite::Result<DeliveryView> {
    let status: String = r.get(4)?;
    Ok(DeliveryView {
        id: r.get(0)?,
        event_id: r.get(1)?,
        plugin: r.get(2)?,
        plugin_version: r.get(3)?,
        // The CHECK constraint admits only the status names.
        status: Status::parse(&status).unwrap_or(Status::Pending),
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        last_error: r.get(7)?,
    })
}

pub(super) fn event(conn: &Connection, uuid: &str) -> Result<Option<EventView>, StoreError> {
    let head = conn
        .query_row(
            "SELECT uuid, event_type, published, received_at, okta_delivery_id, source FROM events WHERE uuid = ?1",
            [uuid],
            |r| {
                Ok(EventView {
                    id: r.get(0)?,
                    event_type: r.get(1)?,
                    published: show_published(&r.get::<_, String>(2)?),
                    received_at: r.get(3)?,
                    okta_delivery_id: r.get(4)?,
                    source: r.get(5)?,
                    deliveries: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut view) = head else {
        return Ok(None);
    };
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_uuid = ?1 ORDER BY seq"))?;
    view.deliveries = stmt.query_map([uuid], delivery)?.collect::<Result<_, _>>()?;
    Ok(Some(view))
}

pub(super) fn deliveries(
    conn: &Connection,
    status: Option<Status>,
    limit: usize,
    after: Option<&str>,
) -> Result<(Vec<DeliveryView>, Option<String>), StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    // Ids are fixed-width, so text order is ingest order and `id > after` pages correctly
    // even for an id that no longer exists.
    let after = after.unwrap_or("");
    let fetch = (limit + 1) as i64;
    let mut page: Vec<DeliveryView> = match status {
        Some(status) => conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            ))?
            .query_map(params![status.as_str(), after, fetch], delivery)?
            .collect::<Result<_, _>>()?,
        None => conn
            .prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id > ?1 ORDER BY id LIMIT ?2"))?
            .query_map(params![after, fetch], delivery)?
            .collect::<Result<_, _>>()?,
    };
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok((page, next))
}

pub(super) fn attempts(conn: &Connection, delivery_id: &str) -> Result<Vec<AttemptView>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT delivery_id, number, plugin_version, plugin_sha256, started_at, duration_ms,
                result, error, log
         FROM attempts WHERE delivery_id = ?1 ORDER BY number",
    )?;
    let rows = stmt.query_map([delivery_id], |r| {
        let log: String = r.get(8)?;
        Ok(AttemptView {
            delivery_id: r.get(0)?,
            number: r.get(1)?,
            plugin_version: r.get(2)?,
            plugin_sha256: r.get(3)?,
            started_at: r.get(4)?,
            duration_ms: r.get::<_, i64>(5)?.max(0) as u64,
            result: r.get(6)?,
            error: r.get(7)?,
            log: serde_json::from_str(&log).unwrap_or(serde_json::Value::Null),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn counts(conn: &Connection) -> Result<Vec<(String, Status, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT plugin, status, COUNT(*) FROM deliveries GROUP BY plugin, status ORDER BY plugin, status",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (plugin, status, n) = row?;
        if let Some(status) = Status::parse(&status) {
            out.push((plugin, status, n.max(0) as u64));
        }
    }
    Ok(out)
}

pub(super) fn busy(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE status IN ('pending', 'running', 'retrying'))",
        [],
        |r| r.get(0),
    )?)
}
