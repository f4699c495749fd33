//! Throwaway PostgreSQL databases for tests and benchmarks (not used by the service).
//!
//! The server comes from `HOOKHOST_TEST_PG_URL` (an admin URL whose role may create
//! databases), by default the one `scripts/test-postgres` starts on 127.0.0.1:54329. Each
//! [`TestDatabase`] is a fresh database, dropped (connections and all) when it goes.

use std::sync::atomic::{AtomicU32, Ordering};

use postgres::NoTls;

/// Where `scripts/test-postgres` puts its server.
pub const DEFAULT_ADMIN_URL: &str = "postgres://hookhost@127.0.0.1:54329/postgres";

/// Where `scripts/test-postgres` keeps the test server's TLS files: `ca.pem` (the CA that
/// signed its certificate for `localhost`) and `other-ca.pem` (a CA that did not).
pub fn tls_dir() -> std::path::PathBuf {
    std::env::var_os("HOOKHOST_TEST_PG_TLS_DIR").map_or_else(|| "/tmp/hookhost-pg-tls".into(), Into::into)
}

/// The admin URL of the test server.
pub fn admin_url() -> String {
    std::env::var("HOOKHOST_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// A fresh, empty database on the test server.
pub struct TestDatabase {
    /// `postgres://…/<name>`: what `store.url` is set to.
    pub url: String,
    name: String,
    admin: String,
}

impl TestDatabase {
    /// Creates a database named after `label`, this process and a counter.
    ///
    /// # Errors
    /// The test server does not answer (the message says how to start it) or refuses.
    pub fn create(label: &str) -> Result<TestDatabase, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let clean: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(30)
            .collect();
        let name = format!("hh_{clean}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = admin_url();
        let mut url = url::Url::parse(&admin).map_err(|e| format!("HOOKHOST_TEST_PG_URL is not a URL: {e}"))?;
        url.set_path(&format!("/{name}"));
        super::off_runtime(|| {
            let mut client = postgres::Client::connect(&admin, NoTls).map_err(|e| {
                format!(
                    "the PostgreSQL test server at {} does not answer ({e}); start it with \
                     `scripts/test-postgres` (needs Debian's postgresql package; .ci/run installs it) \
                     or point HOOKHOST_TEST_PG_URL at a server where this role may create databases",
                    super::redact_url(&admin)
                )
            })?;
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .map_err(|e| format!("cannot create test database {name}: {e}"))
        })?;
        Ok(TestDatabase { url: url.to_string(), name, admin })
    }
}

impl TestDatabase {
    /// This database's URL reached by `host` with `sslmode` (e.g. `localhost`, `verify-full`).
    pub fn tls_url(&self, host: &str, sslmode: &str) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) => {
                let _ = u.set_host(Some(host));
                u.query_pairs_mut().append_pair("sslmode", sslmode);
                u.to_string()
            }
            Err(_) => self.url.clone(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (&self.admin, &self.name);
        super::off_runtime(|| {
            if let Ok(mut client) = postgres::Client::connect(admin, NoTls) {
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}
