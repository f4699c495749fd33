//! The `hookhost` command line. Thin: parse arguments, call the library, print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::config::HostConfig;
use crate::okta::Delivery;
use crate::registry::{self, ArtifactCache, PluginBundle, PluginSpec};
use crate::runtime::{AttemptResult, EngineOptions, KvBackend, LoadedPlugin, MemoryKv, PluginIdentity, Runtime};
use crate::store::{SqliteStore, StoreUrl};

#[derive(Parser)]
#[command(name = "hookhost", version, about = "Okta Event Hooks → sandboxed WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: the Okta endpoint, the dispatcher and the admin API.
    Serve {
        /// The host config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Log lines on stderr as text or as one JSON object a line (default: [server]
        /// log_format, else text).
        #[arg(long, value_enum)]
        log_format: Option<crate::config::LogFormat>,
    },
    /// Work with plugin bundles (<name>.wasm + <name>.toml).
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Inspect stored events and deliveries (reads the store of --config).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Recover events from Okta's System Log in one bounded pass (e.g. after an outage found
    /// later): stores the events the plugins subscribe to that are not stored yet.
    Backfill {
        #[arg(long)]
        config: PathBuf,
        /// Start of the window, RFC 3339 (e.g. 2024-05-01T00:00:00Z); the log keeps 90 days.
        #[arg(long)]
        since: String,
        /// End of the window, RFC 3339; default: up to now.
        #[arg(long)]
        until: Option<String>,
    },
    /// Compare a plugin's target with the members of its Okta groups and show the plan (what
    /// to add, what to remove); with --apply, store the changes as events a running serve
    /// processes.
    Reconcile {
        #[arg(long)]
        config: PathBuf,
        /// The plugin (its bundle <name>.wasm + <name>.toml in plugins.dir).
        #[arg(long)]
        plugin: String,
        /// Store each planned change as a `source: reconcile` event.
        #[arg(long)]
        apply: bool,
        /// Print exactly one JSON object (the plan) on stdout.
        #[arg(long)]
        json: bool,
        /// Apply even a plan larger than [plugins.<name>.reconcile] max_changes (default 50).
        #[arg(long)]
        force: bool,
    },
    /// Work with the Okta org (okta.org_url, okta.api_token).
    Okta {
        #[command(subcommand)]
        command: OktaCommand,
    },
    /// Put a done or dead delivery back to pending so it runs again.
    Replay {
        /// The delivery id (from `hookhost events show` or /api/deliveries).
        delivery_id: String,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum OktaCommand {
    /// Create (or update in place) the Okta event hook that delivers to this service, with
    /// the auth header and every event type a plugin subscribes to; activate and verify it.
    Register {
        #[arg(long)]
        config: PathBuf,
        /// The public URL of this service's Okta endpoint, e.g. https://hooks.example.com/hooks/okta.
        #[arg(long)]
        url: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Deliveries, oldest first, optionally by status.
    List {
        #[arg(long)]
        config: PathBuf,
        /// pending, running, retrying, done or dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One event (by LogEvent uuid) with its deliveries and their attempts.
    Show {
        uuid: String,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Compile a bundle, check it implements the hookhost plugin world, print what it asks for.
    Check {
        /// The bundle's manifest, e.g. dist/plugins/graph-guest.toml (the .wasm sits beside it).
        bundle: PathBuf,
        /// Host config whose [plugins.<name>] overrides to apply.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Start a new plugin: a crate (Rust) or project (Python) with a manifest, a fixture
    /// event, a test that runs, and a README saying how to build, test and deploy it.
    New {
        /// The plugin's name (a-z, 0-9, '-', '_'): its bundle is <name>.wasm + <name>.toml.
        name: String,
        /// The language of the plugin.
        #[arg(long, value_enum, default_value_t = crate::scaffold::Lang::Rust)]
        lang: crate::scaffold::Lang,
        /// Where to create it (must not exist or be empty); default ./<name>.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write a new minisign key pair for signing bundles: DIR/hookhost-signing.key (secret,
    /// mode 600, no password) and DIR/hookhost-signing.pub; prints the public key for
    /// [plugins] trusted_keys.
    Keygen {
        /// Where to write the two files (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a bundle: writes <name>.wasm.minisig and <name>.toml.minisig beside it
    /// (standard minisign signatures; `minisign -Vm FILE -P KEY` checks them).
    Sign {
        /// The minisign secret key (from `hookhost plugin keygen` or `minisign -G`).
        #[arg(long)]
        key: PathBuf,
        /// The bundle's manifest, e.g. dist/plugins/graph-guest.toml (the .wasm sits beside it).
        bundle: PathBuf,
    },
    /// Run events through a plugin with the real host imports, and print results and logs.
    Run {
        /// The bundle's manifest, e.g. dist/plugins/graph-guest.toml.
        bundle: PathBuf,
        /// A JSON file: a full Okta event hook delivery or a single LogEvent.
        #[arg(long)]
        event: PathBuf,
        /// Host config: [plugins.<name>] grants, secrets and config, and the store for KV.
        /// Without it the plugin gets its manifest defaults, no secrets and an in-memory KV.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` installs its own subscriber once its config (log format, telemetry) is read.
    if !matches!(cli.command, Command::Serve { .. }) {
        crate::telemetry::init_logs(crate::config::LogFormat::Text, "warn");
    }
    let result = match cli.command {
        Command::Serve { config, log_format } => serve(&config, log_format),
        Command::Events { command: EventsCommand::List { config, status, limit } } => {
            events_list(&config, status.as_deref(), limit)
        }
        Command::Events { command: EventsCommand::Show { uuid, config } } => events_show(&config, &uuid),
        Command::Replay { delivery_id, config } => replay(&config, &delivery_id),
        Command::Backfill { config, since, until } => backfill(&config, &since, until.as_deref()),
        Command::Reconcile { config, plugin, apply, json, force } => {
            reconcile(&config, &plugin, crate::reconcile::Options { apply, force }, json)
        }
        Command::Okta { command: OktaCommand::Register { config, url } } => okta_register(&config, &url),
        Command::Plugin { command: PluginCommand::Check { bundle, config } } => {
            plugin_check(&bundle, config.as_deref())
        }
        Command::Plugin { command: PluginCommand::New { name, lang, dir } } => plugin_new(&name, lang, dir),
        Command::Plugin { command: PluginCommand::Keygen { dir } } => plugin_keygen(&dir),
        Command::Plugin { command: PluginCommand::Sign { key, bundle } } => plugin_sign(&key, &bundle),
        Command::Plugin { command: PluginCommand::Run { bundle, event, config } } => {
            plugin_run(&bundle, &event, config.as_deref())
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn plugin_keygen(dir: &Path) -> anyhow::Result<ExitCode> {
    let (secret, public_file, public) = registry::signing::keygen(dir).map_err(anyhow::Error::msg)?;
    println!(
        "secret key: {} (mode 600, no password: keep it off the servers, e.g. in CI's secret store)",
        secret.display()
    );
    println!("public key: {}", public_file.display());
    println!("add to host.toml:\n[plugins]\ntrusted_keys = [\"{public}\"]");
    Ok(ExitCode::SUCCESS)
}

fn plugin_sign(key: &Path, bundle: &Path) -> anyhow::Result<ExitCode> {
    for sig in registry::signing::sign_bundle(key, bundle).map_err(anyhow::Error::msg)? {
        println!("wrote {}", sig.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Option<HostConfig>> {
    path.map(|p| HostConfig::load(p).map_err(anyhow::Error::from)).transpose()
}

/// The compiled-artifact cache `plugin check|run` share with `serve`: the config's
/// `plugins.cache_dir` (default `<plugins.dir>/.cache`) with `--config`, else `.cache` in the
/// bundle's folder (which is the service's own cache when the bundle sits in its plugins.dir).
fn cli_cache_dir(bundle_path: &Path, config: Option<&HostConfig>) -> PathBuf {
    match config {
        Some(c) => c.plugins.cache_dir.clone().unwrap_or_else(|| c.plugins.dir.join(".cache")),
        None => bundle_path.parent().map_or_else(|| PathBuf::from(".cache"), |p| p.join(".cache")),
    }
}

/// How the component was obtained, for `plugin check`'s report.
struct Compiled {
    ms: u128,
    /// Whether it came from the artifact cache.
    cached: bool,
    /// The cache folder, or why there is none.
    cache: Result<PathBuf, String>,
}

/// Reads a bundle, applies overrides, compiles (or loads from the artifact cache) and links it.
fn load_plugin(
    runtime: &Runtime,
    bundle_path: &Path,
    config: Option<&HostConfig>,
) -> anyhow::Result<(PluginBundle, PluginSpec, LoadedPlugin, Compiled)> {
    let bundle = PluginBundle::load(bundle_path).map_err(anyhow::Error::msg)?;
    let over = config.and_then(|c| c.plugins.overrides.get(&bundle.manifest.name));
    let spec = registry::effective(&bundle, over).map_err(anyhow::Error::msg)?;
    let cache_dir = cli_cache_dir(bundle_path, config);
    let cache = ArtifactCache::open(&cache_dir, runtime.engine());
    let started = Instant::now();
    let (component, cached) = match cache.as_ref().ok().and_then(|c| c.get(runtime, &bundle.sha256)) {
        Some(component) => (component, true),
        None => {
            let component = runtime.compile(&bundle.wasm).with_context(|| format!("{}", bundle.wasm_path.display()))?;
            if let Ok(c) = &cache {
                if let Err(e) = c.put(runtime, &bundle.sha256, &component) {
                    eprintln!("warning: {e}; the next check or run compiles it again");
                }
            }
            (component, false)
        }
    };
    let compiled = Compiled { ms: started.elapsed().as_millis(), cached, cache: cache.map(|_| cache_dir) };
    let loaded = runtime
        .load(
            &component,
            PluginIdentity { name: spec.name.clone(), version: spec.version.clone(), sha256: spec.sha256.clone() },
            spec.grant.clone(),
            spec.limits.clone(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a hookhost plugin: {e}; {}",
                bundle.wasm_path.display(),
                registry::link_fix(&e.to_string())
            )
        })?;
    Ok((bundle, spec, loaded, compiled))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

fn plugin_check(bundle_path: &Path, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let runtime = Runtime::new(&EngineOptions::default())?;
    let (bundle, spec, loaded, compiled) = load_plugin(&runtime, bundle_path, config.as_ref())?;
    let secrets: Vec<String> = bundle.manifest.secrets.clone();
    let world = if loaded.can_reconcile() { "reconciler" } else { "plugin" };
    println!("ok: {} {} implements hookhost:plugin/{world}@{}", spec.name, spec.version, loaded.wit_version());
    println!(
        "  component:   {} ({} KiB, sha256 {}), {} in {} ms",
        bundle.wasm_path.display(),
        bundle.wasm.len().div_ceil(1024),
        spec.sha256,
        if compiled.cached { "loaded from the artifact cache" } else { "compiled" },
        compiled.ms
    );
    match &compiled.cache {
        Ok(dir) => println!("  cache:       {}", dir.display()),
        Err(why) => println!("  cache:       off ({why})"),
    }
    println!("  event_types: {}", list(&spec.event_types));
    println!("  groups:      {}", spec.groups.as_ref().map(|g| list(g)).unwrap_or_else(|| "(any group)".into()));
    print_routes(&spec, config.as_ref().and_then(|c| c.plugins.overrides.get(&spec.name)));
    println!("  allowed_hosts: {}", list(&spec.allowed_hosts));
    println!("  secrets:     {}", list(&secrets));
    if !bundle.manifest.keys.is_empty() {
        let keys: Vec<String> = bundle
            .manifest
            .keys
            .iter()
            .map(|k| format!("{k} ({})", if spec.grant.keys.contains_key(k) { "granted" } else { "not granted" }))
            .collect();
        println!("  keys:        {}", keys.join(", "));
    }
    if config.is_some() && !spec.missing_secrets.is_empty() {
        println!(
            "  warning:     not configured under [plugins.{}.secrets]: {}",
            spec.name,
            spec.missing_secrets.join(", ")
        );
    }
    println!(
        "  limits:      memory {} MiB, timeout {} ms, max_http_requests {}, max_response_bytes {}",
        spec.limits.memory_bytes >> 20,
        spec.limits.timeout.as_millis(),
        spec.limits.max_http_requests,
        spec.limits.max_response_bytes
    );
    println!("  supersede:   {}", spec.supersede);
    Ok(ExitCode::SUCCESS)
}

/// The effective routes: which events get a delivery for this plugin, and where each list
/// came from. Mirrors `PluginSpec::subscribes`: the group filter applies to events that
/// name a group (Okta's `group.*` events); events naming none (e.g. `user.lifecycle.*`)
/// match on their type alone.
fn print_routes(spec: &PluginSpec, over: Option<&crate::config::PluginOverride>) {
    let from = |overridden: bool| if overridden { "operator override" } else { "manifest" };
    println!(
        "  routes:      one delivery per matching event, with its own retries, order and history (event_types from the {}, groups from the {})",
        from(over.is_some_and(|o| o.event_types.is_some())),
        from(over.is_some_and(|o| o.groups.is_some()))
    );
    let width = spec.event_types.iter().map(String::len).max().unwrap_or(0);
    for event_type in &spec.event_types {
        let when = match &spec.groups {
            None if event_type.starts_with("group.") => "any group".to_string(),
            None => "every event of this type".to_string(),
            Some(g) if event_type.starts_with("group.") => {
                format!("the group's display name or id is {}", g.join(" or "))
            }
            Some(_) => "always (names no group, so the groups filter does not apply)".to_string(),
        };
        println!("    {event_type:<width$}  {when}");
    }
}

/// `hookhost plugin new`: writes the scaffold and says what to do next.
fn plugin_new(name: &str, lang: crate::scaffold::Lang, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let written = crate::scaffold::create(name, lang, &dir)?;
    println!("created {} plugin {name} in {}:", lang.as_str(), dir.display());
    for f in &written {
        println!("  {}", f.display());
    }
    println!();
    println!("next: cd {} and follow README.md (build, test, `hookhost plugin run`, deploy).", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn plugin_run(bundle_path: &Path, event_path: &Path, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let body = std::fs::read(event_path).with_context(|| format!("cannot read {}", event_path.display()))?;
    let delivery = Delivery::parse_delivery_or_event(&body).with_context(|| format!("{}", event_path.display()))?;
    if delivery.events.is_empty() {
        bail!("{}: the delivery has no events", event_path.display());
    }
    let runtime = Runtime::new(&EngineOptions::default())?;
    let (_bundle, spec, loaded, _) = load_plugin(&runtime, bundle_path, config.as_ref())?;
    let kv: Arc<dyn KvBackend> = match &config {
        Some(c) => match &c.store.url {
            StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            StoreUrl::Postgres(_) => Arc::new(MemoryKv::default()),
        },
        _ => Arc::new(MemoryKv::default()),
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let mut failed = 0;
    for event in &delivery.events {
        let attempt = rt.block_on(runtime.run(&loaded, event, kv.clone()));
        println!("event {} {} (published {})", event.uuid, event.event_type, event.published);
        println!(
            "  plugin {} {}: {} in {} ms, {} HTTP request(s)",
            spec.name,
            spec.version,
            attempt.result.kind(),
            attempt.duration.as_millis(),
            attempt.http_requests
        );
        println!("  result: {}", attempt.result.describe());
        // [Plugin]: the plugin's log.log; [Host]: what the host noted about the attempt (a
        // refused request, a budget); [Stdout]/[Stderr]: what the guest printed (console.log).
        for line in &attempt.log {
            println!("  {:>6}ms {:<5} [{:?}] {}", line.at_ms, line.level.as_str(), line.source, line.message);
        }
        if attempt.log_dropped > 0 {
            println!("  ({} log lines dropped past the cap)", attempt.log_dropped);
        }
        if !matches!(attempt.result, AttemptResult::Done { .. }) {
            failed += 1;
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn serve(config: &Path, log_format: Option<crate::config::LogFormat>) -> anyhow::Result<ExitCode> {
    let config = HostConfig::load(config)?;
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let format = log_format.unwrap_or(config.server.log_format);
    let telemetry =
        crate::telemetry::init(&config.telemetry, format, "info", rt.handle().clone()).map_err(anyhow::Error::msg)?;
    let served = rt.block_on(crate::server::serve(config));
    // The runtime still runs here: the exporter's last requests go out on it.
    telemetry.shutdown();
    served?;
    Ok(ExitCode::SUCCESS)
}

fn open_store(config: &Path) -> anyhow::Result<Arc<dyn crate::store::Store>> {
    let config = HostConfig::load(config)?;
    crate::server::open_store(&config.store)
}

fn events_list(config: &Path, status: Option<&str>, limit: usize) -> anyhow::Result<ExitCode> {
    let status = status
        .map(|s| {
            crate::store::Status::parse(s)
                .with_context(|| format!("--status must be pending, running, retrying, done or dead, not {s:?}"))
        })
        .transpose()?;
    let store = open_store(config)?;
    let (items, next) = store.deliveries(status, limit, None)?;
    println!("{:<22} {:<38} {:<14} {:<9} {:>8}  last error", "delivery", "event", "plugin", "status", "attempts");
    for d in &items {
        println!(
            "{:<22} {:<38} {:<14} {:<9} {:>8}  {}",
            d.id,
            d.event_id,
            d.plugin,
            d.status.as_str(),
            d.attempts,
            d.last_error.as_deref().unwrap_or("")
        );
    }
    if next.is_some() {
        println!("(more; raise --limit)");
    }
    Ok(ExitCode::SUCCESS)
}

fn events_show(config: &Path, uuid: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(config)?;
    let Some(event) = store.event(uuid)? else {
        bail!("no event with id {uuid}");
    };
    println!("event {} {} published {} received {}", event.id, event.event_type, event.published, event.received_at);
    for d in &event.deliveries {
        println!(
            "  delivery {} plugin {} {}: {} after {} attempt(s){}",
            d.id,
            d.plugin,
            d.plugin_version.as_deref().unwrap_or("-"),
            d.status.as_str(),
            d.attempts,
            d.last_error.as_deref().map(|e| format!(" — {e}")).unwrap_or_default()
        );
        for a in store.attempts(&d.id)? {
            // The error already starts with the result's kind ("retryable: …").
            println!(
                "    attempt {} at {} ({} ms) version {}: {}",
                a.number,
                a.started_at,
                a.duration_ms,
                a.plugin_version,
                a.error.as_deref().unwrap_or(&a.result)
            );
            for line in a.log.as_array().into_iter().flatten() {
                println!(
                    "      {:>6}ms {:<5} [{}] {}",
                    line["at_ms"].as_u64().unwrap_or(0),
                    line["level"].as_str().unwrap_or("?"),
                    line["source"].as_str().unwrap_or("?"),
                    line["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The effective plugins of the config's plugin directory (not compiled: only routed to).
fn plugin_specs(config: &HostConfig) -> Vec<PluginSpec> {
    registry::specs_in_dir(&config.plugins.dir, &config.plugins.overrides)
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

fn backfill(config: &Path, since: &str, until: Option<&str>) -> anyhow::Result<ExitCode> {
    let parse = |name: &str, v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&chrono::Utc))
            .with_context(|| format!("--{name} must be an RFC 3339 time such as 2024-05-01T00:00:00Z, got {v:?}"))
    };
    let since = parse("since", since)?;
    let until = until.map(|u| parse("until", u)).transpose()?;
    if until.is_some_and(|u| u <= since) {
        bail!("--until must be later than --since");
    }
    let config = HostConfig::load(config)?;
    let api = crate::server::okta_api(&config)?;
    let specs = plugin_specs(&config);
    let types: Vec<String> = specs.iter().flat_map(|s| s.event_types.clone()).collect();
    if types.is_empty() {
        bail!("no plugin in {} subscribes to an event type: there is nothing to recover", config.plugins.dir.display());
    }
    let store = crate::server::open_store(&config.store)?;
    let route: Arc<crate::backfill::Router> = Arc::new(move |e| registry::subscribers(&specs, e));
    let report = current_thread()?.block_on(crate::backfill::sweep(&api, store, route, &types, since, until))?;
    println!(
        "found {} events in the System Log, {} new ({} deliveries queued; {} pages)",
        report.found, report.new, report.deliveries, report.pages
    );
    Ok(ExitCode::SUCCESS)
}

fn reconcile(config: &Path, name: &str, options: crate::reconcile::Options, json: bool) -> anyhow::Result<ExitCode> {
    use crate::reconcile::{ReconcileError, Reconciler};
    let config = HostConfig::load(config)?;
    let api = Arc::new(crate::server::okta_api(&config)?);
    let manifest = config.plugins.dir.join(format!("{name}.toml"));
    if !manifest.is_file() || !manifest.with_extension("wasm").is_file() {
        bail!(
            "no plugin {name:?} in {}: its bundle is {name}.wasm + {name}.toml there (plugins.dir)",
            config.plugins.dir.display()
        );
    }
    let bundle = PluginBundle::load_limited(&manifest, config.plugins.max_wasm_bytes).map_err(anyhow::Error::msg)?;
    let keys = registry::signing::TrustedKeys::parse(&config.plugins.trusted_keys).map_err(anyhow::Error::msg)?;
    if keys.required() {
        keys.verify(&bundle.wasm_path, &bundle.wasm).map_err(anyhow::Error::msg)?;
        keys.verify(&bundle.manifest_path, bundle.manifest_text.as_bytes()).map_err(anyhow::Error::msg)?;
    }
    let runtime = Arc::new(Runtime::new(&EngineOptions::default())?);
    let active =
        registry::activate(&runtime, &bundle, config.plugins.overrides.get(name)).map_err(anyhow::Error::msg)?;
    let store = crate::server::open_store(&config.store)?;
    let settings =
        config.plugins.overrides.iter().filter_map(|(n, o)| o.reconcile.clone().map(|r| (n.clone(), r))).collect();
    let reconciler = Reconciler::new(Some(api), runtime, store, settings, Arc::new(|| {}));
    let result = current_thread()?.block_on(reconciler.run(&active, options));
    let (plan, events, managed, failure) = match result {
        Ok(report) => (report.plan, report.events, Some(report.managed_accounts), None),
        // Nothing was applied; the plan is still worth showing next to the refusal.
        Err(ReconcileError::TooManyChanges { plan, .. }) => {
            let why = reconciler.last_report(name).and_then(|r| r.held_back).unwrap_or_default();
            (*plan, Vec::new(), None, Some(why))
        }
        Err(e) => bail!(e),
    };
    if json {
        println!("{}", serde_json::to_string(&plan)?);
        for id in &events {
            eprintln!("stored event {id}");
        }
    } else {
        print_plan(&plan, managed, &events, options.apply);
    }
    match failure {
        Some(why) => {
            eprintln!("error: {why}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

fn print_plan(plan: &crate::reconcile::Plan, managed: Option<usize>, events: &[String], asked_to_apply: bool) {
    let managed = managed.map(|n| format!(", {n} accounts managed")).unwrap_or_default();
    println!(
        "reconcile {}: {} Okta members{managed}; {} to add, {} to remove",
        plan.plugin,
        plan.okta_members,
        plan.add.len(),
        plan.remove.len()
    );
    let login = |l: &Option<String>| l.clone().unwrap_or_else(|| "(login unknown)".into());
    for c in &plan.add {
        println!("  + {} {} — {}", c.okta_user_id, login(&c.login), c.reason);
    }
    for c in &plan.remove {
        println!("  - {} {} — {}", c.okta_user_id, login(&c.login), c.reason);
    }
    if plan.applied {
        println!("applied: stored {} events (source reconcile); a running serve processes them:", events.len());
        for id in events {
            println!("  {id}");
        }
    } else if plan.changes() == 0 {
        println!("in sync: nothing to do");
    } else if !asked_to_apply {
        println!("report only: rerun with --apply to store these changes as events");
    }
}

fn okta_register(config: &Path, url: &str) -> anyhow::Result<ExitCode> {
    let parsed = url::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    match parsed.scheme() {
        "https" => {}
        "http" => eprintln!("warning: Okta delivers only to https:// URLs; {url} works with an emulator only"),
        other => bail!("--url must be https://…, not {other}://"),
    }
    let config = HostConfig::load(config)?;
    if parsed.path() != config.okta.path {
        eprintln!(
            "warning: {url} does not end in okta.path ({}); make sure your proxy maps it there",
            config.okta.path
        );
    }
    let secret = config
        .okta
        .auth_secret
        .as_ref()
        .context("okta.auth_secret is required: it becomes the hook's authentication header")?
        .read()
        .context("okta.auth_secret")?;
    let api = crate::server::okta_api(&config)?;
    let types: Vec<String> = plugin_specs(&config).iter().flat_map(|s| s.event_types.clone()).collect();
    if types.is_empty() {
        bail!(
            "no plugin in {} subscribes to an event type: install one before registering",
            config.plugins.dir.display()
        );
    }
    let done = current_thread()?.block_on(crate::okta_api::register_event_hook(
        &api,
        url,
        &config.okta.auth_header,
        &secret,
        &types,
    ))?;
    println!(
        "event hook {} {} for {url}; verification: {}",
        done.id,
        if done.created { "created" } else { "updated" },
        done.verification_status
    );
    Ok(if done.verification_status == "VERIFIED" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn replay(config: &Path, delivery_id: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(config)?;
    match store.replay(delivery_id)? {
        crate::store::ReplayOutcome::Accepted => {
            println!("delivery {delivery_id} is pending again");
            Ok(ExitCode::SUCCESS)
        }
        crate::store::ReplayOutcome::NotFound => bail!("no delivery with id {delivery_id}"),
        crate::store::ReplayOutcome::Conflict(s) => {
            bail!("delivery {delivery_id} is {}; only done or dead deliveries can be replayed", s.as_str())
        }
    }
}
