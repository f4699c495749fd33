//! The host configuration file (TOML), read strictly.
//!
//! Every key is documented in README.md ("Configuration"), with its default. An unknown key
//! is an error naming it, because a misspelt `auth_secret` that silently falls back to a
//! default is how a service ends up open. Relative paths (the `sqlite://` path,
//! `plugins.dir`, `{ file = … }` secrets) resolve against the config file's folder, so the
//! service behaves the same whatever directory it is started from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::SecretSource;
use crate::store::StoreUrl;

/// Plugin names that cannot be used: they are keys of `[plugins]` itself.
pub const RESERVED_PLUGIN_NAMES: &[&str] = &["dir", "watch", "cache_dir", "max_wasm_bytes", "trusted_keys"];

/// A config problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError { file: file.display().to_string(), message: message.into() }
    }
}

/// The whole host configuration, with defaults filled in and paths made absolute.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The file it was read from (absolute), if any.
    pub file: Option<PathBuf>,
    pub server: ServerConfig,
    pub okta: OktaConfig,
    pub store: StoreConfig,
    pub dispatch: DispatchConfig,
    pub plugins: PluginsConfig,
    pub admin: AdminConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default: expose it through a TLS proxy.
    pub listen: SocketAddr,
    /// On SIGTERM/SIGINT, how long running attempts may take to finish.
    pub shutdown_grace_secs: u64,
    /// A request's head must arrive within this long (from accept, or from the previous
    /// response on a keep-alive connection), or the connection is closed.
    pub header_timeout_secs: u64,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout_secs: u64,
    /// Connections open at once; more wait, unserved, until one closes.
    pub max_connections: u32,
    /// How `serve` writes its log lines on stderr (`--log-format` wins).
    pub log_format: LogFormat,
}

/// `server.log_format`: text for people, JSON (one object a line) for log shippers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP, off unless an endpoint is set here or
/// in `OTEL_EXPORTER_OTLP_ENDPOINT` (a key set here wins over its variable; see
/// [`crate::telemetry`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (default) or `http/json`.
    pub otlp_protocol: Option<String>,
    /// The `service.name` resource attribute (default `OTEL_SERVICE_NAME`, else `hookhost`).
    pub service_name: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_secs: 20,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OktaConfig {
    /// Path of the event hook endpoint.
    pub path: String,
    /// Header that carries the shared secret (compared case-insensitively by name).
    pub auth_header: String,
    /// The whole expected header value (`Basic …` included). Required by `serve`.
    pub auth_secret: Option<SecretSource>,
    /// Larger bodies get 413.
    pub max_body_bytes: usize,
    /// A body not fully received this long after the request started gets 408: a slow or
    /// stalled sender must not hold a connection and a task forever. Okta sends a delivery
    /// in well under a second and gives up after about 3 s, so 10 s only ever stops senders
    /// that are not Okta (or a network that has failed).
    pub read_timeout_secs: u64,
    /// The Okta org, `scheme://host[:port]` without a path, for the calls hookhost makes to
    /// Okta itself (backfill, `okta register`). `http` is accepted for emulators.
    pub org_url: Option<String>,
    /// An Okta API token, sent as `Authorization: SSWS <token>` (any secret source).
    pub api_token: Option<SecretSource>,
    /// `[okta.oauth]`: an Okta API service app instead of `api_token` (exactly one of the two).
    pub oauth: Option<OktaOAuthConfig>,
    /// `[okta.backfill]`: recovering events Okta's best-effort hooks dropped.
    pub backfill: BackfillConfig,
}

/// `[okta.oauth]`: scoped access tokens by client credentials with `private_key_jwt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaOAuthConfig {
    /// The service app's client id (`0oa…`).
    pub client_id: String,
    /// The app's private key, RSA or EC P-256, PEM (any secret source; a file is usual).
    pub private_key: SecretSource,
    /// The Okta API scopes to ask for; each must be granted to the app.
    pub scopes: Vec<String>,
    /// The `kid` of the app's public key, sent in the assertion's header (optional; Okta
    /// tries the app's keys when absent).
    #[serde(default)]
    pub key_id: Option<String>,
}

/// `[okta.backfill]` (`docs/contract.md`, "Backfill").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackfillConfig {
    /// Poll the System Log inside `serve`; needs `okta.org_url` and `okta.api_token`.
    pub enabled: bool,
    /// Seconds between polls once a poll has caught up (an empty page).
    pub every_secs: u64,
    /// Where the very first poll starts, counting back from now.
    pub lookback_secs: u64,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig { enabled: false, every_secs: 60, lookback_secs: 86_400 }
    }
}

/// The System Log keeps 90 days; a lookback past that finds nothing more.
pub const MAX_LOOKBACK_SECS: u64 = 90 * 86_400;

impl Default for OktaConfig {
    fn default() -> Self {
        OktaConfig {
            path: "/hooks/okta".into(),
            auth_header: "Authorization".into(),
            auth_secret: None,
            max_body_bytes: 1 << 20,
            read_timeout_secs: 10,
            org_url: None,
            api_token: None,
            oauth: None,
            backfill: BackfillConfig::default(),
        }
    }
}

