//! A bounded fault soak of the real `hookhost serve` process: while a stream of Okta events
//! arrives, the Graph emulator throttles (429 with `Retry-After`), fails (503, 504), resets
//! connections and answers slowly, in a random (seeded) mix. Every delivery ends `done`,
//! except the one that must be `dead` (a remove aimed at a Member account, which graph-guest
//! refuses); no lookup is retried before the `Retry-After` it was given; the tenant ends
//! exactly as the events say.
//!
//! Figures for RELIABILITY.md are printed on a line starting `RELIABILITY fault_soak`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use hookhost_tests::okta::{group_membership_event, timestamp, Membership};
use hookhost_tests::{Fault, GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{
    free_port, guests, membership, retry_after_violations, start_with, write_config_with, ServeSetup,
};

const SEED: u64 = 0x5eed_fa17;
const USERS: u32 = 80;
const REMOVED: u32 = 30;
const BATCHES: usize = 6;
const FAULTS_PER_BATCH: usize = 10;

/// One random fault, and whether it is scoped to user lookups (so its `Retry-After` can be
/// checked per user from the journal).
fn random_fault(rng: &mut fastrand::Rng) -> (Fault, bool) {
    match rng.u8(0..6) {
        0 | 1 => (Fault::Throttle { times: 1, retry_after: ["0.2", "0.5", "1"][rng.usize(0..3)].into() }, true),
        2 => {
            if rng.bool() {
                (Fault::Unavailable { times: 1, retry_after: Some("0.3".into()) }, true)
            } else {
                (Fault::Unavailable { times: 1, retry_after: None }, false)
            }
        }
        3 => (Fault::GatewayTimeout { times: 1 }, false),
        4 => (Fault::ResetConnection { times: 1 }, false),
        _ => (Fault::Latency { times: 1, delay: Duration::from_millis(rng.u64(100..400)) }, false),
    }
}

fn kind(f: &Fault) -> &'static str {
    match f {
        Fault::Throttle { .. } => "throttle_429",
        Fault::Unavailable { .. } => "unavailable_503",
        Fault::GatewayTimeout { .. } => "gateway_timeout_504",
        Fault::ResetConnection { .. } => "reset_connection",
        Fault::Latency { .. } => "latency",
        Fault::Forbidden { .. } => "forbidden_403",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_events_survives_random_graph_faults() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let member_id = graph.seed_member("member@soak.example", "Staff Member");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup { retry: "initial_backoff_ms = 50\nmax_attempts = 25\n".into(), ..ServeSetup::default() };
    write_config_with(dir.path(), port, &graph, setup.clone());
    let serve = start_with(dir.path(), port, setup).await;

    // The stream: adds for every user, then removes for the first REMOVED (published
    // later), and one remove for an Okta user whose mail is a Member account.
    let mut events: Vec<Value> = (0..USERS)
        .map(|n| membership(Membership::Add, 1000 + n, -600_000 + i64::from(n)))
        .chain((0..REMOVED).map(|n| membership(Membership::Remove, 1000 + n, -300_000 + i64::from(n))))
        .collect();
    let member_remove = group_membership_event(
        Membership::Remove,
        "00usoakmember",
        "member@soak.example",
        "Staff Member",
        "00gO365",
        "O365Guest",
        &timestamp(-200_000),
    );
    events.push(member_remove.clone());

    // Faults go in just before each chunk of events, so the chunk's requests consume them.
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
    let chunk = events.len().div_ceil(BATCHES);
    for batch in events.chunks(chunk) {
        for _ in 0..FAULTS_PER_BATCH {
            let (fault, lookups_only) = random_fault(&mut rng);
            *injected.entry(kind(&fault)).or_default() += 1;
            if lookups_only {
                graph.inject_for(Some(Method::GET), "/v1.0/users", fault);
            } else {
                graph.inject(fault);
            }
        }
        for part in batch.chunks(4) {
            assert_eq!(serve.post(part.to_vec()).await, Some(200));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.settle_all(Duration::from_secs(60)).await;
    assert_eq!(graph.pending_faults(), 0, "every injected fault was served");

    // Every delivery done, except the Member remove: dead, saying why.
    let mut dead = Vec::new();
    let mut retried = 0;
    for e in &events {
        let uuid = e["uuid"].as_str().unwrap();
        let view = serve.get_json(&format!("/api/events/{uuid}")).await;
        let d = &view["deliveries"][0];
        retried += usize::from(d["attempts"].as_u64().unwrap_or(0) > 1);
        if d["status"] != "done" {
            dead.push((uuid.to_string(), d.clone()));
        }
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, member_remove["uuid"].as_str().unwrap());
    assert_eq!(dead[0].1["status"], "dead");
    let why = dead[0].1["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("not Guest") && why.contains("nothing was changed"), "{why}");
    assert!(graph.user(&member_id).is_some(), "the Member account was touched");

    // No lookup came back before its Retry-After.
    let journal = graph.journal();
    let (checked, violations) = retry_after_violations(&journal);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(checked > 0, "no throttled lookup was seen");

    // The tenant: exactly one guest per kept user, removed users gone.
    let g = guests(&graph);
    let want: Vec<String> = {
        let mut w: Vec<String> = (REMOVED..USERS).map(|n| format!("user{}@e2e.example", 1000 + n)).collect();
        w.sort();
        w
    };
    assert_eq!(g, want);
    let mut per_mail: BTreeMap<String, usize> = BTreeMap::new();
    for inv in graph.invitations() {
        *per_mail.entry(inv.email.to_lowercase()).or_default() += 1;
    }
    assert!(per_mail.values().all(|&n| n == 1), "an invitation was sent twice: {per_mail:?}");
    assert_eq!(per_mail.len(), USERS as usize);

    let statuses = |code: u16| journal.iter().filter(|e| e.status == code).count();
    println!(
        "RELIABILITY fault_soak: events={} faults_injected={} ({}) answered_429={} answered_503={} answered_504={} resets={} \
         retry_after_checked={checked} retry_after_violations=0 retried_deliveries={retried} done={} dead=1 (expected 1) graph_requests={}",
        events.len(),
        injected.values().sum::<usize>(),
        injected.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        statuses(429),
        statuses(503),
        statuses(504),
        statuses(0),
        events.len() - 1,
        journal.len(),
    );
}
