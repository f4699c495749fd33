//! `hookhost serve`: wires config, store, registry, runtime, dispatcher and the HTTP routes,
//! and shuts down gracefully.
//!
//! Plugins: the plugin directory is scanned once before the listener opens (so `/healthz`
//! answering means the bundles present at start are in service), then watched when
//! `[plugins] watch` is on; `POST /api/plugins/reload` and SIGHUP rescan it on demand.
//!
//! Connections are served by [`listen`] (header and idle timeouts, a cap on open
//! connections).
//!
//! Shutdown on SIGTERM/SIGINT: stop accepting connections, let running attempts finish for
//! up to `server.shutdown_grace_secs`, then release the claims of any still running so they
//! go back to pending at once (nothing waits for a lease).

mod listen;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;

use crate::api::{self, ApiState};
use crate::backfill::Poller;
use crate::config::HostConfig;
use crate::config::ReconcileMode;
use crate::config::StoreConfig;
use crate::dispatch::{DispatchDeps, Dispatcher};
use crate::ingest::{self, IngestState};
use crate::metrics::Metrics;
use crate::okta_api::OktaApi;
use crate::reconcile::Reconciler;
use crate::registry::{watch, PluginSet, Registry, SyncOutcome};
use crate::runtime::{EngineOptions, Runtime};
use crate::store::{PostgresStore, SqliteStore, Store, StoreUrl};

/// Opens the store named by `store.url` (with `store.password` for PostgreSQL).
///
/// # Errors
/// The URL is not supported, the password cannot be read, or the store cannot be opened.
pub fn open_store(config: &StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    match &config.url {
        StoreUrl::Sqlite(path) => {
            Ok(Arc::new(SqliteStore::open(path).with_context(|| "opening the SQLite store (store.url)")?))
        }
        StoreUrl::Postgres(url) => {
            let password = match &config.password {
                Some(src) => Some(src.read().context("store.password")?),
                None => None,
            };
            let store = PostgresStore::open(url, password.as_ref().map(|p| p.expose()), config.ca_file.as_deref())
                .with_context(|| format!("opening the PostgreSQL store at {}", config.url))?;
            Ok(Arc::new(store))
        }
    }
}

/// This process's identity in the store's claims and in metrics.
///
/// With the embedded SQLite store there is one host per database, so the id is the stable
/// `<hostname>`: a restart after a crash recognises the claims it left and takes them back at
/// once, instead of waiting for their leases. With a shared store each process is
/// `<hostname>-<pid>`, so hosts never mistake each other's claims for their own.
pub fn host_id(store_url: &StoreUrl) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into());
    if store_url.is_shared() {
        format!("{host}-{}", std::process::id())
    } else {
        host
    }
}

/// The router of a running service: Okta endpoint and admin API.
pub fn app(ingest: IngestState, okta_path: &str, api: ApiState) -> Router {
    ingest::routes(okta_path, ingest).merge(api::routes(api))
}

