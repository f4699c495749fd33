//! Hot reload through the real `hookhost serve` process: bundles dropped into the plugin
//! directory (by rename and by in-place copy) go live under load without losing or failing
//! an event; broken bundles are refused while the old version serves; a removed plugin's
//! deliveries wait for its return; manifest-only changes (grants, subscriptions) take effect;
//! a warm artifact cache means a restart compiles nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost_tests::okta::{group_membership_event, timestamp, Membership};
use serde_json::Value;

use hookhost_tests::serve::wasm_variant;

use crate::support::{free_port, start_with, test_manifest, wasm, ServeProcess, ServeSetup};

const SECRET: &str = "Basic aG90OnJlbG9hZA==";
const ADMIN: &str = "reload-admin";
/// Upper bound of every wait; the waits normally end in well under a second.
const PATIENCE: Duration = Duration::from_secs(30);

/// A host folder: `host.toml`, `plugins.d/`, the SQLite store, and the serve logs.
struct Host {
    dir: tempfile::TempDir,
    port: u16,
    setup: ServeSetup,
}

impl Host {
    /// A host with no plugin installed; `plugins_extra` goes into `[plugins]`, `extra` after.
    fn new(plugins_extra: &str, extra: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let setup = ServeSetup {
            okta_secret: SECRET.into(),
            admin_token: ADMIN.into(),
            graph_guest: false,
            plugins_extra: plugins_extra.into(),
            extra: extra.into(),
            ..ServeSetup::default()
        };
        setup.write(dir.path(), port, None).unwrap();
        Host { dir, port, setup }
    }

    fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins.d")
    }

    async fn start(&self) -> ServeProcess {
        start_with(self.dir.path(), self.port, self.setup.clone()).await
    }
}

async fn wait_version(serve: &ServeProcess, name: &str, version: &str) -> Value {
    serve.wait_plugin(name, &format!("active {version}"), |p| p["state"] == "active" && p["version"] == version).await
}

async fn event(serve: &ServeProcess, uuid: &str) -> Value {
    serve.get_json(&format!("/api/events/{uuid}")).await
}

