//! What the admin API and the operator console read, assembled once for both stores: the
//! delivery pages and their cursor, the console's event search (its filters, order and
//! cursor) and the queue summary. A driver runs one query per [`ReadTx`] method; the paging,
//! the filter semantics and the shapes are decided here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::common::{age_secs, chart, chart_start, fmt_time};
use super::rows::{page, MAX_DELIVERY_PAGE, SUMMARY_COLUMNS};
use super::{
    like_pattern, AttemptView, DeliveryView, EventFilter, EventPage, EventSummary, EventView, PluginQueue, QueueStats,
    Status, StoreError, MAX_EVENT_PAGE,
};

/// The read queries of one driver. Each method is one query; rows come back as the API's
/// types, mapped by [`rows`](super::rows).
pub(crate) trait ReadTx {
    /// The event's row, without its deliveries.
    fn event_head(&mut self, uuid: &str) -> Result<Option<EventView>, StoreError>;
    /// The event's deliveries in ingest order.
    fn event_deliveries(&mut self, uuid: &str) -> Result<Vec<DeliveryView>, StoreError>;
    /// Up to `fetch` deliveries with an id after `after` (in `status`, when given), by id.
    fn delivery_page(
        &mut self,
        status: Option<Status>,
        after: &str,
        fetch: usize,
    ) -> Result<Vec<DeliveryView>, StoreError>;
    fn attempts(&mut self, delivery_id: &str) -> Result<Vec<AttemptView>, StoreError>;
    /// Deliveries per (plugin, status), ordered by plugin and status.
    fn plugin_status_counts(&mut self) -> Result<Vec<(String, Status, u64)>, StoreError>;
    /// Whether any delivery is pending, running or retrying.
    fn busy(&mut self) -> Result<bool, StoreError>;

    /// The driver's name for the `n`th parameter of a query (from 1).
    fn placeholder(&self, n: usize) -> String;
    /// Runs a search built by [`search_events`]: `sql` selects
    /// [`SUMMARY_COLUMNS`], `args` are its text parameters in order.
    fn search(&mut self, sql: &str, args: &[String]) -> Result<Vec<EventSummary>, StoreError>;
    /// The display names (the id where there is none) of the event's groups, in its order.
    fn event_groups(&mut self, uuid: &str) -> Result<Vec<String>, StoreError>;
    /// The event's deliveries per status.
    fn event_statuses(&mut self, uuid: &str) -> Result<Vec<(Status, u64)>, StoreError>;
    /// Per plugin, when its oldest pending or retrying delivery was created.
    fn oldest_waiting(&mut self) -> Result<Vec<(String, String)>, StoreError>;
    /// Attempts (and failed ones) that started at or after `since`, per minute prefix
    /// (`YYYY-MM-DDTHH:MM`), superseded ones left out.
    fn attempts_per_minute(&mut self, since: &str) -> Result<Vec<(String, u64, u64)>, StoreError>;
}

pub(crate) fn event(tx: &mut dyn ReadTx, uuid: &str) -> Result<Option<EventView>, StoreError> {
    let Some(mut view) = tx.event_head(uuid)? else {
        return Ok(None);
    };
    view.deliveries = tx.event_deliveries(uuid)?;
    Ok(Some(view))
}

/// Ids are fixed-width, so text order is ingest order and `id > after` pages correctly even
/// for an id that no longer exists.
pub(crate) fn deliveries(
    tx: &mut dyn ReadTx,
    status: Option<Status>,
    limit: usize,
    after: Option<&str>,
) -> Result<(Vec<DeliveryView>, Option<String>), StoreError> {
    let limit = limit.clamp(1, MAX_DELIVERY_PAGE);
    let rows = tx.delivery_page(status, after.unwrap_or(""), limit + 1)?;
    Ok(page(rows, limit, |d| d.id.clone()))
}

/// `received_at|uuid` of the last event of a page: the next page starts strictly after it.
/// `received_at` is fixed-width RFC 3339 and never contains `|`, so the first `|` splits.
fn cursor(e: &EventSummary) -> String {
    format!("{}|{}", e.received_at, e.id)
}

