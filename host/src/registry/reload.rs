//! Keeps the plugin directory and the plugins in service in agreement, one bundle at a time.
//!
//! [`Registry::sync`] looks at `<name>.wasm` + `<name>.toml` and does whichever applies:
//!
//! - both present and different from what serves now (either file: a changed manifest with
//!   the same wasm is a new version too) → read, compile (or reuse the component of the same
//!   wasm, or load it from the [`ArtifactCache`]), link against the plugin world, then swap
//!   the [`PluginSet`] entry. The swap is one map write: attempts already running hold their
//!   `Arc<ActivePlugin>` and finish on the old version; the next attempt, and the next
//!   ingested event's subscription check, see the new one;
//! - anything refused (bad manifest, not a component, truncated wasm, wrong world, bad
//!   override) → the old version keeps serving, and the reason is logged and kept as the
//!   plugin's `last_error` until a good bundle arrives;
//! - one file of the pair missing → while files are still arriving (`cp a.wasm; cp a.toml`)
//!   this is "not yet complete" and the caller waits; otherwise it is refused like the above,
//!   naming the missing file;
//! - both gone → the plugin leaves service; its queued deliveries wait, pending, for it.
//!
//! Syncs are serialized (a mutex held across the compile), so a watcher event and a manual
//! rescan never race on the same name. Everything here blocks (file reads, compiles): call
//! it from `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use wasmtime::component::Component;

use super::signing::TrustedKeys;
use super::{effective, files, link, manifest, ArtifactCache, LoadFailure, Manifest, PluginBundle, PluginSet};
use crate::config::PluginOverride;
use crate::logsafe::Clean;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The files match what serves (or there is nothing, and nothing was known).
    Unchanged,
    /// A new version serves now; `replaced` is the version it replaced.
    Activated { version: String, replaced: Option<String> },
    /// The bundle is gone; the plugin left service.
    Removed,
    /// One file of the pair is missing while files may still be arriving.
    Incomplete { missing: PathBuf },
    /// The bundle was refused; the message says why and what keeps serving.
    Failed(String),
}

impl SyncOutcome {
    /// A short stable word for the API: `unchanged`, `activated`, `removed`, `incomplete`,
    /// `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncOutcome::Unchanged => "unchanged",
            SyncOutcome::Activated { .. } => "activated",
            SyncOutcome::Removed => "removed",
            SyncOutcome::Incomplete { .. } => "incomplete",
            SyncOutcome::Failed(_) => "failed",
        }
    }
}

/// The plugin name a file in the plugin directory belongs to, or `None` for files that are
/// not part of a bundle: other extensions, dotfiles (including the default `.cache`),
/// editor and copy leftovers (`*~`, `.#*`, `#*#`, `*.swp`, `*.tmp`, `x.toml.tmp`).
pub fn bundle_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    // A bundle's signatures belong to it too: one arriving last must trigger a sync.
    let file = file.strip_suffix(".minisig").filter(|f| f.ends_with(".wasm") || f.ends_with(".toml")).unwrap_or(file);
    if file.starts_with('.') || file.starts_with('#') || file.ends_with('~') {
        return None;
    }
    let (stem, ext) = file.rsplit_once('.')?;
    if stem.is_empty() || !(ext == "wasm" || ext == "toml") {
        return None;
    }
    Some(stem.to_owned())
}

/// What serves for one name, as read from disk: enough to tell whether the files changed,
/// and the compiled component to reuse when only the manifest did.
struct Deployed {
    sha256: String,
    manifest: Manifest,
    component: Component,
}

/// The plugin directory, kept in agreement with the [`PluginSet`] in service.
pub struct Registry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    overrides: BTreeMap<String, PluginOverride>,
    set: Arc<PluginSet>,
    cache: Option<ArtifactCache>,
    cache_dir: Option<PathBuf>,
    metrics: Arc<Metrics>,
    /// `plugins.max_wasm_bytes`: larger components are refused before they are read.
    max_wasm_bytes: u64,
    /// `plugins.trusted_keys`: when set, both files of a bundle must be signed by one.
    trusted: TrustedKeys,
    /// What serves, by name. Its lock also serializes syncs.
    deployed: Mutex<BTreeMap<String, Deployed>>,
    /// Called after a new version goes into service (wakes the dispatcher, so deliveries
    /// that waited for a returning plugin start at once).
    on_change: OnceLock<Arc<dyn Fn() + Send + Sync>>,
}

