//! What storing a batch of events means, written once for both stores: an event already
//! known by `uuid` is a duplicate and adds nothing; a new one is stored with the columns
//! the queue and the console search by (its sortable `published`, subject, groups), its
//! `UserGroup` targets in order, and one pending delivery per subscribed plugin. A driver
//! only runs the three inserts ([`IngestTx`]), inside the transaction it chose.

use super::common::{group_ids, now, published_key};
use super::{IngestReport, NewEvent, Source, StoreError};
use crate::okta::Event;

/// One event as the `events` row stores it.
pub(crate) struct EventRow<'a> {
    pub event: &'a Event,
    /// [`published_key`]: `published` in sortable form.
    pub published_key: String,
    /// The event's group ids as a JSON array (what supersede compares).
    pub group_ids: String,
    pub subject: Option<&'a str>,
    /// The subject's `alternateId` and display name (what the console searches).
    pub subject_login: Option<&'a str>,
    pub subject_name: Option<&'a str>,
    pub received_at: &'a str,
    pub okta_delivery_id: Option<&'a str>,
    pub source: Source,
}

/// The three inserts of an ingest, in the driver's SQL.
pub(crate) trait IngestTx {
    /// Inserts the event unless its `uuid` is stored already; whether it was new.
    fn insert_event(&mut self, row: &EventRow<'_>) -> Result<bool, StoreError>;
    /// Records one of the event's `UserGroup` targets at `position` among its targets.
    fn insert_group(
        &mut self,
        event_uuid: &str,
        group_id: &str,
        group_name: Option<&str>,
        position: i64,
    ) -> Result<(), StoreError>;
    /// Creates the event's pending delivery for `plugin` unless it exists; whether it was new.
    fn insert_delivery(&mut self, row: &EventRow<'_>, plugin: &str) -> Result<bool, StoreError>;
}

/// Stores `events` (received now) through `tx` and counts what was new.
pub(crate) fn store_events(
    tx: &mut dyn IngestTx,
    okta_delivery_id: Option<&str>,
    events: &[NewEvent],
    source: Source,
) -> Result<IngestReport, StoreError> {
    let received_at = now();
    let mut report = IngestReport::default();
    for new in events {
        let event = &new.event;
        let user = event.target("User");
        let row = EventRow {
            event,
            published_key: published_key(&event.published),
            group_ids: serde_json::to_string(&group_ids(event))
                .map_err(|e| StoreError::Unavailable(format!("cannot encode group ids: {e}")))?,
            subject: event.subject(),
            subject_login: user.and_then(|u| u.alternate_id.as_deref()),
            subject_name: user.and_then(|u| u.display_name.as_deref()),
            received_at: &received_at,
            okta_delivery_id,
            source,
        };
        if !tx.insert_event(&row)? {
            report.duplicates += 1;
            continue;
        }
        report.stored += 1;
        report.new_events.push(event.uuid.clone());
        for (position, group) in event.targets.iter().enumerate().filter(|(_, t)| t.kind == "UserGroup") {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            tx.insert_group(&event.uuid, &group.id, group.display_name.as_deref(), position)?;
        }
        for plugin in &new.plugins {
            if tx.insert_delivery(&row, plugin)? {
                report.deliveries += 1;
            }
        }
    }
    Ok(report)
}
