//! Dispatcher tests with real plugin components (`tests/plugins/{echo,hostile}`) on a real
//! SQLite store. Times are short real durations: `start_paused` needs tokio's `test-util`,
//! which the host crate does not enable, and the store's leases follow the wall clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use chrono::{TimeDelta, Utc};
use serde_json::json;
use wasmtime::component::Component;

use super::retry::{backoff, backoff_ceiling, next_after, MAX_RETRY_AFTER};
use super::*;
use crate::config::RetryConfig;
use crate::okta::Event;
use crate::registry::{self, ActivePlugin, PluginBundle};
use crate::runtime::{AttemptResult, EngineOptions, PluginIdentity};
use crate::store::{
    DeliveryView, EventReads, Intake, NewEvent, Next, Queue, ReplayOutcome, SqliteStore, Status, Store,
};

// ---- pure policy -------------------------------------------------------------------------

fn policy(max_attempts: u32, initial_ms: u64, max_secs: u64) -> RetryConfig {
    RetryConfig { max_attempts, initial_backoff_ms: initial_ms, max_backoff_secs: max_secs }
}

#[test]
fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
    let p = policy(10, 1_000, 10);
    let ceilings: Vec<u64> = (1..=6).map(|n| backoff_ceiling(&p, n).as_secs()).collect();
    assert_eq!(ceilings, [1, 2, 4, 8, 10, 10]);
    assert_eq!(backoff(&p, 3, 0.0), Duration::from_secs(2), "half is fixed");
    assert_eq!(backoff(&p, 3, 1.0), Duration::from_secs(4));
    for _ in 0..100 {
        let d = backoff(&p, 2, fastrand::f64());
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2), "{d:?}");
    }
    // Absurd attempt counts and caps neither overflow nor panic.
    assert_eq!(backoff_ceiling(&policy(10, 1_000, u64::MAX), u32::MAX), Duration::from_millis(1_000) * (1 << 31));
}

#[test]
fn a_retry_honours_retry_after_and_the_last_attempt_dies() {
    let p = policy(3, 1_000, 10);
    let now = Utc::now();
    let retryable = |ms: Option<u64>| AttemptResult::Retryable {
        message: "throttled".into(),
        retry_after: ms.map(Duration::from_millis),
    };
    // The hint is a floor, even past max_backoff.
    assert_eq!(next_after(&retryable(Some(30_000)), 0, &p, now, 0.0), Next::Retry { at: now + TimeDelta::seconds(30) });
    // A shorter hint does not shorten the backoff.
    assert_eq!(next_after(&retryable(Some(10)), 1, &p, now, 0.0), Next::Retry { at: now + TimeDelta::seconds(1) });
    assert_eq!(next_after(&retryable(None), 0, &p, now, 0.0), Next::Retry { at: now + TimeDelta::milliseconds(500) });
    // A plugin cannot park a delivery for a year.
    let far = next_after(&retryable(Some(365 * 86_400_000)), 0, &p, now, 0.0);
    assert_eq!(far, Next::Retry { at: now + TimeDelta::from_std(MAX_RETRY_AFTER).unwrap() });
    // A timeout is retried like a retryable failure.
    assert!(matches!(next_after(&AttemptResult::TimedOut, 1, &p, now, 0.5), Next::Retry { .. }));
    // The third attempt is the last.
    assert_eq!(next_after(&retryable(None), 2, &p, now, 0.0), Next::Dead);
    assert_eq!(next_after(&AttemptResult::TimedOut, 2, &p, now, 0.0), Next::Dead);
    for dead in [
        AttemptResult::Permanent("403".into()),
        AttemptResult::Trapped("unreachable".into()),
        AttemptResult::OutOfMemory,
    ] {
        assert_eq!(next_after(&dead, 0, &p, now, 0.0), Next::Dead);
    }
    assert_eq!(next_after(&AttemptResult::Done { summary: "ok".into() }, 0, &p, now, 0.0), Next::Done);
}

