//! Helpers shared by the integration tests: where the built components are, temporary
//! bundle folders, loading a plugin into a runtime the way the host does, and driving the
//! real `hookhost serve` process against the Graph emulator ([`write_config`], [`start`],
//! [`post`], [`settle`]).

#![allow(dead_code)] // each test module uses its own subset

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookhost::config::PluginOverride;
use hookhost::okta::Event;
use hookhost::registry::{self, PluginBundle, PluginSpec};
use hookhost::runtime::{EngineOptions, LoadedPlugin, Runtime};
use hookhost_tests::graph_emulator::JournalEntry;
use hookhost_tests::okta::{group_membership_event, timestamp, Membership};
use hookhost_tests::GraphEmulator;
use serde_json::Value;

/// A bundle folder holding `<name>.wasm` (a copy of a built component) and `<name>.toml`.
pub struct TempBundle {
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
}

pub fn bundle(crate_name: &str, name: &str, manifest: &str) -> TempBundle {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(wasm(crate_name), dir.path().join(format!("{name}.wasm"))).expect("copy wasm");
    let manifest_path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&manifest_path, manifest).expect("write manifest");
    TempBundle { dir, manifest: manifest_path }
}

/// The manifest shipped beside a test plugin's crate.
pub fn test_manifest(crate_name: &str) -> String {
    std::fs::read_to_string(workspace().join("tests/plugins").join(crate_name).join(format!("{crate_name}.toml")))
        .expect("test plugin manifest")
}

pub fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(&EngineOptions::default()).expect("runtime"))
}

/// Loads a bundle with operator overrides, as the host does.
pub fn load(runtime: &Runtime, manifest: &Path, over: Option<&PluginOverride>) -> (PluginSpec, LoadedPlugin) {
    let bundle = PluginBundle::load(manifest).expect("bundle");
    let active = registry::activate(runtime, &bundle, over).expect("activate");
    let (spec, loaded) = (active.spec, active.loaded);
    (spec, loaded)
}

/// Parses an operator override written as the body of a `[plugins.<name>]` table.
pub fn override_toml(text: &str) -> PluginOverride {
    toml::from_str(text).expect("override toml")
}

/// A `group.user_membership.add` LogEvent for a test user.
pub fn membership_event(uuid: &str, login: &str) -> Event {
    let v = serde_json::json!({
        "uuid": uuid,
        "published": "2026-11-28T10:00:00.000Z",
        "eventType": "group.user_membership.add",
        "version": "0",
        "displayMessage": "Add user to group membership",
        "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
        "target": [
            {"id": "00u1", "type": "User", "alternateId": login, "displayName": "Test User"},
            {"id": "00g1", "type": "UserGroup", "alternateId": "unknown", "displayName": "O365Guest"}
        ]
    });
    Event::from_value(&v).expect("event")
}

// The real `hookhost serve` process: the harness lives in the library, shared with the
// benches and the demo.
pub use hookhost_tests::serve::{
    event_view, free_port, http_client, post, post_as, serve_logs, settle, start, start_with, wait_until, wasm,
    workspace, ServeProcess, ServeSetup, ADMIN_TOKEN, OKTA_SECRET,
};

/// Writes `dir/host.toml` (default setup) and installs graph-guest into `dir/plugins.d`.
pub fn write_config(dir: &Path, port: u16, graph: &GraphEmulator) -> ServeSetup {
    write_config_with(dir, port, graph, ServeSetup::default())
}

/// Writes `dir/host.toml` for `setup`, graph-guest (when on) granted this emulator.
pub fn write_config_with(dir: &Path, port: u16, graph: &GraphEmulator, setup: ServeSetup) -> ServeSetup {
    hookhost_tests::serve::write_config(dir, port, Some(graph), setup)
}

/// The release `hookhost` binary (built by `make test` before the tests run).
pub fn hookhost_bin() -> PathBuf {
    hookhost_tests::serve::hookhost_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A membership event of user `n` (`00ue2e<n>`, `user<n>@e2e.example`) in `O365Guest`,
/// published `published_offset_ms` from now.
pub fn membership(kind: Membership, n: u32, published_offset_ms: i64) -> Value {
    group_membership_event(
        kind,
        &format!("00ue2e{n}"),
        &format!("user{n}@e2e.example"),
        &format!("User {n}"),
        "00gO365",
        "O365Guest",
        &timestamp(published_offset_ms),
    )
}

/// The mails of the tenant's live guests, sorted (duplicates kept).
pub fn guests(graph: &GraphEmulator) -> Vec<String> {
    let mut g: Vec<String> =
        graph.users().into_iter().filter(|u| u.user_type == "Guest").filter_map(|u| u.mail).collect();
    g.sort();
    g
}

/// The gaps that break a `Retry-After`: for every answer with `Retry-After` (429, 503) the
/// emulator gave a user lookup, the next lookup for the same `$filter` (the same user) must
/// come at least that long after. Dispatch runs one event per user at a time, so the next
/// lookup for a mail is that delivery's retry. Returns how many such answers were checked
/// and the violations.
pub fn retry_after_violations(journal: &[JournalEntry]) -> (usize, Vec<String>) {
    let lookups: Vec<(&JournalEntry, String)> = journal
        .iter()
        .filter(|e| e.method == "GET" && e.path == "/v1.0/users")
        .filter_map(|e| e.query_param("$filter").map(|f| (e, f)))
        .collect();
    let mut checked = 0;
    let mut bad = Vec::new();
    for (i, (entry, filter)) in lookups.iter().enumerate() {
        let Some(wait) =
            entry.retry_after.as_deref().and_then(|v| v.trim().parse::<f64>().ok()).map(Duration::from_secs_f64)
        else {
            continue;
        };
        checked += 1;
        if let Some((next, _)) = lookups[i + 1..].iter().find(|(_, f)| f == filter) {
            let gap = next.received.duration_since(entry.received);
            if gap < wait {
                bad.push(format!("{filter}: retried {gap:?} after a {} with Retry-After {wait:?}", entry.status));
            }
        }
    }
    (checked, bad)
}