impl OktaConfig {
    /// Whether hookhost can call the Okta API: an org and one kind of credential.
    pub fn can_call_api(&self) -> bool {
        self.org_url.is_some() && (self.api_token.is_some() || self.oauth.is_some())
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the config file) or `postgres://…`.
    pub url: StoreUrl,
    /// The PostgreSQL password, kept out of the URL (any secret source). Ignored by SQLite.
    pub password: Option<SecretSource>,
    /// CA certificates (PEM) for `sslmode=verify-ca|verify-full`, relative to the config
    /// file; the system's roots when absent.
    pub ca_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: StoreUrl::Sqlite("hookhost.db".into()), password: None, ca_file: None }
    }
}

/// `[store]` as written, before its URL is parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStoreConfig {
    url: String,
    password: Option<SecretSource>,
    ca_file: Option<PathBuf>,
}

impl Default for RawStoreConfig {
    fn default() -> Self {
        RawStoreConfig { url: "sqlite://hookhost.db".into(), password: None, ca_file: None }
    }
}

/// Retry policy for retryable failures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all (the first one included) before a delivery is dead.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time, with jitter.
    pub initial_backoff_ms: u64,
    /// Upper bound of one backoff (a plugin's retry-after hint may exceed it).
    pub max_backoff_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_attempts: 10, initial_backoff_ms: 1_000, max_backoff_secs: 900 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// A claim not renewed for this long returns to pending (a crashed host's work).
    pub lease_secs: u64,
    /// Attempts running at once, all plugins together.
    pub workers: u32,
    /// Attempts running at once per plugin (different users), unless the plugin overrides.
    pub max_concurrency: u32,
    pub retry: RetryConfig,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig { lease_secs: 30, workers: 32, max_concurrency: 8, retry: RetryConfig::default() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `/api`, `/metrics` and the console. Without it they answer 401.
    pub token: Option<SecretSource>,
}

/// `[limits]` as written in a manifest or an operator override; unset keys keep defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub max_http_requests: Option<u32>,
    pub max_response_bytes: Option<usize>,
    pub max_log_lines: Option<usize>,
}

/// `[plugins.<name>]`: the operator's grants and overrides for one plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOverride {
    /// Replaces the manifest's `allowed_hosts`.
    pub allowed_hosts: Option<Vec<String>>,
    /// Replaces the manifest's `groups`.
    pub groups: Option<Vec<String>>,
    /// Replaces the manifest's `event_types`.
    pub event_types: Option<Vec<String>>,
    /// Overlays the manifest's `[config]`.
    #[serde(default)]
    pub config: toml::Table,
    /// The plugin's secrets, by the names its manifest declares.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// `[plugins.<name>.keys]`: private keys (PEM, optionally followed by the certificate)
    /// the plugin may sign with through the `keys` import, by the names its manifest declares.
    #[serde(default)]
    pub keys: BTreeMap<String, SecretSource>,
    /// Overlays the manifest's `[limits]`.
    pub limits: Option<LimitsSpec>,
    /// Replaces `[dispatch.retry]` for this plugin.
    pub retry: Option<RetryConfig>,
    /// Replaces `[dispatch] max_concurrency` for this plugin.
    pub max_concurrency: Option<u32>,
    /// `[[plugins.<name>.pace]]`: at most this rate of outbound calls to one origin.
    #[serde(default)]
    pub pace: Vec<PaceSpec>,
    /// Lets a bundle whose version is lower than the active one go into service.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// `[plugins.<name>.guard]`: bulk changes of these types wait for an operator.
    pub guard: Option<GuardSpec>,
    /// `[plugins.<name>.reconcile]`: the plan's change limit and an optional schedule.
    pub reconcile: Option<ReconcileConfig>,
}

/// `[plugins.<name>.guard]` as written (docs/contract.md, "Guard"); checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// Event types counted and held (e.g. `group.user_membership.remove`); not empty.
    pub event_types: Vec<String>,
    /// Deliveries of those types that may begin within one window (≥ 1).
    pub max_per_window: u32,
    /// The window, in seconds (≥ 1).
    pub window_secs: u64,
}

impl GuardSpec {
    /// The rule the store applies, or what is wrong with it and how to fix it.
    pub fn rule(&self, plugin: &str) -> Result<crate::store::GuardRule, String> {
        let at = format!("[plugins.{plugin}.guard]");
        if self.event_types.is_empty() || self.event_types.iter().any(|t| t.trim().is_empty()) {
            return Err(format!(
                "{at} event_types must list the event types to guard, e.g. [\"group.user_membership.remove\"]"
            ));
        }
        if self.max_per_window < 1 {
            return Err(format!("{at} max_per_window must be 1 or more (how many may begin per window), got 0"));
        }
        if self.window_secs < 1 {
            return Err(format!("{at} window_secs must be 1 or more (the window in seconds), got 0"));
        }
        Ok(crate::store::GuardRule {
            event_types: self.event_types.clone(),
            max_per_window: self.max_per_window,
            window: std::time::Duration::from_secs(self.window_secs),
        })
    }
}

/// `[plugins.<name>.reconcile]` (`docs/contract.md`, "Reconcile").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Inside `serve`, reconcile this plugin every this many seconds; never when unset.
    pub every_secs: Option<u64>,
    /// What a scheduled run does: only report the plan, or also apply it.
    pub mode: ReconcileMode,
    /// A plan with more changes than this is applied only with `--force` (or `"force": true`);
    /// a scheduled `apply` run then only reports.
    pub max_changes: usize,
}

