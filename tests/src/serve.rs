//! The one way tests, benches and the demo run the real `hookhost serve`: a `host.toml`
//! builder ([`ServeSetup`]) and the process ([`ServeProcess`]: spawn, wait until healthy,
//! logs, `kill -9`, SIGTERM, and the admin API calls every caller needs). It exists so that a
//! config key or a start-up detail changes in one place, not in every test that starts a host.
//!
//! It is harness code: [`ServeProcess::spawn`] and [`ServeSetup::write`] return errors for
//! the demo to report; the test conveniences ([`start_with`], the admin helpers) panic with
//! the serve log, because there a failure is a failed test.

#![allow(clippy::expect_used)] // the test conveniences: a panic with context is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::okta::delivery;
use crate::{GraphEmulator, WebhookReceiver};

/// The Okta auth secret of the default serve config.
pub const OKTA_SECRET: &str = "Basic ZTJlOmUyZQ==";
/// The admin token of the default serve config.
pub const ADMIN_TOKEN: &str = "e2e-admin";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A component built by `make plugins` (`cargo build --release --target wasm32-wasip2`).
///
/// # Panics
/// When it has not been built or is older than its sources, naming the command that builds it.
pub fn wasm(crate_name: &str) -> PathBuf {
    let p = workspace().join("target/wasm32-wasip2/release").join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(p.exists(), "{} is missing: run `make plugins` (or `make test`, which builds it) first", p.display());
    if let Err(e) = ensure_fresh(&p, "the plugin", "`make plugins`") {
        panic!("{e:#}");
    }
    p
}

/// Installs the shipped bundle `name` (`dist/plugins/<name>.wasm` and `.toml`, built by
/// `make dist`) into the plugin folder `plugins_dir`, creating it.
///
/// # Errors
/// The bundle has not been built (naming the command that builds it), or the copy fails.
pub fn install_dist(plugins_dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(plugins_dir).with_context(|| format!("creating {}", plugins_dir.display()))?;
    for ext in ["wasm", "toml"] {
        let file = format!("{name}.{ext}");
        let from = workspace().join("dist/plugins").join(&file);
        if !from.exists() {
            bail!("{} is missing: run `make dist` (make build, make test and make bench do)", from.display());
        }
        std::fs::copy(&from, plugins_dir.join(&file)).with_context(|| format!("installing {}", from.display()))?;
    }
    Ok(())
}

/// The release `hookhost` binary.
///
/// # Errors
/// When it has not been built, naming the command that builds it.
pub fn hookhost_bin() -> anyhow::Result<PathBuf> {
    let p = workspace().join("target/release/hookhost");
    if !p.exists() {
        bail!("{} is missing: run `make build` (or `make test`, which builds it)", p.display());
    }
    ensure_fresh(&p, "the code", "`cargo build --release -p hookhost --bin hookhost`")?;
    Ok(p)
}

/// Refuses a build older than one of its sources ([`newer_source`]), naming that source, what
/// would run stale (`what`) and the command that rebuilds it. Each build is checked once per
/// test process: nothing rebuilds it while the tests run.
fn ensure_fresh(build: &Path, what: &str, rebuild: &str) -> anyhow::Result<()> {
    static CHECKED: std::sync::Mutex<std::collections::BTreeMap<PathBuf, Option<PathBuf>>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let newer = CHECKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(build.to_owned())
        .or_insert_with(|| newer_source(build))
        .clone();
    if let Some(source) = newer {
        bail!(
            "{} is older than {}, so these tests would run {what} as it was before that change: \
             rebuild it with {rebuild} (`make test` does)",
            build.display(),
            source.display()
        );
    }
    Ok(())
}

/// A source file of `binary` (a program or a component) changed since it was built, per the
/// dependency list cargo writes beside it (`<name>.d`); `None` when none did or there is no
/// list to read.
fn newer_source(binary: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let deps = std::fs::read_to_string(binary.with_extension("d")).ok()?;
    // `<binary>: <dep> <dep> …`, spaces inside a path escaped as `\ `.
    let (_, list) = deps.split_once(": ")?;
    let list = list.trim().replace("\\ ", "\0");
    list.split_whitespace()
        .map(|d| PathBuf::from(d.replace('\0', " ")))
        .find(|dep| std::fs::metadata(dep).and_then(|m| m.modified()).is_ok_and(|changed| changed > built))
}

/// A port nobody listens on now.
///
/// # Panics
/// When no loopback port can be bound at all.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

/// A client that does not keep idle connections to a server a test is about to kill.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap_or_default()
}

