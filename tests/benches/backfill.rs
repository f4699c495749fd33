//! `make bench BENCH=backfill`: how long recovering a gap from Okta's System Log takes, next
//! to the same events arriving by hook, in one run.
//!
//! The gap: [`EVENTS`] `group.user_membership.add` events in the Okta emulator's System Log.
//! System Log side: `hookhost backfill --config … --since …` (the real binary, pages of 1,000,
//! following `Link rel="next"`) into a fresh SQLite store with the `echo` bundle subscribed,
//! timed from spawn to exit; its report must say every event was found and new. Hook side:
//! the real `hookhost serve` on another fresh store, the same events posted one per delivery by
//! [`SENDERS`] keep-alive senders, timed from the first post to the last 200. Neither side runs
//! plugins (the backfill command only stores; serve's dispatch runs the echo plugin meanwhile,
//! which is cheap). Last line: one JSON object.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost_tests::okta::{self as okta_events, Membership};
use hookhost_tests::serve::{free_port, hookhost_bin, wasm, workspace, ServeProcess, ServeSetup};
use hookhost_tests::OktaEmulator;
use serde_json::Value;

const EVENTS: usize = 10_000;
const SENDERS: usize = 16;
const TOKEN: &str = "bench-okta-token";
const SECRET: &str = "Basic YmVuY2g6YmVuY2g=";

/// A folder with host.toml (store, echo bundle, Okta API pointing at the emulator).
fn setup(okta_url: &str) -> (tempfile::TempDir, u16, ServeSetup) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).expect("plugins.d");
    std::fs::copy(wasm("echo"), plugins.join("echo.wasm")).expect("echo.wasm");
    std::fs::copy(workspace().join("tests/plugins/echo/echo.toml"), plugins.join("echo.toml")).expect("echo.toml");
    let setup = ServeSetup {
        okta_secret: SECRET.into(),
        okta_extra: format!("org_url = \"{okta_url}\"\napi_token = {{ value = \"{TOKEN}\" }}\n"),
        ..ServeSetup::plain()
    };
    setup.write(dir.path(), port, None).expect("host.toml");
    (dir, port, setup)
}

fn events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            okta_events::group_membership_event(
                Membership::Add,
                &format!("00ubf{i:06}"),
                &format!("user{i:06}@example.net"),
                &format!("Backfill User {i}"),
                "00gO365",
                "O365Guest",
                &okta_events::timestamp(-600_000 + i as i64),
            )
        })
        .collect()
}

async fn by_system_log(okta: &OktaEmulator) -> Duration {
    let (dir, _, _) = setup(&okta.base_url());
    let since = okta_events::timestamp(-3_600_000);
    let start = Instant::now();
    let out = Command::new(hookhost_bin().expect("hookhost binary"))
        .args(["backfill", "--config"])
        .arg(dir.path().join("host.toml"))
        .args(["--since", &since])
        .output()
        .expect("run hookhost backfill");
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "backfill failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    println!("system log: {}", stdout.trim());
    let expected = format!("found {EVENTS} events in the System Log, {EVENTS} new");
    assert!(stdout.contains(&expected), "expected {expected:?}, got {stdout:?}");
    took
}

async fn by_hook(okta: &OktaEmulator, events: &[Value]) -> Duration {
    let (dir, port, setup) = setup(&okta.base_url());
    let serve =
        ServeProcess::spawn(dir.path(), port, setup, Duration::from_secs(120)).await.expect("hookhost serve starts");
    let base = serve.url.clone();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        events.iter().map(|e| serde_json::to_vec(&okta_events::delivery(vec![e.clone()])).expect("json")).collect(),
    );
    let start = Instant::now();
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (bodies, url) = (bodies.clone(), format!("{base}/hooks/okta"));
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
            for body in bodies.iter().skip(s).step_by(SENDERS) {
                let r = client
                    .post(&url)
                    .header("authorization", SECRET)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 200);
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let okta = OktaEmulator::start(TOKEN).await.expect("okta emulator");
    let events = events(EVENTS);
    okta.append(&events);
    let log = by_system_log(&okta).await;
    let hook = by_hook(&okta, &events).await;
    let per_sec = |d: Duration| (EVENTS as f64 / d.as_secs_f64()).round();
    println!(
        "{}",
        serde_json::json!({
            "bench": "backfill",
            "events": EVENTS,
            "page": 1000,
            "system_log_secs": (log.as_secs_f64() * 1000.0).round() / 1000.0,
            "system_log_events_per_sec": per_sec(log),
            "hook_secs": (hook.as_secs_f64() * 1000.0).round() / 1000.0,
            "hook_events_per_sec": per_sec(hook),
            "hook_senders": SENDERS,
        })
    );
}
