//! Result rows read the same way whichever driver fetched them. The shared code that turns
//! rows into the API's views, the console's summaries and the queue's candidates asks for a
//! column by position and kind through [`Columns`]; each driver answers from its own row
//! type. So the mapping from columns to fields exists once, and each driver keeps only its
//! SQL (which must select the columns in the order the mapping names).

use std::collections::BTreeMap;

use super::common::show_published;
use super::{AttemptView, DeliveryView, EventSummary, EventUser, EventView, StoreError};
use crate::store::Status;

/// One result row, read by position.
pub(crate) trait Columns {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.get(i)?)
    }
}

impl Columns for postgres::Row {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.try_get(i)?)
    }
}

/// A count or a number the schema keeps non-negative, as the API shows it.
pub(crate) fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// An attempt number or count (the schema stores them as integers).
pub(crate) fn small(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Largest page [`EventReads::deliveries`](super::EventReads::deliveries) returns, whatever
/// `limit` asks for.
pub(crate) const MAX_DELIVERY_PAGE: usize = 1000;

/// What a [`delivery`] row selects, in its order.
pub(crate) const DELIVERY_COLUMNS: &str =
    "id, event_uuid, plugin, plugin_version, status, attempts, next_attempt_at, last_error";

/// A row of [`DELIVERY_COLUMNS`].
pub(crate) fn delivery(r: &impl Columns) -> Result<DeliveryView, StoreError> {
    Ok(DeliveryView {
        id: r.text(0)?,
        event_id: r.text(1)?,
        plugin: r.text(2)?,
        plugin_version: r.opt_text(3)?,
        // The CHECK constraint admits only the status names.
        status: Status::parse(&r.text(4)?).unwrap_or(Status::Pending),
        attempts: small(r.int(5)?),
        next_attempt_at: r.opt_text(6)?,
        last_error: r.opt_text(7)?,
    })
}

/// What an [`event_head`] row selects, in its order.
pub(crate) const EVENT_COLUMNS: &str = "uuid, event_type, published, received_at, okta_delivery_id, source";

/// A row of [`EVENT_COLUMNS`], without its deliveries yet.
pub(crate) fn event_head(r: &impl Columns) -> Result<EventView, StoreError> {
    Ok(EventView {
        id: r.text(0)?,
        event_type: r.text(1)?,
        published: show_published(&r.text(2)?),
        received_at: r.text(3)?,
        okta_delivery_id: r.opt_text(4)?,
        source: r.text(5)?,
        deliveries: Vec::new(),
    })
}

/// What an [`attempt`] row selects, in its order.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "delivery_id, number, plugin_version, plugin_sha256, started_at, duration_ms, result, error, log";

/// A row of [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt(r: &impl Columns) -> Result<AttemptView, StoreError> {
    Ok(AttemptView {
        delivery_id: r.text(0)?,
        number: small(r.int(1)?),
        plugin_version: r.text(2)?,
        plugin_sha256: r.text(3)?,
        started_at: r.text(4)?,
        duration_ms: unsigned(r.int(5)?),
        result: r.text(6)?,
        error: r.opt_text(7)?,
        log: serde_json::from_str(&r.text(8)?).unwrap_or(serde_json::Value::Null),
    })
}

/// What an [`event_summary`] row selects, in its order (from `events e`).
pub(crate) const SUMMARY_COLUMNS: &str =
    "e.uuid, e.event_type, e.published, e.received_at, e.subject, e.subject_login, e.subject_name, e.source";

/// A row of [`SUMMARY_COLUMNS`], without its groups and statuses yet.
pub(crate) fn event_summary(r: &impl Columns) -> Result<EventSummary, StoreError> {
    Ok(EventSummary {
        id: r.text(0)?,
        event_type: r.text(1)?,
        published: show_published(&r.text(2)?),
        received_at: r.text(3)?,
        source: r.text(7)?,
        user: match r.opt_text(4)? {
            Some(id) => Some(EventUser { id, login: r.opt_text(5)?, display_name: r.opt_text(6)? }),
            None => None,
        },
        groups: Vec::new(),
        statuses: BTreeMap::new(),
    })
}

/// A `(plugin, status, count)` row (what `GROUP BY plugin, status` answers); `None` for a
/// status this version does not know.
pub(crate) fn plugin_status_count(r: &impl Columns) -> Result<Option<(String, Status, u64)>, StoreError> {
    let Some(status) = Status::parse(&r.text(1)?) else {
        return Ok(None);
    };
    Ok(Some((r.text(0)?, status, unsigned(r.int(2)?))))
}

/// A `(status, count)` row; `None` for a status this version does not know.
pub(crate) fn status_count(r: &impl Columns) -> Result<Option<(Status, u64)>, StoreError> {
    let Some(status) = Status::parse(&r.text(0)?) else {
        return Ok(None);
    };
    Ok(Some((status, unsigned(r.int(1)?))))
}

/// A page cut from `limit + 1` fetched rows: the first `limit`, and the cursor of the last
/// one kept when more follow.
pub(crate) fn page<T>(mut rows: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(cursor);
        (rows, next)
    } else {
        (rows, None)
    }
}
