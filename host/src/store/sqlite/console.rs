//! What the operator console reads: the searchable event list and the queue at a glance.
//!
//! Both are read-only and run every few seconds while a console is open, so each is a
//! handful of indexed queries: the event list walks `events_received` backwards and stops
//! after one page; the per-minute chart reads only the last hour through `attempts_started`.
//! Filters are plain `LIKE` on lower-cased columns, the semantics a PostgreSQL backend can
//! repeat as is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection};

use crate::store::common::{age_secs, chart, chart_start, fmt_time, show_published};
use crate::store::{
    like_pattern, EventFilter, EventPage, EventSummary, EventUser, PluginQueue, QueueStats, Status, StoreError,
    MAX_EVENT_PAGE,
};

/// `received_at|uuid` of the last event of a page: the next page starts strictly after it.
/// `received_at` is fixed-width RFC 3339 and never contains `|`, so the first `|` splits.
fn cursor(received_at: &str, uuid: &str) -> String {
    format!("{received_at}|{uuid}")
}

fn set(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

pub(super) fn search_events(conn: &Connection, filter: &EventFilter) -> Result<EventPage, StoreError> {
    let limit = filter.limit.clamp(1, MAX_EVENT_PAGE);
    let mut sql = String::from(
        "SELECT e.uuid, e.event_type, e.published, e.received_at, e.subject, e.subject_login, e.subject_name,
                e.source
         FROM events e WHERE 1 = 1",
    );
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: SqlValue| {
        args.push(value);
        // Every clause names its parameter as `?N`, numbered in the order they are pushed.
        sql.push_str(&clause.replace("?N", &format!("?{}", args.len())));
    };
    if let Some(text) = set(&filter.text) {
        let p = SqlValue::Text(like_pattern(text));
        arg(
            &mut sql,
            " AND (LOWER(COALESCE(e.subject_login, '')) LIKE ?N ESCAPE '\\'
                   OR LOWER(COALESCE(e.subject_name, '')) LIKE ?N ESCAPE '\\'
                   OR LOWER(COALESCE(e.subject, '')) LIKE ?N ESCAPE '\\'
                   OR LOWER(e.uuid) LIKE ?N ESCAPE '\\')",
            p,
        );
    }
    if let Some(event_type) = set(&filter.event_type) {
        arg(&mut sql, " AND LOWER(e.event_type) LIKE ?N ESCAPE '\\'", SqlValue::Text(like_pattern(event_type)));
    }
    if let Some(group) = set(&filter.group) {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM event_groups g WHERE g.event_uuid = e.uuid
                          AND (LOWER(COALESCE(g.group_name, '')) LIKE ?N ESCAPE '\\'
                               OR LOWER(g.group_id) LIKE ?N ESCAPE '\\'))",
            SqlValue::Text(like_pattern(group)),
        );
    }
    if let Some(source) = filter.source {
        arg(&mut sql, " AND e.source = ?N", SqlValue::Text(source.as_str().into()));
    }
    if let Some(status) = filter.status {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_uuid = e.uuid AND d.status = ?N)",
            SqlValue::Text(status.as_str().into()),
        );
    }
    if let Some((received_at, uuid)) = filter.before.as_deref().and_then(|c| c.split_once('|')) {
        arg(&mut sql, " AND (e.received_at < ?N", SqlValue::Text(received_at.into()));
        arg(&mut sql, " OR (e.received_at = ?N", SqlValue::Text(received_at.into()));
        arg(&mut sql, " AND e.uuid < ?N))", SqlValue::Text(uuid.into()));
    }
    arg(&mut sql, " ORDER BY e.received_at DESC, e.uuid DESC LIMIT ?N", SqlValue::Integer((limit + 1) as i64));

    let mut stmt = conn.prepare(&sql)?;
    let mut events: Vec<EventSummary> = stmt
        .query_map(params_from_iter(args.iter()), |r| {
            let subject: Option<String> = r.get(4)?;
            Ok(EventSummary {
                id: r.get(0)?,
                event_type: r.get(1)?,
                published: show_published(&r.get::<_, String>(2)?),
                received_at: r.get(3)?,
                source: r.get(7)?,
                user: subject.map(|id| EventUser {
                    id,
                    login: r.get(5).ok().flatten(),
                    display_name: r.get(6).ok().flatten(),
                }),
                groups: Vec::new(),
                statuses: BTreeMap::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| cursor(&e.received_at, &e.id))
    } else {
        None
    };

    let mut groups = conn.prepare_cached(
        "SELECT COALESCE(NULLIF(group_name, ''), group_id) FROM event_groups WHERE event_uuid = ?1 ORDER BY position",
    )?;
    let mut statuses =
        conn.prepare_cached("SELECT status, COUNT(*) FROM deliveries WHERE event_uuid = ?1 GROUP BY status")?;
    for e in &mut events {
        e.groups = groups.query_map([&e.id], |r| r.get(0))?.collect::<Result<_, _>>()?;
        for row in statuses.query_map([&e.id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (status, n) = row?;
            if let Some(status) = Status::parse(&status) {
                e.statuses.insert(status.as_str(), n.max(0) as u64);
            }
        }
    }
    Ok(EventPage { events, next })
}

pub(super) fn queue_stats(conn: &Connection, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
    let mut plugins: BTreeMap<String, PluginQueue> = BTreeMap::new();
    let mut counts = conn.prepare_cached("SELECT plugin, status, COUNT(*) FROM deliveries GROUP BY plugin, status")?;
    for row in counts.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))? {
        let (plugin, status, n) = row?;
        let q = plugins.entry(plugin.clone()).or_insert_with(|| PluginQueue { plugin, ..PluginQueue::default() });
        let n = n.max(0) as u64;
        match Status::parse(&status) {
            Some(Status::Pending) => q.pending = n,
            Some(Status::Running) => q.running = n,
            Some(Status::Retrying) => q.retrying = n,
            Some(Status::Held) => q.held = n,
            Some(Status::Done) => q.done = n,
            Some(Status::Dead) => q.dead = n,
            Some(Status::Discarded) => q.discarded = n,
            None => {}
        }
    }
    let mut oldest = conn.prepare_cached(
        "SELECT plugin, MIN(created_at) FROM deliveries WHERE status IN ('pending', 'retrying') GROUP BY plugin",
    )?;
    for row in oldest.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (plugin, created_at) = row?;
        if let Some(q) = plugins.get_mut(&plugin) {
            q.oldest_pending_age_secs = age_secs(now, &created_at);
            q.oldest_pending_at = Some(created_at);
        }
    }

    // Buckets keyed by the minute's text prefix (`YYYY-MM-DDTHH:MM`), which is how stored
    // times begin, so SQL groups by plain text.
    let first = chart_start(now);
    let mut per_minute: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut attempts = conn.prepare_cached(
        "SELECT substr(started_at, 1, 16), COUNT(*), SUM(CASE WHEN result = 'done' THEN 0 ELSE 1 END)
         FROM attempts WHERE started_at >= ?1 AND result <> 'superseded' GROUP BY substr(started_at, 1, 16)",
    )?;
    for row in attempts.query_map(params![fmt_time(first)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })? {
        let (minute, n, failed) = row?;
        per_minute.insert(minute, (n.max(0) as u64, failed.max(0) as u64));
    }
    let attempts_per_minute = chart(first, &per_minute);
    Ok(QueueStats { plugins: plugins.into_values().collect(), attempts_per_minute })
}
