//! Durable state: events, deliveries, attempts and plugin KV, behind the [`Store`] trait.
//!
//! The embedded default is one SQLite file in WAL mode with `synchronous = FULL`: a write
//! the host acknowledged survives `kill -9` and power loss. Schema changes are numbered
//! migrations applied in order inside a transaction, recorded in `schema_migrations`.
//! A PostgreSQL backend implements the same trait for several hosts sharing one queue.
//!
//! Vocabulary: an **event** is one Okta LogEvent (identified by its `uuid`); a **delivery**
//! is one (event, plugin) pair, the unit that is claimed, retried and replayed; an
//! **attempt** is one run of a delivery's plugin.
//!
//! [`Store`] is the sum of one trait per concern: [`Intake`] (events coming in),
//! [`Queue`] (claim, leases, completion, replay, the guard's held deliveries),
//! [`EventReads`] (what the API and the console read) and [`KvBackend`] (plugin KV); async
//! code calls it through [`AsyncStore::run`]. The decisions are written once, over plain
//! rows: `queue_rules` (the queue), `intake` (what an ingest stores), `reads` (paging, the
//! console's search and summary), `guard` (the blast-radius guard) and `common` (stored
//! forms, landing after an attempt). Each driver only runs SQL: it implements the small
//! statement traits those modules define (`driver` ties them to the store traits), and
//! `rows` maps its result rows to the API's types.

pub(crate) mod common;
mod driver;
mod facade;
pub mod guard;
mod intake;
pub mod postgres;
pub(crate) mod queue_rules;
mod reads;
pub(crate) mod rows;
pub mod sqlite;
#[cfg(test)]
mod tests;
mod url;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::attempt::Attempt;
use crate::kv::KvBackend;
use crate::okta::Event;
pub use facade::AsyncStore;
pub use guard::GuardRule;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use url::StoreUrl;

/// A store failure. The message never contains secret values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A call made through [`AsyncStore::run`] did not finish (it panicked, or the runtime
    /// shut down under it).
    #[error("store call did not finish: {0}")]
    Interrupted(#[source] tokio::task::JoinError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// A delivery's state. Names are part of the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for its first attempt (or replayed).
    Pending,
    /// Claimed by a worker; its lease is live.
    Running,
    /// Failed retryably; waits until `next_attempt_at`.
    Retrying,
    /// Parked by the plugin's guard (docs/contract.md, "Guard"): waits, unexecuted, for an
    /// operator to release or discard it. It keeps its place in its user's order.
    Held,
    /// Finished: handled, or superseded by a later event.
    Done,
    /// Failed permanently or ran out of attempts; kept for inspection and replay.
    Dead,
    /// A held delivery an operator discarded: never run, kept in the history.
    Discarded,
}

impl Status {
    /// Every status, in the contract's order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Running,
        Status::Retrying,
        Status::Held,
        Status::Done,
        Status::Dead,
        Status::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Held => "held",
            Status::Done => "done",
            Status::Dead => "dead",
            Status::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How an event first reached hookhost (`docs/contract.md`, "Backfill"): by an Event Hook
/// delivery, by the System Log poller or `hookhost backfill`, or made by reconcile. Only the
/// first arrival counts; a later copy of the same `uuid` is a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Hook,
    SystemLog,
    Reconcile,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Hook, Source::SystemLog, Source::Reconcile];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hook => "hook",
            Source::SystemLog => "system_log",
            Source::Reconcile => "reconcile",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where the System Log poller stands, kept in the store beside its lease. `next_url` is the
/// last `Link rel="next"` Okta gave (the cursor; hookhost never builds one itself), `filter`
/// the query's event-type filter it belongs to, `last_published` the latest `published` (in
/// sortable form) seen, from which a query with a new filter restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub next_url: Option<String>,
    pub filter: Option<String>,
    pub last_published: Option<String>,
}

/// The `log_cursor` row of the System Log poller.
pub(crate) const LOG_CURSOR: &str = "system_log";

/// One event to store, with the plugins subscribed to it at ingest time.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    /// Plugins that get a delivery (one each).
    pub plugins: Vec<String>,
}

/// What [`Intake::ingest`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Events stored for the first time.
    pub stored: usize,
    /// Events already known by `uuid` (nothing new stored for them).
    pub duplicates: usize,
    /// Deliveries created.
    pub deliveries: usize,
    /// The `uuid`s of the events stored for the first time, in the order given (what the
    /// telemetry ingest spans are emitted for: a duplicate must not repeat its span).
    pub new_events: Vec<String>,
}

