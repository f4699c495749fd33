//! The test fixtures: verbatim Okta and Microsoft Graph payloads from the vendors' docs (with
//! provenance in `tests/fixtures/README.md`), found relative to this crate's manifest so any
//! working directory works.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// `<checkout>/tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Reads and parses the JSON fixture at `rel_path` under [`fixtures_dir`].
///
/// # Errors
/// When the file is missing or not JSON; the message names the path.
pub fn try_load(rel_path: &str) -> anyhow::Result<Value> {
    let path = fixtures_dir().join(rel_path);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading fixture {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing fixture {} as JSON", path.display()))
}

/// Like [`try_load`], for tests.
///
/// # Panics
/// When the fixture is missing or not JSON, naming the path.
pub fn load(rel_path: &str) -> Value {
    try_load(rel_path).unwrap_or_else(|err| panic!("{err:#}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures_are_found() {
        let delivery = super::load("okta/okta-docs_event-hook-delivery_user.session.start_2023.json");
        assert_eq!(delivery["eventType"], "com.okta.event_hook");
        assert!(super::try_load("okta/missing.json").is_err());
    }
}