/// What a scheduled reconcile does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileMode {
    /// Compute and keep the plan (shown by the console's Drift panel); change nothing.
    #[default]
    Report,
    /// Compute the plan and store its changes as events (within `max_changes`).
    Apply,
}

/// The change limit of a plan when `max_changes` is not set.
pub const DEFAULT_MAX_CHANGES: usize = 50;

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig { every_secs: None, mode: ReconcileMode::Report, max_changes: DEFAULT_MAX_CHANGES }
    }
}

/// One `[[plugins.<name>.pace]]` entry as written; the registry validates it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaceSpec {
    /// `scheme://host[:port]`, like an `allowed_hosts` entry.
    pub origin: String,
    /// Sustained requests per second (> 0; fractions allowed).
    pub per_second: f64,
    /// Requests that may go at once after a quiet spell (≥ 1; default: `per_second` rounded up).
    pub burst: Option<u32>,
    /// Pace only these methods (e.g. Graph's quota counts writes); default all.
    pub methods: Option<Vec<String>>,
}

/// `[plugins]`: where bundles live, and per-plugin overrides.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// Folder of drop-in bundles (`<name>.wasm` + `<name>.toml`).
    pub dir: PathBuf,
    /// Pick up new, changed and removed bundles without a restart.
    pub watch: bool,
    /// Where compiled artifacts are cached (default: `<dir>/.cache`).
    pub cache_dir: Option<PathBuf>,
    /// A `.wasm` larger than this is refused before it is read.
    pub max_wasm_bytes: u64,
    /// minisign public keys; when any is set, every bundle must be signed by one of them.
    pub trusted_keys: Vec<String>,
    pub overrides: BTreeMap<String, PluginOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    okta: OktaConfig,
    #[serde(default)]
    store: RawStoreConfig,
    #[serde(default)]
    dispatch: DispatchConfig,
    #[serde(default)]
    plugins: toml::Table,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    telemetry: TelemetryConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            file: None,
            server: ServerConfig::default(),
            okta: OktaConfig::default(),
            store: StoreConfig::default(),
            dispatch: DispatchConfig::default(),
            plugins: PluginsConfig {
                dir: PathBuf::from("plugins.d"),
                watch: true,
                cache_dir: None,
                max_wasm_bytes: crate::registry::files::DEFAULT_MAX_WASM_BYTES,
                trusted_keys: Vec::new(),
                overrides: BTreeMap::new(),
            },
            admin: AdminConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl HostConfig {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// The file is unreadable, not TOML, has an unknown key or a bad value; the error names
    /// the file and the key.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, format!("cannot read: {e}")))?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &abs, &base)
    }

    /// Parses config text; relative paths resolve against `base`.
    ///
    /// # Errors
    /// As [`HostConfig::load`].
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<HostConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::new(file, toml_problem(&e, text)))?;
        let err = |m: String| ConfigError::new(file, m);

        let mut okta = raw.okta;
        if !okta.path.starts_with('/') {
            return Err(err("okta.path must start with '/', e.g. \"/hooks/okta\"".into()));
        }
        // The admin API and the console share the listener; their routes cannot be shadowed.
        if matches!(okta.path.as_str(), "/" | "/console.js" | "/console.css" | "/healthz" | "/metrics")
            || okta.path == "/api"
            || okta.path.starts_with("/api/")
        {
            return Err(err(
                "okta.path is taken by the admin API or the console (/, /api, /healthz, /metrics); use e.g. \"/hooks/okta\""
                    .into(),
            ));
        }
        let server = &raw.server;
        if !(1..=3600).contains(&server.header_timeout_secs) {
            return Err(err(format!(
                "server.header_timeout_secs must be 1 to 3600, got {}",
                server.header_timeout_secs
            )));
        }
        if !(1..=86_400).contains(&server.idle_timeout_secs) {
            return Err(err(format!("server.idle_timeout_secs must be 1 to 86400, got {}", server.idle_timeout_secs)));
        }
        if !(1..=1_000_000).contains(&server.max_connections) {
            return Err(err(format!("server.max_connections must be 1 to 1000000, got {}", server.max_connections)));
        }
        if okta.max_body_bytes == 0 {
            return Err(err("okta.max_body_bytes must be at least 1".into()));
        }
        if !(1..=3600).contains(&okta.read_timeout_secs) {
            return Err(err(format!("okta.read_timeout_secs must be 1 to 3600, got {}", okta.read_timeout_secs)));
        }
        if let Some(s) = okta.auth_secret.as_mut() {
            s.resolve_paths(base);
        }
        if let Some(s) = okta.api_token.as_mut() {
            s.resolve_paths(base);
        }
        if let Some(url) = &okta.org_url {
            okta.org_url = Some(org_origin(url).map_err(|m| err(format!("okta.org_url: {m}")))?);
        }
        if let Some(oauth) = okta.oauth.as_mut() {
            if okta.api_token.is_some() {
                return Err(err("okta.api_token and [okta.oauth] are both set; keep exactly one (the service app \
                     of [okta.oauth] is the one Okta recommends)"
                    .into()));
            }
            if oauth.client_id.trim().is_empty() {
                return Err(err("okta.oauth.client_id is empty; set it to the service app's client id (0oa…)".into()));
            }
            if oauth.scopes.is_empty() || oauth.scopes.iter().any(|s| s.trim().is_empty() || s.contains(' ')) {
                return Err(err("okta.oauth.scopes must list the scopes granted to the app, one per string, e.g. \
                     [\"okta.logs.read\", \"okta.groups.read\", \"okta.eventHooks.manage\"]"
                    .into()));
            }
            oauth.private_key.resolve_paths(base);
        }
        let scheduled: Vec<String> = raw
            .plugins
            .iter()
            .filter(|(_, v)| v.get("reconcile").and_then(|r| r.get("every_secs")).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if let (Some(name), true) = (scheduled.first(), !okta.can_call_api()) {
            return Err(err(format!(
                "plugins.{name}.reconcile.every_secs needs okta.org_url (e.g. \"https://example.okta.com\") and \
                 okta.api_token (e.g. {{ env = \"OKTA_API_TOKEN\" }}, a token that may read groups) or [okta.oauth]"
            )));
        }
        let b = &okta.backfill;
        if b.enabled && !okta.can_call_api() {
            return Err(err("okta.backfill.enabled needs okta.org_url (e.g. \"https://example.okta.com\") and \
                 okta.api_token (e.g. { env = \"OKTA_API_TOKEN\" }, a token that may read the System Log) or [okta.oauth]"
                .into()));
        }
        if !(1..=86_400).contains(&b.every_secs) {
            return Err(err(format!("okta.backfill.every_secs must be 1 to 86400, got {}", b.every_secs)));
        }
        if b.lookback_secs > MAX_LOOKBACK_SECS {
            return Err(err(format!(
                "okta.backfill.lookback_secs must be at most {MAX_LOOKBACK_SECS} (the System Log keeps 90 days), got {}",
                b.lookback_secs
            )));
        }
        let mut admin = raw.admin;
        if let Some(s) = admin.token.as_mut() {
            s.resolve_paths(base);
        }
        if raw.dispatch.lease_secs < 1 {
            return Err(err("dispatch.lease_secs must be a whole number >= 1".into()));
        }
        if raw.dispatch.workers < 1 || raw.dispatch.max_concurrency < 1 {
            return Err(err("dispatch.workers and dispatch.max_concurrency must be >= 1".into()));
        }
        validate_retry(&raw.dispatch.retry, "dispatch.retry").map_err(err)?;
        if let Some(p) = &raw.telemetry.otlp_protocol {
            crate::telemetry::Protocol::parse(p).map_err(|m| err(format!("telemetry.otlp_protocol: {m}")))?;
        }

        let mut password = raw.store.password;
        if let Some(s) = password.as_mut() {
            s.resolve_paths(base);
        }
        let ca_file = raw.store.ca_file.map(|f| base.join(f));
        let store = StoreConfig { url: StoreUrl::parse(&raw.store.url, base).map_err(err)?, password, ca_file };
        let plugins = parse_plugins(raw.plugins, base).map_err(err)?;
        Ok(HostConfig {
            file: Some(file.to_path_buf()),
            server: raw.server,
            okta,
            store,
            dispatch: raw.dispatch,
            plugins,
            admin,
            telemetry: raw.telemetry,
        })
    }
}