/// A delivery claimed by a worker, with what the worker needs to run it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub delivery_id: String,
    pub plugin: String,
    pub event: Event,
    /// Attempts already made before this one.
    pub attempts: u32,
    /// Identifies this claim; renew and complete must present it (a stale worker whose
    /// lease expired and was re-claimed elsewhere cannot overwrite the newer claim).
    pub lease_token: String,
    /// Whether this run was asked for by an operator's replay (replays always run).
    pub replay: bool,
}

/// Where a delivery goes after an attempt (or instead of one).
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Done,
    Retry {
        at: DateTime<Utc>,
    },
    Dead,
    /// Ends `done` without running; names the later event that made it stale.
    Superseded {
        by_event: String,
    },
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub plugin: String,
    /// Version of the plugin that ran the latest attempt (null before any attempt).
    pub plugin_version: Option<String>,
    pub status: Status,
    pub attempts: u32,
    /// RFC 3339 UTC; null when not scheduled.
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// An event as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub id: String,
    pub event_type: String,
    pub published: String,
    pub received_at: String,
    pub okta_delivery_id: Option<String>,
    /// [`Source::as_str`]: how the event first arrived.
    pub source: String,
    pub deliveries: Vec<DeliveryView>,
}

/// One recorded attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub delivery_id: String,
    pub number: u32,
    pub plugin_version: String,
    pub plugin_sha256: String,
    pub started_at: String,
    pub duration_ms: u64,
    /// [`crate::attempt::AttemptResult::kind`], or `superseded`.
    pub result: String,
    pub error: Option<String>,
    /// The attempt's log lines as JSON.
    pub log: serde_json::Value,
}

/// What [`Queue::claim_guarded`] did: the deliveries claimed, and those its plugin's guard
/// parked as `held` instead.
#[derive(Debug, Clone, Default)]
pub struct ClaimBatch {
    pub claims: Vec<Claim>,
    pub held: Vec<HeldDelivery>,
}

/// A delivery a claim parked as `held`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDelivery {
    pub delivery_id: String,
    pub plugin: String,
    /// The first delivery held while none of its plugin was: the guard tripped here.
    pub trips: bool,
}

/// Answer to a replay request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Accepted,
    NotFound,
    /// Pending, running or retrying: already on its way.
    Conflict(Status),
}

/// Durable state of hookhost: what arrives ([`Intake`]), the delivery queue ([`Queue`]),
/// what the API and the console read ([`EventReads`]) and plugin KV ([`KvBackend`]). Every
/// method of each is a short synchronous transaction; callers on the async runtime go
/// through [`AsyncStore::run`].
pub trait Store: Intake + Queue + EventReads + KvBackend + Send + Sync {
    /// `"sqlite"` or `"postgresql"`: what `/healthz` and logs name.
    fn kind(&self) -> &'static str;
}

/// Events coming in: Event Hook deliveries, System Log pages and reconcile's events.
pub trait Intake {
    /// Stores a delivery's events and their deliveries in one durable commit. An event whose
    /// `uuid` is already stored is a duplicate: nothing is added for it.
    fn ingest(&self, okta_delivery_id: Option<&str>, events: &[NewEvent]) -> Result<IngestReport, StoreError>;

    /// Stores events that came another way than a hook (exactly as [`Intake::ingest`] does,
    /// duplicates included, but recording `source`), and, with `cursor`, moves the System Log
    /// cursor in the **same** transaction: a crash either keeps a page and its cursor or
    /// neither. `cursor` is `(holder, position)`; when `holder` no longer holds the poller's
    /// lease nothing is stored and the answer is `None` (another host polls now).
    fn ingest_page(
        &self,
        source: Source,
        events: &[NewEvent],
        cursor: Option<(&str, &LogCursor)>,
    ) -> Result<Option<IngestReport>, StoreError>;

    /// Takes or renews the System Log poller's lease for `holder` until `now + lease`, and
    /// answers the stored cursor; `None` while another holder's lease is live. With a shared
    /// store this is what keeps the poller to one host at a time.
    fn log_lease(&self, holder: &str, now: DateTime<Utc>, lease: Duration) -> Result<Option<LogCursor>, StoreError>;
}