// ---- with real plugins -------------------------------------------------------------------

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let opts = EngineOptions { max_instances: 16, ..EngineOptions::default() };
            Arc::new(Runtime::new(&opts).unwrap())
        })
        .clone()
}

/// A test plugin's compiled component, compiled once per test binary.
fn component(name: &str, wasm: &[u8]) -> Component {
    static CACHE: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache.entry(name.to_owned()).or_insert_with(|| runtime().compile(wasm).unwrap()).clone()
}

/// Loads test plugin `source` (its wasm and manifest) as a bundle in a temp folder, after
/// `edit` rewrites the manifest text.
fn plugin(source: &str, edit: impl FnOnce(String) -> String) -> ActivePlugin {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let wasm_path = target.join(format!("wasm32-wasip2/release/{source}.wasm"));
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| {
        panic!("{}: {e}; the test plugins are not built: run `make plugins` first", wasm_path.display())
    });
    let manifest = std::fs::read_to_string(workspace().join(format!("tests/plugins/{source}/{source}.toml"))).unwrap();
    let manifest = edit(manifest);
    let name = registry::Manifest::parse(&manifest).unwrap().name;
    let dir = std::env::temp_dir().join(format!("hookhost-dispatch-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.wasm")), &wasm).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
    let bundle = PluginBundle::load(&dir.join(format!("{name}.toml"))).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let spec = registry::effective(&bundle, None).unwrap();
    let loaded = runtime()
        .load(
            &component(source, &bundle.wasm),
            PluginIdentity { name: spec.name.clone(), version: spec.version.clone(), sha256: spec.sha256.clone() },
            spec.grant.clone(),
            spec.limits.clone(),
        )
        .unwrap();
    ActivePlugin { spec, loaded, loaded_at: crate::store::common::now() }
}

fn echo() -> ActivePlugin {
    plugin("echo", |m| m)
}

/// hostile in `mode = "loop"`, stopped by its deadline after `timeout_ms`.
fn looping(timeout_ms: u64) -> ActivePlugin {
    plugin("hostile", |m| {
        m.replace("mode = \"ok\"", "mode = \"loop\"").replace("timeout_ms = 500", &format!("timeout_ms = {timeout_ms}"))
    })
}

fn config() -> DispatchConfig {
    DispatchConfig { lease_secs: 30, workers: 4, max_concurrency: 4, retry: policy(3, 50, 1) }
}

struct Harness {
    store: Arc<SqliteStore>,
    plugins: Arc<PluginSet>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new(plugins: Vec<ActivePlugin>) -> Harness {
        let set = PluginSet::default();
        for p in plugins {
            set.insert(p);
        }
        Harness {
            store: Arc::new(SqliteStore::in_memory().unwrap()),
            plugins: Arc::new(set),
            metrics: Arc::new(Metrics::default()),
        }
    }

    fn start(&self, host: &str, config: DispatchConfig) -> Dispatcher {
        let store: Arc<dyn Store> = self.store.clone();
        Dispatcher::start(DispatchDeps {
            store,
            plugins: self.plugins.clone(),
            runtime: runtime(),
            config,
            host_id: host.into(),
            metrics: self.metrics.clone(),
        })
    }

    fn ingest(&self, event: Event, plugins: &[&str]) {
        let new = NewEvent { event, plugins: plugins.iter().map(|p| p.to_string()).collect() };
        self.store.ingest(Some("okta"), &[new]).unwrap();
    }

    fn delivery(&self, uuid: &str, plugin: &str) -> DeliveryView {
        let event = self.store.event(uuid).unwrap().unwrap();
        event.deliveries.into_iter().find(|d| d.plugin == plugin).unwrap()
    }

