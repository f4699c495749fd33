//! What the operator console reads, from PostgreSQL: the same queries and semantics as the
//! SQLite store's `console` module (case-insensitive `LIKE` with literal wildcards, newest
//! first with a `received_at|uuid` cursor, 60 one-minute buckets).

use std::collections::BTreeMap;

use super::Conn;
use chrono::{DateTime, Utc};
use postgres::types::ToSql;

use crate::store::common::{age_secs, chart, chart_start, fmt_time, show_published};
use crate::store::{
    like_pattern, EventFilter, EventPage, EventSummary, EventUser, PluginQueue, QueueStats, Status, StoreError,
    MAX_EVENT_PAGE,
};

fn set(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn search_events(client: &mut Conn, filter: &EventFilter) -> Result<EventPage, StoreError> {
    let limit = filter.limit.clamp(1, MAX_EVENT_PAGE);
    let mut sql = String::from(
        "SELECT e.uuid, e.event_type, e.published, e.received_at, e.subject, e.subject_login, e.subject_name,
                e.source
         FROM events e WHERE TRUE",
    );
    let mut args: Vec<String> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: String| {
        args.push(value);
        sql.push_str(&clause.replace("$N", &format!("${}", args.len())));
    };
    if let Some(text) = set(&filter.text) {
        arg(
            &mut sql,
            " AND (LOWER(COALESCE(e.subject_login, '')) LIKE $N ESCAPE '\\'
                   OR LOWER(COALESCE(e.subject_name, '')) LIKE $N ESCAPE '\\'
                   OR LOWER(COALESCE(e.subject, '')) LIKE $N ESCAPE '\\'
                   OR LOWER(e.uuid) LIKE $N ESCAPE '\\')",
            like_pattern(text),
        );
    }
    if let Some(event_type) = set(&filter.event_type) {
        arg(&mut sql, " AND LOWER(e.event_type) LIKE $N ESCAPE '\\'", like_pattern(event_type));
    }
    if let Some(group) = set(&filter.group) {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM event_groups g WHERE g.event_uuid = e.uuid
                          AND (LOWER(COALESCE(g.group_name, '')) LIKE $N ESCAPE '\\'
                               OR LOWER(g.group_id) LIKE $N ESCAPE '\\'))",
            like_pattern(group),
        );
    }
    if let Some(source) = filter.source {
        arg(&mut sql, " AND e.source = $N", source.as_str().to_string());
    }
    if let Some(status) = filter.status {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_uuid = e.uuid AND d.status = $N)",
            status.as_str().to_string(),
        );
    }
    if let Some((received_at, uuid)) = filter.before.as_deref().and_then(|c| c.split_once('|')) {
        arg(&mut sql, " AND (e.received_at < $N", received_at.to_string());
        arg(&mut sql, " OR (e.received_at = $N", received_at.to_string());
        arg(&mut sql, " AND e.uuid < $N))", uuid.to_string());
    }
    // A number this function computed, not operator input.
    sql.push_str(&format!(" ORDER BY e.received_at DESC, e.uuid DESC LIMIT {}", limit + 1));

    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    let mut events: Vec<EventSummary> = client
        .query(sql.as_str(), &params)?
        .iter()
        .map(|r| EventSummary {
            id: r.get(0),
            event_type: r.get(1),
            published: show_published(r.get::<_, &str>(2)),
            received_at: r.get(3),
            source: r.get(7),
            user: r.get::<_, Option<String>>(4).map(|id| EventUser { id, login: r.get(5), display_name: r.get(6) }),
            groups: Vec::new(),
            statuses: BTreeMap::new(),
        })
        .collect();
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| format!("{}|{}", e.received_at, e.id))
    } else {
        None
    };

    let groups = client.prepare(
        "SELECT COALESCE(NULLIF(group_name, ''), group_id) FROM event_groups WHERE event_uuid = $1 ORDER BY position",
    )?;
    let statuses = client.prepare("SELECT status, COUNT(*) FROM deliveries WHERE event_uuid = $1 GROUP BY status")?;
    for e in &mut events {
        e.groups = client.query(&groups, &[&e.id])?.iter().map(|r| r.get(0)).collect();
        for r in client.query(&statuses, &[&e.id])? {
            if let Some(status) = Status::parse(r.get::<_, &str>(0)) {
                e.statuses.insert(status.as_str(), count(r.get(1)));
            }
        }
    }
    Ok(EventPage { events, next })
}

pub(super) fn queue_stats(client: &mut Conn, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
    let mut plugins: BTreeMap<String, PluginQueue> = BTreeMap::new();
    for r in client.query("SELECT plugin, status, COUNT(*) FROM deliveries GROUP BY plugin, status", &[])? {
        let plugin: String = r.get(0);
        let n = count(r.get(2));
        let q = plugins.entry(plugin.clone()).or_insert_with(|| PluginQueue { plugin, ..PluginQueue::default() });
        match Status::parse(r.get::<_, &str>(1)) {
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
    for r in client.query(
        "SELECT plugin, MIN(created_at) FROM deliveries WHERE status IN ('pending', 'retrying') GROUP BY plugin",
        &[],
    )? {
        let (plugin, created_at): (String, String) = (r.get(0), r.get(1));
        if let Some(q) = plugins.get_mut(&plugin) {
            q.oldest_pending_age_secs = age_secs(now, &created_at);
            q.oldest_pending_at = Some(created_at);
        }
    }

    let first = chart_start(now);
    let mut per_minute: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in client.query(
        "SELECT substr(started_at, 1, 16), COUNT(*), SUM(CASE WHEN result = 'done' THEN 0 ELSE 1 END)
         FROM attempts WHERE started_at >= $1 AND result <> 'superseded' GROUP BY substr(started_at, 1, 16)",
        &[&fmt_time(first)],
    )? {
        per_minute.insert(r.get(0), (count(r.get(1)), count(r.get(2))));
    }
    let attempts_per_minute = chart(first, &per_minute);
    Ok(QueueStats { plugins: plugins.into_values().collect(), attempts_per_minute })
}