/// The delivery queue: claim, leases, completion, supersede, replay, and the operator's
/// answers to the guard. Both stores get it from `queue_rules`, which makes every decision
/// and leaves the SQL to the driver.
pub trait Queue {
    /// Claims up to `limit` due deliveries for `host_id` with a lease until `now + lease`.
    ///
    /// Ordering: for one (plugin, subject user), only the earliest-`published` unfinished
    /// delivery can be claimed, and only when no delivery of that pair is running; deliveries
    /// without a subject are independent. `max_running` caps running deliveries per plugin
    /// that `host_id` runs (those it already runs count; other hosts bring their own capacity);
    /// a plugin for which it answers 0 (e.g. one not loaded now) is not claimed at all, so its
    /// deliveries wait.
    fn claim(
        &self,
        host_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        max_running: &(dyn Fn(&str) -> usize + Sync),
    ) -> Result<Vec<Claim>, StoreError> {
        Ok(self.claim_guarded(host_id, now, lease, limit, max_running, &|_| None)?.claims)
    }

    /// [`Queue::claim`] with each plugin's guard (`guard(plugin)`, `None` for none): a
    /// candidate the guard does not admit ([`guard::GuardCount::admit`]) is parked as `held`
    /// in the same transaction instead of claimed.
    fn claim_guarded(
        &self,
        host_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        max_running: &(dyn Fn(&str) -> usize + Sync),
        guard: &(dyn Fn(&str) -> Option<GuardRule> + Sync),
    ) -> Result<ClaimBatch, StoreError>;

    /// An operator's release of a plugin's held deliveries: back to pending (to run in
    /// their usual order, exempt from the guard), and the guard's window starts afresh at
    /// `now`. Returns how many were released.
    fn release_held(&self, plugin: &str, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// An operator's discard of a plugin's held deliveries: `discarded`, never run, kept in
    /// the history. Returns how many were discarded.
    fn discard_held(&self, plugin: &str, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Extends a running claim's lease. Returns false when the claim is no longer ours.
    fn renew(&self, delivery_id: &str, lease_token: &str, until: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Puts a claimed delivery back to pending without recording an attempt (e.g. its plugin
    /// was removed between claim and run). Returns false when the claim is no longer ours.
    fn release(&self, delivery_id: &str, lease_token: &str) -> Result<bool, StoreError>;

    /// Records an attempt (if any) and moves the delivery to `next`, if the claim is still ours
    /// (status running and the same `lease_token`; otherwise nothing changes and it returns
    /// false). `attempts` counts plugin runs, so it grows only when `attempt` is given.
    /// `last_error` becomes the attempt's [`describe`](crate::attempt::AttemptResult::describe)
    /// on retry or dead, and null on done. [`Next::Superseded`] ends `done` with a history row
    /// whose result is `superseded` and whose error names the later event.
    fn complete(
        &self,
        delivery_id: &str,
        lease_token: &str,
        attempt: Option<&Attempt>,
        next: &Next,
    ) -> Result<bool, StoreError>;

    /// Returns to pending every running delivery whose lease expired before `now`, or, with
    /// `host_id`, every running delivery of that host (its own stale claims at start-up).
    fn release_claims(&self, now: DateTime<Utc>, host_id: Option<&str>) -> Result<usize, StoreError>;

    /// For supersede: the uuid of a later-published event for the same plugin and subject
    /// that already ran to `done`, and concerns the same group or is a user lifecycle event.
    /// A delivery that was itself superseded did not run and does not count.
    fn newer_done(&self, plugin: &str, event: &Event) -> Result<Option<String>, StoreError>;

    /// Puts a done, dead, held or discarded delivery back to pending (the next run is marked
    /// as a replay, and runs whatever the guard says).
    fn replay(&self, delivery_id: &str) -> Result<ReplayOutcome, StoreError>;
}

/// What the admin API and the operator console read: events, deliveries, attempts, counts.
pub trait EventReads {
    fn event(&self, uuid: &str) -> Result<Option<EventView>, StoreError>;
    /// Deliveries by status, oldest first, paged by opaque id (`after`).
    fn deliveries(
        &self,
        status: Option<Status>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<DeliveryView>, Option<String>), StoreError>;
    fn attempts(&self, delivery_id: &str) -> Result<Vec<AttemptView>, StoreError>;
    /// Count of deliveries per (plugin, status).
    fn counts(&self) -> Result<Vec<(String, Status, u64)>, StoreError>;
    /// Whether any delivery is pending, running or retrying.
    fn busy(&self) -> Result<bool, StoreError>;

    // What the operator console reads. Two plain queries, so every backend answers them the
    // same way; the semantics are on the types ([`EventFilter`], [`QueueStats`]).

    /// A page of events, most recently received first (`received_at` descending, then `id`
    /// descending), matching every filter that is set. `next` is an opaque cursor for
    /// [`EventFilter::before`], or `None` on the last page.
    fn search_events(&self, filter: &EventFilter) -> Result<EventPage, StoreError>;

    /// The queue at a glance, as of `now`: delivery counts and the oldest queued delivery per
    /// plugin, and plugin runs per minute over the last hour.
    fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats, StoreError>;
}

/// What [`EventReads::search_events`] selects. Unset fields select everything; set ones combine
/// with AND. Text filters are case-insensitive substring matches (SQL `LOWER(col) LIKE
/// '%' || LOWER(text) || '%'`, with `%`, `_` and backslash in the text matched literally;
/// see [`like_pattern`]); blank text counts as unset.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Matches the subject user's login (the `User` target's `alternateId`, usually the
    /// email), display name or Okta id, or the event's uuid.
    pub text: Option<String>,
    /// Matches the event type (`membership` finds both add and remove).
    pub event_type: Option<String>,
    /// Matches the display name or the Okta id of any `UserGroup` target of the event.
    pub group: Option<String>,
    /// The event has at least one delivery in this status.
    pub status: Option<Status>,
    /// The event first arrived this way.
    pub source: Option<Source>,
    /// Page size; backends clamp it to 1..=[`MAX_EVENT_PAGE`].
    pub limit: usize,
    /// Only events after this cursor in the order above (a `next` from an earlier page).
    pub before: Option<String>,
}

/// Largest page [`EventReads::search_events`] returns.
pub const MAX_EVENT_PAGE: usize = 200;

/// The SQL `LIKE` pattern for a case-insensitive substring search of `text` (compare it with
/// `LOWER(col) LIKE ? ESCAPE` backslash): lower-cased, with the wildcards `%`, `_` and the
/// backslash itself escaped, so an operator's text is matched literally.
pub fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// One page of [`EventReads::search_events`].
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    /// Cursor for the next (older) page; `None` on the last page.
    pub next: Option<String>,
}

/// An event as the console's list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: String,
    pub event_type: String,
    /// RFC 3339 UTC, as in [`EventView`].
    pub published: String,
    pub received_at: String,
    /// [`Source::as_str`]: how the event first arrived (the console marks `system_log` ones
    /// as recovered).
    pub source: String,
    /// The subject (the first `User` target); `None` for an event without one.
    pub user: Option<EventUser>,
    /// Display names of the event's `UserGroup` targets (the id where a target has no name),
    /// in the event's order.
    pub groups: Vec<String>,
    /// Number of the event's deliveries in each status; absent statuses are left out, so an
    /// event no plugin subscribed to has an empty map.
    pub statuses: BTreeMap<&'static str, u64>,
}

/// The user an event is about, as Okta names it in the event (no lookup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventUser {
    /// Okta user id.
    pub id: String,
    /// The `alternateId` (the Okta login).
    pub login: Option<String>,
    pub display_name: Option<String>,
}