    /// Waits (up to 30 s) until the delivery's status is `status`.
    async fn wait(&self, uuid: &str, plugin: &str, status: Status) -> DeliveryView {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.delivery(uuid, plugin);
            if d.status == status {
                return d;
            }
            assert!(std::time::Instant::now() < deadline, "{uuid}/{plugin} never became {status:?}: {d:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn add(uuid: &str, published: &str, user: &str, group: &str) -> Event {
    Event::from_value(&json!({
        "uuid": uuid,
        "eventType": "group.user_membership.add",
        "published": published,
        "target": [
            {"id": user, "type": "User", "alternateId": format!("{user}@example.com")},
            {"id": group, "type": "UserGroup", "displayName": "O365Guest"},
        ],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_deliveries_run_and_their_attempts_are_recorded() {
    let h = Harness::new(vec![echo()]);
    let d = h.start("host-1", config());
    for (i, user) in ["u1", "u2", "u3"].iter().enumerate() {
        h.ingest(add(&format!("e{i}"), "2024-05-01T10:00:00.000Z", user, "g1"), &["echo"]);
    }
    d.notify();
    for i in 0..3 {
        let v = h.wait(&format!("e{i}"), "echo", Status::Done).await;
        assert_eq!((v.attempts, v.plugin_version.as_deref(), v.last_error), (1, Some("1.0.0"), None));
        let history = h.store.attempts(&v.id).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].result, "done");
        assert_eq!(history[0].plugin_sha256.len(), 64);
    }
    let metrics = h.metrics.render(&[], "h");
    assert!(metrics.contains("hookhost_attempt_duration_seconds_count{host=\"h\",plugin=\"echo\"} 3"), "{metrics}");
    d.shutdown(Duration::from_secs(5)).await;
    assert!(!h.store.busy().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_events_run_in_published_order_even_when_delivered_out_of_order() {
    let h = Harness::new(vec![echo()]);
    h.ingest(add("late", "2024-05-01T10:00:02.000Z", "u1", "g1"), &["echo"]);
    h.ingest(add("early", "2024-05-01T10:00:01.000Z", "u1", "g1"), &["echo"]);
    let d = h.start("host-1", config());
    let late = h.wait("late", "echo", Status::Done).await;
    let early = h.wait("early", "echo", Status::Done).await;
    // Had the later event run first, the earlier one would have been superseded.
    assert_eq!(h.store.attempts(&early.id).unwrap()[0].result, "done");
    assert_eq!(h.store.attempts(&late.id).unwrap()[0].result, "done");
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_event_is_superseded_naming_the_later_one_and_a_replay_runs_it() {
    let h = Harness::new(vec![echo()]);
    let d = h.start("host-1", config());
    h.ingest(add("later", "2024-05-01T10:00:05.000Z", "u1", "g1"), &["echo"]);
    d.notify();
    h.wait("later", "echo", Status::Done).await;

    h.ingest(add("stale", "2024-05-01T10:00:01.000Z", "u1", "g1"), &["echo"]);
    h.ingest(add("other-group", "2024-05-01T10:00:02.000Z", "u1", "g2"), &["echo"]);
    d.notify();
    let stale = h.wait("stale", "echo", Status::Done).await;
    assert_eq!((stale.attempts, stale.last_error.as_deref()), (0, None));
    let history = h.store.attempts(&stale.id).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].result, "superseded");
    assert_eq!(history[0].error.as_deref(), Some("superseded by event later"));
    let other = h.wait("other-group", "echo", Status::Done).await;
    assert_eq!(h.store.attempts(&other.id).unwrap()[0].result, "done", "another group is not superseded");

    // An operator's replay always runs.
    assert_eq!(h.store.replay(&stale.id).unwrap(), ReplayOutcome::Accepted);
    d.notify();
    let replayed = h.wait("stale", "echo", Status::Done).await;
    assert_eq!(replayed.attempts, 1);
    assert_eq!(h.store.attempts(&stale.id).unwrap()[1].result, "done");
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_hosts_expired_claim_is_taken_over() {
    let h = Harness::new(vec![echo()]);
    h.ingest(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["echo"]);
    let long_ago = Utc::now() - TimeDelta::seconds(60);
    let any = |_: &str| 10;
    let stale = h.store.claim("crashed", long_ago, Duration::from_secs(30), 1, &any).unwrap().remove(0);

    let d = h.start("host-1", config());
    let v = h.wait("e1", "echo", Status::Done).await;
    assert_eq!(v.attempts, 1);
    assert!(!h.store.complete(&stale.delivery_id, &stale.lease_token, None, &Next::Dead).unwrap());
    assert_eq!(h.delivery("e1", "echo").status, Status::Done);
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_hosts_claims_from_before_a_restart_are_taken_back_at_once() {
    let h = Harness::new(vec![echo()]);
    h.ingest(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["echo"]);
    let any = |_: &str| 10;
    // A live 10-minute lease: only the start-up release can free it within the wait.
    h.store.claim("host-1", Utc::now(), Duration::from_secs(600), 1, &any).unwrap();
    let d = h.start("host-1", config());
    h.wait("e1", "echo", Status::Done).await;
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waits_while_its_plugin_is_not_loaded() {
    let h = Harness::new(vec![echo()]);
    let d = h.start("host-1", config());
    h.ingest(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["echo", "later-plugin"]);
    d.notify();
    h.wait("e1", "echo", Status::Done).await;
    tokio::time::sleep(POLL * 3).await;
    let waiting = h.delivery("e1", "later-plugin");
    assert_eq!((waiting.status, waiting.attempts), (Status::Pending, 0));

    h.plugins.insert(plugin("echo", |m| m.replace("name = \"echo\"", "name = \"later-plugin\"")));
    d.notify();
    h.wait("e1", "later-plugin", Status::Done).await;
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried_with_backoff_until_attempts_run_out() {
    let h = Harness::new(vec![looping(200)]);
    let d = h.start("host-1", DispatchConfig { retry: policy(2, 300, 1), ..config() });
    h.ingest(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["hostile"]);
    d.notify();
    let dead = h.wait("e1", "hostile", Status::Dead).await;
    assert_eq!(dead.attempts, 2);
    assert!(dead.last_error.as_deref().is_some_and(|e| e.starts_with("timed out")), "{dead:?}");
    let history = h.store.attempts(&dead.id).unwrap();
    assert_eq!(history.iter().map(|a| a.result.as_str()).collect::<Vec<_>>(), ["timed_out", "timed_out"]);
    // The second attempt waited at least half the first backoff (150 ms) after the first
    // ended (200 ms); a few ms of slack for the millisecond rounding of stored times.
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    let gap = at(&history[1].started_at) - at(&history[0].started_at);
    assert!(gap >= TimeDelta::milliseconds(200 + 150 - 5), "{gap:?}");
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_while_a_long_attempt_runs() {
    // A 2.5 s attempt under a 1 s lease: without renewal the loop itself would release
    // and re-claim it, and the first attempt would never be recorded.
    let h = Harness::new(vec![looping(2_500)]);
    let d = h.start("host-1", DispatchConfig { lease_secs: 1, retry: policy(1, 50, 1), ..config() });
    h.ingest(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["hostile"]);
    d.notify();
    let dead = h.wait("e1", "hostile", Status::Dead).await;
    assert_eq!(dead.attempts, 1);
    let history = h.store.attempts(&dead.id).unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].duration_ms >= 2_000, "{:?}", history[0]);
    d.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_attempts_past_the_grace_and_releases_their_claims() {
    let h = Harness::new(vec![looping(10_000)]);
    let d = h.start("host-1", config());
    h.ingest(add("e1", "2024-05-01T10:00:00.000Z", "u1", "g1"), &["hostile"]);
    d.notify();
    h.wait("e1", "hostile", Status::Running).await;
    let started = SystemTime::now();
    d.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed().unwrap() < Duration::from_secs(5), "shutdown waited for the attempt");
    let v = h.delivery("e1", "hostile");
    assert_eq!((v.status, v.attempts), (Status::Pending, 0));
    assert!(h.store.attempts(&v.id).unwrap().is_empty());
}