fn set(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// The console's search: plain `LIKE` on lower-cased columns with literal wildcards, so
/// both stores answer it the same way; newest first, paged by [`cursor`].
pub(crate) fn search_events(tx: &mut dyn ReadTx, filter: &EventFilter) -> Result<EventPage, StoreError> {
    let limit = filter.limit.clamp(1, MAX_EVENT_PAGE);
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM events e WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: String| {
        args.push(value);
        // Every clause names its parameter as `#`, numbered in the order they are pushed.
        sql.push_str(&clause.replace('#', &tx.placeholder(args.len())));
    };
    if let Some(text) = set(&filter.text) {
        arg(
            &mut sql,
            " AND (LOWER(COALESCE(e.subject_login, '')) LIKE # ESCAPE '\\'
                   OR LOWER(COALESCE(e.subject_name, '')) LIKE # ESCAPE '\\'
                   OR LOWER(COALESCE(e.subject, '')) LIKE # ESCAPE '\\'
                   OR LOWER(e.uuid) LIKE # ESCAPE '\\')",
            like_pattern(text),
        );
    }
    if let Some(event_type) = set(&filter.event_type) {
        arg(&mut sql, " AND LOWER(e.event_type) LIKE # ESCAPE '\\'", like_pattern(event_type));
    }
    if let Some(group) = set(&filter.group) {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM event_groups g WHERE g.event_uuid = e.uuid
                          AND (LOWER(COALESCE(g.group_name, '')) LIKE # ESCAPE '\\'
                               OR LOWER(g.group_id) LIKE # ESCAPE '\\'))",
            like_pattern(group),
        );
    }
    if let Some(source) = filter.source {
        arg(&mut sql, " AND e.source = #", source.as_str().to_owned());
    }
    if let Some(status) = filter.status {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_uuid = e.uuid AND d.status = #)",
            status.as_str().to_owned(),
        );
    }
    if let Some((received_at, uuid)) = filter.before.as_deref().and_then(|c| c.split_once('|')) {
        arg(&mut sql, " AND (e.received_at < #", received_at.to_owned());
        arg(&mut sql, " OR (e.received_at = #", received_at.to_owned());
        arg(&mut sql, " AND e.uuid < #))", uuid.to_owned());
    }
    // A number computed here, not operator input.
    sql.push_str(&format!(" ORDER BY e.received_at DESC, e.uuid DESC LIMIT {}", limit + 1));

    let (mut events, next) = page(tx.search(&sql, &args)?, limit, cursor);
    for e in &mut events {
        e.groups = tx.event_groups(&e.id)?;
        e.statuses = tx.event_statuses(&e.id)?.into_iter().map(|(s, n)| (s.as_str(), n)).collect();
    }
    Ok(EventPage { events, next })
}

/// The queue at a glance: counts per plugin and status, the oldest waiting delivery per
/// plugin, and the last hour's runs per minute.
pub(crate) fn queue_stats(tx: &mut dyn ReadTx, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
    let mut plugins: BTreeMap<String, PluginQueue> = BTreeMap::new();
    for (plugin, status, n) in tx.plugin_status_counts()? {
        let q = plugins.entry(plugin.clone()).or_insert_with(|| PluginQueue { plugin, ..PluginQueue::default() });
        *q.count_mut(status) = n;
    }
    for (plugin, created_at) in tx.oldest_waiting()? {
        if let Some(q) = plugins.get_mut(&plugin) {
            q.oldest_pending_age_secs = age_secs(now, &created_at);
            q.oldest_pending_at = Some(created_at);
        }
    }
    // Buckets keyed by the minute's text prefix, which is how stored times begin, so SQL
    // groups by plain text.
    let first = chart_start(now);
    let per_minute: BTreeMap<String, (u64, u64)> =
        tx.attempts_per_minute(&fmt_time(first))?.into_iter().map(|(m, n, failed)| (m, (n, failed))).collect();
    Ok(QueueStats { plugins: plugins.into_values().collect(), attempts_per_minute: chart(first, &per_minute) })
}

impl PluginQueue {
    /// The count of this plugin's deliveries in `status`.
    fn count_mut(&mut self, status: Status) -> &mut u64 {
        match status {
            Status::Pending => &mut self.pending,
            Status::Running => &mut self.running,
            Status::Retrying => &mut self.retrying,
            Status::Held => &mut self.held,
            Status::Done => &mut self.done,
            Status::Dead => &mut self.dead,
            Status::Discarded => &mut self.discarded,
        }
    }
}