/// Polls `ok` every 10 ms until it holds: the way to wait for a state, never for a guessed
/// time. `within` only keeps a hung test from hanging CI.
///
/// # Panics
/// When `within` passes first, naming `what`.
pub async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !ok().await {
        assert!(t.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a `host.toml` holds, with defaults for tests: graph-guest granted the Graph
/// emulator, secrets as values, a SQLite store in the folder, short leases and backoffs.
/// Change a field with struct update syntax: `ServeSetup { lease_secs: 2, ..ServeSetup::default() }`.
#[derive(Clone, Debug)]
pub struct ServeSetup {
    /// `okta.auth_secret` (and what [`post`] sends).
    pub okta_secret: String,
    /// `okta.auth_secret` as written in TOML; default `{ value = "<okta_secret>" }`.
    pub okta_secret_source: Option<String>,
    pub admin_token: String,
    /// Extra lines of `[okta]` (e.g. `read_timeout_secs = 1`).
    pub okta_extra: String,
    /// `dispatch.lease_secs`: how long a killed process's claims block their deliveries
    /// (0: not written, the host's default).
    pub lease_secs: u64,
    /// Extra lines of `[dispatch]`.
    pub dispatch_extra: String,
    /// The body of `[dispatch.retry]` (empty: the host's defaults).
    pub retry: String,
    /// Whether graph-guest is installed and configured for the Graph emulator.
    pub graph_guest: bool,
    /// graph-guest signs in with this certificate credential instead of the client secret:
    /// a PEM file with the private key and its certificate, granted as key `client_certificate`.
    pub graph_guest_certificate: Option<PathBuf>,
    /// Appended last: more `[plugins.<name>]` tables.
    pub extra: String,
    /// `HOOKHOST_LOG` for the process (default: its own default, `info`).
    pub log_filter: Option<String>,
    /// `store.url`; default a SQLite file in the host's folder.
    pub store_url: Option<String>,
    /// Extra lines of `[server]` (e.g. `header_timeout_secs = 1`).
    pub server_extra: String,
    /// Extra lines of `[plugins]` (e.g. `max_wasm_bytes = 4096`).
    pub plugins_extra: String,
    /// The process umask `serve` runs under (through `sh -c 'umask …; exec …'`), to show
    /// file modes do not depend on it.
    pub umask: Option<u32>,
    /// More environment variables for the process (e.g. `OTEL_BSP_SCHEDULE_DELAY`).
    pub env: Vec<(String, String)>,
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
            graph_guest_certificate: None,
            extra: String::new(),
            log_filter: None,
            store_url: None,
            server_extra: String::new(),
            plugins_extra: String::new(),
            umask: None,
            env: Vec::new(),
        }
    }
}

impl ServeSetup {
    /// The host's own defaults (leases, retries) and no plugin configured: what the benches
    /// and the demo start from.
    pub fn plain() -> ServeSetup {
        ServeSetup { lease_secs: 0, retry: String::new(), graph_guest: false, ..ServeSetup::default() }
    }

    /// The `host.toml` text for a host listening on `port`.
    ///
    /// # Errors
    /// graph-guest is on but no Graph emulator was given.
    pub fn host_toml(&self, port: u16, graph: Option<&GraphEmulator>) -> anyhow::Result<String> {
        let okta_source =
            self.okta_secret_source.clone().unwrap_or_else(|| format!("{{ value = {:?} }}", self.okta_secret));
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
{lease}{dispatch_extra}
[dispatch.retry]
{retry}
[plugins]
dir = "plugins.d"
{plugins_extra}
[admin]
token = {{ value = {admin:?} }}
"#,
            okta_extra = self.okta_extra,
            server_extra = self.server_extra,
            plugins_extra = self.plugins_extra,
            lease = if self.lease_secs > 0 { format!("lease_secs = {}\n", self.lease_secs) } else { String::new() },
            dispatch_extra = self.dispatch_extra,
            retry = self.retry,
            admin = self.admin_token,
            store_url = self.store_url.as_deref().unwrap_or("sqlite://state/hookhost.db"),
        );
        if self.graph_guest {
            text.push_str(&graph_guest_tables_with(
                graph.context("graph-guest is on: give the Graph emulator it talks to")?,
                self.graph_guest_certificate.as_deref(),
            ));
        }
        text.push_str(&self.extra);
        Ok(text)
    }

    /// Writes `dir/host.toml` and creates `dir/plugins.d`, installing graph-guest (from
    /// `make plugins`' build) when it is on.
    ///
    /// # Errors
    /// The folder cannot be written, or graph-guest is on without an emulator.
    pub fn write(&self, dir: &Path, port: u16, graph: Option<&GraphEmulator>) -> anyhow::Result<()> {
        let text = self.host_toml(port, graph)?;
        let plugins = dir.join("plugins.d");
        std::fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
        if self.graph_guest {
            std::fs::copy(wasm("graph-guest"), plugins.join("graph-guest.wasm")).context("installing graph-guest")?;
            std::fs::copy(workspace().join("plugins/graph-guest/graph-guest.toml"), plugins.join("graph-guest.toml"))
                .context("installing graph-guest's manifest")?;
        }
        std::fs::write(dir.join("host.toml"), text).context("writing host.toml")
    }
}

