//! `make bench BENCH=runtime`: the per-event cost of the sandbox.
//!
//! For the `echo` component (trivial work, no I/O), each iteration is one whole attempt:
//! new Store, instantiate, call `handle`, drop. Measured through hookhost's real runtime
//! (limits, epoch deadline, stdio capture, grants) with the pooling allocator and with
//! on-demand allocation; against the floor, the same component in a minimal wasmtime
//! embedding (pooling, WASI with defaults, stub hookhost imports, nothing else); and against
//! the same logic as a native Rust function.
//!
//! Telemetry: the same attempts as the dispatcher runs them (inside the attempt span), with
//! telemetry off (the span is `Span::none()`, what `serve` does without an endpoint) and on
//! (spans exported over OTLP/HTTP protobuf to an in-process receiver), interleaved attempt by
//! attempt so a busy machine slows both alike. Last line: one JSON object.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost::okta::Event;
use hookhost::registry::{self, PluginBundle};
use hookhost::runtime::LoadedPlugin;
use hookhost::runtime::{Allocation, AttemptResult, EngineOptions, KvBackend, MemoryKv, PluginIdentity, Runtime};
use hookhost_tests::serve::workspace;
use hookhost_tests::{WebhookKind, WebhookReceiver};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const WARMUP: usize = 1_000;
const ITERS: usize = 20_000;
/// Attempts that make an HTTP call take ~100x longer: fewer of them.
const HTTP_WARMUP: usize = 200;
const HTTP_ITERS: usize = 2_000;

mod floor {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

mod floor_sync {
    wasmtime::component::bindgen!({ world: "plugin", path: "../wit" });
}

struct FloorState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for FloorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

macro_rules! stub_imports {
    ($m:ident, $($async:ident)?) => {
        impl $m::hookhost::plugin::types::Host for FloorState {}
        impl $m::hookhost::plugin::http::Host for FloorState {
            $($async)? fn send(&mut self, _r: $m::hookhost::plugin::http::Request) -> Result<$m::hookhost::plugin::http::Response, $m::hookhost::plugin::http::HttpError> {
                Err($m::hookhost::plugin::http::HttpError::Denied("stub".into()))
            }
        }
        impl $m::hookhost::plugin::secrets::Host for FloorState {
            $($async)? fn get(&mut self, _n: String) -> Option<String> { None }
        }
        impl $m::hookhost::plugin::config::Host for FloorState {
            $($async)? fn get(&mut self, _k: String) -> Option<String> { None }
        }
        impl $m::hookhost::plugin::kv::Host for FloorState {
            $($async)? fn get(&mut self, _k: String) -> Result<Option<String>, String> { Ok(None) }
            $($async)? fn set(&mut self, _k: String, _v: String) -> Result<(), String> { Ok(()) }
            $($async)? fn delete(&mut self, _k: String) -> Result<(), String> { Ok(()) }
            $($async)? fn scan(&mut self, _p: String, _a: Option<String>) -> Result<Vec<(String, String)>, String> { Ok(vec![]) }
        }
        impl $m::hookhost::plugin::log::Host for FloorState {
            $($async)? fn log(&mut self, _l: $m::hookhost::plugin::log::Level, _m: String) {}
        }
        impl $m::hookhost::plugin::keys::Host for FloorState {
            $($async)? fn info(&mut self, _n: String) -> Option<$m::hookhost::plugin::keys::KeyInfo> { None }
            $($async)? fn sign(
                &mut self,
                n: String,
                _a: $m::hookhost::plugin::keys::Algorithm,
                _m: Vec<u8>,
            ) -> Result<Vec<u8>, $m::hookhost::plugin::keys::SignError> {
                Err($m::hookhost::plugin::keys::SignError::Denied(n))
            }
        }
    };
}
stub_imports!(floor, async);
stub_imports!(floor_sync,);

fn event() -> Event {
    Event::from_value(&serde_json::json!({
        "uuid": "bench-0001",
        "published": "2026-11-28T10:00:00.000Z",
        "eventType": "group.user_membership.add",
        "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
        "target": [
            {"id": "00u1", "type": "User", "alternateId": "jane@example.com", "displayName": "Jane Doe"},
            {"id": "00g1", "type": "UserGroup", "alternateId": "unknown", "displayName": "O365Guest"}
        ]
    }))
    .expect("event")
}

/// p50 and p99 in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

/// The floor's engine: pooling and nothing else. `tuned` uses hookhost's pool settings
/// (decommit batching), so the ratio isolates what hookhost adds per attempt; untuned is
/// wasmtime's default pool, reported for reference.
fn floor_engine(tuned: bool) -> Engine {
    let mut config = Config::new();
    let pool = if tuned {
        hookhost::runtime::engine::pooling_config(&EngineOptions::default())
    } else {
        PoolingAllocationConfig::default()
    };
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).expect("floor engine")
}

