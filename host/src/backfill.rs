//! Backfill: recovering, from Okta's System Log, the events its event hooks dropped.
//!
//! Okta delivers event hooks best-effort (about 3 s timeout, one retry), so whatever it sent
//! while hookhost was down or unreachable is gone from the hook side; the System Log keeps
//! every event for 90 days. This module reads it two ways (`docs/contract.md`, "Backfill"):
//!
//! - [`Poller`], inside `serve` when `[okta.backfill] enabled`: Okta's polling mode. The first
//!   query asks for the active plugins' event types since `lookback_secs` ago, oldest first;
//!   after that only the `Link rel="next"` Okta returns is followed, forever. That link is the
//!   cursor, and it is stored in the transaction that stores the page's events
//!   ([`Store::ingest_page`]): a crash replays at most one page (duplicates by `uuid`, which
//!   ingest drops) and skips none. An empty page means caught up: wait `every_secs`. When the
//!   set of event types changes, the query restarts from the latest `published` seen with the
//!   new filter (the overlap is de-duplicated). With a shared store the poller holds a lease
//!   row, so one host polls at a time; another takes over when it lapses.
//! - [`sweep`], for `hookhost backfill --since … [--until …]`: one bounded pass.
//!
//! Log events take the hook's path into the store: the same parse ([`Event::from_value`]), the
//! same routing to plugins, the same de-duplication, ordering and supersede; they are recorded
//! with source `system_log`. Nothing here runs plugins.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::config::BackfillConfig;
use crate::metrics::Metrics;
use crate::okta::Event;
use crate::okta_api::{event_type_filter, OktaApi, OktaApiError, MAX_LOG_PAGE};
use crate::registry::PluginSet;
use crate::store::common::published_key;
use crate::store::{AsyncStore, IngestReport, LogCursor, NewEvent, Source, Store, StoreError};

/// Seconds of a lease for one request and its commit, beyond the waits between polls.
const REQUEST_SECS: u64 = 10;

/// Which plugins get a delivery of an event (the router ingest uses).
pub type Router = dyn Fn(&Event) -> Vec<String> + Send + Sync;

/// LogEvents parsed for the store. Events that do not parse are skipped with a warning (the
/// System Log is Okta's own output; a hook delivery with such an event would be refused).
/// Also answers the latest `published` among them, in sortable form.
fn prepare(raw: &[Value], route: &Router) -> (Vec<NewEvent>, Option<String>) {
    let mut events = Vec::with_capacity(raw.len());
    let mut latest: Option<String> = None;
    for (i, value) in raw.iter().enumerate() {
        match Event::from_value(value) {
            Ok(event) => {
                let key = published_key(&event.published);
                if latest.as_ref().is_none_or(|l| key > *l) {
                    latest = Some(key);
                }
                events.push(NewEvent { plugins: route(&event), event });
            }
            Err(problem) => tracing::warn!(index = i, %problem, "skipping a System Log event hookhost cannot read"),
        }
    }
    (events, latest)
}

