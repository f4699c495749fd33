//! Scale-out: real `hookhost serve` processes sharing one PostgreSQL database (the test
//! server of `scripts/test-postgres`, one fresh database per test).
//!
//! - Two hosts receive interleaved deliveries, some sent to both (as Okta's retry may land on
//!   the other host behind a load balancer): every event is stored once, runs once, and each
//!   user's events run in published order — the tenant ends in the state only that order
//!   gives.
//! - A host killed with `kill -9` while its attempts run: the other host finishes its work
//!   once the lease expires.
//! - A host stopped gracefully releases its claims at once: the other host takes them over
//!   long before their lease would have expired.
//! - Both hosts started at once on a new database: the migrations run once.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use hookhost::store::postgres::testing::TestDatabase;
use hookhost_tests::okta::Membership;
use hookhost_tests::{Fault, GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{
    free_port, guests, membership, start_with, wait_until, write_config_with, ServeProcess, ServeSetup,
};

fn pg_database(label: &str) -> TestDatabase {
    TestDatabase::create(label).unwrap_or_else(|e| panic!("{e}"))
}

/// Two configured hosts (own folders and ports, one store); not started.
struct Pair {
    dirs: [tempfile::TempDir; 2],
    ports: [u16; 2],
    setup: ServeSetup,
}

fn pair(graph: &GraphEmulator, db: &TestDatabase, setup: ServeSetup) -> Pair {
    let setup = ServeSetup { store_url: Some(db.url.clone()), ..setup };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let ports = [free_port(), free_port()];
    for (dir, port) in dirs.iter().zip(ports) {
        write_config_with(dir.path(), port, graph, setup.clone());
    }
    Pair { dirs, ports, setup }
}

impl Pair {
    async fn start(&self, i: usize) -> ServeProcess {
        start_with(self.dirs[i].path(), self.ports[i], self.setup.clone()).await
    }
}

/// Attempts this process ran, from its own `/metrics` (labelled with its host id).
async fn attempts_run(serve: &ServeProcess) -> (String, u64) {
    let (_, text) = serve.get_text("/metrics").await;
    let line = text.lines().find(|l| l.starts_with("hookhost_attempt_duration_seconds_count{")).unwrap_or("");
    let host = line.split("host=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
    let n = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (host, n)
}

/// Invitations per invited mail, and the number of deleted users, in the tenant.
fn graph_writes(graph: &GraphEmulator) -> (BTreeMap<String, usize>, usize) {
    let mut invites = BTreeMap::new();
    for invitation in graph.invitations() {
        *invites.entry(invitation.email).or_insert(0) += 1;
    }
    (invites, graph.deleted_users().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_postgres_run_every_event_once_and_each_users_in_order() {
    const USERS: u32 = 24;
    let db = pg_database("two_hosts");
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let hosts = pair(&graph, &db, ServeSetup::default());
    let (a, b) = (hosts.start(0).await, hosts.start(1).await);

    // Per user: added, removed, added again, one second apart. Only that order leaves the
    // user a guest after exactly two invitations and one deletion.
    let mut sends: Vec<(usize, Vec<Value>)> = Vec::new();
    for step in 0..3u32 {
        for n in 0..USERS {
            let kind = if step == 1 { Membership::Remove } else { Membership::Add };
            let event = membership(kind, n, -60_000 + i64::from(step) * 1000);
            // Interleave the hosts; every third delivery goes to both (an Okta retry through
            // the load balancer): it must still be stored and run once.
            let to = (n + step) as usize % 3;
            sends.push((to, vec![event]));
        }
    }
    let mut both = 0;
    for (to, events) in sends {
        let targets: &[&ServeProcess] = match to {
            0 => &[&a],
            1 => &[&b],
            _ => {
                both += 1;
                &[&a, &b]
            }
        };
        for serve in targets {
            assert_eq!(serve.post(events.clone()).await, Some(200));
        }
        // Each user's next event is sent only once this one is acknowledged: Okta publishes
        // them in order; which host runs them, and when, is up to the hosts.
    }
    assert!(both > 0);
    a.settle_all(Duration::from_secs(120)).await;

    let (invites, deletes) = graph_writes(&graph);
    assert_eq!(invites.len(), USERS as usize, "every user invited: {invites:?}");
    assert!(invites.values().all(|n| *n == 2), "two invitations per user, no more: {invites:?}");
    assert_eq!(deletes, USERS as usize, "one deletion per user");
    let expected: Vec<String> = (0..USERS)
        .map(|n| format!("user{n}@e2e.example"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(guests(&graph), expected, "each user is a guest once, as the last event (add) says");

    for status in ["dead", "retrying", "pending", "running"] {
        assert!(a.deliveries(status).await.is_empty(), "a delivery is {status}");
    }
    let done = b.deliveries("done").await;
    assert_eq!(done.len(), 3 * USERS as usize, "one delivery per event, stored once by both hosts");
    assert!(done.iter().all(|d| d["attempts"] == 1), "every event ran exactly once");
    // The console's reads, from PostgreSQL, answer the same on either host.
    for serve in [&a, &b] {
        let found = serve.get_json("/api/events?q=USER3@e2e").await;
        let events = found["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(events.len(), 3, "user3's add, remove and add: {found}");
        assert!(events.iter().all(|e| e["user"]["login"] == "user3@e2e.example" && e["statuses"]["done"] == 1));
        let queue = serve.get_json("/api/queue").await;
        assert_eq!(queue["plugins"][0]["done"], 3 * USERS, "{queue}");
        let ran: u64 =
            queue["attempts_per_minute"].as_array().unwrap().iter().map(|m| m["attempts"].as_u64().unwrap()).sum();
        assert_eq!(ran, 3 * u64::from(USERS));
    }
    let (host_a, ran_a) = attempts_run(&a).await;
    let (host_b, ran_b) = attempts_run(&b).await;
    assert_ne!(host_a, host_b, "each host has its own id");
    assert_eq!(ran_a + ran_b, 3 * u64::from(USERS));
    assert!(ran_a > 0 && ran_b > 0, "both hosts worked: {ran_a} + {ran_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_stream_has_its_work_finished_by_the_other_after_the_lease() {
    const USERS: u32 = 16;
    let db = pg_database("failover");
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let hosts = pair(&graph, &db, ServeSetup { lease_secs: 2, ..ServeSetup::default() });
    let mut a = hosts.start(0).await;
    // Invitations are slow, so host A is mid-attempt when it dies.
    graph.inject_for(
        Some(Method::POST),
        "/v1.0/invitations",
        Fault::Latency { times: 4, delay: Duration::from_secs(3) },
    );
    for n in 0..USERS {
        assert_eq!(a.post(vec![membership(Membership::Add, n, -1000)]).await, Some(200));
    }
    wait_until("attempts running on host A", Duration::from_secs(30), async || {
        !a.deliveries("running").await.is_empty()
    })
    .await;
    a.kill9();
    // What the dead host held, and until when: read from the store, not guessed from a clock.
    let url = db.url.clone();
    let held: Vec<(String, String)> = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query("SELECT id, lease_until FROM deliveries WHERE status = 'running'", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    })
    .await
    .unwrap();
    assert!(!held.is_empty(), "host A held no claim when it was killed");

    let b = hosts.start(1).await;
    b.settle_all(Duration::from_secs(120)).await;
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..USERS).map(|n| format!("user{n}@e2e.example")).collect();
        v.sort();
        v
    };
    assert_eq!(guests(&graph), expected, "every user a guest exactly once");
    let done = b.deliveries("done").await;
    assert_eq!(done.len(), USERS as usize);
    assert!(b.deliveries("dead").await.is_empty());
    // Host B ran each delivery the dead host held only once its lease had run out.
    let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    for (id, lease_until) in &held {
        let attempts = b.attempts(id).await;
        assert!(!attempts.is_empty(), "{id} never ran again");
        for attempt in &attempts {
            let started = attempt["started_at"].as_str().unwrap();
            assert!(
                time(started) >= time(lease_until),
                "{id} ran at {started}, before A's lease ended at {lease_until}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_hands_its_claims_over_without_waiting_for_the_lease() {
    const USERS: u32 = 6;
    let db = pg_database("handover");
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    // A lease far longer than the test may take: only an explicit release can hand over.
    let setup = ServeSetup { lease_secs: 600, extra: String::new(), ..ServeSetup::default() };
    let hosts = pair(&graph, &db, setup);
    for dir in &hosts.dirs {
        let path = dir.path().join("host.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("[server]\n", "[server]\nshutdown_grace_secs = 0\n", 1)).unwrap();
    }
    let mut a = hosts.start(0).await;
    graph.inject_for(
        Some(Method::POST),
        "/v1.0/invitations",
        Fault::Latency { times: 6, delay: Duration::from_secs(5) },
    );
    for n in 0..USERS {
        assert_eq!(a.post(vec![membership(Membership::Add, n, -1000)]).await, Some(200));
    }
    wait_until("attempts running on host A", Duration::from_secs(30), async || {
        !a.deliveries("running").await.is_empty()
    })
    .await;
    a.terminate();
    assert!(a.logs().contains("released"), "host A says it released its claims: {}", a.logs());

    let b = hosts.start(1).await;
    b.settle_all(Duration::from_secs(60)).await;
    assert_eq!(guests(&graph).len(), USERS as usize);
    assert!(b.deliveries("dead").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_hosts_started_at_once_on_a_new_database_migrate_it_once() {
    let db = pg_database("migrate_once");
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let hosts = pair(&graph, &db, ServeSetup::default());
    for round in 0..2 {
        let (a, b) = tokio::join!(hosts.start(0), hosts.start(1));
        for serve in [&a, &b] {
            let health = serve.get_json("/healthz").await;
            assert_eq!(health["store"], "ok", "round {round}: {health}");
            assert_eq!(health["store_backend"], "postgresql");
        }
        assert_eq!(a.post(vec![membership(Membership::Add, round, -1000)]).await, Some(200));
        b.settle_all(Duration::from_secs(60)).await;
        // Both hosts restarted at once for the next round.
        drop((a, b));
    }
    let url = db.url.clone();
    let versions: Vec<i64> = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query("SELECT version FROM schema_migrations ORDER BY version", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
    .await
    .unwrap();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(versions, expected, "each migration recorded once");
    assert_eq!(guests(&graph).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_database_goes_away_okta_gets_503_and_healthz_says_why() {
    let db = pg_database("db_gone");
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let hosts = pair(&graph, &db, ServeSetup::default());
    let a = hosts.start(0).await;
    assert_eq!(a.post(vec![membership(Membership::Add, 1, -1000)]).await, Some(200));
    a.settle_all(Duration::from_secs(60)).await;

    // The database disappears (its connections are terminated with it).
    drop(db);
    assert_eq!(
        a.post(vec![membership(Membership::Add, 2, -1000)]).await,
        Some(503),
        "never 200 for an event not stored"
    );
    let (code, body) = crate::support::http_client()
        .get(format!("{}/healthz", a.url))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map(|c| (c, ()))
        .unwrap();
    assert_eq!((code, body), (503, ()));
    let health = a.get_json("/healthz").await;
    assert_eq!(health["store"], "unavailable", "{health}");
    let why = health["store_error"].as_str().unwrap_or("");
    assert!(why.contains("PostgreSQL") && why.contains("does not exist"), "the server's reason is shown: {health}");
    assert!(!health.to_string().contains(&hosts.setup.okta_secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_longer_than_the_lease_keep_it_by_renewing_so_no_other_host_runs_them_again() {
    const USERS: u32 = 6;
    let db = pg_database("renewal");
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    // Leases of 1 s; every invitation takes 2.5 s to answer.
    let hosts = pair(&graph, &db, ServeSetup { lease_secs: 1, ..ServeSetup::default() });
    let (a, b) = (hosts.start(0).await, hosts.start(1).await);
    graph.inject_for(
        Some(Method::POST),
        "/v1.0/invitations",
        Fault::Latency { times: USERS as usize, delay: Duration::from_millis(2500) },
    );
    for n in 0..USERS {
        let serve = if n % 2 == 0 { &a } else { &b };
        assert_eq!(serve.post(vec![membership(Membership::Add, n, -1000)]).await, Some(200));
    }
    a.settle_all(Duration::from_secs(60)).await;
    let done = b.deliveries("done").await;
    assert_eq!(done.len(), USERS as usize);
    assert!(done.iter().all(|d| d["attempts"] == 1), "no delivery ran twice: {done:?}");
    let (invites, _) = graph_writes(&graph);
    assert!(invites.values().all(|n| *n == 1), "one invitation per user: {invites:?}");
    assert_eq!(guests(&graph).len(), USERS as usize);
}
