//! The blast-radius guard through the real `hookhost serve`, SQLite file, graph-guest
//! component and Graph emulator: the sixth of five allowed removals is held, held and
//! discarded deliveries survive restarts, a released batch runs in its users' published
//! order, a discarded one never reaches Graph, and a replayed held delivery runs.
//!
//! Every wait polls the API for a consistent state; nothing waits a guessed time.

use std::path::Path;
use std::time::{Duration, Instant};

use hookhost_tests::okta::Membership;
use hookhost_tests::{GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{self, membership, ServeProcess, ServeSetup};

const WAIT: Duration = Duration::from_secs(300);

fn setup() -> ServeSetup {
    ServeSetup {
        // One attempt at a time, so the order in which Graph sees calls is the claim order.
        dispatch_extra: "max_concurrency = 1\n".into(),
        extra: "[plugins.graph-guest.guard]\n\
                event_types = [\"group.user_membership.remove\"]\n\
                max_per_window = 5\n\
                window_secs = 3600\n"
            .into(),
        ..ServeSetup::default()
    }
}

async fn start(dir: &Path, port: u16) -> ServeProcess {
    support::start_with(dir, port, setup()).await
}

/// Waits until graph-guest has `held` held and `pending` pending deliveries (those that
/// wait behind a held one of their user) and none running or retrying; answers the held.
async fn wait_held(serve: &ServeProcess, held: u64, pending: u64) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let queue = serve.get_json("/api/queue").await;
        let gg = queue["plugins"].as_array().and_then(|ps| ps.iter().find(|p| p["plugin"] == "graph-guest").cloned());
        let counts = gg.map(|p| ["held", "pending", "running", "retrying"].map(|s| p[s].as_u64().expect("a count")));
        if counts == Some([held, pending, 0, 0]) {
            return serve.deliveries("held").await;
        }
        assert!(t.elapsed() < WAIT, "graph-guest never reached {held} held, {pending} pending: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn uuid_of(d: &Value) -> String {
    d["event_id"].as_str().unwrap().to_owned()
}

/// The Entra object id graph-guest created for user `n` (alive or deleted).
fn entra_id(graph: &GraphEmulator, n: u32) -> String {
    let mail = format!("user{n}@e2e.example");
    graph
        .users()
        .into_iter()
        .chain(graph.deleted_users())
        .find(|u| u.mail.as_deref() == Some(mail.as_str()))
        .unwrap_or_else(|| panic!("no account for {mail}"))
        .id
}

/// Positions in the emulator's journal of the DELETEs of these users' accounts.
fn delete_positions(graph: &GraphEmulator, ids: &[String]) -> Vec<Option<usize>> {
    let journal = graph.journal();
    ids.iter()
        .map(|id| {
            let path = format!("/v1.0/users/{id}");
            journal.iter().position(|e| e.method == "DELETE" && e.path == path && e.status < 300)
        })
        .collect()
}

async fn post_ok(serve: &ServeProcess, events: Vec<Value>) {
    assert_eq!(serve.post(events).await, Some(200));
}

async fn decide(serve: &ServeProcess, decision: &str) -> Value {
    let r = serve
        .admin(reqwest::Method::POST, &format!("/api/plugins/graph-guest/held/{decision}"))
        .send()
        .await
        .expect("admin API answers");
    assert_eq!(r.status().as_u16(), 200);
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn status(serve: &ServeProcess, uuid: &str) -> String {
    let view = support::event_view(&serve.url, uuid).await;
    view["deliveries"][0]["status"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `uuid`'s delivery has this status.
async fn wait_status(serve: &ServeProcess, uuid: &str, want: &str) {
    let t = Instant::now();
    loop {
        let now = status(serve, uuid).await;
        if now == want {
            return;
        }
        assert!(t.elapsed() < WAIT, "{uuid} stayed {now}, never {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains("plugin=\"graph-guest\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_holds_the_sixth_removal_and_release_and_discard_survive_restarts() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    support::write_config_with(dir.path(), port, &graph, setup());
    let mut serve = start(dir.path(), port).await;

    // Fifteen guests, added one by one (adds are not guarded).
    let adds: Vec<Value> = (1..=15).map(|n| membership(Membership::Add, n, -600_000 + i64::from(n))).collect();
    post_ok(&serve, adds.clone()).await;
    support::settle(&serve.url, &adds).await;
    assert_eq!(support::guests(&graph).len(), 15);
    let ids: Vec<String> = (1..=15).map(|n| entra_id(&graph, n)).collect();

    // Round 1: eight removals in one delivery, and user 6 re-added after their removal.
    let mut removes: Vec<Value> = (1..=8).map(|n| membership(Membership::Remove, n, -300_000 + i64::from(n))).collect();
    let readd = membership(Membership::Add, 6, -200_000);
    removes.push(readd.clone());
    post_ok(&serve, removes.clone()).await;
    let held = wait_held(&serve, 3, 1).await;
    let held_uuids: Vec<String> = held.iter().map(uuid_of).collect();
    let want: Vec<String> = removes[5..8].iter().map(|e| e["uuid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(held_uuids, want, "the 6th, 7th and 8th removals are held");
    let deleted = delete_positions(&graph, &ids[..8]);
    assert!(deleted[..5].iter().all(Option::is_some), "the first five ran: {deleted:?}");
    assert!(deleted[5..].iter().all(Option::is_none), "no held removal reached Graph: {deleted:?}");
    // User 6's later add waits behind their held removal.
    assert_eq!(status(&serve, readd["uuid"].as_str().unwrap()).await, "pending");
    let (_, metrics) = serve.get_text("/metrics").await;
    assert_eq!(metric(&metrics, "hookhost_deliveries_held"), Some(3.0), "{metrics}");
    assert_eq!(metric(&metrics, "hookhost_guard_trips_total"), Some(1.0), "{metrics}");
    assert_eq!(serve.logs().matches("the guard tripped").count(), 1, "one warning per trip");
    let queue = serve.get_json("/api/queue").await;
    let gg = queue["plugins"].as_array().unwrap().iter().find(|p| p["plugin"] == "graph-guest").unwrap().clone();
    assert_eq!(gg["held"], 3);

    // A restart keeps them held, and the guard tripped.
    serve.kill9();
    let serve = start(dir.path(), port).await;
    assert_eq!(wait_held(&serve, 3, 1).await.iter().map(uuid_of).collect::<Vec<_>>(), held_uuids);

    // Replaying one held delivery runs it (user 8).
    let r8 = held.iter().find(|d| d["event_id"] == want[2].as_str()).unwrap()["id"].as_str().unwrap().to_owned();
    let r = serve.admin(reqwest::Method::POST, &format!("/api/deliveries/{r8}/replay")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    wait_status(&serve, &want[2], "done").await;
    assert!(delete_positions(&graph, &ids[7..8])[0].is_some());

    // Release after the restart: users 6 and 7 are removed, then user 6 is added again.
    assert_eq!(decide(&serve, "release").await["released"], 2);
    support::settle(&serve.url, &removes).await;
    assert!(serve.deliveries("held").await.is_empty());
    let order = delete_positions(&graph, &ids[5..7]);
    let (d6, d7) = (order[0].expect("user 6 removed"), order[1].expect("user 7 removed"));
    assert!(d6 < d7, "released removals ran in published order");
    let journal = graph.journal();
    let reinvited = journal.iter().rposition(|e| e.method == "POST" && e.path == "/v1.0/invitations").unwrap();
    assert!(reinvited > d6, "user 6's later add ran after their released removal");
    assert!(support::guests(&graph).contains(&"user6@e2e.example".to_string()));

    // Round 2: seven removals after the release (a fresh window): five run, two are held.
    let removes2: Vec<Value> = (9..=15).map(|n| membership(Membership::Remove, n, -100_000 + i64::from(n))).collect();
    post_ok(&serve, removes2.clone()).await;
    let held2: Vec<String> = wait_held(&serve, 2, 0).await.iter().map(uuid_of).collect();
    let want2: Vec<String> = removes2[5..].iter().map(|e| e["uuid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(held2, want2);
    assert_eq!(decide(&serve, "discard").await["discarded"], 2);
    assert_eq!(decide(&serve, "discard").await["discarded"], 0);

    // Discarded survives a restart, stays visible, and never reaches Graph.
    drop(serve);
    let serve = start(dir.path(), port).await;
    serve.settle_all(WAIT).await;
    for uuid in &want2 {
        assert_eq!(status(&serve, uuid).await, "discarded");
    }
    let discarded: Vec<String> = serve.deliveries("discarded").await.iter().map(uuid_of).collect();
    assert_eq!(discarded, want2);
    let positions = delete_positions(&graph, &ids[8..15]);
    assert!(positions[..5].iter().all(Option::is_some) && positions[5..].iter().all(Option::is_none), "{positions:?}");
    assert!(support::guests(&graph).contains(&"user15@e2e.example".to_string()));
    let bad = serve.get_text("/api/deliveries?status=parked").await;
    assert_eq!(bad.0, 400);
    assert!(bad.1.contains("held") && bad.1.contains("discarded"), "{}", bad.1);
}

#[tokio::test]
async fn a_guard_that_cannot_work_is_refused_at_start_naming_the_key() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    for (body, key) in [
        ("event_types = []\nmax_per_window = 5\nwindow_secs = 60\n", "event_types"),
        ("event_types = [\"group.user_membership.remove\"]\nmax_per_window = 0\nwindow_secs = 60\n", "max_per_window"),
        ("event_types = [\"group.user_membership.remove\"]\nmax_per_window = 5\nwindow_secs = 0\n", "window_secs"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let setup = ServeSetup { extra: format!("[plugins.graph-guest.guard]\n{body}"), ..ServeSetup::default() };
        support::write_config_with(dir.path(), support::free_port(), &graph, setup);
        let out = std::process::Command::new(support::hookhost_bin())
            .args(["serve", "--config"])
            .arg(dir.path().join("host.toml"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}: serve started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("[plugins.graph-guest.guard]") && err.contains(key), "{key}: {err}");
    }
}
