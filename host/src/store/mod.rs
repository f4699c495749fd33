//! Durable state: plugin KV now; events, deliveries and attempts with the ingest issue.
//!
//! The embedded default is one SQLite file in WAL mode with `synchronous = FULL`: a write
//! the host acknowledged survives `kill -9` and power loss. Schema changes are numbered
//! migrations applied in order inside a transaction, recorded in `schema_migrations`.

pub mod sqlite;

pub use sqlite::SqliteStore;

/// A store failure. The message never contains secret values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store url {0:?} is not supported here; use sqlite://PATH")]
    UnsupportedUrl(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
