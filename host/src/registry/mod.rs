//! Plugin bundles: a `<name>.wasm` component plus its `<name>.toml` manifest, and the
//! effective plugin they make together with the operator's `[plugins.<name>]` overrides.
//!
//! The operator's `allowed_hosts`, `groups` and `event_types` *replace* the manifest's
//! lists when given; `[config]` and `[limits]` overlay key by key; secrets and keys are
//! granted only under the names the manifest declares.
//!
//! Hot reload lives here too: [`Registry`] keeps the plugin directory and the [`PluginSet`]
//! in service in agreement (one bundle at a time, compile off the async runtime, atomic
//! swap), [`watch`] tells it when files settle, and [`cache`] keeps compiled components so
//! restarts and swaps back do not compile again.

pub mod cache;
pub mod files;
pub mod manifest;
mod reload;
pub mod signing;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{LimitsSpec, PluginOverride, RetryConfig};
use crate::runtime::{Grant, Limits, Origin};
pub use cache::ArtifactCache;
pub use manifest::Manifest;
pub use reload::{bundle_name, Registry, SyncOutcome};

/// A bundle read from disk, not yet compiled.
#[derive(Debug, Clone)]
pub struct PluginBundle {
    pub manifest: Manifest,
    /// The manifest file's text exactly as read (what its signature covers).
    pub manifest_text: String,
    pub manifest_path: PathBuf,
    pub wasm_path: PathBuf,
    pub wasm: Vec<u8>,
    /// Hex sha256 of the `.wasm`.
    pub sha256: String,
}

impl PluginBundle {
    /// Reads `<name>.toml` and the `<name>.wasm` beside it, the wasm up to the default
    /// `plugins.max_wasm_bytes`.
    ///
    /// # Errors
    /// As [`PluginBundle::load_limited`].
    pub fn load(manifest_path: &Path) -> Result<PluginBundle, String> {
        Self::load_limited(manifest_path, files::DEFAULT_MAX_WASM_BYTES)
    }

    /// Reads `<name>.toml` and the `<name>.wasm` beside it; both must be regular files
    /// (links are not followed) and the wasm at most `max_wasm_bytes` long, which is checked
    /// before any of it is read.
    ///
    /// # Errors
    /// Either file is missing, unreadable, not a regular file or too large, the manifest is
    /// invalid, or its `name` differs from the file name.
    pub fn load_limited(manifest_path: &Path, max_wasm_bytes: u64) -> Result<PluginBundle, String> {
        let manifest_text = files::read_manifest(manifest_path)?;
        let manifest = Manifest::parse(&manifest_text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        let stem = manifest_path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if stem != manifest.name {
            return Err(format!(
                "{}: the manifest's name must match the file name ({stem}.toml)",
                manifest_path.display()
            ));
        }
        let wasm_path = manifest_path.with_extension("wasm");
        let wasm = files::read_wasm(&wasm_path, max_wasm_bytes)?;
        let sha256 = hex::encode(Sha256::digest(&wasm));
        Ok(PluginBundle {
            manifest,
            manifest_text,
            manifest_path: manifest_path.to_path_buf(),
            wasm_path,
            wasm,
            sha256,
        })
    }
}

/// A plugin as it will run: manifest plus operator overrides, secrets read.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub event_types: Vec<String>,
    pub groups: Option<Vec<String>>,
    pub allowed_hosts: Vec<String>,
    pub grant: Grant,
    pub limits: Limits,
    pub retry: Option<RetryConfig>,
    pub max_concurrency: Option<u32>,
    /// `[plugins.<name>.guard]`, checked; the store applies it at claim.
    pub guard: Option<crate::store::GuardRule>,
    pub supersede: bool,
    /// Secret names the manifest declares but the operator did not configure.
    pub missing_secrets: Vec<String>,
}