/// A TOML error as the place and the kind of problem, never the text around it.
///
/// `toml`'s own `Display` quotes the offending line with a caret under it, and serde's
/// "invalid type" messages quote the value; in a config or a manifest that line may hold a
/// secret (`value = "…"`), and the message ends up in logs, `last_error` and terminals.
/// So: `line L, column C: <kind>`, with values taken out of the kind (see
/// [`redact_toml_message`]).
pub fn toml_problem(e: &toml::de::Error, text: &str) -> String {
    let kind = redact_toml_message(e.message());
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: {kind}")
        }
        None => kind,
    }
}

/// 1-based line and column (in characters) of byte offset `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// The kind of a TOML/serde error without any value from the file:
///
/// - `invalid type: string "…", expected X` and `invalid value: …` keep only what was
///   expected (serde writes the value found, which may be a secret);
/// - `unknown variant`: the variant (a value) is dropped;
/// - `unknown field` and `duplicate key` keep the key's name when it looks like a key
///   (letters, digits, `_`, `-`, `.`, at most 64): that is what the operator must fix;
/// - everything else is the parser's description of what it expected, one line.
pub fn redact_toml_message(message: &str) -> String {
    let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if message.starts_with(kind) {
            return match message.find(", expected ") {
                Some(i) => format!("{kind}{}", &message[i..]),
                None => kind.to_string(),
            };
        }
    }
    if message.starts_with("unknown variant") {
        return match message.find(", expected ") {
            Some(i) => format!("unknown variant{}", &message[i..]),
            None => "unknown variant".into(),
        };
    }
    for kind in ["unknown field", "duplicate key", "duplicate field"] {
        if let Some(rest) = message.strip_prefix(kind) {
            let name = rest.trim_start().strip_prefix('`').and_then(|r| r.split_once('`'));
            return match name {
                Some((name, tail)) if looks_like_a_key(name) => format!("{kind} `{name}`{tail}"),
                Some((_, tail)) => format!("{kind}{tail}"),
                None => kind.to_string(),
            };
        }
    }
    // Parser messages describe tokens (`expected `=``); drop anything quoted with `"`,
    // which only a value would be.
    strip_double_quoted(&message)
}

