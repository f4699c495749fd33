//! `make demo`: the main job end to end on the embedded defaults, for someone with no Okta
//! or Azure tenant.
//!
//! Starts the Microsoft Graph emulator, a Slack incoming webhook and a Splunk HTTP Event
//! Collector stand-in (in this process) and the real `hookhost serve` (SQLite store in
//! `./demo`) with three plugins: graph-guest (Rust), chat-notify (Rust) and siem-forward
//! (Python). Performs Okta's verification handshake, posts real-format deliveries (three
//! users added to `O365Guest`, the same delivery again, a user added to another group, a
//! user removed, and a throttling burst from Graph), waits until the queue is idle, prints
//! what happened — for one event, the guest, the chat message and the audit record, each
//! from its own delivery — and exits 0 only if the outcome is right.
//! It ends by printing the operator console's URL and the admin token to sign in with; with
//! `KEEP=1` the service stays up until Ctrl-C so the console can be opened.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hookhost_tests::okta::{delivery, group_membership_event, timestamp, Membership};
use hookhost_tests::serve::{
    free_port, graph_guest_tables, hookhost_bin, notify_tables, workspace, ServeProcess, ServeSetup,
};
use hookhost_tests::{Fault, GraphEmulator, TenantConfig, WebhookKind, WebhookReceiver};
use serde_json::Value;

const OKTA_SECRET: &str = "Basic ZGVtbzpkZW1vLXNlY3JldA==";
const ADMIN_TOKEN: &str = "demo-admin-token";
const HEC_TOKEN: &str = "d3m0-hec-70ken";
const PLUGINS: [&str; 3] = ["graph-guest", "chat-notify", "siem-forward"];

