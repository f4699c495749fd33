//! The System Log poller's durable state: its cursor, committed with the page it follows,
//! and its lease (trivial with one host per SQLite file, kept for the same semantics as the
//! shared PostgreSQL store).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::group_commit::apply_batch;
use crate::store::common::{fmt_time, lease_end, now};
use crate::store::{IngestReport, LogCursor, NewEvent, Source, StoreError, LOG_CURSOR};

pub(super) fn ingest_page(
    conn: &mut Connection,
    source: Source,
    events: &[NewEvent],
    cursor: Option<(&str, &LogCursor)>,
) -> Result<Option<IngestReport>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if let Some((holder, c)) = cursor {
        let moved = tx.execute(
            "UPDATE log_cursor SET next_url = ?1, filter = ?2, last_published = ?3, updated_at = ?4
             WHERE name = ?5 AND holder = ?6",
            params![c.next_url, c.filter, c.last_published, now(), LOG_CURSOR, holder],
        )?;
        if moved == 0 {
            return Ok(None); // dropped: rolled back
        }
    }
    let mut next_seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM deliveries", [], |r| r.get(0))?;
    let report = apply_batch(&tx, None, events, source, &mut next_seq)?;
    tx.commit()?;
    Ok(Some(report))
}

pub(super) fn log_lease(
    conn: &Connection,
    holder: &str,
    at: DateTime<Utc>,
    lease: Duration,
) -> Result<Option<LogCursor>, StoreError> {
    let row = conn
        .query_row(
            "INSERT INTO log_cursor (name, holder, lease_until, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until,
                                              updated_at = excluded.updated_at
             WHERE log_cursor.holder IS NULL OR log_cursor.holder = excluded.holder
                   OR log_cursor.lease_until < ?4
             RETURNING next_url, filter, last_published",
            params![LOG_CURSOR, holder, fmt_time(lease_end(at, lease)), fmt_time(at)],
            |r| Ok(LogCursor { next_url: r.get(0)?, filter: r.get(1)?, last_published: r.get(2)? }),
        )
        .optional()?;
    Ok(row)
}