/// [`EventReads::queue_stats`]: what an on-call admin looks at first.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    /// One entry per plugin that has any delivery, by name.
    pub plugins: Vec<PluginQueue>,
    /// Exactly 60 one-minute buckets, oldest first; the last is the minute `now` falls in
    /// (so it is partial). Empty minutes are present with zeros.
    pub attempts_per_minute: Vec<MinuteAttempts>,
}

/// One plugin's deliveries by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginQueue {
    pub plugin: String,
    pub pending: u64,
    pub running: u64,
    pub retrying: u64,
    pub held: u64,
    pub done: u64,
    pub dead: u64,
    pub discarded: u64,
    /// When the oldest delivery still waiting (pending or retrying) was created; `None` when
    /// nothing waits.
    pub oldest_pending_at: Option<String>,
    /// `now - oldest_pending_at` in whole seconds (0 if the clock went back).
    pub oldest_pending_age_secs: Option<u64>,
}

/// Plugin runs that started within one UTC minute (`minute <= started_at < minute + 60 s`).
/// Superseded deliveries did not run and are not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteAttempts {
    /// The minute's start, RFC 3339 UTC (`2026-11-28T10:41:00.000Z`).
    pub minute: String,
    pub attempts: u64,
    /// Those whose result was not `done` (retryable, permanent, trapped, timed out, ...).
    pub failed: u64,
}
