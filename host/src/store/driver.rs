//! What a SQL driver gives the shared code, and the store traits built from it. A driver
//! (SQLite, PostgreSQL) implements [`Statements`] (its SQL: [`QueueTx`] and [`ReadTx`]) and
//! [`Driver`] (how it runs them: in a transaction or not); [`Queue`] and [`EventReads`] are
//! then implemented here, once, by the rules in [`queue_rules`] and [`reads`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::common::{fmt_time, now};
use super::queue_rules::{self, QueueTx};
use super::reads::{self, ReadTx};
use super::{
    AttemptView, ClaimBatch, DeliveryView, EventFilter, EventPage, EventReads, EventView, GuardRule, Next, Queue,
    QueueStats, ReplayOutcome, Status, StoreError,
};
use crate::attempt::Attempt;
use crate::okta::Event;

/// A driver's SQL: one statement per method.
pub(crate) trait Statements: QueueTx + ReadTx {}

impl<T: QueueTx + ReadTx> Statements for T {}

/// How a driver runs its [`Statements`].
pub(crate) trait Driver {
    /// Runs `f` in one transaction, committed when `f` answers `Ok` (rolled back otherwise).
    fn in_transaction<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Statements) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError>;

    /// Runs `f` without an explicit transaction (single statements, and reads).
    fn autocommit<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Statements) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError>;
}

impl<D: Driver + Send + Sync> Queue for D {
    fn claim_guarded(
        &self,
        host_id: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        max_running: &(dyn Fn(&str) -> usize + Sync),
        guard: &(dyn Fn(&str) -> Option<GuardRule> + Sync),
    ) -> Result<ClaimBatch, StoreError> {
        if limit == 0 {
            return Ok(ClaimBatch::default());
        }
        self.in_transaction(|tx| queue_rules::claim(tx, host_id, now, lease, limit, max_running, guard))
    }

    fn release_held(&self, plugin: &str, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.in_transaction(|tx| queue_rules::release_held(tx, plugin, now))
    }

    fn discard_held(&self, plugin: &str, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.autocommit(|tx| tx.discard_held(plugin, &fmt_time(now)))
    }

    fn renew(&self, delivery_id: &str, lease_token: &str, until: DateTime<Utc>) -> Result<bool, StoreError> {
        self.autocommit(|tx| Ok(tx.renew(delivery_id, lease_token, &fmt_time(until), &now())? == 1))
    }

    fn release(&self, delivery_id: &str, lease_token: &str) -> Result<bool, StoreError> {
        self.autocommit(|tx| Ok(tx.release(delivery_id, lease_token, &now())? == 1))
    }

    fn complete(
        &self,
        delivery_id: &str,
        lease_token: &str,
        attempt: Option<&Attempt>,
        next: &Next,
    ) -> Result<bool, StoreError> {
        self.in_transaction(|tx| queue_rules::complete(tx, delivery_id, lease_token, attempt, next))
    }

    fn release_claims(&self, now_t: DateTime<Utc>, host_id: Option<&str>) -> Result<usize, StoreError> {
        self.autocommit(|tx| match host_id {
            None => tx.release_expired(&fmt_time(now_t), &now()),
            Some(host) => tx.release_host(host, &now()),
        })
    }

    fn newer_done(&self, plugin: &str, event: &Event) -> Result<Option<String>, StoreError> {
        self.autocommit(|tx| queue_rules::newer_done(tx, plugin, event))
    }

    fn replay(&self, delivery_id: &str) -> Result<ReplayOutcome, StoreError> {
        self.in_transaction(|tx| queue_rules::replay(tx, delivery_id))
    }
}

impl<D: Driver + Send + Sync> EventReads for D {
    fn event(&self, uuid: &str) -> Result<Option<EventView>, StoreError> {
        self.autocommit(|tx| reads::event(tx, uuid))
    }

    fn deliveries(
        &self,
        status: Option<Status>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<DeliveryView>, Option<String>), StoreError> {
        self.autocommit(|tx| reads::deliveries(tx, status, limit, after))
    }

    fn attempts(&self, delivery_id: &str) -> Result<Vec<AttemptView>, StoreError> {
        self.autocommit(|tx| tx.attempts(delivery_id))
    }

    fn counts(&self) -> Result<Vec<(String, Status, u64)>, StoreError> {
        self.autocommit(|tx| tx.plugin_status_counts())
    }

    fn busy(&self) -> Result<bool, StoreError> {
        self.autocommit(|tx| tx.busy())
    }

    fn search_events(&self, filter: &EventFilter) -> Result<EventPage, StoreError> {
        self.autocommit(|tx| reads::search_events(tx, filter))
    }

    fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        self.autocommit(|tx| reads::queue_stats(tx, now))
    }
}
