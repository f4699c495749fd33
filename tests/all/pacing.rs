//! Outbound pacing through the real runtime: a `[[pace]]` rule spaces a plugin's calls to an
//! origin without costing the plugin its deadline, and a 429 with `Retry-After` pauses every
//! attempt of that plugin on that origin. Times are asserted only as lower bounds measured at
//! the receiving server, which load can only lengthen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookhost::runtime::{AttemptResult, KvBackend, LoadedPlugin, MemoryKv, Runtime};

use crate::support::{self, bundle, load, membership_event, override_toml, test_manifest};

/// A local origin that records when each request arrived and answers from a script: the
/// n-th request gets `script[n]` (status, Retry-After), later ones 200.
struct Origin {
    url: String,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

async fn origin(script: Vec<(u16, Option<&'static str>)>) -> Origin {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        let script = script.clone();
        async move {
            let n = {
                let mut a = seen.lock().unwrap();
                a.push(Instant::now());
                a.len() - 1
            };
            let (status, retry_after) = script.get(n).copied().unwrap_or((200, None));
            let mut response = axum::http::Response::builder().status(status);
            if let Some(ra) = retry_after {
                response = response.header("retry-after", ra);
            }
            response.body(axum::body::Body::from("ok")).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Origin { url: format!("http://{addr}"), arrivals }
}

/// The hostile test plugin in its plain-GET mode, granted `origin`, with extra override text.
fn fetcher(runtime: &Runtime, origin: &str, timeout_ms: u64, extra: &str) -> LoadedPlugin {
    let b = bundle("hostile", "hostile", &test_manifest("hostile"));
    let over = format!(
        "allowed_hosts = [\"{origin}\"]\n[limits]\ntimeout_ms = {timeout_ms}\n[config]\nmode = \"huge-response\"\nurl = \"{origin}/x\"\n{extra}"
    );
    load(runtime, &b.manifest, Some(&override_toml(&over))).1
}

async fn run_many(runtime: &Arc<Runtime>, plugin: &LoadedPlugin, n: usize, tag: &str) -> Vec<AttemptResult> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (rt, plugin) = (runtime.clone(), plugin.clone());
            let event = membership_event(&format!("{tag}-{i}"), "jane@example.com");
            tokio::spawn(async move {
                let kv: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
                rt.run(&plugin, &event, kv).await.result
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pace_rule_spaces_calls_and_the_wait_is_not_the_plugins_time() {
    let server = origin(Vec::new()).await;
    let rt = support::runtime();
    // 4 per second, one at a time: six calls need at least (6 - 1) / 4 = 1.25 s, more than
    // the plugin's 500 ms deadline; none may time out for having waited its turn.
    let rule = format!("[[pace]]\norigin = \"{}\"\nper_second = 4\nburst = 1\n", server.url);
    let plugin = fetcher(&rt, &server.url, 500, &rule);
    let t0 = Instant::now();
    let results = run_many(&rt, &plugin, 6, "paced").await;
    for r in &results {
        assert_eq!(*r, AttemptResult::Done { summary: "got 200 with 2 bytes".into() });
    }
    let arrivals = server.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 6);
    let last = arrivals.iter().max().unwrap().duration_since(t0);
    assert!(last >= Duration::from_millis(1240), "six calls at 4/s arrived within {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pace_rule_for_writes_leaves_reads_alone() {
    let server = origin(Vec::new()).await;
    let rt = support::runtime();
    let rule = format!(
        "[[pace]]\norigin = \"{}\"\nper_second = 0.01\nburst = 1\nmethods = [\"POST\", \"DELETE\"]\n",
        server.url
    );
    let plugin = fetcher(&rt, &server.url, 20_000, &rule);
    let t0 = Instant::now();
    // GETs are not paced: at one call per 100 s, four paced calls would take at least 300 s.
    let results = run_many(&rt, &plugin, 4, "reads").await;
    assert!(results.iter().all(|r| matches!(r, AttemptResult::Done { .. })), "{results:?}");
    assert_eq!(server.arrivals.lock().unwrap().len(), 4);
    assert!(t0.elapsed() < Duration::from_secs(100), "reads were paced: {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_answer_pauses_every_attempt_on_that_origin_until_retry_after() {
    // The first call is throttled for 2 s; the calls after it must wait until then.
    let server = origin(vec![(429, Some("2"))]).await;
    let rt = support::runtime();
    let plugin = fetcher(&rt, &server.url, 1000, "");
    let first = run_many(&rt, &plugin, 1, "first").await;
    assert_eq!(first[0], AttemptResult::Done { summary: "got 429 with 2 bytes".into() });
    let throttled_at = server.arrivals.lock().unwrap()[0];

    let results = run_many(&rt, &plugin, 3, "after").await;
    assert!(
        results.iter().all(|r| *r == AttemptResult::Done { summary: "got 200 with 2 bytes".into() }),
        "{results:?}"
    );
    let arrivals = server.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 4);
    for a in &arrivals[1..] {
        let gap = a.duration_since(throttled_at);
        assert!(gap >= Duration::from_millis(1990), "a call went {gap:?} after the 429 asked for 2 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pause_answers_429_from_the_host_without_sending() {
    let server = origin(vec![(503, Some("120"))]).await;
    let rt = support::runtime();
    let plugin = fetcher(&rt, &server.url, 5000, "");
    let first = run_many(&rt, &plugin, 1, "first").await;
    assert_eq!(first[0], AttemptResult::Done { summary: "got 503 with 2 bytes".into() });
    // Two minutes is not waited out inside an attempt: the host answers for the origin.
    let t0 = Instant::now();
    let attempt = rt.run(&plugin, &membership_event("paused", "jane@example.com"), Arc::new(MemoryKv::default())).await;
    let AttemptResult::Done { summary } = &attempt.result else { panic!("{:?}", attempt.result) };
    assert!(summary.starts_with("got 429 with"), "{summary}");
    assert!(t0.elapsed() < Duration::from_secs(60), "the attempt waited out the pause");
    assert_eq!(server.arrivals.lock().unwrap().len(), 1, "the paused call reached the origin");
    let host_lines: Vec<_> = attempt.log.iter().map(|l| l.message.clone()).collect();
    assert!(host_lines.iter().any(|m| m.contains("asked this plugin to slow down")), "{host_lines:?}");
}

#[tokio::test]
async fn a_pace_rule_for_an_origin_the_plugin_may_not_call_is_refused() {
    let b = bundle("hostile", "hostile", &test_manifest("hostile"));
    let bundle = hookhost::registry::PluginBundle::load(&b.manifest).unwrap();
    let over = override_toml(
        "allowed_hosts = [\"https://graph.microsoft.com\"]\n[[pace]]\norigin = \"https://example.com\"\nper_second = 5\n",
    );
    let Err(err) = hookhost::registry::effective(&bundle, Some(&over)) else { panic!("accepted") };
    assert!(err.contains("[[plugins.hostile.pace]] entry 1") && err.contains("allowed_hosts"), "{err}");
    let over = override_toml(
        "allowed_hosts = [\"https://graph.microsoft.com\"]\n[[pace]]\norigin = \"https://graph.microsoft.com\"\nper_second = 0\n",
    );
    let Err(err) = hookhost::registry::effective(&bundle, Some(&over)) else { panic!("accepted") };
    assert!(err.contains("per_second"), "{err}");
}