impl Registry {
    /// A registry over `dir` feeding `set`. `cache_dir`, when given, is opened (created
    /// `0700`) as the compiled-artifact cache; if it cannot be, the host logs why and
    /// compiles every time.
    pub fn new(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        cache_dir: Option<PathBuf>,
        overrides: BTreeMap<String, PluginOverride>,
        set: Arc<PluginSet>,
        metrics: Arc<Metrics>,
    ) -> Registry {
        let cache = cache_dir.as_deref().and_then(|d| match ArtifactCache::open(d, runtime.engine()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "compiled-artifact cache disabled; plugins are compiled at every start");
                None
            }
        });
        Registry {
            runtime,
            dir,
            overrides,
            set,
            cache,
            cache_dir,
            metrics,
            max_wasm_bytes: super::files::DEFAULT_MAX_WASM_BYTES,
            trusted: TrustedKeys::default(),
            deployed: Mutex::new(BTreeMap::new()),
            on_change: OnceLock::new(),
        }
    }

    /// Sets `plugins.max_wasm_bytes` (default 64 MiB).
    pub fn with_max_wasm_bytes(mut self, max: u64) -> Registry {
        self.max_wasm_bytes = max;
        self
    }

    /// Sets `plugins.trusted_keys`: from now on a bundle is loaded only with valid
    /// signatures of both its files by one of these keys.
    pub fn with_trusted_keys(mut self, keys: TrustedKeys) -> Registry {
        self.trusted = keys;
        self
    }

    /// The plugin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plugin name `path` belongs to, if it is a bundle file in this directory (never
    /// anything under the cache directory).
    pub fn bundle_name_of(&self, path: &Path) -> Option<String> {
        if self.cache_dir.as_deref().is_some_and(|c| path.starts_with(c)) {
            return None;
        }
        if path.parent() != Some(self.dir.as_path()) {
            return None;
        }
        bundle_name(path)
    }

    /// Sets what to call after a new version goes into service (once).
    pub fn on_change(&self, f: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.on_change.set(f);
    }

    /// Every name worth a look: bundle files in the directory, plus every plugin known to
    /// be in service, failed or removed (so a vanished bundle is noticed).
    pub fn known_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.set.statuses().into_iter().map(|s| s.name).collect();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => names.extend(entries.filter_map(|e| e.ok()).filter_map(|e| bundle_name(&e.path()))),
            Err(e) => tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "cannot read the plugin directory ([plugins] dir); create it or fix its permissions"
            ),
        }
        names
    }

    /// Syncs every bundle in the directory and every known plugin; a half-present bundle is
    /// refused, naming the missing file. Used at start, by `POST /api/plugins/reload` and on
    /// SIGHUP.
    pub fn scan(&self) -> Vec<(String, SyncOutcome)> {
        self.known_names()
            .into_iter()
            .map(|name| {
                let outcome = self.sync(&name, false);
                (name, outcome)
            })
            .collect()
    }

    /// Brings plugin `name` in line with its files. With `wait_for_partner`, a bundle with
    /// only one of its two files is [`SyncOutcome::Incomplete`] (the other may be on its
    /// way); without it, that is a failure naming the missing file.
    pub fn sync(&self, name: &str, wait_for_partner: bool) -> SyncOutcome {
        let mut deployed = match self.deployed.lock() {
            Ok(d) => d,
            // A panic mid-sync left the map as it was before that sync; carry on with it.
            Err(poisoned) => poisoned.into_inner(),
        };
        let toml = self.dir.join(format!("{name}.toml"));
        let wasm = self.dir.join(format!("{name}.wasm"));
        // Never followed: a link, FIFO or folder under a bundle's name is passed over (with
        // a warning) as if absent, and named in the refusal if its partner is there.
        let (toml_entry, wasm_entry) = (files::entry(&toml), files::entry(&wasm));
        let mut odd = None;
        for (path, e) in [(&toml, toml_entry), (&wasm, wasm_entry)] {
            if let files::Entry::Other(kind) = e {
                tracing::warn!(
                    plugin = %Clean(name),
                    path = %Clean(&path.display().to_string()),
                    kind,
                    "ignored: not a regular file; hookhost reads only regular files from the plugin directory and never follows links"
                );
                odd.get_or_insert(format!(
                    "{} is {kind}, not a regular file, and was ignored; copy the file itself into the plugin directory",
                    path.display()
                ));
            }
        }
        let (has_toml, has_wasm) = (toml_entry.is_file(), wasm_entry.is_file());

        if !has_toml && !has_wasm {
            let known = self.set.get(name).is_some() || self.set.failure(name).is_some();
            deployed.remove(name);
            if !known {
                return SyncOutcome::Unchanged;
            }
            let gone = self.set.remove(name);
            tracing::info!(
                plugin = %name,
                version = gone.as_ref().map(|p| p.spec.version.as_str()).unwrap_or("-"),
                "plugin bundle removed: no new attempts start; its queued deliveries wait (pending) until the bundle returns"
            );
            return SyncOutcome::Removed;
        }
        if let Err(e) = manifest::valid_plugin_name(name) {
            let path = if has_toml { &toml } else { &wasm };
            return self.fail(name, None, None, format!("{}: {e}; rename the bundle's files", path.display()));
        }
        if !has_toml || !has_wasm {
            let (missing, present) = if has_toml { (wasm, toml) } else { (toml, wasm) };
            if let Some(why) = odd {
                return self.fail(name, None, None, why);
            }
            if wait_for_partner {
                return SyncOutcome::Incomplete { missing };
            }
            return self.fail(
                name,
                None,
                None,
                format!(
                    "{} is missing: a bundle is {name}.wasm and {name}.toml side by side, and only {} is there; add the missing file (write it beside, then rename) or remove both",
                    missing.display(),
                    present.display()
                ),
            );
        }

        let bundle = match PluginBundle::load_limited(&toml, self.max_wasm_bytes) {
            Ok(b) => b,
            Err(e) => return self.fail(name, None, None, e),
        };
        let version = Some(bundle.manifest.version.clone());
        let sha = Some(bundle.sha256.clone());
        let serving = self.set.get(name);
        if let (Some(d), Some(_)) = (deployed.get(name), &serving) {
            if d.sha256 == bundle.sha256 && d.manifest == bundle.manifest {
                self.set.clear_failure(name);
                return SyncOutcome::Unchanged;
            }
        }
        // Signatures first: nothing of an unsigned bundle is compiled or even interpreted
        // beyond its manifest's parse.
        if self.trusted.required() {
            let checked = self
                .trusted
                .verify(&bundle.wasm_path, &bundle.wasm)
                .and_then(|()| self.trusted.verify(&toml, bundle.manifest_text.as_bytes()));
            if let Err(e) = checked {
                return self.fail(name, version, sha, e);
            }
        }
        if let Some(active) = &serving {
            let allow = self.overrides.get(name).is_some_and(|o| o.allow_downgrade);
            let older = match (
                semver::Version::parse(&bundle.manifest.version),
                semver::Version::parse(&active.spec.version),
            ) {
                (Ok(new), Ok(old)) => new < old,
                _ => false,
            };
            if older && !allow {
                let e = format!(
                    "{}: version {} is lower than the active version {}; a downgrade needs [plugins.{name}] allow_downgrade = true",
                    toml.display(),
                    bundle.manifest.version,
                    active.spec.version
                );
                return self.fail(name, version, sha, e);
            }
        }
        let spec = match effective(&bundle, self.overrides.get(name)) {
            Ok(s) => s,
            Err(e) => return self.fail(name, version, sha, e),
        };

        // The component: the one already serving this wasm, else the cache, else compile.
        let mut fresh = false;
        let reused = deployed.values().find(|d| d.sha256 == bundle.sha256).map(|d| d.component.clone());
        let component = match reused {
            Some(c) => c,
            None => match self.cache.as_ref().and_then(|c| c.get(&self.runtime, &bundle.sha256)) {
                Some(c) => {
                    self.metrics.plugin_loaded_from_cache();
                    tracing::info!(plugin = %name, sha256 = %bundle.sha256, "component loaded from cache");
                    c
                }
                None => {
                    let started = Instant::now();
                    match self.runtime.compile(&bundle.wasm) {
                        Ok(c) => {
                            self.metrics.plugin_compiled();
                            fresh = true;
                            tracing::info!(
                                plugin = %name,
                                sha256 = %bundle.sha256,
                                ms = started.elapsed().as_millis() as u64,
                                "component compiled"
                            );
                            c
                        }
                        Err(e) => {
                            return self.fail(
                                name,
                                version,
                                sha,
                                format!(
                                    "{}: {e}; if it was still being copied, the next write retries (deploy by writing beside, then renaming)",
                                    bundle.wasm_path.display()
                                ),
                            )
                        }
                    }
                }
            },
        };

        let active = match link(&self.runtime, &bundle, spec, &component) {
            Ok(a) => a,
            Err(e) => return self.fail(name, version, sha, e),
        };
        let new_version = active.spec.version.clone();
        let replaced = serving.as_ref().map(|p| p.spec.version.clone());
        if replaced.as_deref() == Some(new_version.as_str()) {
            tracing::warn!(
                plugin = %name,
                version = %new_version,
                "the bundle changed but its manifest version did not; attempts of both record version {new_version} (the sha256 tells the wasm apart): bump `version` in {}",
                toml.display()
            );
        }
        self.set.insert(active);
        self.set.clear_failure(name);
        deployed.insert(
            name.to_owned(),
            Deployed { sha256: bundle.sha256.clone(), manifest: bundle.manifest, component: component.clone() },
        );
        tracing::info!(
            plugin = %name,
            version = %new_version,
            replaced = replaced.as_deref().unwrap_or("-"),
            sha256 = %bundle.sha256,
            "plugin version in service"
        );
        if let Some(f) = self.on_change.get() {
            f();
        }
        // After the swap, so writing the cache never delays it.
        if fresh {
            if let Some(cache) = &self.cache {
                if let Err(e) = cache.put(&self.runtime, &bundle.sha256, &component) {
                    tracing::warn!(plugin = %name, error = %e, "cannot cache the compiled component; the next start compiles it again");
                }
            }
        }
        SyncOutcome::Activated { version: new_version, replaced }
    }

    fn fail(&self, name: &str, version: Option<String>, sha256: Option<String>, error: String) -> SyncOutcome {
        let error = match self.set.get(name) {
            Some(p) => format!("{error} (version {} keeps serving)", p.spec.version),
            None => error,
        };
        tracing::error!(plugin = %Clean(name), error = %Clean(&error), "plugin bundle refused");
        self.metrics.plugin_load_failed();
        self.set.record_failure(LoadFailure {
            name: name.to_owned(),
            version,
            sha256,
            error: error.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        SyncOutcome::Failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bundle_files_name_a_plugin() {
        let n = |f: &str| bundle_name(Path::new("/p").join(f).as_path());
        assert_eq!(n("echo.wasm").as_deref(), Some("echo"));
        assert_eq!(n("graph-guest.toml").as_deref(), Some("graph-guest"));
        assert_eq!(n("echo.wasm.minisig").as_deref(), Some("echo"));
        assert_eq!(n("echo.toml.minisig").as_deref(), Some("echo"));
        assert_eq!(n("echo.minisig"), None);
        for ignored in [
            ".echo.toml.swp",
            "echo.toml.swp",
            "echo.toml~",
            ".#echo.toml",
            "#echo.toml#",
            "echo.wasm.tmp",
            "echo.tmp",
            ".cache",
            "README.md",
            "echo",
            ".wasm",
            "4913",
        ] {
            assert_eq!(n(ignored), None, "{ignored}");
        }
    }
}
