//! Backfill and registration through the real `hookhost serve` and command line, against the
//! Okta org emulator and the Graph emulator: events Okta sent while hookhost was down are
//! recovered from the System Log once each, in each user's order; a 429 makes the poller wait
//! for the reset; `hookhost backfill` sweeps a window; `hookhost okta register` leaves one
//! verified hook however often it runs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hookhost_tests::okta::Membership;
use hookhost_tests::{GraphEmulator, OktaEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{self, guests, membership, post_as, settle, ServeSetup, OKTA_SECRET};

const TOKEN: &str = "okta-api-token-e2e";

/// `[okta]` lines pointing at the emulator, with the poller on (`every_secs = 1`) or off.
fn okta_lines(okta: &OktaEmulator, backfill: bool) -> String {
    format!(
        "org_url = {:?}\napi_token = {{ value = {TOKEN:?} }}\n[okta.backfill]\nenabled = {backfill}\nevery_secs = 1\nlookback_secs = 3600\n",
        okta.base_url()
    )
}

fn uuid(e: &Value) -> &str {
    e["uuid"].as_str().unwrap()
}

async fn start_all(backfill: bool) -> (tempfile::TempDir, GraphEmulator, OktaEmulator, u16, ServeSetup) {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let okta = OktaEmulator::start(TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let setup = support::write_config_with(
        dir.path(),
        port,
        &graph,
        ServeSetup { okta_extra: okta_lines(&okta, backfill), ..ServeSetup::default() },
    );
    (dir, graph, okta, port, setup)
}

/// Waits (generously) until every event is stored and all its deliveries have finished.
async fn recovered(url: &str, events: &[Value]) -> Vec<Value> {
    let views = tokio::time::timeout(Duration::from_secs(120), settle(url, events)).await.expect("events recovered");
    for (e, v) in events.iter().zip(&views) {
        assert_eq!(v["id"], e["uuid"], "{v}");
    }
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_okta_sent_while_serve_was_down_are_recovered_once_each_in_order() {
    let (dir, graph, okta, port, setup) = start_all(true).await;
    let mut serve = support::start_with(dir.path(), port, setup.clone()).await;

    // Before the outage: an event by hook, then visible in the log too.
    let a = membership(Membership::Add, 1, -60_000);
    assert_eq!(serve.post(vec![a.clone()]).await, Some(200));
    okta.append(std::slice::from_ref(&a));
    serve.kill9();

    // During it: Okta's hook deliveries fail, the System Log keeps them. User 2 joins and
    // leaves; user 5's event is indexed late, published before the others.
    let down = vec![
        membership(Membership::Add, 2, -50_000),
        membership(Membership::Remove, 2, -49_000),
        membership(Membership::Add, 3, -48_000),
        membership(Membership::Add, 4, -47_000),
    ];
    let late = membership(Membership::Add, 5, -55_000);
    for e in &down {
        okta.append(std::slice::from_ref(e));
        assert_eq!(post_as(&serve.url, OKTA_SECRET, vec![e.clone()]).await, None, "the host is down");
    }
    okta.append(std::slice::from_ref(&late));

    let serve = support::start_with(dir.path(), port, setup).await;
    // Okta's own late retry of one of them arrives by hook too, racing the poller.
    assert_eq!(serve.post(vec![down[2].clone()]).await, Some(200));

    let mut all = vec![a.clone()];
    all.extend(down.iter().cloned());
    all.push(late.clone());
    let views = recovered(&serve.url, &all).await;
    for v in &views {
        let ds = v["deliveries"].as_array().unwrap();
        assert_eq!(ds.len(), 1, "one delivery per plugin: {v}");
        assert_eq!((ds[0]["status"].as_str(), ds[0]["attempts"].as_u64()), (Some("done"), Some(1)), "{v}");
    }
    assert_eq!(views[0]["source"], "hook");
    for v in [&views[1], &views[2], &views[4], &views[5]] {
        assert_eq!(v["source"], "system_log", "{v}");
    }
    assert!(matches!(views[3]["source"].as_str(), Some("hook" | "system_log")));

    // Each user invited once; user 2 was invited and then removed (in that order: had the
    // remove run first, the add would have been superseded and never invited).
    let invitations = graph.journal().iter().filter(|j| j.method == "POST" && j.path == "/v1.0/invitations").count();
    assert_eq!(invitations, 5);
    assert_eq!(guests(&graph), ["user1@e2e.example", "user3@e2e.example", "user4@e2e.example", "user5@e2e.example"]);

    // Only the very first query was built by hookhost; every later one is Okta's next link,
    // including the first one after the restart (the stored cursor).
    let logs = okta.requests_to("/api/v1/logs");
    let built: Vec<_> = logs.iter().filter(|r| r.param("after").is_none()).collect();
    assert_eq!(built.len(), 1, "{logs:?}");
    let filter = built[0].param("filter").unwrap();
    assert!(filter.contains(r#"eventType eq "group.user_membership.add""#), "{filter}");
    assert!(filter.contains(r#" or eventType eq "group.user_membership.remove""#), "{filter}");
    assert_eq!(built[0].param("sortOrder").as_deref(), Some("ASCENDING"));

    let (_, metrics) = serve.get_text("/metrics").await;
    let system_log = metrics
        .lines()
        .find(|l| l.starts_with("hookhost_events_ingested_total") && l.contains("source=\"system_log\""))
        .unwrap();
    assert!(system_log.ends_with(" 4") || system_log.ends_with(" 5"), "{system_log}");
    assert!(metrics.contains("hookhost_backfill_last_poll_timestamp_seconds{"), "{metrics}");
    let recovered_list = serve.get_json("/api/events?source=system_log&limit=50").await;
    assert!(recovered_list["events"].as_array().unwrap().iter().all(|e| e["source"] == "system_log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_makes_the_poller_wait_for_the_reset() {
    let (dir, _graph, okta, port, setup) = start_all(true).await;
    let events = vec![membership(Membership::Add, 1, -30_000), membership(Membership::Add, 2, -20_000)];
    okta.append(&events);
    okta.throttle_logs(2, Duration::from_secs(2));
    let serve = support::start_with(dir.path(), port, setup).await;
    recovered(&serve.url, &events).await;

    let logs = okta.requests_to("/api/v1/logs");
    assert_eq!(logs.iter().take(2).map(|r| r.status).collect::<Vec<_>>(), [429, 429], "{logs:?}");
    let early: Vec<_> = logs.iter().filter(|r| r.before_reset.is_some()).collect();
    assert!(early.is_empty(), "requests sent before the rate limit's reset: {early:?}");
    assert!(logs.iter().any(|r| r.status == 200));
}

fn hookhost(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(support::hookhost_bin())
        .args(args)
        .args(["--config".as_ref(), dir.join("host.toml").as_os_str()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_command_sweeps_a_window_and_counts_what_was_new() {
    let (dir, _graph, okta, _port, _setup) = start_all(false).await;
    let events: Vec<Value> = (1..=3).map(|n| membership(Membership::Add, n, -600_000 + i64::from(n))).collect();
    okta.append(&events);
    let since = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let (ok, out, err) = hookhost(dir.path(), &["backfill", "--since", &since]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("found 3 events in the System Log, 3 new"), "{out}");
    let (ok, out, err) = hookhost(dir.path(), &["backfill", "--since", &since]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("found 3 events in the System Log, 0 new"), "{out}");
    let until = (chrono::Utc::now() - chrono::TimeDelta::minutes(30)).to_rfc3339();
    let (ok, out, _) = hookhost(dir.path(), &["backfill", "--since", &since, "--until", &until]);
    assert!(ok && out.contains("found 0 events"), "{out}");
    let (ok, _, err) = hookhost(dir.path(), &["backfill", "--since", "yesterday"]);
    assert!(!ok && err.contains("--since"), "{err}");
    assert!(okta.requests_to("/api/v1/logs").iter().all(|r| r.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_register_twice_leaves_one_verified_hook_that_delivers() {
    let (dir, _graph, okta, port, setup) = start_all(false).await;
    let serve = support::start_with(dir.path(), port, setup).await;
    let url = format!("{}/hooks/okta", serve.url);
    let mut ids = Vec::new();
    for expected in ["created", "updated"] {
        let (ok, out, err) = hookhost(dir.path(), &["okta", "register", "--url", &url]);
        assert!(ok, "{out}{err}");
        assert!(out.contains(expected) && out.contains("verification: VERIFIED"), "{out}");
        ids.push(out.split_whitespace().nth(2).unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    let hooks = okta.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert_eq!((hook.id.as_str(), hook.name.as_str(), hook.uri.as_str()), (ids[0].as_str(), "hookhost", url.as_str()));
    assert_eq!((hook.status.as_str(), hook.verification_status.as_str()), ("ACTIVE", "VERIFIED"));
    assert_eq!(hook.auth, Some(("Authorization".to_string(), OKTA_SECRET.to_string())));
    for t in ["group.user_membership.add", "group.user_membership.remove", "user.lifecycle.deactivate"] {
        assert!(hook.event_types.iter().any(|x| x == t), "{t} missing from {:?}", hook.event_types);
    }
    // Okta called the challenge endpoint for each verify.
    assert_eq!(okta.requests().iter().filter(|r| r.path.ends_with("/lifecycle/verify")).count(), 2);

    // The registered hook delivers with the configured secret.
    let event = membership(Membership::Add, 7, 0);
    assert_eq!(okta.deliver(std::slice::from_ref(&event)).await, [Some(200)]);
    let t = Instant::now();
    while support::event_view(&serve.url, uuid(&event)).await["source"] != "hook" {
        assert!(t.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
