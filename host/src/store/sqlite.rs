//! The SQLite store.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;
use crate::runtime::KvBackend;

/// Numbered schema migrations; append only, never edit a released one.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE plugin_kv (
        plugin TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (plugin, key)
    ) WITHOUT ROWID;",
)];

/// One SQLite database file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and migrates it.
    ///
    /// # Errors
    /// Not a sqlite URL, the file cannot be opened, or a migration fails.
    pub fn open_url(url: &str) -> Result<SqliteStore, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
        Self::open(Path::new(path))
    }

    /// Opens (creating if needed) the database file and migrates it.
    ///
    /// # Errors
    /// The file cannot be opened or a migration fails.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: every commit is fsynced before it returns, so an acknowledged event is on disk.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    /// An in-memory database (tests, `plugin run` without a config).
    ///
    /// # Errors
    /// A migration fails.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let store = SqliteStore {
            conn: Mutex::new(Connection::open_in_memory()?),
        };
        store.migrate()?;
        Ok(store)
    }

    pub(crate) fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Unavailable("store lock poisoned by a panic".into()))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);",
        )?;
        let current: i64 =
            tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl KvBackend for SqliteStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, String> {
        let conn = self.conn().map_err(|e| e.to_string())?;
        conn.query_row(
            "SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| format!("kv get failed: {e}"))
    }

    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String> {
        let conn = self.conn().map_err(|e| e.to_string())?;
        conn.execute(
            "INSERT INTO plugin_kv (plugin, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![plugin, key, value, now()],
        )
        .map(|_| ())
        .map_err(|e| format!("kv set failed: {e}"))
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        let conn = self.conn().map_err(|e| e.to_string())?;
        conn.execute(
            "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
        )
        .map(|_| ())
        .map_err(|e| format!("kv delete failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_is_namespaced_per_plugin_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("hookhost-kv-{}", std::process::id()));
        let path = dir.join("kv.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.set("a", "k", "1").unwrap();
            s.set("b", "k", "2").unwrap();
            s.set("a", "k", "3").unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some("3"));
        assert_eq!(s.get("b", "k").unwrap().as_deref(), Some("2"));
        s.delete("a", "k").unwrap();
        assert_eq!(s.get("a", "k").unwrap(), None);
        std::fs::remove_dir_all(&dir).ok();
    }
}