fn looks_like_a_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn strip_double_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    // Odd parts are inside quotes; a quote character itself as a token is written `"`
    // in backticks by the parser and survives as `…`.
    for (i, part) in parts.enumerate() {
        if i % 2 == 0 {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn validate_retry(r: &RetryConfig, key: &str) -> Result<(), String> {
    if r.max_attempts < 1 {
        return Err(format!("{key}.max_attempts must be >= 1"));
    }
    if r.initial_backoff_ms < 1 || r.max_backoff_secs < 1 {
        return Err(format!("{key}.initial_backoff_ms and max_backoff_secs must be >= 1"));
    }
    Ok(())
}

/// The org URL as an origin (`https://example.okta.com`, no trailing slash).
fn org_origin(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{text:?} must start with https:// (or http:// for an emulator)"));
    }
    if url.host_str().is_none() || !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some()
    {
        return Err(format!("{text:?} must be scheme://host[:port] without a path, e.g. \"https://example.okta.com\""));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use okta.api_token".into());
    }
    Ok(url.origin().ascii_serialization())
}

fn parse_plugins(mut table: toml::Table, base: &Path) -> Result<PluginsConfig, String> {
    let dir = match table.remove("dir") {
        None => PathBuf::from("plugins.d"),
        Some(toml::Value::String(s)) => PathBuf::from(s),
        Some(_) => return Err("plugins.dir must be a string (a folder path)".into()),
    };
    let watch = match table.remove("watch") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => return Err("plugins.watch must be true or false".into()),
    };
    let cache_dir = match table.remove("cache_dir") {
        None => None,
        Some(toml::Value::String(s)) => Some(absolutize(base, Path::new(&s))),
        Some(_) => return Err("plugins.cache_dir must be a string (a folder path)".into()),
    };
    let max_wasm_bytes = match table.remove("max_wasm_bytes") {
        None => crate::registry::files::DEFAULT_MAX_WASM_BYTES,
        Some(toml::Value::Integer(n)) if n >= 1 => n as u64,
        Some(_) => return Err("plugins.max_wasm_bytes must be a whole number of bytes >= 1".into()),
    };
    let trusted_keys = match table.remove("trusted_keys") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                toml::Value::String(s) => Ok(s),
                _ => Err(format!("plugins.trusted_keys[{i}] must be a string (a minisign public key)")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("plugins.trusted_keys must be a list of minisign public keys".into()),
    };
    crate::registry::signing::TrustedKeys::parse(&trusted_keys)?;
    let mut overrides = BTreeMap::new();
    for (name, value) in table {
        let toml::Value::Table(t) = value else {
            return Err(format!(
                "unknown key plugins.{name}: expected dir, watch, cache_dir, max_wasm_bytes, trusted_keys or a [plugins.<name>] table"
            ));
        };
        let mut o: PluginOverride = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| format!("[plugins.{name}]: {}", redact_toml_message(e.message())))?;
        for src in o.secrets.values_mut().chain(o.keys.values_mut()) {
            src.resolve_paths(base);
        }
        for (key, v) in &o.config {
            config_scalar(v).map_err(|m| format!("plugins.{name}.config.{key}: {m}"))?;
        }
        if let Some(r) = &o.retry {
            validate_retry(r, &format!("plugins.{name}.retry"))?;
        }
        if let Some(g) = &o.guard {
            g.rule(&name)?;
        }
        if let Some(r) = &o.reconcile {
            if r.every_secs.is_some_and(|s| !(1..=604_800).contains(&s)) {
                return Err(format!(
                    "plugins.{name}.reconcile.every_secs must be 1 to 604800 (a week), or left out for no schedule"
                ));
            }
            if r.max_changes < 1 {
                return Err(format!(
                    "plugins.{name}.reconcile.max_changes must be at least 1 (default {DEFAULT_MAX_CHANGES})"
                ));
            }
        }
        overrides.insert(name, o);
    }
    Ok(PluginsConfig { dir: absolutize(base, &dir), watch, cache_dir, max_wasm_bytes, trusted_keys, overrides })
}

