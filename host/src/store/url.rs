//! `store.url`, parsed once into what it names: a SQLite file or a PostgreSQL database.
//! Everything that cares which backend it is (opening the store, the host id, the CLI's KV)
//! matches on [`StoreUrl`] instead of testing string prefixes of its own.

use std::fmt;
use std::path::{Path, PathBuf};

use super::postgres::redact_url;

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH`: one file, one host. The path is absolute once parsed.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`: a database several hosts share (the URL as given).
    Postgres(String),
}

impl StoreUrl {
    /// Parses `text`; a relative SQLite path is taken relative to `base` (the config
    /// file's folder).
    ///
    /// # Errors
    /// An unknown scheme or an empty SQLite path, with the fix.
    pub fn parse(text: &str, base: &Path) -> Result<StoreUrl, String> {
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("store.url \"sqlite://\" needs a file path, e.g. \"sqlite://hookhost.db\"".into());
            }
            let p = Path::new(path);
            return Ok(StoreUrl::Sqlite(if p.is_absolute() { p.to_path_buf() } else { base.join(p) }));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_owned()));
        }
        Err("store.url must be sqlite://PATH or postgres://USER@HOST/DATABASE".into())
    }

    /// Whether several hosts may share this store (each then needs its own host id).
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreUrl::Postgres(_))
    }
}

/// The URL with any password masked: safe for logs and errors.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_parses_to_its_backend_and_relative_files_follow_the_config() {
        let base = Path::new("/etc/hookhost");
        assert_eq!(
            StoreUrl::parse("sqlite://state/h.db", base),
            Ok(StoreUrl::Sqlite("/etc/hookhost/state/h.db".into()))
        );
        assert_eq!(StoreUrl::parse("sqlite:///var/h.db", base), Ok(StoreUrl::Sqlite("/var/h.db".into())));
        let pg = StoreUrl::parse("postgresql://u:secret@db/x", base).unwrap();
        assert!(pg.is_shared());
        assert_eq!(pg.to_string(), "postgresql://u:***@db/x");
        assert!(StoreUrl::parse("sqlite://", base).unwrap_err().contains("needs a file path"));
        assert!(StoreUrl::parse("mysql://db/x", base).unwrap_err().contains("sqlite://PATH or postgres://"));
    }
}
