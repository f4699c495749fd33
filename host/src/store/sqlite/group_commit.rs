//! Ingest with group commit.
//!
//! Each commit in `synchronous = FULL` costs one fsync, and an fsync is the slowest thing an
//! ingest does. When several Okta deliveries arrive at once, their callers queue their
//! batches here; the first caller that finds no commit in progress becomes the **leader**,
//! takes every queued batch, and commits them all in one `BEGIN IMMEDIATE` transaction —
//! one fsync for the group. Callers that arrive while the leader commits queue up for the
//! next group (one of them leads it). Each batch is applied inside its own savepoint, so a
//! batch that fails is rolled back alone and only its caller sees the error.
//!
//! Every caller returns only once its own batch is committed (or has failed): the leader
//! publishes each batch's outcome by ticket and wakes the waiters. A leader that panics
//! still hands leadership back and fails its group's tickets (see [`Leader`]'s `Drop`),
//! so nobody waits forever.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{params, Connection};

use super::SqliteStore;
use crate::store::intake::{store_events, EventRow, IngestTx};
use crate::store::{IngestReport, NewEvent, Source, StoreError};

type Outcome = Result<IngestReport, StoreError>;

/// Batches waiting for a commit, and outcomes waiting for their callers.
#[derive(Default)]
pub(super) struct IngestQueue {
    state: Mutex<QueueState>,
    /// Signalled when a group's outcomes are published.
    committed: Condvar,
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<Batch>,
    /// A leader is committing a group now.
    leader: bool,
    outcomes: HashMap<u64, Outcome>,
    next_ticket: u64,
}

/// One caller's ingest: an Okta delivery's events.
struct Batch {
    ticket: u64,
    okta_delivery_id: Option<String>,
    events: Vec<NewEvent>,
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("ingest queue lock poisoned by a panic".into())
}

impl IngestQueue {
    fn lock(&self) -> Result<MutexGuard<'_, QueueState>, StoreError> {
        self.state.lock().map_err(|_| poisoned())
    }
}

pub(super) fn ingest(store: &SqliteStore, okta_delivery_id: Option<&str>, events: &[NewEvent]) -> Outcome {
    let queue = &store.ingest_queue;
    let mut state = queue.lock()?;
    let ticket = state.next_ticket;
    state.next_ticket += 1;
    state.waiting.push(Batch {
        ticket,
        okta_delivery_id: okta_delivery_id.map(str::to_owned),
        events: events.to_vec(),
    });
    loop {
        if let Some(outcome) = state.outcomes.remove(&ticket) {
            return outcome;
        }
        if state.leader {
            state = queue.committed.wait(state).map_err(|_| poisoned())?;
            continue;
        }
        // No commit in progress and ours is not done: lead the next group (ours is in it).
        state.leader = true;
        let group = std::mem::take(&mut state.waiting);
        drop(state);
        let mut leader = Leader { queue, tickets: group.iter().map(|b| b.ticket).collect(), outcomes: Vec::new() };
        leader.outcomes = commit_group(store, &group);
        drop(leader); // publishes the outcomes and wakes the waiters
        state = queue.lock()?;
    }
}

/// Leadership of one group. Dropping it publishes the group's outcomes (a ticket without
/// one, because the leader panicked, gets an error), gives up leadership and wakes everyone.
struct Leader<'a> {
    queue: &'a IngestQueue,
    tickets: Vec<u64>,
    outcomes: Vec<(u64, Outcome)>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Even a poisoned lock still holds the state; recover it so waiters are released.
        let mut state = match self.queue.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let mut outcomes: HashMap<u64, Outcome> = std::mem::take(&mut self.outcomes).into_iter().collect();
        for ticket in &self.tickets {
            let outcome = outcomes.remove(ticket).unwrap_or_else(|| {
                Err(StoreError::Unavailable("ingest failed: the committing thread panicked".into()))
            });
            state.outcomes.insert(*ticket, outcome);
        }
        state.leader = false;
        self.queue.committed.notify_all();
    }
}

