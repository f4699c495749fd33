//! `make bench BENCH=languages`: what a plugin written in Python (siem-forward, built with
//! componentize-py) or JavaScript (webhook-forward, built with jco componentize) costs next
//! to one written in Rust (chat-notify), per event and at start.
//!
//! - per event, through hookhost's real runtime (pooling allocator, limits, grants): one
//!   whole attempt (fresh instance, `handle`, drop) that makes one HTTP POST to an
//!   in-process stand-in of its service (Slack, Splunk HEC) on loopback; and the same
//!   attempt with no I/O (no secret configured: the plugin answers a permanent failure
//!   before any request), which isolates the sandbox and language-runtime cost.
//! - compile: `Component` from the `.wasm` (what a cold start pays per plugin) against a
//!   load from the compiled-artifact cache (what a warm start pays).
//! - start-up of the real `hookhost serve` with the four shipped bundles (graph-guest,
//!   chat-notify, siem-forward, webhook-forward): spawn to `/healthz` 200 with an empty artifact cache
//!   (cold) and with the cache the previous start left (warm).
//!
//! Needs `make build` (the host and `dist/plugins`). Last line: one JSON object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost::config::PluginOverride;
use hookhost::okta::Event;
use hookhost::registry::{self, ArtifactCache, PluginBundle};
use hookhost::runtime::{AttemptResult, EngineOptions, KvBackend, LoadedPlugin, MemoryKv, PluginIdentity, Runtime};
use hookhost_tests::serve::{free_port, workspace, ServeProcess, ServeSetup};
use hookhost_tests::{WebhookKind, WebhookReceiver};

const RUST_EVENTS: usize = 2_000;
const PYTHON_EVENTS: usize = 300;
const JS_EVENTS: usize = 300;
const WARMUP: usize = 20;
const COLD_STARTS: usize = 2;
const WARM_STARTS: usize = 3;

fn dist(file: &str) -> PathBuf {
    let p = workspace().join("dist/plugins").join(file);
    if !p.exists() {
        eprintln!("{} is missing: run `make build` first (make bench does)", p.display());
        std::process::exit(2);
    }
    p
}

fn event() -> Event {
    Event::from_value(&serde_json::json!({
        "uuid": "bench-0001",
        "published": "2026-11-28T10:00:00.000Z",
        "eventType": "group.user_membership.add",
        "displayMessage": "Add user to group membership",
        "severity": "INFO",
        "outcome": {"result": "SUCCESS", "reason": null},
        "client": {"ipAddress": "192.0.2.7"},
        "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
        "target": [
            {"id": "00u1", "type": "User", "alternateId": "jane@example.net", "displayName": "Jane Doe"},
            {"id": "00g1", "type": "UserGroup", "alternateId": "unknown", "displayName": "O365Guest"}
        ]
    }))
    .expect("event")
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

struct Compiled {
    loaded: LoadedPlugin,
    compile_ms: f64,
    cache_load_ms: f64,
}

/// Compiles the bundle (timed), round-trips it through an artifact cache (load timed) and
/// links it with `over`.
fn load(runtime: &Runtime, name: &str, over: &PluginOverride, cache_root: &Path) -> Compiled {
    let bundle = PluginBundle::load(&dist(&format!("{name}.toml"))).expect("bundle");
    let spec = registry::effective(&bundle, Some(over)).expect("spec");
    let t = Instant::now();
    let component = runtime.compile(&bundle.wasm).expect("compile");
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let cache = ArtifactCache::open(cache_root, runtime.engine()).expect("cache");
    cache.put(runtime, &bundle.sha256, &component).expect("cache put");
    let t = Instant::now();
    let cached = cache.get(runtime, &bundle.sha256).expect("cache get");
    let cache_load_ms = t.elapsed().as_secs_f64() * 1e3;
    let loaded = runtime
        .load(
            &cached,
            PluginIdentity { name: spec.name.clone(), version: spec.version.clone(), sha256: spec.sha256.clone() },
            spec.grant.clone(),
            spec.limits.clone(),
        )
        .expect("load");
    Compiled { loaded, compile_ms, cache_load_ms }
}

async fn per_event(runtime: &Runtime, plugin: &LoadedPlugin, n: usize, expect_done: bool) -> (f64, f64) {
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let ev = event();
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        let a = runtime.run(plugin, &ev, kv.clone()).await;
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
        match (&a.result, expect_done) {
            (AttemptResult::Done { .. }, true) | (AttemptResult::Permanent(_), false) => {}
            (other, _) => panic!("{}: unexpected {other:?}", plugin.name()),
        }
    }
    percentiles(samples)
}

fn over(text: &str) -> PluginOverride {
    toml::from_str(text).expect("override")
}

/// Spawn to `/healthz` 200 of `hookhost serve` with the three shipped bundles.
async fn start_once(dir: &Path, port: u16, setup: &ServeSetup) -> Duration {
    let t = Instant::now();
    let serve = ServeProcess::spawn(dir, port, setup.clone(), Duration::from_secs(300)).await.expect("serve starts");
    let took = t.elapsed();
    drop(serve);
    took
}

