//! The PostgreSQL store: several hosts share one queue (`store.url = "postgres://…"`).
//!
//! Same semantics as the SQLite store, made safe for concurrent hosts:
//!
//! - **Acknowledged means committed.** Every write is one transaction; PostgreSQL's default
//!   `synchronous_commit = on` makes a commit durable before it returns (and, with a
//!   synchronous standby configured, replicated).
//! - **One event, once.** `INSERT … ON CONFLICT (uuid) DO NOTHING`: two hosts receiving the
//!   same Okta retry at once store it once (the second insert waits for the first to commit,
//!   then counts a duplicate).
//! - **One runner per delivery.** A claim locks its candidate rows `FOR UPDATE SKIP LOCKED`, so
//!   two hosts claiming at once never take the same delivery and never wait on each other;
//!   per-(plugin, subject) order holds across hosts (see [`queue`] for why).
//! - **Leases.** A claim carries a lease; a dead host's claims return to pending once the lease
//!   has expired (any host sweeps them); a graceful shutdown releases its claims at once.
//! - **Migrations** run under an advisory lock, so hosts starting together migrate once.
//!
//! The client is the synchronous `postgres` crate, behind a small connection pool. Like every
//! [`Store`] method, calls are meant for blocking threads; when one is made from inside the
//! async runtime anyway it is moved off the runtime's thread (the synchronous client drives
//! its own small runtime, which must not nest in a running one) rather than panicking.
//!
//! Times are stored as the same fixed-width RFC 3339 text as in SQLite (`COLLATE "C"`, so
//! text order is time order). Connections use TLS as `sslmode` in `store.url` asks (see
//! [`tls`]): `require` encrypts, `verify-full` also authenticates the server.

mod queue;
mod schema;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;
mod views;

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, NoTls, Row, Statement};

use super::common::now;
use super::driver::{Driver, Statements};
use super::{IngestReport, Intake, LogCursor, NewEvent, Source, Store, StoreError};
use crate::kv::KvBackend;

/// Rows a statement changed, as the store's traits count them.
fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Connections one host opens at most (PostgreSQL's default `max_connections` is 100, so a
/// handful of hosts fit). Callers beyond it wait for a connection to come back.
const MAX_CONNECTIONS: usize = 16;
/// How long a caller waits for a free connection before the call fails.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection pool: idle connections, and how many exist in all (idle or in use).
#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    open: usize,
}

/// One connection and its prepared statements: the queue's statements are parsed and
/// planned once per connection instead of on every call (most of PostgreSQL's CPU per event
/// otherwise). Derefs to the client for one-off queries.
pub(crate) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// `sql` prepared on this connection (once; then from `cache`). Takes the client or an open
/// transaction of it: a named statement outlives the transaction it was prepared in.
pub(crate) fn prepared(
    cache: &mut HashMap<String, Statement>,
    client: &mut impl GenericClient,
    sql: &str,
) -> Result<Statement, postgres::Error> {
    if let Some(st) = cache.get(sql) {
        return Ok(st.clone());
    }
    let st = client.prepare(sql)?;
    cache.insert(sql.to_owned(), st.clone());
    Ok(st)
}

impl Conn {
    /// The client and the statement cache, borrowed apart (to prepare inside a transaction).
    pub(crate) fn parts(&mut self) -> (&mut Client, &mut HashMap<String, Statement>) {
        (&mut self.client, &mut self.statements)
    }

    /// Runs one cached statement outside a transaction; the number of rows it changed.
    pub(crate) fn exec(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let st = prepared(&mut self.statements, &mut self.client, sql)?;
        self.client.execute(&st, params)
    }

    /// Runs one cached query outside a transaction.
    pub(crate) fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let st = prepared(&mut self.statements, &mut self.client, sql)?;
        self.client.query(&st, params)
    }
}

/// A PostgreSQL database shared by any number of hosts.
pub struct PostgresStore {
    config: Config,
    /// The TLS connector, unless `sslmode=disable`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    pool: Mutex<Pool>,
    /// Signalled when a connection is returned or closed.
    returned: Condvar,
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Unavailable(format!("postgresql: {}", describe(&e)))
    }
}

/// The driver's error with the server's own message (its `Display` says only "db error")
/// or the I/O cause. Neither ever contains the connection password.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({}: {})", db.message(), db.severity(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable url>".into(),
    }
}

impl PostgresStore {
    /// Connects to the database at a `postgres://` (or `postgresql://`) URL and migrates it.
    ///
    /// # Errors
    /// The URL is malformed or asks for TLS, the server cannot be reached or refuses the
    /// login, or a migration fails.
    pub fn open_url(url: &str) -> Result<PostgresStore, StoreError> {
        Self::open(url, None, None)
    }

