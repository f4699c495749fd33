//! `make bench BENCH=ingest`: durable, acknowledged Okta deliveries per second.
//!
//! Durable side: the real hookhost app (`hookhost::server::app`, built as `hookhost serve`
//! builds it, auth secret `Basic bench`) served by axum on 127.0.0.1:0 in this process, with a
//! `SqliteStore` file in a temp dir (WAL, synchronous=FULL, group commit) and the `echo`
//! plugin loaded by a `Registry` from a plugin directory, so each event is stored with one
//! delivery row. No dispatcher runs: only
//! ingest is measured. Baseline: a bare axum route on 127.0.0.1:0 that reads the body and
//! answers 200, no store.
//!
//! Senders: [`SENDERS`] tasks, each with its own keep-alive reqwest client (one connection),
//! POST real-format single-event deliveries (`hookhost_tests::okta`) with the auth header.
//! Each side first sends [`WARMUP`] untimed deliveries, then [`COUNT`] timed ones; every
//! response must be 200. Sides alternate for [`ROUNDS`] rounds and each reports its best
//! round (the durable side with a fresh store each round).
//!
//! After each durable round the server is shut down, the database file is reopened with a
//! new connection, and every acknowledged event must be there with its echo delivery.
//! Last line: one JSON object.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::Router;
use hookhost::api::ApiState;
use hookhost::ingest::IngestState;
use hookhost::metrics::Metrics;
use hookhost::registry::{PluginSet, Registry, SyncOutcome};
use hookhost::runtime::{EngineOptions, Runtime};
use hookhost::secret::Secret;
use hookhost::store::{EventReads, SqliteStore, Store};
use hookhost_tests::okta::{self as okta_events, Membership};
use hookhost_tests::serve::workspace;

const SENDERS: usize = 32;
const WARMUP: usize = 64;
const COUNT: usize = 5_000;
const ROUNDS: usize = 2;
const PATH: &str = "/hooks/okta";
const AUTH: &str = "Basic bench";

/// `n` single-event deliveries, serialized, and their LogEvent uuids.
fn deliveries(n: usize, tag: &str) -> (Vec<Bytes>, Vec<String>) {
    (0..n)
        .map(|i| {
            let event = okta_events::group_membership_event(
                Membership::Add,
                &format!("00u{tag}{i:06}"),
                &format!("user{i:06}@example.net"),
                &format!("Bench User {i}"),
                "00gO365",
                "O365Guest",
                &okta_events::timestamp(0),
            );
            let uuid = event["uuid"].as_str().expect("uuid").to_owned();
            let body = serde_json::to_vec(&okta_events::delivery(vec![event])).expect("json");
            (Bytes::from(body), uuid)
        })
        .unzip()
}

/// A server on 127.0.0.1:0 running `app` until the returned sender fires.
async fn serve(app: Router) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}{PATH}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
    });
    (url, stop, task)
}

struct Sent {
    elapsed: Duration,
    /// Per-request ack latency of the timed requests.
    latencies: Vec<Duration>,
}

/// One keep-alive client per sender, built once (building a reqwest client costs about a
/// millisecond of CPU, so it stays out of the timed part) and reused across warm-up and the
/// timed requests, so the timed requests ride connections the warm-up opened.
fn clients() -> Arc<Vec<reqwest::Client>> {
    Arc::new((0..SENDERS).map(|_| reqwest::Client::builder().no_proxy().build().expect("client")).collect())
}

/// Sends `bodies[range]` from [`SENDERS`] concurrent keep-alive clients; panics on any non-200.
async fn send(
    clients: &Arc<Vec<reqwest::Client>>,
    url: &str,
    bodies: &Arc<Vec<Bytes>>,
    range: std::ops::Range<usize>,
) -> Sent {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let (url, bodies, next) = (url.to_owned(), bodies.clone(), next.clone());
        let client = clients[sender].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header(header::AUTHORIZATION, AUTH)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await
                    .expect("send");
                let status = resp.status();
                let body = resp.bytes().await.expect("body");
                latencies.push(t.elapsed());
                assert_eq!(status, StatusCode::OK, "delivery {i}: {}", String::from_utf8_lossy(&body));
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(range.len());
    for task in tasks {
        latencies.extend(task.await.expect("sender"));
    }
    let elapsed = t.elapsed();
    assert_eq!(latencies.len(), range.len(), "every delivery acknowledged with 200");
    Sent { elapsed, latencies }
}

/// p50 and p99 in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

fn rps(sent: &Sent) -> f64 {
    sent.latencies.len() as f64 / sent.elapsed.as_secs_f64()
}

// ---------------------------------------------------------------- durable side

/// A plugin directory holding the echo bundle, loaded by a [`Registry`] as `hookhost serve`
/// loads `plugins.dir` (no watcher, no artifact cache), so every event gets a delivery row.
fn plugins(runtime: &Arc<Runtime>, dir: &std::path::Path, metrics: &Arc<Metrics>) -> (Arc<PluginSet>, Arc<Registry>) {
    let wasm = workspace().join("target/wasm32-wasip2/release/echo.wasm");
    std::fs::copy(&wasm, dir.join("echo.wasm"))
        .unwrap_or_else(|e| panic!("{}: {e}; run `make plugins`", wasm.display()));
    std::fs::copy(workspace().join("tests/plugins/echo/echo.toml"), dir.join("echo.toml")).expect("copy manifest");
    let set = Arc::new(PluginSet::default());
    let registry =
        Registry::new(runtime.clone(), dir.to_path_buf(), None, BTreeMap::new(), set.clone(), metrics.clone());
    let loaded = registry.scan();
    assert!(
        loaded.iter().any(|(name, o)| name == "echo" && matches!(o, SyncOutcome::Activated { .. })),
        "echo not activated: {loaded:?}"
    );
    (set, Arc::new(registry))
}

