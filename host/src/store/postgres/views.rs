//! What the admin API reads, from PostgreSQL: the SQLite store's views (`sqlite/views.rs`),
//! with the same shapes and paging.

use postgres::Row;

use super::Conn;

use crate::store::common::show_published;
use crate::store::{AttemptView, DeliveryView, EventView, Status, StoreError};

/// Largest page [`deliveries`] returns, whatever `limit` asks for.
const MAX_PAGE: usize = 1000;

const DELIVERY_COLUMNS: &str = "id, event_uuid, plugin, plugin_version, status, attempts, next_attempt_at, last_error";

fn delivery(r: &Row) -> DeliveryView {
    let status: String = r.get(4);
    DeliveryView {
        id: r.get(0),
        event_id: r.get(1),
        plugin: r.get(2),
        plugin_version: r.get(3),
        // The CHECK constraint admits only the five names.
        status: Status::parse(&status).unwrap_or(Status::Pending),
        attempts: u32::try_from(r.get::<_, i64>(5)).unwrap_or(u32::MAX),
        next_attempt_at: r.get(6),
        last_error: r.get(7),
    }
}

pub(super) fn event(client: &mut Conn, uuid: &str) -> Result<Option<EventView>, StoreError> {
    let Some(r) = client.query_opt(
        "SELECT uuid, event_type, published, received_at, okta_delivery_id, source FROM events WHERE uuid = $1",
        &[&uuid],
    )?
    else {
        return Ok(None);
    };
    let deliveries = client
        .query(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_uuid = $1 ORDER BY seq"), &[&uuid])?
        .iter()
        .map(delivery)
        .collect();
    Ok(Some(EventView {
        id: r.get(0),
        event_type: r.get(1),
        published: show_published(&r.get::<_, String>(2)),
        received_at: r.get(3),
        okta_delivery_id: r.get(4),
        source: r.get(5),
        deliveries,
    }))
}

pub(super) fn deliveries(
    client: &mut Conn,
    status: Option<Status>,
    limit: usize,
    after: Option<&str>,
) -> Result<(Vec<DeliveryView>, Option<String>), StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let after = after.unwrap_or("");
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let rows = match status {
        Some(status) => client.query(
            &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"),
            &[&status.as_str(), &after, &fetch],
        )?,
        None => client.query(
            &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id > $1 ORDER BY id LIMIT $2"),
            &[&after, &fetch],
        )?,
    };
    let mut page: Vec<DeliveryView> = rows.iter().map(delivery).collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok((page, next))
}

pub(super) fn attempts(client: &mut Conn, delivery_id: &str) -> Result<Vec<AttemptView>, StoreError> {
    let rows = client.query(
        "SELECT delivery_id, number, plugin_version, plugin_sha256, started_at, duration_ms,
                result, error, log
         FROM attempts WHERE delivery_id = $1 ORDER BY number",
        &[&delivery_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| AttemptView {
            delivery_id: r.get(0),
            number: u32::try_from(r.get::<_, i64>(1)).unwrap_or(u32::MAX),
            plugin_version: r.get(2),
            plugin_sha256: r.get(3),
            started_at: r.get(4),
            duration_ms: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
            result: r.get(6),
            error: r.get(7),
            log: serde_json::from_str(r.get::<_, &str>(8)).unwrap_or(serde_json::Value::Null),
        })
        .collect())
}

pub(super) fn counts(client: &mut Conn) -> Result<Vec<(String, Status, u64)>, StoreError> {
    let rows = client
        .rows("SELECT plugin, status, COUNT(*) FROM deliveries GROUP BY plugin, status ORDER BY plugin, status", &[])?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let status = Status::parse(r.get::<_, &str>(1))?;
            Some((r.get::<_, String>(0), status, u64::try_from(r.get::<_, i64>(2)).unwrap_or(0)))
        })
        .collect())
}

pub(super) fn busy(client: &mut Conn) -> Result<bool, StoreError> {
    Ok(client
        .rows("SELECT EXISTS (SELECT 1 FROM deliveries WHERE status IN ('pending', 'running', 'retrying'))", &[])?
        .first()
        .is_some_and(|r| r.get(0)))
}