/// Runs the service until SIGTERM/SIGINT.
///
/// # Errors
/// A required setting is missing, a secret unreadable, the store or the listener cannot be
/// opened.
pub async fn serve(config: HostConfig) -> anyhow::Result<()> {
    let auth_secret = config
        .okta
        .auth_secret
        .as_ref()
        .context("okta.auth_secret is required: set it to { env = \"HOOKHOST_OKTA_SECRET\" } (or file/value) and use the same value as the Authentication secret of the Okta event hook")?
        .read()
        .context("okta.auth_secret")?;
    let admin_token = match &config.admin.token {
        Some(src) => Some(src.read().context("admin.token")?),
        None => {
            tracing::warn!("admin.token is not set: /api, /metrics and the console answer 401 to everyone");
            None
        }
    };
    let header = axum::http::HeaderName::from_bytes(config.okta.auth_header.as_bytes())
        .context("okta.auth_header is not a valid header name (letters, digits and '-')")?;

    let store = open_store(&config.store)?;
    let runtime = Arc::new(Runtime::new(&EngineOptions::default())?);
    if !runtime.uses_pooling() {
        tracing::warn!("running with on-demand instance allocation");
    }
    let plugins = Arc::new(PluginSet::default());
    let metrics = Arc::new(Metrics::default());
    let registry = start_registry(&config, runtime.clone(), plugins.clone(), metrics.clone()).await?;

    let host_id = host_id(&config.store.url);
    let dispatcher = Dispatcher::start(DispatchDeps {
        store: store.clone(),
        plugins: plugins.clone(),
        runtime: runtime.clone(),
        config: config.dispatch.clone(),
        host_id: host_id.clone(),
        metrics: metrics.clone(),
    });
    let wake = dispatcher.waker();
    registry.on_change(wake.clone());
    rescan_on_sighup(registry.clone());
    let poller = backfill_poller(&config, &store, &plugins, &metrics, &host_id, &wake)?.map(|p| tokio::spawn(p.run()));
    let reconciler = reconciler(&config, &runtime, &store, &wake)?;
    let schedules = schedule_reconcile(&reconciler, &plugins);
    let app = app(
        IngestState {
            store: store.clone(),
            plugins: plugins.clone(),
            auth_header: header,
            auth_secret,
            max_body_bytes: config.okta.max_body_bytes,
            read_timeout: Duration::from_secs(config.okta.read_timeout_secs),
            metrics: metrics.clone(),
            on_stored: wake.clone(),
        },
        &config.okta.path,
        ApiState {
            store: store.clone(),
            plugins: plugins.clone(),
            metrics,
            admin_token,
            host_id: host_id.clone(),
            on_replay: wake,
            registry: Some(registry),
            reconcile: Some(reconciler),
        },
    );

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, host = %host_id, "hookhost listening");
    println!("hookhost listening on http://{addr} (okta endpoint {})", config.okta.path);

    let limits = listen::ConnectionLimits {
        header_timeout: Duration::from_secs(config.server.header_timeout_secs),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
        max_connections: config.server.max_connections as usize,
    };
    let drain = Duration::from_secs(config.server.shutdown_grace_secs);
    listen::serve(listener, app, limits, shutdown_signal(), drain).await;
    // Stopping between its commits loses nothing: the cursor moves with its page.
    if let Some(p) = poller {
        p.abort();
    }
    // A run stopped before its events are stored stored nothing; one after, all of them.
    for s in schedules {
        s.abort();
    }
    tracing::info!("shutting down: waiting for running attempts");
    dispatcher.shutdown(Duration::from_secs(config.server.shutdown_grace_secs)).await;
    Ok(())
}

/// The System Log poller, when `[okta.backfill] enabled` (config checked it has what it needs).
fn backfill_poller(
    config: &HostConfig,
    store: &Arc<dyn Store>,
    plugins: &Arc<PluginSet>,
    metrics: &Arc<Metrics>,
    host_id: &str,
    wake: &Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<Option<Arc<Poller>>> {
    if !config.okta.backfill.enabled {
        return Ok(None);
    }
    let api = okta_api(config)?;
    Ok(Some(Arc::new(Poller {
        store: store.clone(),
        plugins: plugins.clone(),
        api: Arc::new(api),
        config: config.okta.backfill.clone(),
        holder: host_id.to_owned(),
        metrics: metrics.clone(),
        on_stored: wake.clone(),
    })))
}

/// The reconciler of this service: with an Okta client when `okta.org_url` and a credential
/// (`okta.api_token` or `[okta.oauth]`) are set (runs say what is missing otherwise).
fn reconciler(
    config: &HostConfig,
    runtime: &Arc<Runtime>,
    store: &Arc<dyn Store>,
    wake: &Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<Arc<Reconciler>> {
    let okta = if config.okta.can_call_api() { Some(Arc::new(okta_api(config)?)) } else { None };
    let settings =
        config.plugins.overrides.iter().filter_map(|(n, o)| o.reconcile.clone().map(|r| (n.clone(), r))).collect();
    Ok(Arc::new(Reconciler::new(okta, runtime.clone(), store.clone(), settings, wake.clone())))
}

/// One task per `[plugins.<name>.reconcile] every_secs`: a run at start, then every period,
/// reporting or applying per `mode`; its report is what the console's Drift panel shows. A
/// scheduled `apply` never forces: a plan over `max_changes` is only reported.
fn schedule_reconcile(reconciler: &Arc<Reconciler>, plugins: &Arc<PluginSet>) -> Vec<tokio::task::JoinHandle<()>> {
    reconciler
        .schedules()
        .into_iter()
        .map(|(name, every, mode)| {
            let (reconciler, plugins) = (reconciler.clone(), plugins.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(plugin) = plugins.get(&name) else {
                        tracing::warn!(plugin = %name, "scheduled reconcile: the plugin is not active; skipped");
                        continue;
                    };
                    let options = crate::reconcile::Options { apply: mode == ReconcileMode::Apply, force: false };
                    match reconciler.run(&plugin, options).await {
                        Ok(r) => tracing::info!(
                            plugin = %name,
                            add = r.plan.add.len(),
                            remove = r.plan.remove.len(),
                            applied = r.plan.applied,
                            "scheduled reconcile"
                        ),
                        Err(e) => tracing::warn!(plugin = %name, error = %e, "scheduled reconcile failed"),
                    }
                }
            })
        })
        .collect()
}