    /// As [`open_url`](Self::open_url), with the password given apart from the URL (it
    /// replaces one in the URL) and the CA certificates that sign the server's (PEM;
    /// the system's roots when `None`).
    ///
    /// # Errors
    /// As [`open_url`](Self::open_url).
    pub fn open(url: &str, password: Option<&str>, ca_file: Option<&Path>) -> Result<PostgresStore, StoreError> {
        let (client_url, mode) = tls::split_sslmode(url).map_err(StoreError::Unavailable)?;
        let mut config: Config = client_url.parse().map_err(|e| {
            StoreError::Unavailable(format!("store.url {} is not a PostgreSQL URL: {e}", redact_url(url)))
        })?;
        config.ssl_mode(mode.client_mode());
        let tls = tls::client_config(mode, ca_file)?.map(tokio_postgres_rustls::MakeRustlsConnect::new);
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("hookhost");
        }
        let store = PostgresStore { config, tls, pool: Mutex::new(Pool::default()), returned: Condvar::new() };
        store.with(schema_migrate)?;
        Ok(store)
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // The pool holds no invariant a panic could break: recover it.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, or a new one while fewer than [`MAX_CONNECTIONS`] exist, or the
    /// next one returned.
    fn checkout(&self) -> Result<Conn, StoreError> {
        let deadline = std::time::Instant::now() + CHECKOUT_TIMEOUT;
        let mut pool = self.pool();
        loop {
            while let Some(c) = pool.idle.pop() {
                if !c.is_closed() {
                    return Ok(c);
                }
                pool.open -= 1;
            }
            if pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                let connected = match &self.tls {
                    Some(tls) => self.config.connect(tls.clone()),
                    None => self.config.connect(NoTls),
                };
                return match connected {
                    Ok(client) => Ok(Conn { client, statements: HashMap::new() }),
                    Err(e) => {
                        self.closed();
                        let host = match self.config.get_hosts().first() {
                            Some(postgres::config::Host::Tcp(h)) => h.as_str(),
                            _ => "localhost",
                        };
                        let why = tls::explain(&e, host).unwrap_or_else(|| describe(&e));
                        Err(StoreError::Unavailable(format!("cannot connect to PostgreSQL (store.url): {why}")))
                    }
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "all {MAX_CONNECTIONS} PostgreSQL connections stayed busy for {}s",
                    CHECKOUT_TIMEOUT.as_secs()
                )));
            }
            pool = self.returned.wait_timeout(pool, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn checkin(&self, client: Conn) {
        if client.is_closed() {
            self.closed();
        } else {
            self.pool().idle.push(client);
            self.returned.notify_one();
        }
    }

    /// A connection was dropped (broken, or never opened).
    fn closed(&self) {
        let mut pool = self.pool();
        pool.open = pool.open.saturating_sub(1);
        drop(pool);
        self.returned.notify_one();
    }

    /// Runs `f` with a pooled connection, off the async runtime.
    pub(crate) fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        off_runtime(|| {
            // Returned to the pool however `f` ends, a panic included (a transaction it left
            // open was rolled back when the transaction was dropped).
            struct Lent<'a>(&'a PostgresStore, Option<Conn>);
            impl Drop for Lent<'_> {
                fn drop(&mut self) {
                    if let Some(c) = self.1.take() {
                        self.0.checkin(c);
                    }
                }
            }
            let mut lent = Lent(self, None);
            let client = lent.1.insert(self.checkout()?);
            let result = f(client);
            drop(lent);
            result
        })
    }
}

/// Runs a blocking call where the synchronous driver may run it: directly on a plain or
/// blocking thread, through `block_in_place` on a multi-threaded runtime's worker, and on a
/// scoped thread from a single-threaded runtime (tests, one-shot commands).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime as tokio_rt;
    use tokio_rt::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

fn schema_migrate(client: &mut Conn) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    let current: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations", &[])?.get(0);
    let newest = schema::MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
    if current > newest {
        return Err(StoreError::Unavailable(format!(
            "the database schema is at version {current}, newer than this hookhost knows ({newest}): \
             upgrade this host before pointing it at this database"
        )));
    }
    for (version, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", &[version, &now()])?;
    }
    tx.commit()?;
    Ok(())
}

impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }
}

impl Intake for PostgresStore {
    fn ingest(&self, okta_delivery_id: Option<&str>, events: &[NewEvent]) -> Result<IngestReport, StoreError> {
        self.with(|c| queue::ingest(c, okta_delivery_id, events, Source::Hook, None))?
            .ok_or_else(|| StoreError::Unavailable("ingest without a cursor cannot lose a lease".into()))
    }

    fn ingest_page(
        &self,
        source: Source,
        events: &[NewEvent],
        cursor: Option<(&str, &LogCursor)>,
    ) -> Result<Option<IngestReport>, StoreError> {
        self.with(|c| queue::ingest(c, None, events, source, cursor))
    }

    fn log_lease(
        &self,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        lease: Duration,
    ) -> Result<Option<LogCursor>, StoreError> {
        self.with(|c| queue::log_lease(c, holder, now, lease))
    }
}

/// The store's statements on one connection or one of its transactions, each prepared once
/// per connection: what [`queue`] and [`views`] implement.
struct Sql<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Sql<'_, C> {
    fn rows(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        let st = prepared(&mut *self.statements, &mut *self.client, sql)?;
        Ok(self.client.query(&st, params)?)
    }

    fn row(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StoreError> {
        let st = prepared(&mut *self.statements, &mut *self.client, sql)?;
        Ok(self.client.query_opt(&st, params)?)
    }

    fn exec(&mut self, sql: &str, params: &Params<'_>) -> Result<usize, StoreError> {
        let st = prepared(&mut *self.statements, &mut *self.client, sql)?;
        Ok(count(self.client.execute(&st, params)?))
    }
}