fn floor_wasi() -> FloorState {
    FloorState { wasi: WasiCtx::builder().build(), table: ResourceTable::new() }
}

fn to_floor_event(e: &Event) -> floor::hookhost::plugin::types::Event {
    let p = |p: &hookhost::okta::Party| floor::hookhost::plugin::types::Party {
        id: p.id.clone(),
        kind: p.kind.clone(),
        alternate_id: p.alternate_id.clone(),
        display_name: p.display_name.clone(),
    };
    floor::hookhost::plugin::types::Event {
        id: e.uuid.clone(),
        event_type: e.event_type.clone(),
        published: e.published.clone(),
        actor: e.actor.as_ref().map(p),
        targets: e.targets.iter().map(p).collect(),
        raw: e.raw.clone(),
    }
}

async fn bench_floor(wasm: &[u8], ev: &Event, tuned: bool) -> (f64, f64) {
    let engine = floor_engine(tuned);
    let component = Component::new(&engine, wasm).expect("compile");
    let mut linker = Linker::<FloorState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    floor::Plugin::add_to_linker::<FloorState, HasSelf<FloorState>>(&mut linker, |s| s).expect("link");
    let pre = floor::PluginPre::new(linker.instantiate_pre(&component).expect("pre")).expect("pre");
    let mut samples = Vec::with_capacity(ITERS);
    for i in 0..WARMUP + ITERS {
        let t = Instant::now();
        let wit_event = to_floor_event(ev);
        let mut store = Store::new(&engine, floor_wasi());
        let plugin = pre.instantiate_async(&mut store).await.expect("instantiate");
        let r = plugin.hookhost_plugin_handler().call_handle(&mut store, &wit_event).await.expect("call");
        assert!(r.is_ok());
        drop(store);
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    percentiles(samples)
}

fn bench_floor_sync(wasm: &[u8], ev: &Event) -> (f64, f64) {
    let engine = floor_engine(true);
    let component = Component::new(&engine, wasm).expect("compile");
    let mut linker = Linker::<FloorState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    floor_sync::Plugin::add_to_linker::<FloorState, HasSelf<FloorState>>(&mut linker, |s| s).expect("link");
    let pre = floor_sync::PluginPre::new(linker.instantiate_pre(&component).expect("pre")).expect("pre");
    let mut samples = Vec::with_capacity(ITERS);
    let p = |p: &hookhost::okta::Party| floor_sync::hookhost::plugin::types::Party {
        id: p.id.clone(),
        kind: p.kind.clone(),
        alternate_id: p.alternate_id.clone(),
        display_name: p.display_name.clone(),
    };
    for i in 0..WARMUP + ITERS {
        let t = Instant::now();
        let wit_event = floor_sync::hookhost::plugin::types::Event {
            id: ev.uuid.clone(),
            event_type: ev.event_type.clone(),
            published: ev.published.clone(),
            actor: ev.actor.as_ref().map(p),
            targets: ev.targets.iter().map(p).collect(),
            raw: ev.raw.clone(),
        };
        let mut store = Store::new(&engine, floor_wasi());
        let plugin = pre.instantiate(&mut store).expect("instantiate");
        let r = plugin.hookhost_plugin_handler().call_handle(&mut store, &wit_event).expect("call");
        assert!(r.is_ok());
        drop(store);
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    percentiles(samples)
}

async fn bench_hookhost(allocation: Allocation, manifest: &std::path::Path, ev: &Event) -> (f64, f64, f64) {
    let runtime = Runtime::new(&EngineOptions { allocation, ..EngineOptions::default() }).expect("runtime");
    let bundle = PluginBundle::load(manifest).expect("bundle");
    let spec = registry::effective(&bundle, None).expect("spec");
    let t = Instant::now();
    let component = runtime.compile(&bundle.wasm).expect("compile");
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let plugin = load_spec(&runtime, &component, &spec);
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let mut samples = Vec::with_capacity(ITERS);
    for i in 0..WARMUP + ITERS {
        let t = Instant::now();
        let a = runtime.run(&plugin, ev, kv.clone()).await;
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
        assert!(matches!(a.result, AttemptResult::Done { .. }), "{:?}", a.result);
    }
    let (p50, p99) = percentiles(samples);
    (p50, p99, compile_ms)
}

/// `component` loaded as the plugin `spec` describes.
fn load_spec(runtime: &Runtime, component: &Component, spec: &registry::PluginSpec) -> LoadedPlugin {
    let identity =
        PluginIdentity { name: spec.name.clone(), version: spec.version.clone(), sha256: spec.sha256.clone() };
    runtime.load(component, identity, spec.grant.clone(), spec.limits.clone()).expect("load")
}

/// `manifest`'s plugin loaded with the operator override `over` (TOML).
fn load_plugin(runtime: &Runtime, manifest: &std::path::Path, over: &str) -> (String, String, LoadedPlugin) {
    let bundle = PluginBundle::load(manifest).expect("bundle");
    let over: hookhost::config::PluginOverride = toml::from_str(over).expect("override");
    let spec = registry::effective(&bundle, Some(&over)).expect("spec");
    let component = runtime.compile(&bundle.wasm).expect("compile");
    let plugin = load_spec(runtime, &component, &spec);
    (spec.name, spec.version, plugin)
}

/// `warmup + iters` attempts of each inside the dispatcher's attempt span, alternating
/// telemetry off (even: `Span::none()`, what dispatch opens without an endpoint) and on (odd).
async fn bench_telemetry(
    runtime: &Runtime,
    (name, version, plugin): &(String, String, LoadedPlugin),
    ev: &Event,
    warmup: usize,
    iters: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    use opentelemetry::context::FutureExt as _;
    use tracing::Instrument;
    let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
    let (mut off, mut on) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..2 * (warmup + iters) {
        let t = Instant::now();
        let a = if i % 2 == 0 {
            // What dispatch does with telemetry off: an inert span, no context.
            let span = hookhost::telemetry::AttemptSpan::none();
            let a = runtime.run(plugin, ev, kv.clone()).instrument(span.log_span().clone()).await;
            span.finished(&a.result);
            a
        } else {
            let span = hookhost::telemetry::attempt_span(name, version, "d-bench", &ev.uuid);
            let cx = span.context().expect("telemetry is on").clone();
            let a = runtime.run(plugin, ev, kv.clone()).instrument(span.log_span().clone()).with_context(cx).await;
            span.finished(&a.result);
            a
        };
        let took = t.elapsed();
        if i >= 2 * warmup {
            if i % 2 == 0 {
                off.push(took)
            } else {
                on.push(took)
            }
        }
        assert!(matches!(a.result, AttemptResult::Done { .. }), "{name}: {:?}", a.result);
    }
    (off, on)
}

/// The spans alone: what `bench_telemetry` wraps around an attempt (and a plugin's request
/// inside it), around nothing. Mean ns per (attempt span + one HTTP span), over `iters`
/// after as many warm-up rounds.
async fn span_cost_ns(uuid: &str, iters: usize) -> f64 {
    use opentelemetry::context::FutureExt as _;
    let mut took = Duration::ZERO;
    for i in 0..2 * iters {
        let t = Instant::now();
        let span = hookhost::telemetry::attempt_span("echo", "1.0.0", "d-bench", uuid);
        let cx = span.context().expect("telemetry is on").clone();
        async {
            let http = hookhost::telemetry::http_span("POST", "127.0.0.1", Some(8080));
            std::hint::black_box(http.as_ref().map(hookhost::telemetry::HttpSpan::traceparent));
        }
        .with_context(cx)
        .await;
        span.finished(&AttemptResult::Done { summary: String::new() });
        if i >= iters {
            took += t.elapsed();
        }
    }
    took.as_secs_f64() * 1e9 / iters as f64
}

fn mean_us(samples: &[Duration]) -> f64 {
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6
}

/// The echo plugin's logic, natively.
#[inline(never)]
fn echo_native(event: &Event) -> String {
    let user =
        event.targets.iter().find(|t| t.kind == "User").and_then(|t| t.alternate_id.as_deref()).unwrap_or("nobody");
    format!("{} for {user}", event.event_type)
}

/// The sandbox's cost against its floors and native code (µs, but compile in ms).
#[derive(Default)]
struct SandboxFigures {
    pool_p50: f64,
    pool_p99: f64,
    compile_ms: f64,
    od_p50: f64,
    floor_p50: f64,
    default_pool_p50: f64,
    sync_p50: f64,
    native_p50: f64,
}

fn sandbox_figures(
    rt: &tokio::runtime::Runtime,
    wasm: &[u8],
    manifest: &std::path::Path,
    ev: &Event,
) -> SandboxFigures {
    let (pool_p50, pool_p99, compile_ms) = rt.block_on(bench_hookhost(Allocation::Pooling, manifest, ev));
    println!("hookhost runtime, pooling:   p50 {pool_p50:.1} µs  p99 {pool_p99:.1} µs  (compile {compile_ms:.1} ms)");
    let (od_p50, od_p99, _) = rt.block_on(bench_hookhost(Allocation::OnDemand, manifest, ev));
    println!("hookhost runtime, on-demand: p50 {od_p50:.1} µs  p99 {od_p99:.1} µs");
    let (floor_p50, floor_p99) = rt.block_on(bench_floor(wasm, ev, true));
    println!("floor (minimal async embedding, same pool settings): p50 {floor_p50:.1} µs  p99 {floor_p99:.1} µs");
    let (default_pool_p50, _) = rt.block_on(bench_floor(wasm, ev, false));
    println!("floor (minimal async embedding, wasmtime's default pool): p50 {default_pool_p50:.1} µs");
    let (sync_p50, sync_p99) = bench_floor_sync(wasm, ev);
    println!("floor (minimal sync embedding, same pool settings):  p50 {sync_p50:.1} µs  p99 {sync_p99:.1} µs");

    let mut samples = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let t = Instant::now();
        std::hint::black_box(echo_native(std::hint::black_box(ev)));
        samples.push(t.elapsed());
    }
    let (native_p50, _) = percentiles(samples);
    println!("native Rust function: p50 {native_p50:.2} µs");

    SandboxFigures { pool_p50, pool_p99, compile_ms, od_p50, floor_p50, default_pool_p50, sync_p50, native_p50 }
}

fn main() {
    let wasm_path = workspace().join("target/wasm32-wasip2/release/echo.wasm");
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("{}: {e}; run `make plugins`", wasm_path.display()));
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("echo.wasm"), &wasm).expect("write");
    std::fs::copy(workspace().join("tests/plugins/echo/echo.toml"), dir.path().join("echo.toml")).expect("copy");
    let manifest = dir.path().join("echo.toml");
    let ev = event();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    // `RUNTIME_BENCH_ONLY=telemetry` skips to the telemetry part (for profiling it).
    let only_telemetry = std::env::var("RUNTIME_BENCH_ONLY").is_ok_and(|v| v == "telemetry");
    let SandboxFigures { pool_p50, pool_p99, compile_ms, od_p50, floor_p50, default_pool_p50, sync_p50, native_p50 } =
        if only_telemetry { SandboxFigures::default() } else { sandbox_figures(&rt, &wasm, &manifest, &ev) };

    // Telemetry on: the exporter and the receiver run on their own runtime (one worker), as
    // the exporter runs beside the dispatcher in `serve`; batches every 100 ms.
    let exporter_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
    let receiver = exporter_rt.block_on(hookhost_tests::otlp_receiver::OtlpReceiver::start()).expect("receiver");
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        // SAFETY: no other thread of this process reads or writes the environment now.
        unsafe { std::env::set_var("OTEL_BSP_MAX_QUEUE_SIZE", "1000000") };
    }
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        // SAFETY: no other thread of this process reads or writes the environment now.
        unsafe { std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100") };
    }
    let config = hookhost::config::TelemetryConfig { otlp_endpoint: Some(receiver.endpoint()), ..Default::default() };
    let telemetry =
        hookhost::telemetry::init(&config, hookhost::config::LogFormat::Text, "info", exporter_rt.handle().clone())
            .expect("telemetry");
    // The floor: echo, no host call. Then chat-notify posting once to a loopback Slack
    // stand-in, where each attempt also has an HTTP span and sends `traceparent`.
    let span_ns = rt.block_on(span_cost_ns(&ev.uuid, ITERS));
    println!("attempt span + HTTP span alone: {span_ns:.0} ns");
    let runtime = Runtime::new(&EngineOptions::default()).expect("runtime");
    let echo = load_plugin(&runtime, &manifest, "");
    let (off, on) = rt.block_on(bench_telemetry(&runtime, &echo, &ev, WARMUP, ITERS));
    let (off_mean, on_mean) = (mean_us(&off), mean_us(&on));
    let ((off_p50, _), (on_p50, _)) = (percentiles(off), percentiles(on));
    println!("echo attempt, telemetry off: p50 {off_p50:.1} µs (mean {off_mean:.1}); on: p50 {on_p50:.1} µs (mean {on_mean:.1})");
    // Its own runtime: behind the OTLP receiver's work, the webhook's answers would wait.
    let slack_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
    let slack = slack_rt.block_on(WebhookReceiver::start(WebhookKind::Slack)).expect("slack");
    let chat_over = format!(
        "allowed_hosts = [\"{}\"]\n[secrets]\nwebhook_url = {{ value = \"{}\" }}\n",
        slack.base_url(),
        slack.url()
    );
    let chat = load_plugin(&runtime, &workspace().join("dist/plugins/chat-notify.toml"), &chat_over);
    let (http_off, http_on) = rt.block_on(bench_telemetry(&runtime, &chat, &ev, HTTP_WARMUP, HTTP_ITERS));
    let ((http_off_p50, _), (http_on_p50, _)) = (percentiles(http_off), percentiles(http_on));
    println!("chat-notify attempt (one POST), telemetry off: p50 {http_off_p50:.1} µs; on: p50 {http_on_p50:.1} µs");
    telemetry.shutdown();
    let exported = receiver.spans().len();
    let expected = 4 * ITERS + (WARMUP + ITERS) + 2 * (HTTP_WARMUP + HTTP_ITERS);
    println!("{exported} spans exported of {expected}");

    let json = serde_json::json!({
        "bench": "runtime",
        "pooling_p50_us": round(pool_p50),
        "pooling_p99_us": round(pool_p99),
        "ondemand_p50_us": round(od_p50),
        "floor_p50_us": round(floor_p50),
        "floor_sync_p50_us": round(sync_p50),
        "floor_default_pool_p50_us": round(default_pool_p50),
        "native_p50_us": round(native_p50),
        "ratio": (pool_p50 / floor_p50 * 100.0).round() / 100.0,
        "compile_ms": round(compile_ms),
        "telemetry_off_us_per_attempt": round(off_p50),
        "telemetry_on_us_per_attempt": round(on_p50),
        "telemetry_overhead_pct": round((on_p50 / off_p50 - 1.0) * 100.0),
        "telemetry_http_off_us_per_attempt": round(http_off_p50),
        "telemetry_http_on_us_per_attempt": round(http_on_p50),
        "telemetry_http_overhead_pct": round((http_on_p50 / http_off_p50 - 1.0) * 100.0),
        "telemetry_span_pair_ns": span_ns.round(),
        "telemetry_spans_exported": exported,
        "telemetry_spans_expected": expected,
    });
    println!("{json}");
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