/// A `since` for Okta from a sortable `published` (milliseconds, rounded down, so the event
/// itself is asked for again rather than skipped).
fn since_of(published_key: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(published_key)
        .ok()
        .map(|t| t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn later(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Why a poll step failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Okta(#[from] OktaApiError),
}

/// What one step of the poller did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stored a non-empty page: ask for the next one now.
    Page(IngestReport),
    /// An empty page: caught up, wait `every_secs`.
    CaughtUp,
    /// Another host holds the lease, or no plugin subscribes to anything: wait.
    Idle,
    /// Okta said 429: the next request waits for the reset.
    Throttled,
}

/// The System Log poller of `serve`.
pub struct Poller {
    pub store: Arc<dyn Store>,
    pub plugins: Arc<PluginSet>,
    pub api: Arc<OktaApi>,
    pub config: BackfillConfig,
    /// This host's id: the lease holder.
    pub holder: String,
    pub metrics: Arc<Metrics>,
    /// Called after new deliveries are committed (wakes the dispatcher).
    pub on_stored: Arc<dyn Fn() + Send + Sync>,
}

impl Poller {
    /// How long the lease lasts: two waits of `every_secs` plus time for a request to Okta and
    /// the page's commit (a slower one is not lost: if another host took over meanwhile, the
    /// page does not commit and the cursor still points at it). A rate limit's reset is waited out *before* the lease is taken, so a
    /// throttled poller holds nothing; if it sleeps past its lease another host may take
    /// over, which is safe because a page only commits under a lease its host still holds.
    fn lease(&self) -> Duration {
        Duration::from_secs(self.config.every_secs.saturating_mul(2).saturating_add(REQUEST_SECS))
    }

    /// Polls until the task is dropped. Store or Okta failures are logged and retried after
    /// `every_secs` (at most 30 s); the store's cursor makes a retry safe.
    pub async fn run(self: Arc<Self>) {
        let every = Duration::from_secs(self.config.every_secs);
        tracing::info!(org = %self.api.origin(), every_secs = self.config.every_secs, "System Log backfill is on");
        loop {
            match self.step().await {
                Ok(Step::Page(_) | Step::Throttled) => continue,
                Ok(Step::CaughtUp | Step::Idle) => tokio::time::sleep(every).await,
                Err(e) => {
                    tracing::warn!(error = %e, "System Log poll failed; retrying");
                    tokio::time::sleep(every.min(Duration::from_secs(30))).await;
                }
            }
        }
    }

    /// The event types of the active plugins, as a filter.
    fn filter(&self) -> Option<String> {
        let types: Vec<String> = self.plugins.all().iter().flat_map(|p| p.spec.event_types.clone()).collect();
        event_type_filter(&types)
    }

    /// One request to Okta and, if it answered, one commit.
    ///
    /// # Errors
    /// The store or Okta failed; nothing was half-done.
    pub async fn step(&self) -> Result<Step, PollError> {
        self.api.wait_turn().await;
        let (holder, lease) = (self.holder.clone(), self.lease());
        let Some(cursor) = self.store.run(move |s| s.log_lease(&holder, Utc::now(), lease)).await? else {
            return Ok(Step::Idle);
        };
        let Some(filter) = self.filter() else {
            return Ok(Step::Idle);
        };
        let url = match (&cursor.next_url, &cursor.filter) {
            (Some(next), Some(f)) if *f == filter => next.clone(),
            _ => {
                let since = match cursor.last_published.as_deref().and_then(since_of) {
                    Some(since) => {
                        tracing::info!(%since, %filter, "System Log query (re)starts from the latest event seen");
                        since
                    }
                    None => {
                        let lookback =
                            chrono::TimeDelta::seconds(i64::try_from(self.config.lookback_secs).unwrap_or(0));
                        (Utc::now() - lookback).to_rfc3339_opts(SecondsFormat::Millis, true)
                    }
                };
                self.api.logs_url(&since, None, MAX_LOG_PAGE, Some(&filter))
            }
        };
        let page = match self.api.log_page(&url).await {
            Ok(p) => p,
            Err(OktaApiError::RateLimited) => return Ok(Step::Throttled),
            Err(e) => return Err(e.into()),
        };
        self.metrics.backfill_polled(Utc::now());
        let plugins = self.plugins.clone();
        let route = move |e: &Event| plugins.subscribers(e);
        let (events, latest) = prepare(&page.events, &route);
        let empty = page.events.is_empty();
        let next = LogCursor {
            next_url: page.next,
            filter: Some(filter),
            last_published: later(cursor.last_published, latest),
        };
        let holder = self.holder.clone();
        let started = std::time::SystemTime::now();
        let stored =
            self.store.run(move |s| s.ingest_page(Source::SystemLog, &events, Some((holder.as_str(), &next)))).await?;
        let Some(report) = stored else {
            tracing::info!("another host took over the System Log poller; this one stands by");
            return Ok(Step::Idle);
        };
        self.metrics.events_ingested(Source::SystemLog, report.stored as u64);
        if report.deliveries > 0 {
            (self.on_stored)();
        }
        let origin = crate::telemetry::IngestOrigin {
            source: Source::SystemLog.as_str(),
            okta_delivery_id: None,
            events: page.events.len(),
        };
        crate::telemetry::record_ingest(origin, &report.new_events, started);
        if report.stored > 0 {
            tracing::info!(
                found = page.events.len(),
                new = report.stored,
                deliveries = report.deliveries,
                "recovered events from the System Log"
            );
        }
        Ok(if empty { Step::CaughtUp } else { Step::Page(report) })
    }
}

/// What [`sweep`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// LogEvents Okta returned.
    pub found: usize,
    /// Of those, events not stored before.
    pub new: usize,
    pub deliveries: usize,
    pub pages: usize,
}

/// One bounded pass over the System Log from `since` (to `until`) for `event_types`: follows
/// the next links until a page is empty or none is given, storing each page as the poller
/// does, without touching the poller's cursor.
///
/// # Errors
/// The store or Okta failed (pages stored before stay stored; running it again is safe).
pub async fn sweep(
    api: &OktaApi,
    store: Arc<dyn Store>,
    route: Arc<Router>,
    event_types: &[String],
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<SweepReport, PollError> {
    let mut report = SweepReport::default();
    let Some(filter) = event_type_filter(event_types) else {
        return Ok(report);
    };
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut url = api.logs_url(&fmt(since), until.map(fmt).as_deref(), MAX_LOG_PAGE, Some(&filter));
    loop {
        let page = match api.log_page(&url).await {
            Ok(p) => p,
            // The next call waits for the reset.
            Err(OktaApiError::RateLimited) => continue,
            Err(e) => return Err(e.into()),
        };
        report.pages += 1;
        if page.events.is_empty() {
            return Ok(report);
        }
        let (events, _) = prepare(&page.events, &*route);
        report.found += page.events.len();
        let started = std::time::SystemTime::now();
        if let Some(r) = store.run(move |s| s.ingest_page(Source::SystemLog, &events, None)).await? {
            let origin = crate::telemetry::IngestOrigin {
                source: Source::SystemLog.as_str(),
                okta_delivery_id: None,
                events: page.events.len(),
            };
            crate::telemetry::record_ingest(origin, &r.new_events, started);
            report.new += r.stored;
            report.deliveries += r.deliveries;
        }
        match page.next {
            Some(next) => url = next,
            None => return Ok(report),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_asks_again_for_the_latest_event_rather_than_skip_it() {
        assert_eq!(since_of("2024-05-01T10:00:00.123456789Z").as_deref(), Some("2024-05-01T10:00:00.123Z"));
        assert_eq!(later(Some("b".into()), Some("a".into())).as_deref(), Some("b"));
        assert_eq!(later(None, Some("a".into())).as_deref(), Some("a"));
    }

    #[test]
    fn unreadable_log_events_are_skipped_and_the_latest_published_is_kept() {
        let raw = vec![
            serde_json::json!({"uuid": "a", "eventType": "t", "published": "2024-05-01T10:00:02Z"}),
            serde_json::json!({"uuid": "b", "eventType": "t"}),
            serde_json::json!({"uuid": "c", "eventType": "t", "published": "2024-05-01T12:00:01+02:00"}),
        ];
        let route = |_: &Event| vec!["p".to_string()];
        let (events, latest) = prepare(&raw, &route);
        assert_eq!(events.iter().map(|e| e.event.uuid.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(events[0].plugins, ["p"]);
        assert_eq!(latest.as_deref(), Some("2024-05-01T10:00:02.000000000Z"));
    }
}
