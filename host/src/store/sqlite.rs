//! The SQLite store: one file, one connection, every write a durable transaction.
//!
//! One connection behind a mutex is enough: SQLite has a single writer anyway, and each
//! call is a short transaction (microseconds plus, for a commit, one fsync of the WAL).
//! Concurrent ingests share that fsync through [group commit](group_commit). Every write
//! that reads before it writes (claim, complete, replay) runs in a `BEGIN IMMEDIATE`
//! transaction, so it is atomic even if a second process opened the same file by mistake.
//!
//! Times are stored as RFC 3339 UTC text with a fixed number of fraction digits, so text
//! order is time order and SQL compares them directly: lease and schedule times with
//! milliseconds ([`fmt_time`]), `published` with nanoseconds ([`published_key`]) because
//! it decides the order of a user's events.
//!
//! Files: [`schema`] (migrations), [`group_commit`] (ingest), [`queue`] (the queue's SQL:
//! claim, complete, leases, supersede, replay), [`log_cursor`] (the System Log poller's
//! cursor and lease), [`views`] (what the API and the operator console read).

mod group_commit;
mod log_cursor;
mod queue;
pub(crate) mod schema;
mod views;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::common::now;
use super::driver::{Driver, Statements};
use super::{IngestReport, Intake, LogCursor, NewEvent, Source, Store, StoreError};
use crate::kv::KvBackend;
use group_commit::IngestQueue;

/// One SQLite database file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Concurrent `ingest` calls waiting to be committed together.
    ingest_queue: IngestQueue,
    /// No file behind it: nothing it does waits for a disk.
    in_memory: bool,
}

impl SqliteStore {
    /// Opens (creating if needed, mode `0600`) the database file and migrates it.
    ///
    /// # Errors
    /// The file cannot be opened or a migration fails.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        private_file(path)?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: every commit is fsynced before it returns, so an acknowledged event is on disk.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let store = Self::with_connection(conn, false)?;
        // The migration wrote, so the WAL and its index exist now. SQLite gives them the
        // database file's mode; set it anyway, in case they predate this version.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = std::path::PathBuf::from(side);
            if side.exists() {
                restrict(&side)?;
            }
        }
        Ok(store)
    }

    /// An in-memory database (tests, `plugin run` without a config).
    ///
    /// # Errors
    /// A migration fails.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Self::with_connection(conn, true)
    }

    fn with_connection(conn: Connection, in_memory: bool) -> Result<SqliteStore, StoreError> {
        let store = SqliteStore { conn: Mutex::new(conn), ingest_queue: IngestQueue::default(), in_memory };
        store.migrate()?;
        Ok(store)
    }

    pub(crate) fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Unavailable("store lock poisoned by a panic".into()))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        // A migration may rebuild a table that others reference (SQLite cannot alter a
        // CHECK constraint): its documented procedure turns foreign keys off around the
        // transaction (the pragma is a no-op inside one) and checks them before committing.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let migrated = Self::migrate_in(&mut conn);
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrated
    }

    fn migrate_in(conn: &mut Connection) -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);",
        )?;
        let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
        for (version, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", params![version, now()])?;
        }
        let broken: Option<String> = tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional()?;
        if let Some(table) = broken {
            return Err(StoreError::Unavailable(format!(
                "the migrated database has rows in {table} that reference missing rows; restore a backup"
            )));
        }
        tx.commit()?;
        Ok(())
    }
}

/// The database holds every event (names, e-mail addresses, group memberships) and the
/// plugins' KV (graph-guest's token cache): only the service account may read it. The file
/// is created `0600` before SQLite opens it, whatever the process umask, and an existing
/// one is tightened to `0600`; SQLite creates `-wal` and `-shm` with the database's mode.
fn private_file(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))),
        }
        restrict(path)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Sets `0600` on one of the store's files (the umask could have taken bits from the mode
/// it was created with, and an older version may have left it readable by others).
fn restrict(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot examine {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o777 != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
                StoreError::Unavailable(format!("cannot make {} private (mode 600): {e}", path.display()))
            })?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

impl Intake for SqliteStore {
    fn ingest(&self, okta_delivery_id: Option<&str>, events: &[NewEvent]) -> Result<IngestReport, StoreError> {
        group_commit::ingest(self, okta_delivery_id, events)
    }

    fn ingest_page(
        &self,
        source: Source,
        events: &[NewEvent],
        cursor: Option<(&str, &LogCursor)>,
    ) -> Result<Option<IngestReport>, StoreError> {
        log_cursor::ingest_page(&mut *self.conn()?, source, events, cursor)
    }

    fn log_lease(&self, holder: &str, now: DateTime<Utc>, lease: Duration) -> Result<Option<LogCursor>, StoreError> {
        log_cursor::log_lease(&*self.conn()?, holder, now, lease)
    }
}

/// The store's statements on its one connection, or on a transaction of it (which derefs
/// to the connection): what [`queue`] and [`views`] implement.
struct Sql<'a>(&'a Connection);

impl Sql<'_> {
    /// Every row of a cached statement, mapped by `map`.
    fn all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(map(r)?);
        }
        Ok(out)
    }
}

impl Driver for SqliteStore {
    /// `BEGIN IMMEDIATE`: a claim or a completion reads, then writes, atomically even if a
    /// second process opened the same file by mistake.
    fn in_transaction<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Statements) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&mut Sql(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    fn autocommit<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Statements) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let conn = self.conn()?;
        f(&mut Sql(&conn))
    }
}

impl KvBackend for SqliteStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, String> {
        let conn = self.conn().map_err(|e| e.to_string())?;
        // Cached statements: KV calls are the hot path of a plugin attempt.
        conn.prepare_cached("SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2")
            .and_then(|mut st| st.query_row(params![plugin, key], |r| r.get(0)).optional())
            .map_err(|e| format!("kv get failed: {e}"))
    }

    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String> {
        let conn = self.conn().map_err(|e| e.to_string())?;
        conn.prepare_cached(
            "INSERT INTO plugin_kv (plugin, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .and_then(|mut st| st.execute(params![plugin, key, value, now()]))
        .map(|_| ())
        .map_err(|e| format!("kv set failed: {e}"))
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        let conn = self.conn().map_err(|e| e.to_string())?;
        conn.prepare_cached("DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2")
            .and_then(|mut st| st.execute(params![plugin, key]))
            .map(|_| ())
            .map_err(|e| format!("kv delete failed: {e}"))
    }

    fn scan(&self, plugin: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<(String, String)>, String> {
        let conn = self.conn().map_err(|e| e.to_string())?;
        // Keys compare bytewise (BINARY collation), the order the WIT promises.
        conn.prepare_cached(
            "SELECT key, value FROM plugin_kv WHERE plugin = ?1 AND key > ?2 AND key >= ?3 ORDER BY key LIMIT ?4",
        )
        .and_then(|mut st| {
            st.query_map(params![plugin, after, prefix, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(String, String)>, _>>()
        })
        .map(|rows| crate::kv::with_prefix(rows, prefix))
        .map_err(|e| format!("kv scan failed: {e}"))
    }

    /// A file-backed database fsyncs every write (`synchronous = FULL`) and shares its one
    /// connection with ingest's group commit, so its calls leave the async workers; an
    /// in-memory one does no I/O and answers in microseconds, in place, like `MemoryKv`.
    fn blocks(&self) -> bool {
        !self.in_memory
    }
}
