//! The real `hookhost serve` process against the Graph emulator: out-of-order deliveries end
//! in the right state, and acknowledged events survive `kill -9`.

use std::time::Duration;

use hookhost_tests::okta::Membership;
use hookhost_tests::{GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{free_port, guests, membership, post, settle, start, write_config, ADMIN_TOKEN as ADMIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_remove_and_add_end_in_the_right_state() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, &graph);
    let serve = start(dir.path(), port).await;

    // One delivery, listed remove-then-add, but the add was published first: in published
    // order the user ends up removed.
    let add1 = membership(Membership::Add, 1, -10_000);
    let remove1 = membership(Membership::Remove, 1, -5_000);
    assert_eq!(post(&serve.url, vec![remove1.clone(), add1.clone()]).await, 200);

    // Across two deliveries: the remove arrives (and runs) first; the earlier add arriving
    // later is stale and superseded, so it never creates a guest.
    let remove2 = membership(Membership::Remove, 2, -5_000);
    assert_eq!(post(&serve.url, vec![remove2.clone()]).await, 200);
    settle(&serve.url, std::slice::from_ref(&remove2)).await;
    let add2 = membership(Membership::Add, 2, -10_000);
    assert_eq!(post(&serve.url, vec![add2.clone()]).await, 200);

    // A plain add for a third user, for contrast.
    let add3 = membership(Membership::Add, 3, -1_000);
    assert_eq!(post(&serve.url, vec![add3.clone()]).await, 200);

    let views = settle(&serve.url, &[add1, remove1, remove2, add2.clone(), add3]).await;
    for v in &views {
        for d in v["deliveries"].as_array().unwrap() {
            assert_eq!(d["status"], "done", "{v}");
        }
    }
    assert_eq!(guests(&graph), vec!["user3@e2e.example".to_string()]);
    // The superseded add ran no attempt of its own; its history names the later event.
    let attempts: Value = serde_json::from_slice(
        &reqwest::Client::new()
            .get(format!("{}/api/deliveries/{}/attempts", serve.url, views[3]["deliveries"][0]["id"].as_str().unwrap()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let history = attempts.to_string();
    assert!(history.contains("superseded") && history.contains(views[2]["id"].as_str().unwrap()), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    // Slow Graph down so the kill lands while attempts are queued and running.
    graph.inject(hookhost_tests::Fault::Latency { times: 10, delay: Duration::from_millis(200) });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, &graph);
    let mut serve = start(dir.path(), port).await;

    let events: Vec<Value> = (0..40).map(|n| membership(Membership::Add, 100 + n, -60_000 + i64::from(n))).collect();
    for chunk in events.chunks(8) {
        assert_eq!(post(&serve.url, chunk.to_vec()).await, 200);
    }
    // kill -9: no graceful shutdown, claims left behind.
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let before = guests(&graph).len();
    assert!(before < 40, "the kill came too late to test anything ({before} done)");

    let serve = start(dir.path(), port).await;
    let views = settle(&serve.url, &events).await;
    for v in &views {
        assert_eq!(v["deliveries"][0]["status"], "done", "{v}");
    }
    // Every acknowledged event reached Graph, and exactly once: one guest per user.
    let g = guests(&graph);
    assert_eq!(g.len(), 40, "{g:?}");
    let mut unique = g.clone();
    unique.dedup();
    assert_eq!(unique.len(), 40);
}
