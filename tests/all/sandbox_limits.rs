//! Each hostile behaviour is contained with its own result kind, and the same runtime keeps
//! serving well-behaved attempts afterwards.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookhost::runtime::{AttemptResult, KvBackend, LogSource, MemoryKv, Runtime};

use crate::support::{self, bundle, load, membership_event, override_toml, test_manifest};

fn kv() -> Arc<dyn KvBackend> {
    Arc::new(MemoryKv::default())
}

fn hostile(runtime: &Runtime, over: &str) -> hookhost::runtime::LoadedPlugin {
    let b = bundle("hostile", "hostile", &test_manifest("hostile"));
    load(runtime, &b.manifest, Some(&override_toml(over))).1
}

/// Runs the hostile plugin in `mode`; `top` is extra override text placed before `[config]`
/// (keys or tables), `url` the target of its HTTP modes.
async fn run_mode(runtime: &Runtime, mode: &str, top: &str, url: Option<&str>) -> hookhost::runtime::Attempt {
    let url = url.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    let plugin = hostile(runtime, &format!("{top}\n[config]\nmode = \"{mode}\"\n{url}"));
    runtime.run(&plugin, &membership_event(&format!("ev-{mode}"), "jane@example.com"), kv()).await
}

/// After any hostile attempt, a well-behaved plugin on the same runtime still succeeds.
async fn assert_still_serving(runtime: &Runtime) {
    let b = bundle("echo", "echo", &test_manifest("echo"));
    let (_, echo) = load(runtime, &b.manifest, None);
    let a = runtime.run(&echo, &membership_event("ev-after", "jane@example.com"), kv()).await;
    assert_eq!(a.result, AttemptResult::Done { summary: "group.user_membership.add for jane@example.com".into() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_and_is_stopped() {
    let rt = support::runtime();
    let a = run_mode(&rt, "loop", "", None).await;
    assert_eq!(a.result, AttemptResult::TimedOut, "{:?}", a.result);
    // The manifest's deadline is 500 ms; epoch interruption stops the guest near it.
    assert!(a.duration < Duration::from_secs(5), "took {:?}", a.duration);
    assert_still_serving(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_stopped_at_its_limit() {
    let rt = support::runtime();
    // Growing to the cap touches every page: on a loaded machine that can take longer than
    // the manifest's 500 ms, and the memory limit, not the deadline, is under test here.
    let a = run_mode(&rt, "memory", "[limits]\ntimeout_ms = 30000\n", None).await;
    assert_eq!(a.result, AttemptResult::OutOfMemory, "{:?}", a.result);
    assert_still_serving(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_origin_never_leaves_the_process() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let rt = support::runtime();
    // Granted a different origin (another port on the same host): still refused.
    let url = format!("http://{addr}/steal");
    let a = run_mode(&rt, "ungranted-origin", "allowed_hosts = [\"http://127.0.0.1:1\"]", Some(&url)).await;
    let AttemptResult::Permanent(msg) = &a.result else { panic!("expected a permanent failure, got {:?}", a.result) };
    assert!(msg.starts_with("denied:"), "{msg}");
    assert!(msg.contains(&format!("http://{addr}")) && msg.contains("allowed_hosts"), "{msg}");
    assert_eq!(a.http_requests, 0);
    // Zero connections reached the listener.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the ungranted origin received a connection"
    );
    assert!(a.log.iter().any(|l| l.source == LogSource::Host && l.message.contains("not in its allowed_hosts")));
    assert_still_serving(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_secret_reads_as_absent() {
    let rt = support::runtime();
    // The operator configures a secret the manifest does not declare: not granted.
    let a = run_mode(&rt, "ungranted-secret", "[secrets]\nclient_secret = { value = \"hunter2-not-granted\" }\n", None)
        .await;
    assert_eq!(a.result, AttemptResult::Permanent("secret client_secret is not available".into()));
    let all_logs = format!("{:?}", a.log);
    assert!(all_logs.contains("not granted"), "{all_logs}");
    assert!(!all_logs.contains("hunter2"), "a secret value reached the log");
    assert_still_serving(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap_with_the_panic_message() {
    let rt = support::runtime();
    let a = run_mode(&rt, "panic", "", None).await;
    let AttemptResult::Trapped(msg) = &a.result else { panic!("expected a trap, got {:?}", a.result) };
    assert!(msg.contains("panicked on purpose for ev-panic"), "{msg}");
    assert!(a.log.iter().any(|l| l.source == LogSource::Stderr && l.message.contains("panicked")));
    assert_still_serving(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflow_is_a_trap() {
    let rt = support::runtime();
    let a = run_mode(&rt, "stack-overflow", "", None).await;
    let AttemptResult::Trapped(msg) = &a.result else { panic!("expected a trap, got {:?}", a.result) };
    // Rust keeps its stack in linear memory below the data ("stack first"), so running off
    // it is an out-of-bounds access; a deep wasm call stack would be a stack-overflow trap.
    assert!(msg.contains("out of bounds") || msg.contains("stack"), "{msg}");
    assert_still_serving(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_is_capped() {
    let rt = support::runtime();
    let a = run_mode(&rt, "log-flood", "[limits]\ntimeout_ms = 20000\n", None).await;
    // Either the flood finished within the deadline or was stopped by it; the log is capped.
    assert!(matches!(a.result, AttemptResult::Done { .. } | AttemptResult::TimedOut), "{:?}", a.result);
    assert!(a.log.len() <= 200, "kept {} lines", a.log.len());
    assert!(a.log_dropped > 0);
    assert_still_serving(&rt).await;
}

/// A tiny HTTP server answering every request with `body_len` bytes; counts requests.
async fn serve_bytes(body_len: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let body = vec![b'x'; body_len];
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let body = body.clone();
        async move { body }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_response_is_refused_past_the_cap() {
    let (addr, hits) = serve_bytes(1 << 20).await;
    let rt = support::runtime();
    let a = run_mode(
        &rt,
        "huge-response",
        &format!("allowed_hosts = [\"http://{addr}\"]"),
        Some(&format!("http://{addr}/big")),
    )
    .await;
    let AttemptResult::Permanent(msg) = &a.result else { panic!("expected a permanent failure, got {:?}", a.result) };
    assert!(msg.starts_with("response-too-large:") && msg.contains("65536"), "{msg}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_still_serving(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_budget_is_enforced() {
    let (addr, hits) = serve_bytes(10).await;
    let rt = support::runtime();
    let a =
        run_mode(&rt, "http-budget", &format!("allowed_hosts = [\"http://{addr}\"]"), Some(&format!("http://{addr}/")))
            .await;
    let AttemptResult::Permanent(msg) = &a.result else { panic!("expected a permanent failure, got {:?}", a.result) };
    assert!(msg.starts_with("after 4 requests: budget-exhausted"), "{msg}");
    assert_eq!(hits.load(Ordering::SeqCst), 4, "the 5th request must not leave the host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_origin_works_and_the_runtime_survives_a_mixed_burst() {
    let (addr, _) = serve_bytes(10).await;
    let rt = support::runtime();
    let ok = run_mode(
        &rt,
        "huge-response",
        &format!("allowed_hosts = [\"http://{addr}\"]"),
        Some(&format!("http://{addr}/small")),
    )
    .await;
    assert_eq!(ok.result, AttemptResult::Done { summary: "got 200 with 10 bytes".into() });

    // Loops, hogs and panics at once, next to good attempts: each gets its own result.
    // Compile first (compiling is blocking work), then run everything at once.
    let modes = ["loop", "memory", "panic", "ok", "loop", "ok"];
    let plugins: Vec<_> = modes
        .iter()
        .map(|mode| {
            // Only the loops are meant to meet their deadline; the rest get one no load reaches.
            let timeout_ms = if *mode == "loop" { 2000 } else { 30000 };
            hostile(&rt, &format!("[limits]\ntimeout_ms = {timeout_ms}\n[config]\nmode = \"{mode}\"\n"))
        })
        .collect();
    let mut handles = Vec::new();
    for (i, (mode, plugin)) in modes.into_iter().zip(plugins).enumerate() {
        let rt = rt.clone();
        handles.push(tokio::spawn(async move {
            let a = rt.run(&plugin, &membership_event(&format!("burst-{i}"), "x@example.com"), kv()).await;
            (mode, a.result)
        }));
    }
    for h in handles {
        let (mode, result) = h.await.unwrap();
        let kind = result.kind();
        let expected = match mode {
            "loop" => "timed_out",
            "memory" => "out_of_memory",
            "panic" => "trapped",
            _ => "done",
        };
        assert_eq!(kind, expected, "mode {mode}: {result:?}");
    }
    assert_still_serving(&rt).await;
}