impl Driver for PostgresStore {
    /// READ COMMITTED, PostgreSQL's default: see the module's note for why a claim needs
    /// no more.
    fn in_transaction<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Statements) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        self.with(|conn| {
            let (client, statements) = conn.parts();
            let mut tx = client.transaction()?;
            let out = f(&mut Sql { client: &mut tx, statements })?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn autocommit<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Statements) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        self.with(|conn| {
            let (client, statements) = conn.parts();
            f(&mut Sql { client, statements })
        })
    }
}

impl KvBackend for PostgresStore {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, String> {
        self.with(|c| {
            Ok(c.rows("SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2", &[&plugin, &key])?
                .first()
                .map(|r| r.get(0)))
        })
        .map_err(|e| format!("kv get failed: {e}"))
    }

    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String> {
        // One statement: atomic under concurrent writers (last writer wins, nobody fails).
        self.with(|c| {
            c.exec(
                "INSERT INTO plugin_kv (plugin, key, value, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                &[&plugin, &key, &value, &now()],
            )?;
            Ok(())
        })
        .map_err(|e| format!("kv set failed: {e}"))
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        self.with(|c| {
            c.exec("DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2", &[&plugin, &key])?;
            Ok(())
        })
        .map_err(|e| format!("kv delete failed: {e}"))
    }

    fn scan(&self, plugin: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<(String, String)>, String> {
        // `key` is COLLATE "C": bytewise order, the order the WIT promises.
        self.with(|c| {
            Ok(c.rows(
                "SELECT key, value FROM plugin_kv WHERE plugin = $1 AND key > $2 AND key >= $3 ORDER BY key LIMIT $4",
                &[&plugin, &after, &prefix, &(limit as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(String, String)>>())
        })
        .map(|rows| crate::kv::with_prefix(rows, prefix))
        .map_err(|e| format!("kv scan failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_a_redacted_url() {
        let shown = redact_url("postgres://hookhost:s3cret@db.internal:5432/hookhost");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.internal:5432/hookhost"), "{shown}");
        assert_eq!(redact_url("not a url"), "<unparseable url>");
    }

    #[test]
    fn open_errors_name_the_problem() {
        let e = PostgresStore::open_url("postgres://hookhost:pw@127.0.0.1:5432/x?sslmode=sometimes").err().unwrap();
        assert!(e.to_string().contains("verify-full"), "{e}");
        let e = PostgresStore::open_url("postgres://hookhost@127.0.0.1:9/x?connect_timeout=2").err().unwrap();
        assert!(e.to_string().contains("cannot connect to PostgreSQL"), "{e}");
        let e = PostgresStore::open_url("postgres://h@/x?port=notanumber").err().unwrap();
        assert!(e.to_string().contains("not a PostgreSQL URL"), "{e}");
    }

    /// Whether the store's connections are encrypted, as the server sees them.
    fn encrypted(store: &PostgresStore) -> bool {
        store
            .with(|c| Ok(c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?.get(0)))
            .unwrap()
    }

    #[test]
    fn tls_modes_encrypt_and_verify_and_refusals_name_their_cause() {
        let db = testing::TestDatabase::create("tls_modes").unwrap_or_else(|e| panic!("{e}"));
        let (ca, other) = (testing::tls_dir().join("ca.pem"), testing::tls_dir().join("other-ca.pem"));
        assert!(ca.exists(), "{} is missing: run scripts/test-postgres (it sets the server up for TLS)", ca.display());

        let plain = PostgresStore::open(&db.tls_url("127.0.0.1", "disable"), None, None).unwrap();
        assert!(!encrypted(&plain));
        let require = PostgresStore::open(&db.tls_url("127.0.0.1", "require"), None, None).unwrap();
        assert!(encrypted(&require), "sslmode=require must encrypt");
        let full = PostgresStore::open(&db.tls_url("localhost", "verify-full"), None, Some(&ca)).unwrap();
        assert!(encrypted(&full));
        let ca_only = PostgresStore::open(&db.tls_url("127.0.0.1", "verify-ca"), None, Some(&ca)).unwrap();
        assert!(encrypted(&ca_only), "verify-ca does not compare the host name");

        let e = PostgresStore::open(&db.tls_url("localhost", "verify-full"), None, Some(&other)).err().unwrap();
        assert!(
            e.to_string().contains("not signed by a CA hookhost trusts") && e.to_string().contains("ca_file"),
            "{e}"
        );
        let e = PostgresStore::open(&db.tls_url("127.0.0.1", "verify-full"), None, Some(&ca)).err().unwrap();
        assert!(e.to_string().contains("does not name the host \"127.0.0.1\""), "{e}");
        let e = PostgresStore::open(&db.tls_url("localhost", "verify-ca"), None, Some(&other)).err().unwrap();
        assert!(e.to_string().contains("not signed by a CA"), "{e}");
    }
}
