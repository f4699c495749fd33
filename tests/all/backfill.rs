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

use crate::support::{self, guests, membership, post_as, settle, wait_until, ServeSetup, OKTA_SECRET};

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
    // The poller's first page is committed with its cursor before the outage: a request
    // following a next link (`after`) is only made from a stored cursor. Killed earlier,
    // the host would rightly build its first query again after the restart.
    wait_until("the poller's cursor stored", Duration::from_secs(60), async || {
        okta.requests_to("/api/v1/logs").iter().any(|r| r.param("after").is_some())
    })
    .await;
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

/// Whether this process has had an answer from the System Log (its own last-poll gauge).
async fn has_polled(serve: &support::ServeProcess) -> bool {
    serve.get_text("/metrics").await.1.contains("hookhost_backfill_last_poll_timestamp_seconds{")
}

/// `(start, end)` in ms since the epoch of the attempts that ran plugin code.
async fn ran(serve: &support::ServeProcess, view: &Value) -> Vec<(i64, i64)> {
    let id = view["deliveries"][0]["id"].as_str().unwrap();
    let mut spans = Vec::new();
    for a in serve.attempts(id).await {
        if a["result"] == "superseded" {
            continue;
        }
        let start = chrono::DateTime::parse_from_rfc3339(a["started_at"].as_str().unwrap()).unwrap().timestamp_millis();
        spans.push((start, start + i64::try_from(a["duration_ms"].as_u64().unwrap()).unwrap()));
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_events_missed_across_kill_9s_mid_page_and_mid_run_are_each_processed_once_in_order() {
    const USERS: u32 = 50;
    let (dir, graph, okta, port, setup) = start_all(true).await;
    let setup = ServeSetup { lease_secs: 2, ..setup };
    support::write_config_with(dir.path(), port, &graph, setup.clone());
    let mut serve = support::start_with(dir.path(), port, setup.clone()).await;
    wait_until("the poller's first answer", Duration::from_secs(60), async || has_polled(&serve).await).await;
    serve.kill9();

    // While the host is down Okta emits 200 membership events: four per user, in published
    // order. Even users end as members, odd users end removed; run out of order, either
    // would end the other way. Every hook delivery fails.
    let mut events = Vec::new();
    for step in 0..4i64 {
        for n in 0..USERS {
            let kind = match (n % 2 == 0, step % 2 == 0) {
                (true, true) | (false, false) => Membership::Remove,
                _ => Membership::Add,
            };
            events.push(membership(kind, n, -100_000 + step * 1_000 + i64::from(n)));
        }
    }
    okta.append(&events);
    assert_eq!(events.len(), 200);
    for e in &events[..20] {
        assert_eq!(post_as(&serve.url, OKTA_SECRET, vec![e.clone()]).await, None, "the host is down");
    }

    // Restart; kill -9 while the page of 200 is on its way (Okta has the request, the host
    // has not committed it).
    okta.stall_logs();
    let mut serve = support::start_with(dir.path(), port, setup.clone()).await;
    wait_until("a System Log request in flight", Duration::from_secs(60), async || okta.stalled_log_requests() > 0)
        .await;
    serve.kill9();
    okta.release_logs();

    // Restart; kill -9 again once the page is committed and invitations are running (slow).
    graph.inject_for(
        Some(axum::http::Method::POST),
        "/v1.0/invitations",
        hookhost_tests::Fault::Latency { times: 8, delay: Duration::from_secs(2) },
    );
    let mut serve = support::start_with(dir.path(), port, setup.clone()).await;
    wait_until("the page committed and attempts running", Duration::from_secs(60), async || {
        let queue = serve.get_json("/api/queue").await;
        let plugins = queue["plugins"].as_array().cloned().unwrap_or_default();
        let count = |s: &str| plugins.iter().map(|p| p[s].as_u64().unwrap_or(0)).sum::<u64>();
        let total: u64 = ["pending", "running", "retrying", "done", "dead"].iter().map(|s| count(s)).sum();
        total == 200 && count("running") > 0
    })
    .await;
    serve.kill9();

    // Last restart; Okta's late retries of some events arrive by hook as well.
    let serve = support::start_with(dir.path(), port, setup).await;
    for e in events.iter().step_by(10) {
        assert_eq!(serve.post(vec![e.clone()]).await, Some(200));
    }
    serve.settle_all(Duration::from_secs(180)).await;

    let mut views = Vec::new();
    for e in &events {
        let v = support::event_view(&serve.url, uuid(e)).await;
        let ds = v["deliveries"].as_array().unwrap_or_else(|| panic!("{} not stored: {v}", uuid(e)));
        assert_eq!(ds.len(), 1, "one delivery per plugin: {v}");
        assert_eq!(ds[0]["status"], "done", "{v}");
        views.push(v);
    }
    let even: Vec<String> = {
        let mut v: Vec<String> = (0..USERS).filter(|n| n % 2 == 0).map(|n| format!("user{n}@e2e.example")).collect();
        v.sort();
        v
    };
    assert_eq!(guests(&graph), even, "even users guests exactly once, odd users removed");
    // Each user's events ran one after another in published order (events are listed by
    // step, so a user's are `USERS` apart).
    for n in 0..USERS as usize {
        let mut previous_end = i64::MIN;
        for step in 0..4 {
            let i = step * USERS as usize + n;
            for (start, end) in ran(&serve, &views[i]).await {
                assert!(start + 1 >= previous_end, "user {n}: event {} started before the one before it ended", i);
                previous_end = previous_end.max(end);
            }
        }
    }
    let polled = okta.requests_to("/api/v1/logs");
    assert_eq!(polled.iter().filter(|r| r.param("after").is_none()).count(), 1, "the cursor survived: {polled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_postgres_poll_one_at_a_time_and_the_other_takes_over_when_it_dies() {
    let db =
        hookhost::store::postgres::testing::TestDatabase::create("backfill_failover").unwrap_or_else(|e| panic!("{e}"));
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let okta = OktaEmulator::start(TOKEN).await.unwrap();
    let setup =
        ServeSetup { okta_extra: okta_lines(&okta, true), store_url: Some(db.url.clone()), ..ServeSetup::default() };
    let (dirs, ports) =
        ([tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()], [support::free_port(), support::free_port()]);
    for (dir, port) in dirs.iter().zip(ports) {
        support::write_config_with(dir.path(), port, &graph, setup.clone());
    }
    let mut hosts = vec![
        support::start_with(dirs[0].path(), ports[0], setup.clone()).await,
        support::start_with(dirs[1].path(), ports[1], setup.clone()).await,
    ];
    let first: Vec<Value> = (1..=5).map(|n| membership(Membership::Add, n, -30_000 + i64::from(n))).collect();
    okta.append(&first);
    recovered(&hosts[0].url, &first).await;
    // Let both hosts go round several times; only the lease holder ever gets an answer.
    let polls = okta.requests_to("/api/v1/logs").len();
    wait_until("more polls", Duration::from_secs(60), async || okta.requests_to("/api/v1/logs").len() >= polls + 3)
        .await;
    let polled = [has_polled(&hosts[0]).await, has_polled(&hosts[1]).await];
    assert_eq!(polled.iter().filter(|p| **p).count(), 1, "exactly one host polls: {polled:?}");
    let poller = usize::from(polled[1]);
    let mut dead = hosts.remove(poller);
    dead.kill9();
    let survivor = &hosts[0];

    let t = Instant::now();
    let second: Vec<Value> = (6..=10).map(|n| membership(Membership::Add, n, -20_000 + i64::from(n))).collect();
    okta.append(&second);
    recovered(&survivor.url, &second).await;
    assert!(has_polled(survivor).await);
    eprintln!("the other host recovered the new events {:?} after the poller died", t.elapsed());
    let mut expected: Vec<String> = (1..=10).map(|n| format!("user{n}@e2e.example")).collect();
    expected.sort();
    assert_eq!(guests(&graph), expected);
    let built = okta.requests_to("/api/v1/logs").into_iter().filter(|r| r.param("after").is_none()).count();
    assert_eq!(built, 1, "the survivor resumed from the shared cursor");
}
