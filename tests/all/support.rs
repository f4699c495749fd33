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

/// A certificate credential as an operator makes one with openssl (README, "Certificate
/// credentials for Graph"), made fresh for each test and never committed.
pub struct AppCertificate {
    /// The private key (PKCS#8) followed by its self-signed certificate: the file hookhost reads.
    pub pem: String,
    /// The certificate's DER: what is uploaded to the app registration.
    pub cert_der: Vec<u8>,
    /// The private key's PKCS#8 DER: what must never be seen outside the host.
    pub key_der: Vec<u8>,
}

/// A new key of `alg` (`rcgen::PKCS_RSA_SHA256` for RSA 2048, `rcgen::PKCS_ECDSA_P256_SHA256`)
/// and a self-signed certificate for it.
pub fn app_certificate(alg: &'static rcgen::SignatureAlgorithm) -> AppCertificate {
    let key = rcgen::KeyPair::generate_for(alg).expect("key generation");
    let cert = rcgen::CertificateParams::new(vec!["hookhost-graph-app".into()])
        .expect("certificate parameters")
        .self_signed(&key)
        .expect("self-signed certificate");
    AppCertificate {
        pem: format!("{}{}", key.serialize_pem(), cert.pem()),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Every way a private key's bytes (`key_der`, from the PEM file `pem`) could be written out
/// as text: the whole DER and each 48-byte stretch of it (a partial leak is a leak) in
/// base64, base64url and hex, and each line of the key's PEM body.
pub fn key_material(key_der: &[u8], pem: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    let mut out = vec![STANDARD.encode(key_der), URL_SAFE_NO_PAD.encode(key_der), hex::encode(key_der)];
    for chunk in key_der.chunks(48).filter(|c| c.len() == 48) {
        out.extend([STANDARD.encode(chunk), URL_SAFE_NO_PAD.encode(chunk), hex::encode(chunk)]);
    }
    let key_pem = pem.split("-----BEGIN CERTIFICATE-----").next().unwrap_or_default();
    out.extend(key_pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 16).map(str::to_owned));
    out
}

/// Writes `text` to `dir/name` readable by its owner only, as a key file should be.
pub fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
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

/// Installs a test plugin into the plugin folder `plugins` as `name`: the hostile component
/// doing `mode` (its operator table, returned, sets the mode and a target it may not reach,
/// one attempt only), or echo when `mode` is `None` (nothing to add then).
pub fn install_test_plugin(plugins: &Path, name: &str, mode: Option<&str>) -> String {
    let (crate_name, manifest) = match mode {
        Some(_) => ("hostile", test_manifest("hostile").replace("name = \"hostile\"", &format!("name = \"{name}\""))),
        None => ("echo", test_manifest("echo").replace("name = \"echo\"", &format!("name = \"{name}\""))),
    };
    std::fs::copy(wasm(crate_name), plugins.join(format!("{name}.wasm"))).unwrap();
    std::fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
    match mode {
        Some(mode) => format!(
            "[plugins.{name}.config]\nmode = \"{mode}\"\nurl = \"http://127.0.0.1:9/\"\n[plugins.{name}.retry]\nmax_attempts = 1\n"
        ),
        None => String::new(),
    }
}