async fn json(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let bytes = resp.bytes().await?;
    serde_json::from_slice(&bytes).with_context(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = workspace();
    let bundle = root.join("dist/plugins");
    if hookhost_bin().is_err() || PLUGINS.iter().any(|p| !bundle.join(format!("{p}.wasm")).exists()) {
        bail!("run `make build` first (needs target/release/hookhost and dist/plugins/{{graph-guest,chat-notify,siem-forward}}.*)");
    }
    let dir = root.join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins.d"))?;
    for p in PLUGINS {
        for ext in ["wasm", "toml"] {
            let f = format!("{p}.{ext}");
            std::fs::copy(bundle.join(&f), dir.join("plugins.d").join(&f))?;
        }
    }
    // Outside ./demo so it survives the next run: a warm cache skips compiling the Python
    // plugin (seconds) at start.
    let cache_dir = root.join("target/demo-artifact-cache");
    let cache_was_warm = cache_dir.exists();

    println!("== Starting the Microsoft Graph emulator (tenant contoso.onmicrosoft.com)");
    let graph = GraphEmulator::start(TenantConfig::default()).await?;
    let base = graph.base_url();
    let member = graph.seed_member("it.admin@contoso.com", "IT Admin");
    println!("   {base}  (seeded Member it.admin@contoso.com, {member})");
    let slack = WebhookReceiver::start(WebhookKind::Slack).await?;
    println!("== Slack incoming webhook stand-in at {}", slack.base_url());
    let hec = WebhookReceiver::start(WebhookKind::SplunkHec { token: HEC_TOKEN.into() }).await?;
    println!("== Splunk HTTP Event Collector stand-in at {}", hec.base_url());

    let port = free_port();
    let setup = ServeSetup {
        okta_secret: OKTA_SECRET.into(),
        admin_token: ADMIN_TOKEN.into(),
        store_url: Some("sqlite://demo.db".into()),
        retry: "initial_backoff_ms = 200\n".into(),
        plugins_extra: format!("cache_dir = {:?}\n", cache_dir.display().to_string()),
        extra: format!("{}{}", graph_guest_tables(&graph), notify_tables(&slack, &hec, HEC_TOKEN, "")),
        ..ServeSetup::plain()
    };
    setup.write(&dir, port, None)?;

    println!("== Starting hookhost serve --config demo/host.toml");
    let started = Instant::now();
    let serve = ServeProcess::spawn(&dir, port, setup, Duration::from_secs(120)).await?;
    let log = serve.log.strip_prefix(&root).unwrap_or(&serve.log).display().to_string();
    let url = serve.url.clone();
    let http = reqwest::Client::new();
    println!(
        "   ready in {} ms at {url} ({})",
        started.elapsed().as_millis(),
        if cache_was_warm {
            "warm artifact cache: the plugins were loaded precompiled"
        } else {
            "cold artifact cache: the plugins, the Python one above all, were compiled first"
        }
    );
    let plugins = json(http.get(format!("{url}/api/plugins")).bearer_auth(ADMIN_TOKEN).send().await?).await?;
    println!("== Plugins and their routes (GET /api/plugins)");
    for p in plugins["plugins"].as_array().cloned().unwrap_or_default() {
        println!(
            "   {:<13} {:<7} event_types {}  groups {}  supersede {}",
            p["name"].as_str().unwrap_or(""),
            p["version"].as_str().unwrap_or(""),
            p["event_types"],
            if p["groups"].is_null() { "(any)".to_string() } else { p["groups"].to_string() },
            p["supersede"]
        );
    }

    println!("== Okta verification handshake");
    let v = json(
        http.get(format!("{url}/hooks/okta"))
            .header("x-okta-verification-challenge", "demo-challenge-42")
            .send()
            .await?,
    )
    .await?;
    println!("   GET /hooks/okta → {v}");
    if v["verification"] != "demo-challenge-42" {
        bail!("verification answer is wrong");
    }

    let users = [
        ("00udemo1", "alice@fabrikam.example", "Alice Adams"),
        ("00udemo2", "bob@fabrikam.example", "Bob Brown"),
        ("00udemo3", "carol@fabrikam.example", "Carol Chen"),
    ];
    let adds: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, (id, login, name))| {
            group_membership_event(
                Membership::Add,
                id,
                login,
                name,
                "00gO365",
                "O365Guest",
                &timestamp(-60_000 + i as i64),
            )
        })
        .collect();
    let post = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}/hooks/okta"))
                .header("authorization", OKTA_SECRET)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap_or_default())
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };

    println!("== Graph will throttle the next 3 requests (429, Retry-After: 1)");
    graph.inject(Fault::Throttle { times: 3, retry_after: "1".into() });
    println!("== POST: alice, bob, carol added to O365Guest → {}", post(delivery(adds.clone())).await?);
    println!("== POST: the same events again (Okta's retry) → {}", post(delivery(adds.clone())).await?);
    let other = group_membership_event(
        Membership::Add,
        "00udemo4",
        "dave@fabrikam.example",
        "Dave Diaz",
        "00gENG",
        "Engineering",
        &timestamp(-50_000),
    );
    println!(
        "== POST: dave added to Engineering (only siem-forward subscribes to every group) → {}",
        post(delivery(vec![other.clone()])).await?
    );
    let removal = group_membership_event(
        Membership::Remove,
        "00udemo2",
        "bob@fabrikam.example",
        "Bob Brown",
        "00gO365",
        "O365Guest",
        &timestamp(-40_000),
    );
    println!("== POST: bob removed from O365Guest → {}", post(delivery(vec![removal.clone()])).await?);
    let bad = http.post(format!("{url}/hooks/okta")).header("authorization", "Basic wrong").body("{}").send().await?;
    println!("== POST with a wrong secret → {} (nothing stored)", bad.status().as_u16());

    println!("== Waiting for the queue to drain");
    let mut all: Vec<&Value> = adds.iter().collect();
    all.push(&other);
    all.push(&removal);
    let waited = Instant::now();
    let views = loop {
        let mut views = Vec::new();
        for e in &all {
            let uuid = e["uuid"].as_str().unwrap_or_default();
            let v = json(http.get(format!("{url}/api/events/{uuid}")).bearer_auth(ADMIN_TOKEN).send().await?).await?;
            views.push(v);
        }
        let busy = views.iter().any(|v| {
            v["deliveries"].as_array().is_some_and(|ds| {
                ds.iter().any(|d| matches!(d["status"].as_str(), Some("pending" | "running" | "retrying")))
            })
        });
        if !busy {
            break views;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("queue did not drain in 60 s; see {log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    println!();
    println!(
        "{:<38} {:<30} {:<24} {:<12} {:<13} {:<6} {:>8}",
        "event", "type", "user", "group", "plugin", "status", "attempts"
    );
    for (e, v) in all.iter().zip(&views) {
        let user = e["target"]
            .as_array()
            .and_then(|t| t.iter().find(|x| x["type"] == "User"))
            .map(|u| u["alternateId"].as_str().unwrap_or(""))
            .unwrap_or("");
        let group = e["target"]
            .as_array()
            .and_then(|t| t.iter().find(|x| x["type"] == "UserGroup"))
            .map(|g| g["displayName"].as_str().unwrap_or(""))
            .unwrap_or("");
        let ds = v["deliveries"].as_array().cloned().unwrap_or_default();
        if ds.is_empty() {
            println!(
                "{:<38} {:<30} {:<24} {:<12} {:<13} {:<6} {:>8}",
                v["id"].as_str().unwrap_or(""),
                v["event_type"].as_str().unwrap_or(""),
                user,
                group,
                "(none)",
                "-",
                "-"
            );
        }
        for d in ds {
            println!(
                "{:<38} {:<30} {:<24} {:<12} {:<13} {:<6} {:>8}",
                v["id"].as_str().unwrap_or(""),
                v["event_type"].as_str().unwrap_or(""),
                user,
                group,
                d["plugin"].as_str().unwrap_or(""),
                d["status"].as_str().unwrap_or(""),
                d["attempts"]
            );
        }
    }

    println!();
    println!("Accounts now in the emulated tenant:");
    let guests: Vec<String> =
        graph.users().into_iter().filter(|u| u.user_type == "Guest").filter_map(|u| u.mail).collect();
    for u in graph.users() {
        println!("  {:<8} {:<28} {}", u.user_type, u.mail.as_deref().unwrap_or("-"), u.user_principal_name);
    }
    let throttled = graph.journal().iter().filter(|j| j.status == 429).count();
    println!("Graph answered 429 to {throttled} request(s); each was retried after Retry-After.");

    let messages = slack.messages();
    println!();
    println!("Slack messages (chat-notify):");
    for m in &messages {
        println!("  {m}");
    }
    let records: Vec<Value> = hec.messages().iter().filter_map(|r| serde_json::from_str(r).ok()).collect();
    println!("Splunk HEC records (siem-forward), {} in all:", records.len());
    for r in &records {
        println!(
            "  index={} sourcetype={} {} {} → {}",
            r["index"].as_str().unwrap_or("-"),
            r["sourcetype"].as_str().unwrap_or("-"),
            r["event"]["eventType"].as_str().unwrap_or(""),
            r["event"]["targets"][0]["alternateId"].as_str().unwrap_or(""),
            r["event"]["targets"][1]["displayName"].as_str().unwrap_or("")
        );
    }

    // One event, three plugins, three deliveries.
    let alice = &adds[0];
    let alice_uuid = alice["uuid"].as_str().unwrap_or_default();
    println!();
    println!("One event, fanned out: alice added to O365Guest ({alice_uuid})");
    for d in views[0]["deliveries"].as_array().cloned().unwrap_or_default() {
        println!(
            "  delivery {} → {} {} after {} attempt(s)",
            d["id"].as_str().unwrap_or(""),
            d["plugin"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            d["attempts"]
        );
    }
    if let Some(u) = graph.users().into_iter().find(|u| u.mail.as_deref() == Some("alice@fabrikam.example")) {
        println!("  graph-guest  → Entra guest {} {} ({})", u.user_type, u.user_principal_name, u.id);
    }
    if let Some(m) = messages.iter().find(|m| m.contains("alice@fabrikam.example")) {
        println!("  chat-notify  → Slack: {m}");
    }
    let alice_record = records.iter().find(|r| r["event"]["uuid"] == alice["uuid"]);
    if let Some(r) = alice_record {
        println!("  siem-forward → HEC (Authorization: Splunk …): {r}");
    }

    let mut problems = Vec::new();
    let mut expected = vec!["alice@fabrikam.example".to_string(), "carol@fabrikam.example".to_string()];
    expected.sort();
    let mut got = guests.clone();
    got.sort();
    if got != expected {
        problems.push(format!("guests are {got:?}, expected {expected:?}"));
    }
    for v in &views {
        for d in v["deliveries"].as_array().cloned().unwrap_or_default() {
            if d["status"] != "done" {
                problems.push(format!("delivery {} is {}", d["id"], d["status"]));
            }
        }
    }
    let engineering: Vec<&str> = views[3]["deliveries"]
        .as_array()
        .map(|ds| ds.iter().filter_map(|d| d["plugin"].as_str()).collect())
        .unwrap_or_default();
    if engineering != ["siem-forward"] {
        problems.push(format!("the Engineering event reached {engineering:?}, expected only siem-forward"));
    }
    for v in views.iter().take(3) {
        if v["deliveries"].as_array().map_or(0, Vec::len) != 3 {
            problems.push(format!("event {} has not one delivery per plugin: {}", v["id"], v["deliveries"]));
        }
    }
    let expected_messages = [
        "Guest access granted: Alice Adams <alice@fabrikam.example> joined O365Guest",
        "Guest access granted: Bob Brown <bob@fabrikam.example> joined O365Guest",
        "Guest access granted: Carol Chen <carol@fabrikam.example> joined O365Guest",
        "Guest access removed: Bob Brown <bob@fabrikam.example> left O365Guest",
    ];
    let mut got_messages = messages.clone();
    got_messages.sort();
    if got_messages != expected_messages {
        problems.push(format!("Slack got {got_messages:?}, expected {expected_messages:?}"));
    }
    if records.len() != 5 || alice_record.is_none() {
        problems.push(format!("HEC got {} records, expected 5 (one per event, alice's among them)", records.len()));
    }
    if throttled == 0 {
        problems.push("the throttling burst was not exercised".into());
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("WRONG: {p}");
        }
        bail!("the demo outcome is wrong; see {log}");
    }
    println!();
    println!("OK: 2 guests invited, bob's guest removed, 4 Slack messages, 5 HEC records, duplicate stored once, Engineering only audited, throttling retried.");
    println!("Admin API: curl -H 'Authorization: Bearer {ADMIN_TOKEN}' {url}/api/plugins");
    println!();
    println!("Operator console: {url}/");
    println!("   sign in with the demo's admin token: {ADMIN_TOKEN}");
    println!("   (`[admin] token` in demo/host.toml; the page keeps it in that browser tab only)");
    if std::env::var("KEEP").is_ok_and(|v| v == "1") {
        println!("KEEP=1: the service, the Graph emulator and the webhook stand-ins keep running; Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    } else {
        println!("   `make demo KEEP=1` leaves the service running (until Ctrl-C) so you can open it.");
    }
    Ok(())
}