/// The `[plugins.graph-guest]` tables granting graph-guest the Graph emulator and its
/// tenant's app credentials (as values).
pub fn graph_guest_tables(graph: &GraphEmulator) -> String {
    graph_guest_tables_with(graph, None)
}

/// As [`graph_guest_tables`]; with `certificate`, the app's credential is that PEM file
/// (granted as key `client_certificate`) instead of the client secret.
pub fn graph_guest_tables_with(graph: &GraphEmulator, certificate: Option<&Path>) -> String {
    let base = graph.base_url();
    let cfg = graph.config();
    let credential = match certificate {
        None => format!("client_secret = {{ value = {:?} }}\n", cfg.client_secret),
        Some(pem) => {
            format!("[plugins.graph-guest.keys]\nclient_certificate = {{ file = {:?} }}\n", pem.display().to_string())
        }
    };
    format!(
        r#"[plugins.graph-guest]
allowed_hosts = ["{base}"]
[plugins.graph-guest.config]
graph_url = "{base}"
login_url = "{base}"
[plugins.graph-guest.secrets]
tenant_id = {{ value = {:?} }}
client_id = {{ value = {:?} }}
{credential}"#,
        cfg.tenant_id, cfg.client_id
    )
}

/// The `[plugins.chat-notify]` and `[plugins.siem-forward]` tables granting the shipped
/// notification plugins a Slack incoming-webhook stand-in and a Splunk HTTP Event Collector
/// stand-in (whose token is `hec_token`); `chat_extra` adds lines to the operator's
/// `[plugins.chat-notify]` table.
pub fn notify_tables(slack: &WebhookReceiver, hec: &WebhookReceiver, hec_token: &str, chat_extra: &str) -> String {
    let (slack_origin, slack_url, hec_origin) = (slack.base_url(), slack.url(), hec.base_url());
    format!(
        r#"[plugins.chat-notify]
allowed_hosts = ["{slack_origin}"]
{chat_extra}
[plugins.chat-notify.secrets]
webhook_url = {{ value = "{slack_url}" }}
[plugins.siem-forward]
allowed_hosts = ["{hec_origin}"]
[plugins.siem-forward.config]
hec_url = "{hec_origin}"
index = "okta"
[plugins.siem-forward.secrets]
hec_token = {{ value = "{hec_token}" }}
"#
    )
}

/// `wasm` with a custom section appended: the same plugin with another sha256, what a
/// reload test installs to make the host see a new build.
pub fn wasm_variant(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"hookhost-test";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend(payload);
    out
}

/// Writes `dir/host.toml` for `setup` (see [`ServeSetup::write`]) and gives the setup back.
///
/// # Panics
/// When it cannot.
pub fn write_config(dir: &Path, port: u16, graph: Option<&GraphEmulator>, setup: ServeSetup) -> ServeSetup {
    setup.write(dir, port, graph).unwrap_or_else(|e| panic!("writing the host config: {e:#}"));
    setup
}