/// Commits a group of batches in one transaction, each in its own savepoint.
fn commit_group(store: &SqliteStore, group: &[Batch]) -> Vec<(u64, Outcome)> {
    let fail_all = |e: &StoreError| -> Vec<(u64, Outcome)> {
        group.iter().map(|b| (b.ticket, Err(StoreError::Unavailable(e.to_string())))).collect()
    };
    let mut conn = match store.conn() {
        Ok(c) => c,
        Err(e) => return fail_all(&e),
    };
    let result = (|| -> Result<Vec<(u64, Outcome)>, StoreError> {
        let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut next_seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM deliveries", [], |r| r.get(0))?;
        let mut outcomes = Vec::with_capacity(group.len());
        for batch in group {
            let mut sp = tx.savepoint()?;
            match apply_batch(&sp, batch.okta_delivery_id.as_deref(), &batch.events, Source::Hook, &mut next_seq) {
                Ok(report) => {
                    sp.commit()?;
                    outcomes.push((batch.ticket, Ok(report)));
                }
                Err(e) => {
                    sp.rollback()?;
                    drop(sp);
                    outcomes.push((batch.ticket, Err(e)));
                }
            }
        }
        tx.commit()?;
        Ok(outcomes)
    })();
    result.unwrap_or_else(|e| fail_all(&e))
}

/// Stores `events` (one caller's batch) inside the caller's transaction; `next_seq` is the
/// next free delivery `seq` and moves past the ones used.
pub(super) fn apply_batch(
    tx: &Connection,
    okta_delivery_id: Option<&str>,
    events: &[NewEvent],
    source: Source,
    next_seq: &mut i64,
) -> Result<IngestReport, StoreError> {
    store_events(&mut Inserts { conn: tx, next_seq }, okta_delivery_id, events, source)
}

/// An ingest's inserts on SQLite, numbering deliveries from `next_seq`.
struct Inserts<'a> {
    conn: &'a Connection,
    next_seq: &'a mut i64,
}

impl IngestTx for Inserts<'_> {
    fn insert_event(&mut self, row: &EventRow<'_>) -> Result<bool, StoreError> {
        let event = row.event;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO events (uuid, event_type, published, published_key, received_at,
                                     okta_delivery_id, subject, group_ids, raw, subject_login, subject_name, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (uuid) DO NOTHING",
            )?
            .execute(params![
                event.uuid,
                event.event_type,
                event.published,
                row.published_key,
                row.received_at,
                row.okta_delivery_id,
                row.subject,
                row.group_ids,
                event.raw,
                row.subject_login,
                row.subject_name,
                row.source.as_str(),
            ])?;
        Ok(inserted == 1)
    }

    fn insert_group(
        &mut self,
        event_uuid: &str,
        group_id: &str,
        group_name: Option<&str>,
        position: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO event_groups (event_uuid, group_id, group_name, position) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (event_uuid, group_id) DO NOTHING",
            )?
            .execute(params![event_uuid, group_id, group_name, position])?;
        Ok(())
    }

    fn insert_delivery(&mut self, row: &EventRow<'_>, plugin: &str) -> Result<bool, StoreError> {
        let seq = *self.next_seq;
        let created = self
            .conn
            .prepare_cached(
                "INSERT INTO deliveries (seq, id, event_uuid, plugin, subject, published_key, status,
                                         created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)
                 ON CONFLICT (event_uuid, plugin) DO NOTHING",
            )?
            .execute(params![
                seq,
                delivery_id(seq),
                row.event.uuid,
                plugin,
                row.subject,
                row.published_key,
                row.received_at
            ])?;
        if created == 1 {
            *self.next_seq += 1;
        }
        Ok(created == 1)
    }
}

/// A delivery's id: opaque to clients, ordered like `seq` (fixed-width hex).
pub(super) fn delivery_id(seq: i64) -> String {
    format!("d_{seq:016x}")
}