/// Waits until the (single) delivery of event `e` is done or dead; returns it.
async fn settled(serve: &ServeProcess, e: &Value) -> Value {
    let t = Instant::now();
    loop {
        let v = event(serve, e["uuid"].as_str().unwrap()).await;
        let d = &v["deliveries"][0];
        if matches!(d["status"].as_str(), Some("done" | "dead")) {
            return d.clone();
        }
        assert!(t.elapsed() < PATIENCE, "delivery did not settle: {v}\n{}", serve.run_log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn add_event(user: &str) -> Value {
    group_membership_event(
        Membership::Add,
        &format!("00u{user}"),
        &format!("{user}@reload.example"),
        user,
        "00gReload",
        "Reload",
        &timestamp(0),
    )
}

/// The echo test plugin's manifest at `version`.
fn echo_manifest(version: &str) -> String {
    test_manifest("echo").replace("version = \"1.0.0\"", &format!("version = \"{version}\""))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The recommended deploy: write beside (`*.tmp`, ignored by the watcher), then rename
/// over the bundle, wasm first.
fn deploy_by_rename(dir: &Path, name: &str, wasm: &[u8], manifest: &str) {
    let (w, m) = (dir.join(format!("{name}.wasm.tmp")), dir.join(format!("{name}.toml.tmp")));
    std::fs::write(&w, wasm).unwrap();
    std::fs::write(&m, manifest).unwrap();
    std::fs::rename(&w, dir.join(format!("{name}.wasm"))).unwrap();
    std::fs::rename(&m, dir.join(format!("{name}.toml"))).unwrap();
}

/// What `cp x.wasm plugins.d/; cp x.toml plugins.d/` does: overwrite in place.
fn deploy_in_place(dir: &Path, name: &str, wasm: &[u8], manifest: &str) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
}

/// A local HTTP origin answering `GET /` with "pong" after `delay`.
async fn origin(delay: Duration) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move {
            tokio::time::sleep(delay).await;
            "pong"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The hostile test plugin in mode `ungranted-origin`: it GETs `url` and succeeds when
/// `allowed_hosts` lets it.
fn fetcher_manifest(version: &str, url: &str, allowed: &[&str], event_types: &str) -> String {
    let hosts: Vec<String> = allowed.iter().map(|h| format!("{h:?}")).collect();
    format!(
        r#"name = "fetcher"
version = "{version}"
event_types = {event_types}
allowed_hosts = [{}]
[config]
mode = "ungranted-origin"
url = "{url}/"
[limits]
timeout_ms = 10000
"#,
        hosts.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_records_each_version() {
    let host = Host::new("", "");
    let a = std::fs::read(wasm("echo")).unwrap();
    let b = wasm_variant(&a, "b");
    let (sha_a, sha_b) = (sha256_hex(&a), sha256_hex(&b));
    deploy_in_place(&host.plugins(), "echo", &a, &echo_manifest("1.0.0"));
    let serve = Arc::new(host.start().await);
    wait_version(&serve, "echo", "1.0.0").await;

    // Load: batches of 10 events (one user each) every 20 ms until the swaps are over and
    // at least 500 events are in.
    let swapping = Arc::new(AtomicBool::new(true));
    let posted = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (serve, swapping, posted) = (serve.clone(), swapping.clone(), posted.clone());
        tokio::spawn(async move {
            let mut events = Vec::new();
            while swapping.load(Ordering::SeqCst) || events.len() < 500 {
                let batch: Vec<Value> = (0..10).map(|i| add_event(&format!("load{}", events.len() + i))).collect();
                assert_eq!(serve.post(batch.clone()).await, Some(200));
                events.extend(batch);
                posted.store(events.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            events
        })
    };

    // 12 swaps, each a new version; the wasm alternates between two builds, and the files
    // arrive by rename or by in-place copy, two of each in turn.
    let mut versions = BTreeSet::from(["1.0.0".to_string()]);
    for i in 1..=12u32 {
        let version = format!("1.0.{i}");
        let bytes = if i % 2 == 1 { &b } else { &a };
        if i % 4 < 2 {
            deploy_by_rename(&host.plugins(), "echo", bytes, &echo_manifest(&version));
        } else {
            deploy_in_place(&host.plugins(), "echo", bytes, &echo_manifest(&version));
        }
        let p = wait_version(&serve, "echo", &version).await;
        assert_eq!(p["last_error"], Value::Null, "{p}");
        assert_eq!(p["sha256"], if i % 2 == 1 { sha_b.as_str() } else { sha_a.as_str() }, "{p}");
        versions.insert(version);
        // Let some load land on this version before the next swap.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    swapping.store(false, Ordering::SeqCst);
    let events = poster.await.unwrap();
    assert!(events.len() >= 500, "{}", events.len());

    // Everything drains to done; nothing is dead.
    let t = Instant::now();
    loop {
        let busy = serve.deliveries("pending").await.len()
            + serve.deliveries("running").await.len()
            + serve.deliveries("retrying").await.len();
        if busy == 0 {
            break;
        }
        assert!(t.elapsed() < PATIENCE, "{busy} deliveries still busy\n{}", serve.run_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(serve.deliveries("dead").await, Vec::<Value>::new());
    let done = serve.deliveries("done").await;
    assert_eq!(done.len(), events.len(), "one done delivery per event");

    // Every attempt records a deployed version and the sha256 of a deployed wasm, and the
    // load ran on many versions.
    let mut seen = BTreeSet::new();
    for d in &done {
        let attempts = serve.attempts(d["id"].as_str().unwrap()).await;
        assert_eq!(attempts.len(), 1, "{d} {attempts:?}");
        let at = &attempts[0];
        assert_eq!(at["result"], "done", "{at}");
        let version = at["plugin_version"].as_str().unwrap().to_string();
        assert!(versions.contains(&version), "{at}");
        assert!(at["plugin_sha256"] == sha_a.as_str() || at["plugin_sha256"] == sha_b.as_str(), "{at}");
        assert_eq!(d["plugin_version"], version.as_str());
        seen.insert(version);
    }
    assert!(seen.len() >= 6, "attempts ran on only {seen:?}");
    // Two wasm builds, compiled once each; every other swap reused a compiled component.
    assert_eq!(serve.metric("hookhost_plugin_compiles_total").await, 2, "{}", serve.run_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bundles_are_refused_while_the_old_version_serves() {
    let host = Host::new("", "");
    let good = std::fs::read(wasm("echo")).unwrap();
    deploy_in_place(&host.plugins(), "echo", &good, &echo_manifest("1.0.0"));
    let serve = host.start().await;
    wait_version(&serve, "echo", "1.0.0").await;
    let dir = host.plugins();

    // A truncated wasm (a copy cut short), a component of the wrong world, a manifest with
    // an unknown key: each refused, named in last_error, with 1.0.0 still serving.
    let cases: [(&str, Vec<u8>, String, &[&str]); 3] = [
        ("truncated", good[..good.len() / 2].to_vec(), echo_manifest("2.0.0"), &["echo.wasm", "keeps serving"]),
        (
            "wrong world",
            std::fs::read(wasm("wrong-world")).unwrap(),
            echo_manifest("2.0.1"),
            &["echo.wasm", "plugin world", "wit/plugin.wit"],
        ),
        ("bad manifest", good.clone(), format!("bogus = 1\n{}", echo_manifest("2.0.2")), &["echo.toml", "bogus"]),
    ];
    for (what, wasm_bytes, manifest, needles) in cases {
        deploy_by_rename(&dir, "echo", &wasm_bytes, &manifest);
        let p = serve
            .wait_plugin("echo", what, |p| {
                p["last_error"].as_str().is_some_and(|e| needles.iter().all(|n| e.contains(n)))
            })
            .await;
        assert_eq!(p["state"], "active", "{what}: {p}");
        assert_eq!(p["version"], "1.0.0", "{what}: {p}");

        let e = add_event(&format!("broken-{}", what.replace(' ', "-")));
        assert_eq!(serve.post(vec![e.clone()]).await, Some(200));
        let d = settled(&serve, &e).await;
        assert_eq!(d["status"], "done", "{what}: {d}");
        assert_eq!(d["plugin_version"], "1.0.0", "{what}: {d}");
    }
    assert!(serve.metric("hookhost_plugin_load_failures_total").await >= 3);

    // Half a bundle: a new plugin's manifest without its wasm is waited for, then reported.
    std::fs::write(dir.join("half.toml"), echo_manifest("1.0.0").replace("name = \"echo\"", "name = \"half\""))
        .unwrap();
    let p = serve.wait_plugin("half", "failed", |p| p["state"] == "failed").await;
    let err = p["last_error"].as_str().unwrap();
    assert!(err.contains("half.wasm is missing"), "{err}");

    // A good bundle clears the error.
    deploy_by_rename(&dir, "echo", &good, &echo_manifest("2.1.0"));
    let p = wait_version(&serve, "echo", "2.1.0").await;
    assert_eq!(p["last_error"], Value::Null, "{p}");
    let e = add_event("broken-fixed");
    assert_eq!(serve.post(vec![e.clone()]).await, Some(200));
    assert_eq!(settled(&serve, &e).await["plugin_version"], "2.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_plugin_s_deliveries_wait_and_resume_when_it_returns() {
    let url = origin(Duration::from_millis(700)).await;
    // One attempt at a time, each ~0.7 s: the queue is still full when the bundle goes.
    let host = Host::new("", "[plugins.fetcher]\nmax_concurrency = 1\n");
    let hostile = std::fs::read(wasm("hostile")).unwrap();
    let add = r#"["group.user_membership.add"]"#;
    deploy_in_place(&host.plugins(), "fetcher", &hostile, &fetcher_manifest("1.0.0", &url, &[&url], add));
    let serve = host.start().await;
    wait_version(&serve, "fetcher", "1.0.0").await;

    let events: Vec<Value> = (0..4).map(|n| add_event(&format!("waiting{n}"))).collect();
    assert_eq!(serve.post(events.clone()).await, Some(200));
    // Wait until the first attempt runs, then take the bundle away (moved out of the folder).
    let t = Instant::now();
    while serve.deliveries("running").await.is_empty() {
        assert!(t.elapsed() < PATIENCE, "no attempt started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let aside = host.dir.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    for f in ["fetcher.wasm", "fetcher.toml"] {
        std::fs::rename(host.plugins().join(f), aside.join(f)).unwrap();
    }
    let p = serve.wait_plugin("fetcher", "removed", |p| p["state"] == "removed").await;
    assert_eq!(p["version"], "1.0.0", "{p}");

    // The running attempt finishes on 1.0.0; the rest wait, pending, not dead.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut statuses = Vec::new();
    for e in &events {
        let v = event(&serve, e["uuid"].as_str().unwrap()).await;
        statuses.push(v["deliveries"][0]["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses.iter().filter(|s| *s == "done").count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "pending").count(), 3, "{statuses:?}");
    // While it is gone, new events do not subscribe it.
    let orphan = add_event("while-removed");
    assert_eq!(serve.post(vec![orphan.clone()]).await, Some(200));
    assert_eq!(event(&serve, orphan["uuid"].as_str().unwrap()).await["deliveries"], serde_json::json!([]));

    // It returns as 1.0.1: the waiting deliveries run on it.
    std::fs::write(aside.join("fetcher.toml"), fetcher_manifest("1.0.1", &url, &[&url], add)).unwrap();
    for f in ["fetcher.wasm", "fetcher.toml"] {
        std::fs::rename(aside.join(f), host.plugins().join(f)).unwrap();
    }
    wait_version(&serve, "fetcher", "1.0.1").await;
    let mut versions = Vec::new();
    for e in &events {
        let d = settled(&serve, e).await;
        assert_eq!(d["status"], "done", "{d}");
        versions.push(d["plugin_version"].as_str().unwrap().to_string());
    }
    versions.sort();
    assert_eq!(versions, ["1.0.0", "1.0.1", "1.0.1", "1.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_changes_to_grants_and_subscriptions_take_effect() {
    let url = origin(Duration::ZERO).await;
    let host = Host::new("", "");
    let hostile = std::fs::read(wasm("hostile")).unwrap();
    let dir = host.plugins();
    let add = r#"["group.user_membership.add"]"#;
    deploy_in_place(&dir, "fetcher", &hostile, &fetcher_manifest("1.0.0", &url, &[], add));
    let serve = host.start().await;
    wait_version(&serve, "fetcher", "1.0.0").await;

    // No grant: the call is refused and the delivery ends dead, naming why.
    let e = add_event("grant-before");
    assert_eq!(serve.post(vec![e.clone()]).await, Some(200));
    let d = settled(&serve, &e).await;
    assert_eq!(d["status"], "dead", "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("denied"), "{d}");

    // Same wasm, manifest granting the origin: a new version, and the call goes through.
    deploy_by_rename(&dir, "fetcher", &hostile, &fetcher_manifest("1.0.1", &url, &[&url], add));
    let p = wait_version(&serve, "fetcher", "1.0.1").await;
    assert_eq!(p["allowed_hosts"], serde_json::json!([url]), "{p}");
    let e = add_event("grant-after");
    assert_eq!(serve.post(vec![e.clone()]).await, Some(200));
    let d = settled(&serve, &e).await;
    assert_eq!(d["status"], "done", "{d}");
    let attempts = serve.attempts(d["id"].as_str().unwrap()).await;
    assert_eq!(attempts[0]["plugin_version"], "1.0.1");

    // Subscriptions: now only removals; an add ingested after the swap gets no delivery.
    deploy_in_place(
        &dir,
        "fetcher",
        &hostile,
        &fetcher_manifest("1.0.2", &url, &[&url], r#"["group.user_membership.remove"]"#),
    );
    let p = wait_version(&serve, "fetcher", "1.0.2").await;
    assert_eq!(p["event_types"], serde_json::json!(["group.user_membership.remove"]));
    let e = add_event("unsubscribed");
    assert_eq!(serve.post(vec![e.clone()]).await, Some(200));
    assert_eq!(event(&serve, e["uuid"].as_str().unwrap()).await["deliveries"], serde_json::json!([]));

    // Manifest-only changes never recompile.
    assert_eq!(serve.metric("hookhost_plugin_compiles_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_cache_restart_does_not_compile() {
    let host = Host::new("", "");
    let echo = std::fs::read(wasm("echo")).unwrap();
    deploy_in_place(&host.plugins(), "echo", &echo, &echo_manifest("1.0.0"));

    let cold = host.start().await;
    wait_version(&cold, "echo", "1.0.0").await;
    assert_eq!(cold.metric("hookhost_plugin_compiles_total").await, 1);
    assert_eq!(cold.metric("hookhost_plugin_cache_loads_total").await, 0);
    drop(cold);
    // The artifact: <dir>/.cache/<engine key>/<wasm sha256>.cwasm.
    let sha = sha256_hex(&echo);
    let entries: Vec<PathBuf> = std::fs::read_dir(host.plugins().join(".cache"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].file_name().unwrap().to_str().unwrap(), format!("{sha}.cwasm"));

    let warm = host.start().await;
    wait_version(&warm, "echo", "1.0.0").await;
    assert_eq!(warm.metric("hookhost_plugin_compiles_total").await, 0, "{}", warm.run_log());
    assert_eq!(warm.metric("hookhost_plugin_cache_loads_total").await, 1);
    assert!(warm.run_log().contains("component loaded from cache"));
    let e = add_event("warm");
    assert_eq!(warm.post(vec![e.clone()]).await, Some(200));
    assert_eq!(settled(&warm, &e).await["status"], "done");
    drop(warm);

    // A damaged entry is never loaded: discarded, compiled again, rewritten.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&entries[0], &bytes).unwrap();
    let again = host.start().await;
    wait_version(&again, "echo", "1.0.0").await;
    assert_eq!(again.metric("hookhost_plugin_compiles_total").await, 1);
    assert!(again.run_log().contains("discarding a damaged cached artifact"), "{}", again.run_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watch_a_reload_request_or_sighup_rescans() {
    let host = Host::new("watch = false\n", "");
    let echo = std::fs::read(wasm("echo")).unwrap();
    let dir = host.plugins();
    deploy_in_place(&dir, "echo", &echo, &echo_manifest("1.0.0"));
    let serve = host.start().await;
    wait_version(&serve, "echo", "1.0.0").await;

    deploy_by_rename(&dir, "echo", &echo, &echo_manifest("1.0.1"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(serve.plugin("echo").await["version"], "1.0.0", "not watched: nothing changes by itself");

    let r = reqwest::Client::new()
        .post(format!("{}/api/plugins/reload", serve.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body["results"],
        serde_json::json!([{"name": "echo", "result": "activated", "version": "1.0.1", "error": null}])
    );
    assert_eq!(serve.plugin("echo").await["version"], "1.0.1");

    deploy_by_rename(&dir, "echo", &echo, &echo_manifest("1.0.2"));
    let status = Command::new("kill").args(["-HUP", &serve.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    wait_version(&serve, "echo", "1.0.2").await;
}
