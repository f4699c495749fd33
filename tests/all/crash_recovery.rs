//! Crash safety of the real `hookhost serve` process: 200 Okta deliveries streamed in, the
//! process `kill -9`ed three times (while deliveries are being ingested, while attempts are
//! running against a slow Graph, and while deliveries wait out a Graph `Retry-After`), and
//! restarted each time. Every acknowledged event reaches its final state exactly once in the
//! emulated tenant: one invitation and one guest per added user, removed users gone.
//!
//! Figures for RELIABILITY.md are printed on a line starting `RELIABILITY crash_recovery`
//! (run with `--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use hookhost_tests::okta::{delivery, Membership};
use hookhost_tests::{Fault, GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{free_port, http_client, membership, start_with, wait_until, write_config_with, ServeSetup};

/// Deliveries streamed: adds for users 0..160, then removes for users 0..40.
const ADDS: u32 = 160;
const REMOVES: u32 = 40;

/// Posts a fixed delivery body (as Okta's retry of a POST would resend it); `None` if no
/// answer came.
async fn post_body(serve_url: &str, secret: &str, body: &Value) -> Option<u16> {
    http_client()
        .post(format!("{serve_url}/hooks/okta"))
        .header("authorization", secret)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Posts `bodies[i]` for each of `indexes` with `parallel` concurrent senders; records each
/// acknowledged index. Stops when the indexes run out (a dead process fails them fast).
async fn stream(
    serve_url: &str,
    secret: &str,
    bodies: &Arc<Vec<Value>>,
    indexes: Vec<usize>,
    parallel: usize,
    acked: &Arc<Mutex<BTreeSet<usize>>>,
) {
    let queue = Arc::new(Mutex::new(indexes));
    let mut senders = Vec::new();
    for _ in 0..parallel {
        let (queue, bodies, acked) = (queue.clone(), bodies.clone(), acked.clone());
        let url = serve_url.to_owned();
        let secret = secret.to_owned();
        senders.push(tokio::spawn(async move {
            loop {
                let Some(i) = queue.lock().unwrap().pop() else { return };
                if post_body(&url, &secret, &bodies[i]).await == Some(200) {
                    acked.lock().unwrap().insert(i);
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_reach_their_final_state_exactly_once_across_three_kill_9s() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup {
        // A restarted process has a new host id, so the killed one's claims come back when
        // their lease expires: keep it short.
        lease_secs: 1,
        // Enough attempts that the injected faults never exhaust a delivery.
        retry: "initial_backoff_ms = 100\nmax_attempts = 30\n".into(),
        ..ServeSetup::default()
    };
    write_config_with(dir.path(), port, &graph, setup.clone());

    // One event per delivery; adds are published before every remove.
    let events: Vec<Value> = (0..ADDS)
        .map(|n| membership(Membership::Add, n, -600_000 + i64::from(n)))
        .chain((0..REMOVES).map(|n| membership(Membership::Remove, n, -300_000 + i64::from(n))))
        .collect();
    let bodies: Arc<Vec<Value>> = Arc::new(events.iter().map(|e| delivery(vec![e.clone()])).collect());
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut kills = Vec::new();

    // 1. Kill during ingest: four senders stream adds 0..100; the kill lands after 40
    //    acknowledgements, with posts in flight. Unacknowledged deliveries are resent after
    //    the restart, as Okta resends a POST that got no answer.
    let mut serve = start_with(dir.path(), port, setup.clone()).await;
    {
        let (b, a) = (bodies.clone(), acked.clone());
        let (url, secret) = (serve.url.clone(), serve.setup.okta_secret.clone());
        let sending = tokio::spawn(async move {
            stream(&url, &secret, &b, (0..100).rev().collect(), 4, &a).await;
        });
        let a = acked.clone();
        wait_until("40 acknowledged deliveries", Duration::from_secs(30), async || a.lock().unwrap().len() >= 40).await;
        serve.kill9();
        kills.push("during ingest");
        sending.await.unwrap();
    }
    let acked_before_kill_1 = acked.lock().unwrap().len();
    assert!(acked_before_kill_1 < 100, "the kill came after ingest finished");

    // 2. Kill with attempts running: Graph answers invitations slowly, more adds arrive, and
    //    the kill lands while deliveries are `running`.
    let serve = start_with(dir.path(), port, setup.clone()).await;
    let resend: Vec<usize> = (0..100).filter(|i| !acked.lock().unwrap().contains(i)).collect();
    let resent = resend.len();
    let secret = setup.okta_secret.clone();
    stream(&serve.url, &secret, &bodies, resend, 4, &acked).await;
    graph.inject_for(
        Some(Method::POST),
        "/v1.0/invitations",
        Fault::Latency { times: 24, delay: Duration::from_millis(250) },
    );
    stream(&serve.url, &secret, &bodies, (100..ADDS as usize).collect(), 4, &acked).await;
    let mut serve = serve;
    let running_at_kill_2 = {
        let mut n = 0;
        wait_until("running attempts", Duration::from_secs(30), async || {
            n = serve.deliveries("running").await.len();
            n > 0
        })
        .await;
        n
    };
    serve.kill9();
    kills.push("attempts running");

    // 3. Kill mid-backoff: Graph throttles deletions with a Retry-After of 1 s; the removes
    //    arrive, and the kill lands while deliveries wait in `retrying`.
    let serve = start_with(dir.path(), port, setup.clone()).await;
    graph.inject_for(Some(Method::DELETE), "/v1.0/users", Fault::Throttle { times: 16, retry_after: "1".into() });
    stream(&serve.url, &secret, &bodies, (ADDS as usize..(ADDS + REMOVES) as usize).collect(), 4, &acked).await;
    let mut serve = serve;
    let retrying_at_kill_3 = {
        let mut n = 0;
        wait_until("deliveries waiting to retry", Duration::from_secs(30), async || {
            n = serve.deliveries("retrying").await.len();
            n > 0
        })
        .await;
        n
    };
    serve.kill9();
    kills.push("mid retry backoff");

    // Restart and let everything finish.
    let serve = start_with(dir.path(), port, setup.clone()).await;
    serve.settle_all(Duration::from_secs(90)).await;
    let acked: BTreeSet<usize> = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), (ADDS + REMOVES) as usize, "every delivery is acknowledged in the end");

    // Every acknowledged event: stored, and its delivery done.
    let mut lost = Vec::new();
    for i in &acked {
        let uuid = events[*i]["uuid"].as_str().unwrap();
        let view = serve.get_json(&format!("/api/events/{uuid}")).await;
        let done = view["deliveries"].as_array().is_some_and(|ds| ds.len() == 1 && ds[0]["status"] == "done");
        if !done {
            lost.push(view);
        }
    }
    assert!(lost.is_empty(), "acknowledged events not done: {lost:?}");

    // The tenant: one invitation and one guest per kept user, none for removed users, each
    // removed guest deleted once.
    let mail = |n: u32| format!("user{n}@e2e.example");
    let mut invitations: BTreeMap<String, usize> = BTreeMap::new();
    for inv in graph.invitations() {
        *invitations.entry(inv.email.to_lowercase()).or_default() += 1;
    }
    let mut live: BTreeMap<String, usize> = BTreeMap::new();
    for g in crate::support::guests(&graph) {
        *live.entry(g.to_lowercase()).or_default() += 1;
    }
    let mut deleted: BTreeMap<String, usize> = BTreeMap::new();
    for u in graph.deleted_users() {
        if let Some(m) = u.mail {
            *deleted.entry(m.to_lowercase()).or_default() += 1;
        }
    }
    let mut duplicates = 0;
    let mut wrong = Vec::new();
    for n in 0..ADDS {
        let m = mail(n);
        let inv = invitations.get(&m).copied().unwrap_or(0);
        duplicates += inv.saturating_sub(1) + live.get(&m).copied().unwrap_or(0).saturating_sub(1);
        let removed = n < REMOVES;
        let ok = inv == 1
            && live.get(&m).copied().unwrap_or(0) == usize::from(!removed)
            && deleted.get(&m).copied().unwrap_or(0) == usize::from(removed);
        if !ok {
            wrong.push(format!("{m}: {inv} invitations, {:?} live, {:?} deleted", live.get(&m), deleted.get(&m)));
        }
    }
    assert_eq!(duplicates, 0, "{wrong:?}");
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(live.values().sum::<usize>(), (ADDS - REMOVES) as usize);

    println!(
        "RELIABILITY crash_recovery: deliveries={} events={} acknowledged={} resent_after_kill={} kills={} ({}) \
         running_at_kill={} retrying_at_kill={} lost=0 duplicates={duplicates} guests={} deleted={}",
        bodies.len(),
        events.len(),
        acked.len(),
        resent,
        kills.len(),
        kills.join(", "),
        running_at_kill_2,
        retrying_at_kill_3,
        live.values().sum::<usize>(),
        deleted.values().sum::<usize>(),
    );
}