fn absolutize(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A plugin config value as the plugin sees it: a TOML scalar as its TOML text.
///
/// # Errors
/// Arrays and tables are not scalars.
pub fn config_scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("config values must be strings, numbers or booleans".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse(text, Path::new("/etc/hookhost/host.toml"), Path::new("/etc/hookhost"))
    }

    #[test]
    fn telemetry_and_log_format_are_off_by_default_and_checked_when_set() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.server.log_format, LogFormat::Text);
        assert!(cfg.telemetry.otlp_endpoint.is_none());
        let cfg = parse(
            "[server]\nlog_format = \"json\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\notlp_protocol = \"http/json\"\nservice_name = \"hooks-eu\"\n",
        )
        .unwrap();
        assert_eq!(cfg.server.log_format, LogFormat::Json);
        assert_eq!(cfg.telemetry.otlp_protocol.as_deref(), Some("http/json"));
        let e = parse("[telemetry]\notlp_protocol = \"grpc\"\n").unwrap_err().to_string();
        assert!(e.contains("telemetry.otlp_protocol") && e.contains("4318"), "{e}");
        let e = parse("[telemetry]\nendpoint = \"http://x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `endpoint`"), "{e}");
    }

    #[test]
    fn design_example_parses_and_resolves_paths() {
        let cfg = parse(
            r#"
[server]
listen = "127.0.0.1:8080"
[okta]
path = "/hooks/okta"
auth_header = "Authorization"
auth_secret = { env = "HOOKHOST_OKTA_SECRET" }
max_body_bytes = 1048576
[store]
url = "sqlite://hookhost.db"
[dispatch]
lease_secs = 30
[plugins]
dir = "plugins.d"
watch = true
[admin]
token = { env = "HOOKHOST_ADMIN_TOKEN" }
[plugins.graph-guest]
allowed_hosts = ["https://login.microsoftonline.com", "https://graph.microsoft.com"]
groups = ["O365Guest"]
[plugins.graph-guest.config]
send_invitation_message = false
on_remove = "delete"
[plugins.graph-guest.secrets]
tenant_id = { env = "AZURE_TENANT_ID" }
client_secret = { file = "secrets/azure_client_secret" }
[plugins.graph-guest.keys]
client_certificate = { file = "secrets/graph-app.pem" }
"#,
        )
        .unwrap();
        assert_eq!(cfg.store.url, StoreUrl::Sqlite("/etc/hookhost/hookhost.db".into()));
        assert_eq!(cfg.plugins.dir, PathBuf::from("/etc/hookhost/plugins.d"));
        let gg = &cfg.plugins.overrides["graph-guest"];
        assert_eq!(
            gg.secrets["client_secret"],
            SecretSource::File(PathBuf::from("/etc/hookhost/secrets/azure_client_secret"))
        );
        assert_eq!(
            gg.keys["client_certificate"],
            SecretSource::File(PathBuf::from("/etc/hookhost/secrets/graph-app.pem"))
        );
        assert_eq!(config_scalar(&gg.config["send_invitation_message"]).unwrap(), "false");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("[okta]\nauth_secrett = { env = \"X\" }\n").unwrap_err().to_string();
        assert!(e.contains("auth_secrett"), "{e}");
        let e = parse("[plugins.graph-guest]\nallowed_host = []\n").unwrap_err().to_string();
        assert!(e.contains("allowed_host") && e.contains("plugins.graph-guest"), "{e}");
        let e = parse("[serverr]\n").unwrap_err().to_string();
        assert!(e.contains("serverr"), "{e}");
    }

    /// A config error tells the line, the column and the kind of problem, and never quotes
    /// the file: the line may hold a secret.
    #[test]
    fn errors_never_quote_the_file() {
        const SECRET: &str = "s3cr3t-ZQX-1729";
        let cases = [
            format!("[okta]\nauth_secret = {{ value = \"{SECRET}\"\n"),
            format!("[okta]\nauth_secret = \"{SECRET}\"\n"),
            format!("[okta]\nmax_body_bytes = \"{SECRET}\"\n"),
            format!("[okta]\npath = \"{SECRET}\"\n"),
            format!("[store]\nurl = \"mysql://u:{SECRET}@h/db\"\n"),
            format!("[okta]\nauth_secret = {{ value = \"x\", env = \"{SECRET}\" }}\n"),
            format!("[plugins.p]\nallowed_hosts = \"{SECRET}\"\n"),
            format!("[plugins.p.secrets]\nk = \"{SECRET}\"\n"),
            format!("[dispatch]\nworkers = {SECRET}\n"),
            format!("{SECRET}\n"),
            format!("x = \"\"\"{SECRET}\n"),
            format!("[server]\nlisten = \"{SECRET}\"\n"),
        ];
        for text in &cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(!e.contains(SECRET) && !e.contains("s3cr3t"), "{text:?} gave {e}");
            assert!(e.starts_with("/etc/hookhost/host.toml: "), "{e}");
        }
        let e = parse(&format!("[okta]\nmax_body_bytes = \"{SECRET}\"\n")).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("invalid type"), "{e}");
    }

    #[test]
    fn connection_limits_default_and_stay_strict() {
        let s = parse("").unwrap().server;
        assert_eq!((s.header_timeout_secs, s.idle_timeout_secs, s.max_connections), (10, 60, 1024));
        let s =
            parse("[server]\nheader_timeout_secs = 1\nidle_timeout_secs = 2\nmax_connections = 3\n").unwrap().server;
        assert_eq!((s.header_timeout_secs, s.idle_timeout_secs, s.max_connections), (1, 2, 3));
        for bad in ["header_timeout_secs = 0", "idle_timeout_secs = 0", "max_connections = 0"] {
            let e = parse(&format!("[server]\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{e}");
        }
        let e = parse("[server]\nheader_timeout = 1\n").unwrap_err().to_string();
        assert!(e.contains("header_timeout"), "{e}");
        assert_eq!(parse("[plugins]\nmax_wasm_bytes = 5\n").unwrap().plugins.max_wasm_bytes, 5);
        assert_eq!(parse("").unwrap().plugins.max_wasm_bytes, 64 << 20);
        assert!(parse("[plugins]\nmax_wasm_bytes = 0\n").is_err());
    }

    #[test]
    fn lease_secs_must_be_positive() {
        assert!(parse("[dispatch]\nlease_secs = 0\n").is_err());
        assert_eq!(parse("[dispatch]\nlease_secs = 1\n").unwrap().dispatch.lease_secs, 1);
    }

    #[test]
    fn okta_path_cannot_shadow_the_console_or_the_admin_api() {
        for path in ["/", "/console.js", "/healthz", "/metrics", "/api", "/api/events"] {
            let e = parse(&format!("[okta]\npath = {path:?}\n")).unwrap_err().to_string();
            assert!(e.contains("okta.path") && e.contains("taken"), "{path}: {e}");
        }
        assert_eq!(parse("[okta]\npath = \"/apix/okta\"\n").unwrap().okta.path, "/apix/okta");
    }

    #[test]
    fn read_timeout_defaults_to_10_and_must_be_positive() {
        assert_eq!(parse("").unwrap().okta.read_timeout_secs, 10);
        assert_eq!(parse("[okta]\nread_timeout_secs = 2\n").unwrap().okta.read_timeout_secs, 2);
        let e = parse("[okta]\nread_timeout_secs = 0\n").unwrap_err().to_string();
        assert!(e.contains("okta.read_timeout_secs"), "{e}");
    }

    #[test]
    fn okta_api_access_and_backfill_parse_and_need_each_other() {
        let cfg = parse(
            "[okta]\norg_url = \"https://example.okta.com/\"\napi_token = { file = \"okta.token\" }\n\
             [okta.backfill]\nenabled = true\nevery_secs = 5\n",
        )
        .unwrap();
        assert_eq!(cfg.okta.org_url.as_deref(), Some("https://example.okta.com"));
        assert_eq!(cfg.okta.api_token, Some(SecretSource::File(PathBuf::from("/etc/hookhost/okta.token"))));
        assert!(cfg.okta.backfill.enabled);
        assert_eq!((cfg.okta.backfill.every_secs, cfg.okta.backfill.lookback_secs), (5, 86_400));
        assert!(!parse("").unwrap().okta.backfill.enabled);
        let e = parse("[okta.backfill]\nenabled = true\n").unwrap_err().to_string();
        assert!(e.contains("okta.org_url") && e.contains("okta.api_token"), "{e}");
        for bad in ["https://example.okta.com/oauth2", "ftp://x", "https://u:p@example.okta.com", "nope"] {
            let e = parse(&format!("[okta]\norg_url = {bad:?}\n")).unwrap_err().to_string();
            assert!(e.contains("okta.org_url"), "{bad}: {e}");
        }
        assert_eq!(
            parse("[okta]\norg_url = \"http://127.0.0.1:8081\"\n").unwrap().okta.org_url.as_deref(),
            Some("http://127.0.0.1:8081")
        );
        let e = parse("[okta.backfill]\nevery_sec = 5\n").unwrap_err().to_string();
        assert!(e.contains("every_sec"), "{e}");
    }

    #[test]
    fn okta_oauth_replaces_the_api_token_and_is_checked() {
        let oauth = "[okta.oauth]\nclient_id = \"0oa1\"\nprivate_key = { file = \"okta-app.pem\" }\n\
                     scopes = [\"okta.logs.read\"]\n";
        let cfg =
            parse(&format!("[okta]\norg_url = \"https://example.okta.com\"\n[okta.backfill]\nenabled = true\n{oauth}"))
                .unwrap();
        let o = cfg.okta.oauth.as_ref().unwrap();
        assert_eq!(o.private_key, SecretSource::File(PathBuf::from("/etc/hookhost/okta-app.pem")));
        assert_eq!(
            (o.client_id.as_str(), o.scopes.as_slice(), o.key_id.as_deref()),
            ("0oa1", &["okta.logs.read".to_owned()][..], None)
        );
        assert!(cfg.okta.can_call_api());

        let both = format!("[okta]\norg_url = \"https://example.okta.com\"\napi_token = {{ value = \"t\" }}\n{oauth}");
        let e = parse(&both).unwrap_err().to_string();
        assert!(e.contains("okta.api_token and [okta.oauth] are both set"), "{e}");
        let e = parse(&oauth.replace("[\"okta.logs.read\"]", "[]")).unwrap_err().to_string();
        assert!(e.contains("okta.oauth.scopes"), "{e}");
        let e = parse(&oauth.replace("[\"okta.logs.read\"]", "[\"okta.logs.read okta.groups.read\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("one per string"), "{e}");
        let e = parse(&oauth.replace("\"0oa1\"", "\" \"")).unwrap_err().to_string();
        assert!(e.contains("okta.oauth.client_id"), "{e}");
        let e = parse(&format!("{oauth}client_secret = \"x\"\n")).unwrap_err().to_string();
        assert!(e.contains("client_secret") && !e.contains("\"x\""), "{e}");
    }

    mod properties {
        //! Whatever the config file holds, parsing answers a config or an error that names
        //! the file (never a panic), and accepted values are in range.

        use proptest::prelude::*;

        use super::parse;

        /// A TOML value of any type, so every key is also tried with the wrong type.
        fn toml_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                Just("0".to_string()),
                Just("-1".to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                "[a-z0-9:/._ -]{0,24}".prop_map(|s| format!("{s:?}")),
                Just("\"127.0.0.1:0\"".to_string()),
                Just("\"sqlite://x.db\"".to_string()),
                Just("{ env = \"X\" }".to_string()),
                Just("{ file = \"s\", value = \"v\" }".to_string()),
                Just("[]".to_string()),
                Just("[1, \"a\"]".to_string()),
                Just("{}".to_string()),
                Just("1.5".to_string()),
                Just("1979-05-27T07:32:00Z".to_string()),
            ]
        }

        fn section_and_key() -> impl Strategy<Value = (String, String)> {
            let known = prop::sample::select(vec![
                ("server", "listen"),
                ("server", "shutdown_grace_secs"),
                ("server", "header_timeout_secs"),
                ("server", "idle_timeout_secs"),
                ("server", "max_connections"),
                ("okta", "path"),
                ("okta", "auth_header"),
                ("okta", "auth_secret"),
                ("okta", "max_body_bytes"),
                ("okta", "read_timeout_secs"),
                ("store", "url"),
                ("dispatch", "lease_secs"),
                ("dispatch", "workers"),
                ("dispatch", "max_concurrency"),
                ("dispatch.retry", "max_attempts"),
                ("dispatch.retry", "initial_backoff_ms"),
                ("plugins", "dir"),
                ("plugins", "watch"),
                ("plugins", "cache_dir"),
                ("plugins", "max_wasm_bytes"),
                ("plugins", "trusted_keys"),
                ("plugins.p", "allow_downgrade"),
                ("admin", "token"),
                ("plugins.p", "allowed_hosts"),
                ("plugins.p", "groups"),
                ("plugins.p", "max_concurrency"),
                ("plugins.p.config", "k"),
                ("plugins.p.secrets", "s"),
                ("plugins.p.keys", "k"),
                ("plugins.p.limits", "memory_mb"),
                ("plugins.p.retry", "max_attempts"),
                ("plugins", "dir2"),
            ])
            .prop_map(|(s, k)| (s.to_string(), k.to_string()));
            prop_oneof![4 => known, 1 => ("[a-z]{1,8}", "[a-z_]{1,12}")]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
                if let Err(e) = parse(&text) {
                    prop_assert!(e.to_string().starts_with("/etc/hookhost/host.toml: "), "{}", e);
                    prop_assert!(e.to_string().len() > "/etc/hookhost/host.toml: ".len());
                }
            }

            #[test]
            fn every_key_with_any_value_is_a_config_or_a_message(
                entries in prop::collection::vec((section_and_key(), toml_value()), 0..6)
            ) {
                // Group by section so the TOML itself is valid and only the values are odd.
                let mut sections: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
                for ((section, key), value) in entries {
                    sections.entry(section).or_default().push((key, value));
                }
                let mut text = String::new();
                for (section, kvs) in &sections {
                    text.push_str(&format!("[{section}]\n"));
                    let mut seen = std::collections::BTreeSet::new();
                    for (k, v) in kvs {
                        if seen.insert(k.clone()) {
                            text.push_str(&format!("{k} = {v}\n"));
                        }
                    }
                }
                match parse(&text) {
                    Ok(cfg) => {
                        prop_assert!(cfg.okta.path.starts_with('/'));
                        prop_assert!(cfg.okta.max_body_bytes >= 1 && cfg.okta.read_timeout_secs >= 1);
                        prop_assert!(cfg.dispatch.lease_secs >= 1 && cfg.dispatch.workers >= 1);
                        prop_assert!(cfg.dispatch.retry.max_attempts >= 1);
                        prop_assert!(matches!(&cfg.store.url, crate::store::StoreUrl::Sqlite(p) if p.is_absolute()) || cfg.store.url.is_shared());
                    }
                    Err(e) => prop_assert!(e.to_string().starts_with("/etc/hookhost/host.toml: "), "{}", e),
                }
            }
        }
    }

    #[test]
    fn reconcile_settings_default_to_report_and_50_and_name_the_fix() {
        let cfg = parse("[plugins.graph-guest]\n[plugins.graph-guest.reconcile]\n").unwrap();
        let r = cfg.plugins.overrides["graph-guest"].reconcile.clone().unwrap();
        assert_eq!(r, ReconcileConfig { every_secs: None, mode: ReconcileMode::Report, max_changes: 50 });
        let cfg = parse(
            "[okta]\norg_url = \"https://example.okta.com\"\napi_token = { value = \"t\" }\n\
             [plugins.p.reconcile]\nevery_secs = 60\nmode = \"apply\"\nmax_changes = 5\n",
        )
        .unwrap();
        let r = cfg.plugins.overrides["p"].reconcile.clone().unwrap();
        assert_eq!((r.every_secs, r.mode, r.max_changes), (Some(60), ReconcileMode::Apply, 5));

        let e = parse("[plugins.p.reconcile]\nevery_secs = 60\n").unwrap_err().to_string();
        assert!(e.contains("plugins.p.reconcile.every_secs needs okta.org_url") && e.contains("okta.api_token"), "{e}");
        let e = parse("[plugins.p.reconcile]\nmax_changes = 0\n").unwrap_err().to_string();
        assert!(e.contains("plugins.p.reconcile.max_changes must be at least 1"), "{e}");
        let e = parse("[plugins.p.reconcile]\nmode = \"fix\"\n").unwrap_err().to_string();
        assert!(e.contains("[plugins.p]") && e.contains("report") && e.contains("apply"), "{e}");
    }
}