impl PluginSpec {
    /// Whether this plugin wants `event_type` about `group` (a group id or display name;
    /// `None` when the event has no group target).
    pub fn subscribes(&self, event_type: &str, groups_of_event: &[(&str, Option<&str>)]) -> bool {
        if !self.event_types.iter().any(|t| t == event_type) {
            return false;
        }
        match &self.groups {
            None => true,
            // Group filters apply to events that name a group; user lifecycle events
            // (deactivate, delete) name none and still reach the plugin.
            Some(_) if groups_of_event.is_empty() => true,
            Some(wanted) => {
                groups_of_event.iter().any(|(id, name)| wanted.iter().any(|w| w == id || Some(w.as_str()) == *name))
            }
        }
    }
}

fn overlay_limits(base: &LimitsSpec, over: Option<&LimitsSpec>) -> Limits {
    let pick = |f: fn(&LimitsSpec) -> Option<u64>| over.and_then(f).or_else(|| f(base));
    let d = Limits::default();
    Limits {
        memory_bytes: pick(|l| l.memory_mb.map(u64::from)).map(|mb| (mb as usize) << 20).unwrap_or(d.memory_bytes),
        timeout: pick(|l| l.timeout_ms).map(Duration::from_millis).unwrap_or(d.timeout),
        max_http_requests: pick(|l| l.max_http_requests.map(u64::from))
            .map(|n| n as u32)
            .unwrap_or(d.max_http_requests),
        max_response_bytes: pick(|l| l.max_response_bytes.map(|n| n as u64))
            .map(|n| n as usize)
            .unwrap_or(d.max_response_bytes),
        max_log_lines: pick(|l| l.max_log_lines.map(|n| n as u64)).map(|n| n as usize).unwrap_or(d.max_log_lines),
        max_log_bytes: d.max_log_bytes,
    }
}

/// Validates `[[plugins.<name>.pace]]`: each origin is a granted one, `per_second` > 0,
/// `burst` ≥ 1, methods are HTTP methods the `http` import knows.
fn pace_rules(
    name: &str,
    specs: &[crate::config::PaceSpec],
    granted: &[Origin],
) -> Result<Vec<crate::runtime::pace::PaceRule>, String> {
    const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
    let mut rules = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("[[plugins.{name}.pace]] entry {}", i + 1);
        let origin = Origin::parse_grant(&spec.origin).map_err(|e| format!("{at}: origin: {e}"))?;
        if !granted.contains(&origin) {
            return Err(format!(
                "{at}: origin {origin} is not in the plugin's allowed_hosts, so it would never be called; grant it or remove the rule"
            ));
        }
        if !(spec.per_second.is_finite() && spec.per_second > 0.0) {
            return Err(format!("{at}: per_second must be a number above 0, e.g. 20"));
        }
        let burst = match spec.burst {
            Some(0) => return Err(format!("{at}: burst must be at least 1")),
            Some(b) => b,
            None => spec.per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
        };
        let mut methods = Vec::new();
        for m in spec.methods.iter().flatten() {
            let upper = m.to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                return Err(format!("{at}: methods: {m:?} is not one of {}", METHODS.join(", ")));
            }
            methods.push(upper);
        }
        rules.push(crate::runtime::pace::PaceRule { origin, per_second: spec.per_second, burst, methods });
    }
    Ok(rules)
}