async fn startup() -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tmp");
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).expect("plugins.d");
    for name in ["graph-guest", "chat-notify", "siem-forward", "webhook-forward"] {
        for ext in ["wasm", "toml"] {
            std::fs::copy(dist(&format!("{name}.{ext}")), plugins.join(format!("{name}.{ext}"))).expect("copy");
        }
    }
    let port = free_port();
    let setup = ServeSetup { plugins_extra: "watch = false\n".into(), ..ServeSetup::plain() };
    setup.write(dir.path(), port, None).expect("config");
    let cache = plugins.join(".cache");
    let mut cold = Vec::new();
    for _ in 0..COLD_STARTS {
        let _ = std::fs::remove_dir_all(&cache);
        cold.push(start_once(dir.path(), port, &setup).await);
    }
    let mut warm = Vec::new();
    for _ in 0..WARM_STARTS {
        warm.push(start_once(dir.path(), port, &setup).await);
    }
    (median_ms(cold), median_ms(warm))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let runtime = Runtime::new(&EngineOptions::default()).expect("runtime");
    let cache_root = tempfile::tempdir().expect("tmp");

    let slack = rt.block_on(WebhookReceiver::start(WebhookKind::Slack)).expect("slack");
    let hec = rt.block_on(WebhookReceiver::start(WebhookKind::SplunkHec { token: "bench".into() })).expect("hec");
    let chat_over = format!(
        "allowed_hosts = [\"{}\"]\n[secrets]\nwebhook_url = {{ value = \"{}\" }}\n",
        slack.base_url(),
        slack.url()
    );
    let siem_over = format!(
        "allowed_hosts = [\"{0}\"]\n[config]\nhec_url = \"{0}\"\n[secrets]\nhec_token = {{ value = \"bench\" }}\n",
        hec.base_url()
    );
    let hook = rt.block_on(WebhookReceiver::start(WebhookKind::Generic { secret: None })).expect("webhook");
    let js_over = format!("allowed_hosts = [\"{}\"]\n[config]\nurl = \"{}\"\n", hook.base_url(), hook.url());
    let rust = load(&runtime, "chat-notify", &over(&chat_over), cache_root.path());
    let python = load(&runtime, "siem-forward", &over(&siem_over), cache_root.path());
    let js = load(&runtime, "webhook-forward", &over(&js_over), cache_root.path());
    println!(
        "compile: chat-notify (Rust) {:.1} ms, siem-forward (Python) {:.0} ms, webhook-forward (JS) {:.0} ms; from the artifact cache: {:.2} ms / {:.2} ms / {:.2} ms",
        rust.compile_ms, python.compile_ms, js.compile_ms, rust.cache_load_ms, python.cache_load_ms, js.cache_load_ms
    );

    let (rust_http_p50, rust_http_p99) = rt.block_on(per_event(&runtime, &rust.loaded, RUST_EVENTS, true));
    let (py_http_p50, py_http_p99) = rt.block_on(per_event(&runtime, &python.loaded, PYTHON_EVENTS, true));
    let (js_http_p50, js_http_p99) = rt.block_on(per_event(&runtime, &js.loaded, JS_EVENTS, true));
    println!("per event, one POST to a loopback receiver: Rust p50 {rust_http_p50:.0} µs p99 {rust_http_p99:.0} µs; Python p50 {py_http_p50:.0} µs p99 {py_http_p99:.0} µs; JS p50 {js_http_p50:.0} µs p99 {js_http_p99:.0} µs");

    // No secret granted: each answers a permanent failure before any request.
    let rust_bare = load(&runtime, "chat-notify", &over(""), cache_root.path());
    let python_bare = load(
        &runtime,
        "siem-forward",
        &over(&format!("[config]\nhec_url = \"{}\"\n", hec.base_url())),
        cache_root.path(),
    );
    let (rust_p50, rust_p99) = rt.block_on(per_event(&runtime, &rust_bare.loaded, RUST_EVENTS, false));
    let (py_p50, py_p99) = rt.block_on(per_event(&runtime, &python_bare.loaded, PYTHON_EVENTS, false));
    println!("per event, no I/O: Rust p50 {rust_p50:.1} µs p99 {rust_p99:.1} µs; Python p50 {py_p50:.0} µs p99 {py_p99:.0} µs ({:.0}x)", py_p50 / rust_p50);
    // No url configured: a permanent failure before any request.
    let js_bare = load(&runtime, "webhook-forward", &over(""), cache_root.path());
    let (js_p50, js_p99) = rt.block_on(per_event(&runtime, &js_bare.loaded, JS_EVENTS, false));
    println!("per event, no I/O: JS p50 {js_p50:.0} µs p99 {js_p99:.0} µs ({:.0}x Rust)", js_p50 / rust_p50);

    let (cold_ms, warm_ms) = rt.block_on(startup());
    println!("hookhost serve start with graph-guest, chat-notify, siem-forward, webhook-forward: cold cache {cold_ms:.0} ms, warm cache {warm_ms:.0} ms");

    let round = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "languages",
            "rust_io_p50_us": round(rust_http_p50),
            "rust_io_p99_us": round(rust_http_p99),
            "python_io_p50_us": round(py_http_p50),
            "python_io_p99_us": round(py_http_p99),
            "rust_noio_p50_us": round(rust_p50),
            "python_noio_p50_us": round(py_p50),
            "python_over_rust_noio": round(py_p50 / rust_p50),
            "js_io_p50_us": round(js_http_p50),
            "js_io_p99_us": round(js_http_p99),
            "js_noio_p50_us": round(js_p50),
            "js_noio_p99_us": round(js_p99),
            "js_compile_ms": round(js.compile_ms),
            "js_cache_load_ms": round(js.cache_load_ms),
            "js_wasm_bytes": std::fs::metadata(dist("webhook-forward.wasm")).map(|m| m.len()).unwrap_or(0),
            "rust_compile_ms": round(rust.compile_ms),
            "python_compile_ms": round(python.compile_ms),
            "rust_cache_load_ms": round(rust.cache_load_ms),
            "python_cache_load_ms": round(python.cache_load_ms),
            "start_cold_ms": round(cold_ms),
            "start_warm_ms": round(warm_ms),
        })
    );
}
