//! The real `hookhost serve` process against the Graph emulator: out-of-order deliveries end
//! in the right state, and acknowledged events survive `kill -9`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookhost_tests::okta::{delivery, group_membership_event, timestamp, Membership};
use hookhost_tests::{GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{hookhost_bin, wasm, workspace};

const SECRET: &str = "Basic ZTJlOmUyZQ==";
const ADMIN: &str = "e2e-admin";

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, port: u16, graph: &GraphEmulator) {
    std::fs::create_dir_all(dir.join("plugins.d")).unwrap();
    std::fs::copy(wasm("graph-guest"), dir.join("plugins.d/graph-guest.wasm")).unwrap();
    std::fs::copy(
        workspace().join("plugins/graph-guest/graph-guest.toml"),
        dir.join("plugins.d/graph-guest.toml"),
    )
    .unwrap();
    let base = graph.base_url();
    let cfg = graph.config();
    std::fs::write(
        dir.join("host.toml"),
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
[okta]
auth_secret = {{ value = "{SECRET}" }}
[store]
url = "sqlite://state/hookhost.db"
[dispatch]
lease_secs = 5
[dispatch.retry]
initial_backoff_ms = 100
[plugins]
dir = "plugins.d"
[admin]
token = {{ value = "{ADMIN}" }}
[plugins.graph-guest]
allowed_hosts = ["{base}"]
[plugins.graph-guest.config]
graph_url = "{base}"
login_url = "{base}"
[plugins.graph-guest.secrets]
tenant_id = {{ value = "{}" }}
client_id = {{ value = "{}" }}
client_secret = {{ value = "{}" }}
"#,
            cfg.tenant_id, cfg.client_id, cfg.client_secret
        ),
    )
    .unwrap();
}

async fn start(dir: &Path, port: u16) -> Serve {
    // Started from another directory on purpose: relative paths resolve against the config.
    let child = Command::new(hookhost_bin())
        .args(["serve", "--config"])
        .arg(dir.join("host.toml"))
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("serve-{}.log", fastrand::u32(..)))).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let t = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "serve did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Serve { child, url }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn post(url: &str, events: Vec<Value>) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/hooks/okta"))
        .header("authorization", SECRET)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&delivery(events)).unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn event_view(url: &str, uuid: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{url}/api/events/{uuid}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Waits until every delivery of these events is done or dead; returns their views.
async fn settle(url: &str, events: &[Value]) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let mut views = Vec::new();
        for e in events {
            views.push(event_view(url, e["uuid"].as_str().unwrap()).await);
        }
        let busy = views.iter().any(|v| {
            v["deliveries"]
                .as_array()
                .is_none_or(|ds| ds.iter().any(|d| !matches!(d["status"].as_str(), Some("done" | "dead"))))
        });
        if !busy {
            return views;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "deliveries did not settle: {views:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn membership(kind: Membership, n: u32, published_offset_ms: i64) -> Value {
    group_membership_event(
        kind,
        &format!("00ue2e{n}"),
        &format!("user{n}@e2e.example"),
        &format!("User {n}"),
        "00gO365",
        "O365Guest",
        &timestamp(published_offset_ms),
    )
}

fn guests(graph: &GraphEmulator) -> Vec<String> {
    let mut g: Vec<String> = graph
        .users()
        .into_iter()
        .filter(|u| u.user_type == "Guest")
        .filter_map(|u| u.mail)
        .collect();
    g.sort();
    g
}

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
            .get(format!(
                "{}/api/deliveries/{}/attempts",
                serve.url,
                views[3]["deliveries"][0]["id"].as_str().unwrap()
            ))
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