/// Combines a bundle's manifest with the operator's overrides and reads its secrets.
///
/// # Errors
/// A bad override value or a configured secret that cannot be read; the message names the
/// `[plugins.<name>]` key.
pub fn effective(bundle: &PluginBundle, over: Option<&PluginOverride>) -> Result<PluginSpec, String> {
    let m = &bundle.manifest;
    let name = &m.name;
    let allowed_hosts = over.and_then(|o| o.allowed_hosts.clone()).unwrap_or_else(|| m.allowed_hosts.clone());
    let allowed_origins = allowed_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            Origin::parse_grant(h).map_err(|_| {
                format!("[plugins.{name}] allowed_hosts[{i}] is not an origin like \"https://graph.microsoft.com\" (scheme://host[:port], no path)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut config: BTreeMap<String, String> = m.config.clone();
    if let Some(o) = over {
        for (k, v) in &o.config {
            let v = crate::config::config_scalar(v).map_err(|e| format!("plugins.{name}.config.{k}: {e}"))?;
            config.insert(k.clone(), v);
        }
        if let Some(l) = &o.limits {
            manifest::validate_limits(l, &format!("plugins.{name}.limits"))?;
        }
    }

    let pace = over.map(|o| pace_rules(name, &o.pace, &allowed_origins)).transpose()?.unwrap_or_default();

    let mut secrets = BTreeMap::new();
    let mut missing_secrets = Vec::new();
    for secret_name in &m.secrets {
        match over.and_then(|o| o.secrets.get(secret_name)) {
            Some(src) => {
                let value = src.read().map_err(|e| format!("plugins.{name}.secrets.{secret_name}: {e}"))?;
                secrets.insert(secret_name.clone(), value);
            }
            None => missing_secrets.push(secret_name.clone()),
        }
    }
    if let Some(o) = over {
        for extra in o.secrets.keys().filter(|k| !m.secrets.contains(k)) {
            tracing::warn!(
                plugin = %name,
                secret = %extra,
                "[plugins.{name}.secrets] sets {extra:?}, which the plugin's manifest does not declare; it is not granted"
            );
        }
        for extra in o.keys.keys().filter(|k| !m.keys.contains(k)) {
            tracing::warn!(
                plugin = %name,
                key = %extra,
                "[plugins.{name}.keys] sets {extra:?}, which the plugin's manifest does not declare; it is not granted"
            );
        }
    }
    let keys = read_keys(name, &m.keys, over)?;

    Ok(PluginSpec {
        name: name.clone(),
        version: m.version.clone(),
        sha256: bundle.sha256.clone(),
        event_types: over.and_then(|o| o.event_types.clone()).unwrap_or_else(|| m.event_types.clone()),
        groups: over.and_then(|o| o.groups.clone()).or_else(|| m.groups.clone()),
        allowed_hosts,
        grant: Grant { allowed_origins, secrets, keys, config, pace },
        limits: overlay_limits(&m.limits, over.and_then(|o| o.limits.as_ref())),
        retry: over.and_then(|o| o.retry.clone()),
        max_concurrency: over.and_then(|o| o.max_concurrency),
        guard: over.and_then(|o| o.guard.as_ref()).map(|g| g.rule(name)).transpose()?,
        supersede: m.supersede,
        missing_secrets,
    })
}

/// Reads and parses each key the manifest declares and the operator configured, once: a
/// key that is configured but unusable refuses the plugin, naming the key and its source,
/// never its text. A declared key the operator did not configure is simply not granted (a
/// plugin may accept one of several credentials, as graph-guest does).
fn read_keys(
    plugin: &str,
    declared: &[String],
    over: Option<&PluginOverride>,
) -> Result<BTreeMap<String, std::sync::Arc<crate::private_key::SigningKey>>, String> {
    use crate::secret::SecretSource;
    let mut keys = BTreeMap::new();
    for key_name in declared {
        let Some(src) = over.and_then(|o| o.keys.get(key_name)) else { continue };
        let at = format!("plugins.{plugin}.keys.{key_name}");
        let pem = src.read().map_err(|e| format!("{at}: {e}"))?;
        let from = match src {
            SecretSource::File(path) => format!("key file {}", path.display()),
            SecretSource::Env(var) => format!("environment variable {var}"),
            SecretSource::Value(_) => "the inline value".to_string(),
        };
        let key = crate::private_key::SigningKey::from_pem(pem.expose().as_bytes()).map_err(|e| {
            format!("{at}: {from} is not a usable private key: {e} (a PEM file holds the key, then optionally its certificate)")
        })?;
        keys.insert(key_name.clone(), std::sync::Arc::new(key));
    }
    Ok(keys)
}

/// A plugin version in service: its effective spec and its linked component.
pub struct ActivePlugin {
    pub spec: PluginSpec,
    pub loaded: crate::runtime::LoadedPlugin,
    /// RFC 3339 UTC.
    pub loaded_at: String,
}

/// The plugins in service now, by name. Swapping an entry is atomic: attempts that already
/// hold an `Arc<ActivePlugin>` finish on it; the next lookup gets the new version.
///
/// Beside the plugins in service it remembers, for `GET /api/plugins`, the last refused load
/// of each name and the plugins whose bundle was removed. A removed plugin is simply absent
/// from the set: ingest no longer subscribes it and dispatch claims none of its deliveries
/// (its cap is 0), so they wait, pending, until it returns.
#[derive(Default)]
pub struct PluginSet {
    inner: std::sync::RwLock<BTreeMap<String, std::sync::Arc<ActivePlugin>>>,
    failures: std::sync::RwLock<BTreeMap<String, LoadFailure>>,
    /// The last status of each plugin taken out of service (state `removed`).
    removed: std::sync::RwLock<BTreeMap<String, PluginStatus>>,
}

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<std::sync::Arc<ActivePlugin>> {
        self.inner.read().ok()?.get(name).cloned()
    }

    pub fn all(&self) -> Vec<std::sync::Arc<ActivePlugin>> {
        self.inner.read().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Puts a plugin in service, replacing any version of the same name.
    pub fn insert(&self, plugin: ActivePlugin) {
        if let Ok(mut r) = self.removed.write() {
            r.remove(&plugin.spec.name);
        }
        if let Ok(mut m) = self.inner.write() {
            m.insert(plugin.spec.name.clone(), std::sync::Arc::new(plugin));
        }
    }

    /// Takes a plugin out of service (its bundle is gone) and remembers it as `removed`.
    /// Attempts already running finish on it; its queued deliveries wait for its return.
    pub fn remove(&self, name: &str) -> Option<std::sync::Arc<ActivePlugin>> {
        let gone = self.inner.write().ok()?.remove(name);
        let failure = self.failures.write().ok().and_then(|mut f| f.remove(name));
        let last = match (&gone, failure) {
            (Some(p), _) => Some(active_status(p, "removed", None)),
            (None, Some(f)) => Some(PluginStatus { state: "removed", last_error: None, ..failed_status(&f) }),
            (None, None) => None,
        };
        if let (Some(status), Ok(mut r)) = (last, self.removed.write()) {
            r.insert(name.to_owned(), status);
        }
        gone
    }

    /// Names of the plugins subscribed to `event` (by event type and group).
    pub fn subscribers(&self, event: &crate::okta::Event) -> Vec<String> {
        let specs: Vec<PluginSpec> = self.all().iter().map(|p| p.spec.clone()).collect();
        subscribers(&specs, event)
    }
}

/// Names of the plugins among `specs` subscribed to `event` (by event type and group): how
/// every way an event arrives routes it.
pub fn subscribers(specs: &[PluginSpec], event: &crate::okta::Event) -> Vec<String> {
    let groups: Vec<(&str, Option<&str>)> = event
        .targets
        .iter()
        .filter(|t| t.kind == "UserGroup")
        .map(|t| (t.id.as_str(), t.display_name.as_deref()))
        .collect();
    specs.iter().filter(|s| s.subscribes(&event.event_type, &groups)).map(|s| s.name.clone()).collect()
}

/// The effective specs of the bundles in `dir` (manifest plus overrides, secrets read),
/// without compiling them: what commands that only route events (`hookhost backfill`,
/// `hookhost okta register`) need. Bundles that cannot be read are skipped with a warning.
pub fn specs_in_dir(dir: &Path, overrides: &BTreeMap<String, PluginOverride>) -> Vec<PluginSpec> {
    let mut specs = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return specs;
    };
    let mut manifests: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.with_extension("wasm").exists())
        .collect();
    manifests.sort();
    for manifest in manifests {
        match PluginBundle::load(&manifest).and_then(|b| effective(&b, overrides.get(&b.manifest.name))) {
            Ok(spec) => specs.push(spec),
            Err(e) => tracing::warn!(bundle = %manifest.display(), error = %e, "skipping a plugin bundle"),
        }
    }
    specs
}

/// A bundle the registry tried to load and could not (shown by `GET /api/plugins`).
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub name: String,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub error: String,
    /// RFC 3339 UTC.
    pub at: String,
}