/// The app as `hookhost::server::serve` builds it (no dispatcher; wakes are no-ops).
fn durable_app(store: Arc<dyn Store>, runtime: &Arc<Runtime>, plugin_dir: &std::path::Path) -> Router {
    let metrics = Arc::new(Metrics::default());
    let (plugins, registry) = plugins(runtime, plugin_dir, &metrics);
    let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {});
    hookhost::server::app(
        IngestState {
            store: store.clone(),
            plugins: plugins.clone(),
            auth_header: header::AUTHORIZATION,
            auth_secret: Secret::new(AUTH.into()),
            max_body_bytes: 1_048_576,
            read_timeout: std::time::Duration::from_secs(10),
            metrics: metrics.clone(),
            on_stored: wake.clone(),
        },
        PATH,
        ApiState {
            store,
            plugins,
            metrics,
            admin_token: None,
            host_id: hookhost::server::host_id(&hookhost::store::StoreUrl::Sqlite("bench".into())),
            on_replay: wake,
            registry: Some(registry),
            reconcile: None,
        },
    )
}

/// Every acknowledged event is in the file, read back through a new connection, with its
/// echo delivery, and nothing else is.
fn verify_durable(db: &std::path::Path, uuids: &[String]) {
    let store = SqliteStore::open(db).expect("reopen store");
    for uuid in uuids {
        let ev = store
            .event(uuid)
            .expect("read event")
            .unwrap_or_else(|| panic!("acknowledged event {uuid} is not in the store"));
        assert_eq!(ev.deliveries.len(), 1, "event {uuid}: deliveries");
        assert_eq!(ev.deliveries[0].plugin, "echo", "event {uuid}: delivery plugin");
    }
    let deliveries: u64 = store.counts().expect("counts").iter().map(|(_, _, n)| n).sum();
    assert_eq!(deliveries, uuids.len() as u64, "delivery rows in the store");
}

async fn bench_durable(runtime: &Arc<Runtime>, round: usize) -> Sent {
    let clients = clients();
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("hookhost.db");
    let plugin_dir = dir.path().join("plugins.d");
    std::fs::create_dir(&plugin_dir).expect("plugin dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("store"));
    let (bodies, uuids) = deliveries(WARMUP + COUNT, &format!("r{round}"));
    let bodies = Arc::new(bodies);
    let (url, stop, server) = serve(durable_app(store, runtime, &plugin_dir)).await;
    send(&clients, &url, &bodies, 0..WARMUP).await;
    let sent = send(&clients, &url, &bodies, WARMUP..WARMUP + COUNT).await;
    drop(clients); // closes the keep-alive connections, so the graceful shutdown ends at once
    let _ = stop.send(());
    server.await.expect("server");
    tokio::task::spawn_blocking(move || verify_durable(&db, &uuids)).await.expect("verify");
    drop(dir);
    sent
}

// ---------------------------------------------------------------- baseline

async fn bench_baseline(bodies: &Arc<Vec<Bytes>>) -> Sent {
    let clients = clients();
    let app = Router::new().route(PATH, axum::routing::post(|_body: Bytes| async { StatusCode::OK }));
    let (url, stop, server) = serve(app).await;
    send(&clients, &url, bodies, 0..WARMUP).await;
    let sent = send(&clients, &url, bodies, WARMUP..WARMUP + COUNT).await;
    drop(clients); // closes the keep-alive connections, so the graceful shutdown ends at once
    let _ = stop.send(());
    server.await.expect("server");
    sent
}

// ---------------------------------------------------------------- main

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(async {
        let runtime = Arc::new(Runtime::new(&EngineOptions::default()).expect("runtime"));
        let (baseline_bodies, _) = deliveries(WARMUP + COUNT, "base");
        let baseline_bodies = Arc::new(baseline_bodies);
        println!("{SENDERS} senders, {COUNT} timed single-event deliveries per round (+{WARMUP} warm-up), {ROUNDS} rounds per side");

        let mut best_baseline = 0.0_f64;
        let mut best_durable: Option<(f64, f64, f64)> = None;
        for round in 1..=ROUNDS {
            let base = bench_baseline(&baseline_bodies).await;
            let (b50, b99) = percentiles(base.latencies.clone());
            println!(
                "  round {round} baseline (bare axum, 200, no store): {:.0} req/s, ack p50 {b50:.2} ms p99 {b99:.2} ms",
                rps(&base)
            );
            best_baseline = best_baseline.max(rps(&base));

            let durable = bench_durable(&runtime, round).await;
            let r = rps(&durable);
            let (p50, p99) = percentiles(durable.latencies);
            println!(
                "  round {round} durable (hookhost app, SQLite file, echo subscribed): {r:.0} deliveries/s, ack p50 {p50:.2} ms p99 {p99:.2} ms; all {} events verified on disk",
                WARMUP + COUNT
            );
            if best_durable.is_none_or(|(best, _, _)| r > best) {
                best_durable = Some((r, p50, p99));
            }
        }
        let (durable_rps, p50, p99) = best_durable.expect("a round ran");
        println!("baseline: {best_baseline:.0} req/s (best of {ROUNDS})");
        println!("durable:  {durable_rps:.0} acknowledged deliveries/s (best of {ROUNDS}), ack p50 {p50:.2} ms, p99 {p99:.2} ms");
        let json = serde_json::json!({
            "bench": "ingest",
            "durable_rps": round(durable_rps),
            "baseline_rps": round(best_baseline),
            "ratio": round(durable_rps / best_baseline),
            "ack_p50_ms": round(p50),
            "ack_p99_ms": round(p99),
        });
        println!("{json}");
    });
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
