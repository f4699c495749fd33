//! Helpers shared by the integration tests: where the built components are, temporary
//! bundle folders, and loading a plugin into a runtime the way the host does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hookhost::config::PluginOverride;
use hookhost::okta::Event;
use hookhost::registry::{self, PluginBundle, PluginSpec};
use hookhost::runtime::{EngineOptions, LoadedPlugin, PluginIdentity, Runtime};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A component built by `make plugins` (`cargo build --release --target wasm32-wasip2`).
pub fn wasm(crate_name: &str) -> PathBuf {
    let p = workspace()
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        p.exists(),
        "{} is missing: run `make plugins` (or `make test`, which builds it) first",
        p.display()
    );
    p
}

/// The release `hookhost` binary (built by `make test` before the tests run).
pub fn hookhost_bin() -> PathBuf {
    let p = workspace().join("target/release/hookhost");
    assert!(
        p.exists(),
        "{} is missing: run `make test` (it builds the binary) or `cargo build --release -p hookhost`",
        p.display()
    );
    p
}

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
    TempBundle {
        dir,
        manifest: manifest_path,
    }
}

/// The manifest shipped beside a test plugin's crate.
pub fn test_manifest(crate_name: &str) -> String {
    std::fs::read_to_string(
        workspace()
            .join("tests/plugins")
            .join(crate_name)
            .join(format!("{crate_name}.toml")),
    )
    .expect("test plugin manifest")
}

pub fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(&EngineOptions::default()).expect("runtime"))
}

/// Loads a bundle with operator overrides, as the host does.
pub fn load(runtime: &Runtime, manifest: &Path, over: Option<&PluginOverride>) -> (PluginSpec, LoadedPlugin) {
    let bundle = PluginBundle::load(manifest).expect("bundle");
    let spec = registry::effective(&bundle, over).expect("effective spec");
    let component = runtime.compile(&bundle.wasm).expect("compile");
    let loaded = runtime
        .load(
            &component,
            PluginIdentity {
                name: spec.name.clone(),
                version: spec.version.clone(),
                sha256: spec.sha256.clone(),
            },
            spec.grant.clone(),
            spec.limits.clone(),
        )
        .expect("load");
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