/// A running `hookhost serve`; killed (SIGKILL) when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub url: String,
    pub setup: ServeSetup,
    pub dir: PathBuf,
    /// This run's stderr.
    pub log: PathBuf,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Starts `hookhost serve --config dir/host.toml` from `/` (so relative paths must
    /// resolve against the config) and waits up to `healthy_within` for `/healthz`. Its
    /// stderr goes to a new `dir/serve-<n>.log`; [`Self::logs`] reads them all.
    ///
    /// # Errors
    /// The binary is missing, the process exits, or it does not become healthy in time;
    /// the message carries its log.
    pub async fn spawn(
        dir: &Path,
        port: u16,
        setup: ServeSetup,
        healthy_within: Duration,
    ) -> anyhow::Result<ServeProcess> {
        let bin = hookhost_bin()?;
        let mut cmd = match setup.umask {
            None => Command::new(&bin),
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("umask {mask:03o}; exec \"$0\" \"$@\"")).arg(&bin);
                sh
            }
        };
        let log = dir.join(format!("serve-{}.log", fastrand::u32(..)));
        cmd.args(["serve", "--config"])
            .arg(dir.join("host.toml"))
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?);
        if let Some(filter) = &setup.log_filter {
            cmd.env("HOOKHOST_LOG", filter);
        }
        cmd.envs(setup.env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().context("spawning hookhost serve")?;
        let url = format!("http://127.0.0.1:{port}");
        let mut serve = ServeProcess { child, url, setup, dir: dir.to_path_buf(), log };
        let http = http_client();
        let t = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", serve.url)).send().await {
                if r.status().is_success() {
                    return Ok(serve);
                }
            }
            if let Ok(Some(status)) = serve.child.try_wait() {
                bail!("hookhost serve exited with {status}:\n{}", serve.logs());
            }
            if t.elapsed() > healthy_within {
                bail!("hookhost serve was not healthy after {healthy_within:?}:\n{}", serve.logs());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `kill -9`: no graceful shutdown, claims and half-done work left behind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit: it stops claiming, waits
    /// `server.shutdown_grace_secs` for running attempts, then releases what it still holds.
    ///
    /// # Panics
    /// When the signal cannot be sent or the process is still running 30 s later.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {pid}");
        let t = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(t.elapsed() < Duration::from_secs(30), "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything every run of `serve` in this folder wrote to stderr.
    pub fn logs(&self) -> String {
        serve_logs(&self.dir)
    }

    /// What this run wrote to stderr.
    pub fn run_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request to the admin API with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http_client().request(method, format!("{}{path}", self.url)).bearer_auth(&self.setup.admin_token)
    }

    /// `GET path` with the admin token, as JSON (`Null` if the body is not JSON).
    ///
    /// # Panics
    /// When the host does not answer.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.admin(reqwest::Method::GET, path).send().await.expect("admin API answers");
        serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or(Value::Null)
    }

    /// `GET path` with the admin token: status and body text.
    ///
    /// # Panics
    /// When the host does not answer.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.admin(reqwest::Method::GET, path).send().await.expect("admin API answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// A metric from `/metrics`, summed over its labels (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.get_text("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Plugin `name` as `GET /api/plugins` shows it (`Null` if it is not listed).
    pub async fn plugin(&self, name: &str) -> Value {
        let all = self.get_json("/api/plugins").await;
        all["plugins"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned()).unwrap_or(Value::Null)
    }

    /// Polls `/api/plugins` until plugin `name` satisfies `ok` (30 s at most); returns it.
    ///
    /// # Panics
    /// When it never does, naming `what`, with the serve log.
    pub async fn wait_plugin(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let p = self.plugin(name).await;
            if ok(&p) {
                return p;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "plugin {name} never became {what}: {p}\n{}",
                self.run_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts one delivery with `events` and this setup's Okta secret; `None` if no answer.
    pub async fn post(&self, events: Vec<Value>) -> Option<u16> {
        post_as(&self.url, &self.setup.okta_secret, events).await
    }

    /// Every delivery with this status (all pages of `GET /api/deliveries?status=…`).
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

    /// `GET /api/deliveries/{id}/attempts`: the attempts, oldest first.
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
    ///
    /// # Panics
    /// When `within` passes first.
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

/// Starts `serve` in `dir` (configured by [`write_config`] with `setup`) and waits for it to
/// be healthy.
///
/// # Panics
/// When it does not start, with its log.
pub async fn start_with(dir: &Path, port: u16, setup: ServeSetup) -> ServeProcess {
    ServeProcess::spawn(dir, port, setup, Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`start_with`] the default setup.
pub async fn start(dir: &Path, port: u16) -> ServeProcess {
    start_with(dir, port, ServeSetup::default()).await
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

/// Posts one delivery with `events` to the default-secret endpoint; the status.
///
/// # Panics
/// When no answer comes.
pub async fn post(url: &str, events: Vec<Value>) -> u16 {
    post_as(url, OKTA_SECRET, events).await.expect("serve answers")
}

/// Posts one delivery with `events` and this auth value; `None` if no answer came (the
/// connection failed, e.g. the process was killed).
pub async fn post_as(url: &str, secret: &str, events: Vec<Value>) -> Option<u16> {
    let body = serde_json::to_vec(&delivery(events)).ok()?;
    http_client()
        .post(format!("{url}/hooks/okta"))
        .header("authorization", secret)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// `GET /api/events/{uuid}` with the default admin token.
///
/// # Panics
/// When the host does not answer.
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
///
/// # Panics
/// When they have not settled within `within`.
pub async fn settle_within(url: &str, events: &[Value], within: Duration) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let mut views = Vec::new();
        for e in events {
            views.push(event_view(url, e["uuid"].as_str().unwrap_or_default()).await);
        }
        let busy = views.iter().any(|v| {
            v["deliveries"]
                .as_array()
                .is_none_or(|ds| ds.iter().any(|d| !matches!(d["status"].as_str(), Some("done" | "dead"))))
        });
        if !busy {
            return views;
        }
        assert!(t.elapsed() < within, "deliveries did not settle within {within:?}: {views:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`settle_within`] 60 s.
pub async fn settle(url: &str, events: &[Value]) -> Vec<Value> {
    settle_within(url, events, Duration::from_secs(60)).await
}
