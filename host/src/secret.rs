//! Secrets: where they come from and how they are kept out of logs.
//!
//! A secret is configured as exactly one of `{ env = "NAME" }`, `{ file = "PATH" }` or
//! `{ value = "..." }`, everywhere a secret is read (the Okta auth secret, the admin token,
//! a plugin's credentials). A file's trailing newline is stripped, since `echo x > file`
//! and most secret managers write one. A relative file path resolves against the config
//! file's folder. The resolved value lives in [`Secret`], whose `Debug` and `Display`
//! never show it, so a stray `{:?}` cannot leak it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the host process.
    Env(String),
    /// A file; relative paths resolve against the config file's folder.
    File(PathBuf),
    /// The value itself, written in the config (fine for tests, not for production).
    Value(Secret),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretSource {
    env: Option<String>,
    file: Option<PathBuf>,
    value: Option<String>,
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawSecretSource::deserialize(d)?;
        match (raw.env, raw.file, raw.value) {
            (Some(env), None, None) => Ok(SecretSource::Env(env)),
            (None, Some(file), None) => Ok(SecretSource::File(file)),
            (None, None, Some(value)) => Ok(SecretSource::Value(Secret::new(value))),
            _ => Err(serde::de::Error::custom(
                "a secret is exactly one of { env = \"NAME\" }, { file = \"PATH\" } or { value = \"...\" }",
            )),
        }
    }
}

/// Why a secret could not be read. Never contains the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or is not valid UTF-8)")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SecretSource {
    /// Makes a relative file path absolute against `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let SecretSource::File(path) = self {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Reads the value now.
    ///
    /// # Errors
    /// The variable is unset or the file unreadable; the error names which, never the value.
    pub fn read(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Env(name) => {
                std::env::var(name).map(Secret::new).map_err(|_| SecretError::MissingEnv(name.clone()))
            }
            SecretSource::File(path) => {
                warn_if_readable_by_others(path);
                let text =
                    std::fs::read_to_string(path).map_err(|source| SecretError::File { path: path.clone(), source })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(Secret::new(text.to_string()))
            }
            SecretSource::Value(secret) => Ok(secret.clone()),
        }
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "secret file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// A secret value. Shows as `***` in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that must use it (a compare, a plugin's `secrets.get`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secret_strips_one_trailing_newline_and_resolves_relative_paths() {
        let dir = std::env::temp_dir().join(format!("hookhost-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.txt"), "hunter2\n").unwrap();
        let mut src: SecretSource =
            toml::from_str::<toml::Table>("s = { file = \"s.txt\" }").unwrap()["s"].clone().try_into().unwrap();
        src.resolve_paths(&dir);
        assert_eq!(src.read().unwrap().expose(), "hunter2");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn two_sources_at_once_are_refused() {
        let t: toml::Table = toml::from_str("s = { env = \"A\", value = \"b\" }").unwrap();
        let err = SecretSource::deserialize(t["s"].clone()).unwrap_err();
        assert!(err.to_string().contains("exactly one of"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }
}
