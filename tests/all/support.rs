//! Helpers shared by the integration tests: where the built components are, temporary
//! bundle folders, loading a plugin into a runtime the way the host does, and driving the
//! real `hookhost serve` process against the Graph emulator ([`write_config`], [`start`],
//! [`post`], [`settle`]).

#![allow(dead_code)] // each test module uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost::config::PluginOverride;
use hookhost::okta::Event;
use hookhost::registry::{self, PluginBundle, PluginSpec};
use hookhost::runtime::{EngineOptions, LoadedPlugin, Runtime};
use hookhost_tests::graph_emulator::JournalEntry;
use hookhost_tests::okta::{delivery, group_membership_event, timestamp, Membership};
use hookhost_tests::GraphEmulator;
use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A component built by `make plugins` (`cargo build --release --target wasm32-wasip2`).
pub fn wasm(crate_name: &str) -> PathBuf {
    let p = workspace().join("target/wasm32-wasip2/release").join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(p.exists(), "{} is missing: run `make plugins` (or `make test`, which builds it) first", p.display());
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

// ---------------------------------------------------------------------------------------
// The real `hookhost serve` process.

/// The Okta auth secret of the default serve config.
pub const OKTA_SECRET: &str = "Basic ZTJlOmUyZQ==";
/// The admin token of the default serve config.
pub const ADMIN_TOKEN: &str = "e2e-admin";

/// How a test's `host.toml` differs from the default: graph-guest granted the emulator,
/// secrets as values, short leases and backoffs.
#[derive(Clone, Debug)]
pub struct ServeSetup {
    /// `okta.auth_secret` (and what [`post`] sends).
    pub okta_secret: String,
    /// `okta.auth_secret` as written in TOML; default `{ value = "<okta_secret>" }`.
    pub okta_secret_source: Option<String>,
    pub admin_token: String,
    /// Extra lines of `[okta]` (e.g. `read_timeout_secs = 1`).
    pub okta_extra: String,
    /// `dispatch.lease_secs`: how long a killed process's claims block their deliveries.
    pub lease_secs: u64,
    /// Extra lines of `[dispatch]`.
    pub dispatch_extra: String,
    /// The body of `[dispatch.retry]`.
    pub retry: String,
    /// Whether graph-guest is installed and configured for the emulator.
    pub graph_guest: bool,
    /// Appended last: more `[plugins.<name>]` tables.
    pub extra: String,
    /// `HOOKHOST_LOG` for the process (default: its own default, `info`).
    pub log_filter: Option<String>,
    /// `store.url`; default a SQLite file in the test's folder.
    pub store_url: Option<String>,
    /// Extra lines of `[server]` (e.g. `header_timeout_secs = 1`).
    pub server_extra: String,
    /// Extra lines of `[plugins]` (e.g. `max_wasm_bytes = 4096`).
    pub plugins_extra: String,
    /// The process umask `serve` runs under (through `sh -c 'umask …; exec …'`), to show
    /// file modes do not depend on it.
    pub umask: Option<u32>,
}

impl Default for ServeSetup {
    fn default() -> Self {
        ServeSetup {
            okta_secret: OKTA_SECRET.into(),
            okta_secret_source: None,
            admin_token: ADMIN_TOKEN.into(),
            okta_extra: String::new(),
            lease_secs: 5,
            dispatch_extra: String::new(),
            retry: "initial_backoff_ms = 100\n".into(),
            graph_guest: true,
            extra: String::new(),
            log_filter: None,
            store_url: None,
            server_extra: String::new(),
            plugins_extra: String::new(),
            umask: None,
        }
    }
}

/// A running `hookhost serve`; killed (SIGKILL) when dropped.
pub struct Serve {
    pub child: Child,
    pub url: String,
    pub setup: ServeSetup,
    pub dir: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// `kill -9`: no graceful shutdown, claims and half-done work left behind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything every run of `serve` in this folder wrote to stderr.
    pub fn logs(&self) -> String {
        serve_logs(&self.dir)
    }

    /// A request to the admin API with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http_client().request(method, format!("{}{path}", self.url)).bearer_auth(&self.setup.admin_token)
    }

    /// `GET path` with the admin token, as JSON (`Null` if the body is not JSON).
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.admin(reqwest::Method::GET, path).send().await.expect("admin API answers");
        serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null)
    }

    /// `GET path` with the admin token: status and body text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.admin(reqwest::Method::GET, path).send().await.expect("admin API answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// Posts one delivery with these events; the status, or `None` if no answer came.
    pub async fn post(&self, events: Vec<Value>) -> Option<u16> {
        post_as(&self.url, &self.setup.okta_secret, events).await
    }

    /// Every delivery with this status (all pages).
    pub async fn deliveries(&self, status: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = after.as_deref().map(|a| format!("&after={a}")).unwrap_or_default();
            let page = self.get_json(&format!("/api/deliveries?status={status}&limit=1000{q}")).await;
            out.extend(page["deliveries"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => return out,
            }
        }
    }

    /// The attempts of one delivery.
    pub async fn attempts(&self, delivery_id: &str) -> Vec<Value> {
        self.get_json(&format!("/api/deliveries/{delivery_id}/attempts")).await["attempts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until no delivery at all is pending, running or retrying.
    ///
    /// Reads one snapshot per look (`/api/queue` counts every status in one statement):
    /// reading the statuses one request at a time can miss a delivery that moves between
    /// them, e.g. a dead host's claim that expires from running back to pending between
    /// the reads, and report "settled" too early.
    pub async fn settle_all(&self, within: Duration) {
        let t = Instant::now();
        loop {
            let queue = self.get_json("/api/queue").await;
            let plugins = queue["plugins"].as_array().expect("/api/queue answers with its plugins");
            let busy: u64 = plugins
                .iter()
                .map(|p| ["pending", "running", "retrying"].iter().map(|s| p[*s].as_u64().expect("count")).sum::<u64>())
                .sum();
            if busy == 0 {
                return;
            }
            assert!(t.elapsed() < within, "{busy} deliveries still busy after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Everything the `serve` runs in `dir` wrote to stderr, in no particular order.
pub fn serve_logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("serve-") && name.ends_with(".log") {
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    out
}

/// A client that does not keep idle connections to a server a test is about to kill.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Writes `dir/host.toml` (default setup) and installs graph-guest into `dir/plugins.d`.
pub fn write_config(dir: &Path, port: u16, graph: &GraphEmulator) -> ServeSetup {
    write_config_with(dir, port, graph, ServeSetup::default())
}

/// Writes `dir/host.toml` for `setup`; installs graph-guest when it is on.
pub fn write_config_with(dir: &Path, port: u16, graph: &GraphEmulator, setup: ServeSetup) -> ServeSetup {
    std::fs::create_dir_all(dir.join("plugins.d")).expect("plugins.d");
    let okta_source =
        setup.okta_secret_source.clone().unwrap_or_else(|| format!("{{ value = {:?} }}", setup.okta_secret));
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
{server_extra}
[okta]
auth_secret = {okta_source}
{okta_extra}
[store]
url = {store_url:?}
[dispatch]
lease_secs = {lease_secs}
{dispatch_extra}
[dispatch.retry]
{retry}
[plugins]
dir = "plugins.d"
{plugins_extra}
[admin]
token = {{ value = {admin:?} }}
"#,
        okta_extra = setup.okta_extra,
        server_extra = setup.server_extra,
        plugins_extra = setup.plugins_extra,
        lease_secs = setup.lease_secs,
        dispatch_extra = setup.dispatch_extra,
        retry = setup.retry,
        admin = setup.admin_token,
        store_url = setup.store_url.as_deref().unwrap_or("sqlite://state/hookhost.db"),
    );
    if setup.graph_guest {
        std::fs::copy(wasm("graph-guest"), dir.join("plugins.d/graph-guest.wasm")).expect("copy graph-guest");
        std::fs::copy(workspace().join("plugins/graph-guest/graph-guest.toml"), dir.join("plugins.d/graph-guest.toml"))
            .expect("copy graph-guest manifest");
        let base = graph.base_url();
        let cfg = graph.config();
        text.push_str(&format!(
            r#"[plugins.graph-guest]
allowed_hosts = ["{base}"]
[plugins.graph-guest.config]
graph_url = "{base}"
login_url = "{base}"
[plugins.graph-guest.secrets]
tenant_id = {{ value = {:?} }}
client_id = {{ value = {:?} }}
client_secret = {{ value = {:?} }}
"#,
            cfg.tenant_id, cfg.client_id, cfg.client_secret
        ));
    }
    text.push_str(&setup.extra);
    std::fs::write(dir.join("host.toml"), text).expect("write host.toml");
    setup
}

/// Starts `hookhost serve --config dir/host.toml` (from `/`, so relative paths must resolve
/// against the config) and waits for `/healthz`. Its stderr goes to `dir/serve-<n>.log`.
pub async fn start(dir: &Path, port: u16) -> Serve {
    start_with(dir, port, ServeSetup::default()).await
}

/// As [`start`], for a config written by [`write_config_with`] with this `setup`.
pub async fn start_with(dir: &Path, port: u16, setup: ServeSetup) -> Serve {
    let mut cmd = match setup.umask {
        None => Command::new(hookhost_bin()),
        Some(mask) => {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(format!("umask {mask:03o}; exec \"$0\" \"$@\"")).arg(hookhost_bin());
            sh
        }
    };
    cmd.args(["serve", "--config"])
        .arg(dir.join("host.toml"))
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("serve-{}.log", fastrand::u32(..)))).expect("log file"));
    if let Some(filter) = &setup.log_filter {
        cmd.env("HOOKHOST_LOG", filter);
    }
    let child = cmd.spawn().expect("spawn hookhost serve");
    let url = format!("http://127.0.0.1:{port}");
    let mut serve = Serve { child, url, setup, dir: dir.to_path_buf() };
    let http = http_client();
    let t = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", serve.url)).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(status)) = serve.child.try_wait() {
            panic!("serve exited with {status}: {}", serve_logs(dir));
        }
        assert!(t.elapsed() < Duration::from_secs(30), "serve did not become healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve
}

/// Posts one delivery with `events` to the default-secret endpoint; the status.
pub async fn post(url: &str, events: Vec<Value>) -> u16 {
    post_as(url, OKTA_SECRET, events).await.expect("serve answers")
}

/// Posts one delivery with `events` and this auth value; `None` if no answer came (the
/// connection failed, e.g. the process was killed).
pub async fn post_as(url: &str, secret: &str, events: Vec<Value>) -> Option<u16> {
    http_client()
        .post(format!("{url}/hooks/okta"))
        .header("authorization", secret)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&delivery(events)).expect("json"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// `GET /api/events/{uuid}` with the default admin token.
pub async fn event_view(url: &str, uuid: &str) -> Value {
    let r = http_client()
        .get(format!("{url}/api/events/{uuid}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin API answers");
    serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null)
}

/// Waits until every delivery of these events is done or dead; returns their views.
pub async fn settle(url: &str, events: &[Value]) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let mut views = Vec::new();
        for e in events {
            views.push(event_view(url, e["uuid"].as_str().expect("uuid")).await);
        }
        let busy = views.iter().any(|v| {
            v["deliveries"]
                .as_array()
                .is_none_or(|ds| ds.iter().any(|d| !matches!(d["status"].as_str(), Some("done" | "dead"))))
        });
        if !busy {
            return views;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "deliveries did not settle: {views:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