/// A client of the configured Okta org (`okta.org_url`, and `okta.api_token` or `[okta.oauth]`).
///
/// # Errors
/// A setting is missing, or the token or key cannot be read.
pub fn okta_api(config: &HostConfig) -> anyhow::Result<OktaApi> {
    let org = config
        .okta
        .org_url
        .as_deref()
        .context("okta.org_url is required to call Okta: set it to your org, e.g. \"https://example.okta.com\"")?;
    if let Some(oauth) = &config.okta.oauth {
        return Ok(OktaApi::with_oauth(org, crate::okta_oauth::OktaOAuth::new(org, oauth)?)?);
    }
    let token = config
        .okta
        .api_token
        .as_ref()
        .context(
            "okta.api_token or [okta.oauth] is required to call Okta: set okta.api_token = { env = \"OKTA_API_TOKEN\" } \
             (or file/value), or an API service app under [okta.oauth]",
        )?
        .read()
        .context("okta.api_token")?;
    Ok(OktaApi::new(org, token)?)
}

/// Opens the artifact cache, starts the watcher (before the first scan, so nothing that
/// lands during the scan is missed) and loads the bundles present now.
async fn start_registry(
    config: &HostConfig,
    runtime: Arc<Runtime>,
    plugins: Arc<PluginSet>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<Registry>> {
    let dir = config.plugins.dir.clone();
    if !dir.exists() {
        match std::fs::create_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "created the plugin directory ([plugins] dir); drop bundles into it")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create the plugin directory ([plugins] dir); no plugins until it exists")
            }
        }
    }
    let cache_dir = config.plugins.cache_dir.clone().unwrap_or_else(|| dir.join(".cache"));
    let overrides = config.plugins.overrides.clone();
    let max_wasm_bytes = config.plugins.max_wasm_bytes;
    let trusted =
        crate::registry::signing::TrustedKeys::parse(&config.plugins.trusted_keys).map_err(anyhow::Error::msg)?;
    if trusted.required() {
        tracing::info!(
            keys = config.plugins.trusted_keys.len(),
            "plugin bundles must be signed (plugins.trusted_keys)"
        );
    }
    let registry = tokio::task::spawn_blocking(move || {
        Registry::new(runtime, dir, Some(cache_dir), overrides, plugins, metrics)
            .with_max_wasm_bytes(max_wasm_bytes)
            .with_trusted_keys(trusted)
    })
    .await
    .context("opening the plugin registry")?;
    let registry = Arc::new(registry);
    if config.plugins.watch {
        if let Err(e) = watch::spawn(registry.clone()) {
            tracing::error!(error = %e, "plugin hot reload is off");
        }
    }
    let scan = registry.clone();
    let results = tokio::task::spawn_blocking(move || scan.scan()).await.context("loading plugins")?;
    let failed = results.iter().filter(|(_, o)| matches!(o, SyncOutcome::Failed(_))).count();
    tracing::info!(
        active = results.iter().filter(|(_, o)| matches!(o, SyncOutcome::Activated { .. })).count(),
        failed,
        dir = %config.plugins.dir.display(),
        watch = config.plugins.watch,
        "plugins loaded"
    );
    Ok(registry)
}

/// SIGHUP: rescan the plugin directory (what `POST /api/plugins/reload` does). The handler
/// is installed before this returns, so a SIGHUP never hits the default action (exit).
fn rescan_on_sighup(registry: Arc<Registry>) {
    #[cfg(unix)]
    {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; use POST /api/plugins/reload to rescan plugins");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: rescanning the plugin directory");
                let r = registry.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || r.scan()).await {
                    tracing::error!(error = %e, "the plugin rescan failed unexpectedly");
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = registry;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