/// A plugin's state as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// `active`, `failed` or `removed`.
    pub state: &'static str,
    pub loaded_at: Option<String>,
    pub event_types: Vec<String>,
    pub groups: Option<Vec<String>>,
    pub allowed_hosts: Vec<String>,
    pub secrets: Vec<String>,
    /// Names of the keys granted (never anything about the keys themselves).
    pub keys: Vec<String>,
    pub limits: serde_json::Value,
    pub supersede: bool,
    pub last_error: Option<String>,
}

impl PluginSet {
    /// Records a failed load of `name`; an active version (if any) keeps serving.
    pub fn record_failure(&self, failure: LoadFailure) {
        if let Ok(mut f) = self.failures.write() {
            f.insert(failure.name.clone(), failure);
        }
    }

    /// The last refused load of `name`, if it has not loaded since.
    pub fn failure(&self, name: &str) -> Option<LoadFailure> {
        self.failures.read().ok()?.get(name).cloned()
    }

    /// Clears the failure of `name` (after a successful load).
    pub fn clear_failure(&self, name: &str) {
        if let Ok(mut f) = self.failures.write() {
            f.remove(name);
        }
    }

    /// Every known plugin: active ones (with the last failed reload, if any), failed ones
    /// (never loaded, or refused after removal) and removed ones.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let failures = self.failures.read().map(|f| f.clone()).unwrap_or_default();
        let mut out: Vec<PluginStatus> = self
            .all()
            .iter()
            .map(|p| active_status(p, "active", failures.get(&p.spec.name).map(|f| f.error.clone())))
            .collect();
        for f in failures.values() {
            if !out.iter().any(|p| p.name == f.name) {
                out.push(failed_status(f));
            }
        }
        if let Ok(removed) = self.removed.read() {
            for r in removed.values() {
                if !out.iter().any(|p| p.name == r.name) {
                    out.push(r.clone());
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn active_status(p: &ActivePlugin, state: &'static str, last_error: Option<String>) -> PluginStatus {
    let s = &p.spec;
    PluginStatus {
        name: s.name.clone(),
        version: Some(s.version.clone()),
        sha256: Some(s.sha256.clone()),
        state,
        loaded_at: Some(p.loaded_at.clone()),
        event_types: s.event_types.clone(),
        groups: s.groups.clone(),
        allowed_hosts: s.allowed_hosts.clone(),
        secrets: s.grant.secrets.keys().cloned().collect(),
        keys: s.grant.keys.keys().cloned().collect(),
        limits: serde_json::json!({
            "memory_mb": s.limits.memory_bytes >> 20,
            "timeout_ms": s.limits.timeout.as_millis() as u64,
            "max_http_requests": s.limits.max_http_requests,
            "max_response_bytes": s.limits.max_response_bytes,
            "max_log_lines": s.limits.max_log_lines,
        }),
        supersede: s.supersede,
        last_error,
    }
}

fn failed_status(f: &LoadFailure) -> PluginStatus {
    PluginStatus {
        name: f.name.clone(),
        version: f.version.clone(),
        sha256: f.sha256.clone(),
        state: "failed",
        loaded_at: None,
        event_types: vec![],
        groups: None,
        allowed_hosts: vec![],
        secrets: vec![],
        keys: vec![],
        limits: serde_json::Value::Null,
        supersede: true,
        last_error: Some(f.error.clone()),
    }
}

/// Compiles and links one bundle into a plugin ready to serve (no artifact cache; the
/// service goes through [`Registry`]).
///
/// # Errors
/// The bundle's spec or component is refused; the message says why.
pub fn activate(
    runtime: &crate::runtime::Runtime,
    bundle: &PluginBundle,
    over: Option<&crate::config::PluginOverride>,
) -> Result<ActivePlugin, String> {
    let spec = effective(bundle, over)?;
    let component = runtime.compile(&bundle.wasm).map_err(|e| format!("{}: {e}", bundle.wasm_path.display()))?;
    link(runtime, bundle, spec, &component)
}

/// What to do about a component that does not link, from wasmtime's message: a component
/// importing WASI interfaces the host does not provide (JavaScript built with `jco
/// componentize`'s default features imports wasi:http) is told which flag drops them;
/// anything else is told to build against the plugin world.
pub fn link_fix(error: &str) -> String {
    let world = "build it against wit/plugin.wit (world \"plugin\" or \"reconciler\", package hookhost:plugin@0.2.0)";
    if error.contains("wasi:http") {
        format!(
            "the host provides no wasi:http (plugins call out through the hookhost:plugin/http import): the component imports it because it was built with jco's default features; build it with `jco componentize … --disable http fetch-event`; {world}"
        )
    } else if error.contains("wasi:") {
        format!(
            "the component imports a WASI interface or version the host does not link (hookhost links WASI 0.2's cli, clocks, random, filesystem and sockets, granting no files or sockets, and no wasi:http); build it without that feature, and {world}"
        )
    } else {
        world.to_string()
    }
}

/// Links a compiled component with its effective spec as a plugin version.
///
/// # Errors
/// The component does not implement the plugin world; the message names the file and fix.
pub fn link(
    runtime: &crate::runtime::Runtime,
    bundle: &PluginBundle,
    spec: PluginSpec,
    component: &wasmtime::component::Component,
) -> Result<ActivePlugin, String> {
    let loaded = runtime
        .load(
            component,
            crate::runtime::PluginIdentity {
                name: spec.name.clone(),
                version: spec.version.clone(),
                sha256: spec.sha256.clone(),
            },
            spec.grant.clone(),
            spec.limits.clone(),
        )
        .map_err(|e| format!("{}: {e}; {}", bundle.wasm_path.display(), link_fix(&e.to_string())))?;
    for missing in &spec.missing_secrets {
        tracing::warn!(
            plugin = %spec.name,
            "secret {missing:?} is declared by the plugin but not configured under [plugins.{}.secrets]",
            spec.name
        );
    }
    Ok(ActivePlugin {
        spec,
        loaded,
        loaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

#[cfg(test)]
mod tests {
    use super::link_fix;

    #[test]
    fn a_component_importing_wasi_http_is_told_the_jco_flag() {
        // wasmtime's message for a `jco componentize` build without `--disable http fetch-event`.
        let fix = link_fix(
            "does not implement the hookhost:plugin/plugin world: component imports instance `wasi:http/types@0.2.10`, but a matching implementation was not found in the linker",
        );
        assert!(fix.contains("no wasi:http") && fix.contains("--disable http fetch-event"), "{fix}");
        let fix = link_fix("component imports instance `wasi:keyvalue/store@0.2.0-draft`, but a matching implementation was not found in the linker");
        assert!(fix.contains("WASI interface or version the host does not link"), "{fix}");
        let fix = link_fix("component imports instance `hookhost:plugin/http@9.0.0`");
        assert!(fix.starts_with("build it against wit/plugin.wit"), "{fix}");
    }
}
