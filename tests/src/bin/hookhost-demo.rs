//! `make demo`: the main job end to end on the embedded defaults, for someone with no Okta
//! or Azure tenant.
//!
//! Starts the Microsoft Graph emulator (in this process) and the real `hookhost serve`
//! (SQLite store in `./demo`), performs Okta's verification handshake, posts real-format
//! deliveries (three users added to `O365Guest`, the same delivery again, a user added to
//! another group, a user removed, and a throttling burst from Graph), waits until the queue
//! is idle, prints what happened, and exits 0 only if the outcome is right.
//! With `KEEP=1` the service stays up until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hookhost_tests::okta::{delivery, group_membership_event, timestamp, Membership};
use hookhost_tests::{Fault, GraphEmulator, TenantConfig};
use serde_json::Value;

const OKTA_SECRET: &str = "Basic ZGVtbzpkZW1vLXNlY3JldA==";
const ADMIN_TOKEN: &str = "demo-admin-token";

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn json(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let bytes = resp.bytes().await?;
    serde_json::from_slice(&bytes).with_context(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = root();
    let bin = root.join("target/release/hookhost");
    let bundle = root.join("dist/plugins");
    if !bin.exists() || !bundle.join("graph-guest.wasm").exists() {
        bail!("run `make build` first (needs target/release/hookhost and dist/plugins/graph-guest.*)");
    }
    let dir = root.join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins.d"))?;
    for f in ["graph-guest.wasm", "graph-guest.toml"] {
        std::fs::copy(bundle.join(f), dir.join("plugins.d").join(f))?;
    }

    println!("== Starting the Microsoft Graph emulator (tenant contoso.onmicrosoft.com)");
    let graph = GraphEmulator::start(TenantConfig::default()).await?;
    let base = graph.base_url();
    let member = graph.seed_member("it.admin@contoso.com", "IT Admin");
    println!("   {base}  (seeded Member it.admin@contoso.com, {member})");

    let port = free_port()?;
    let cfg = TenantConfig::default();
    std::fs::write(
        dir.join("host.toml"),
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
[okta]
auth_secret = {{ value = "{OKTA_SECRET}" }}
[store]
url = "sqlite://demo.db"
[dispatch.retry]
initial_backoff_ms = 200
[plugins]
dir = "plugins.d"
[admin]
token = {{ value = "{ADMIN_TOKEN}" }}
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
    )?;

    println!("== Starting hookhost serve --config demo/host.toml");
    let log = std::fs::File::create(dir.join("hookhost.log"))?;
    let child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(dir.join("host.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting hookhost")?;
    let _service = Service(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("hookhost did not become healthy; see demo/hookhost.log");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("   ready in {} ms at {url}", started.elapsed().as_millis());

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
            group_membership_event(Membership::Add, id, login, name, "00gO365", "O365Guest", &timestamp(-60_000 + i as i64))
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
    let other = group_membership_event(Membership::Add, "00udemo4", "dave@fabrikam.example", "Dave Diaz", "00gENG", "Engineering", &timestamp(-50_000));
    println!("== POST: dave added to Engineering (no plugin subscribed) → {}", post(delivery(vec![other.clone()])).await?);
    let removal = group_membership_event(Membership::Remove, "00udemo2", "bob@fabrikam.example", "Bob Brown", "00gO365", "O365Guest", &timestamp(-40_000));
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
            bail!("queue did not drain in 60 s; see demo/hookhost.log");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    println!();
    println!("{:<38} {:<30} {:<24} {:<12} {:<6} {:>8}", "event", "type", "user", "group", "status", "attempts");
    for (e, v) in all.iter().zip(&views) {
        let user = e["target"].as_array().and_then(|t| t.iter().find(|x| x["type"] == "User")).map(|u| u["alternateId"].as_str().unwrap_or("")).unwrap_or("");
        let group = e["target"].as_array().and_then(|t| t.iter().find(|x| x["type"] == "UserGroup")).map(|g| g["displayName"].as_str().unwrap_or("")).unwrap_or("");
        let ds = v["deliveries"].as_array().cloned().unwrap_or_default();
        if ds.is_empty() {
            println!("{:<38} {:<30} {:<24} {:<12} {:<6} {:>8}", v["id"].as_str().unwrap_or(""), v["event_type"].as_str().unwrap_or(""), user, group, "(none)", "-");
        }
        for d in ds {
            println!(
                "{:<38} {:<30} {:<24} {:<12} {:<6} {:>8}",
                v["id"].as_str().unwrap_or(""),
                v["event_type"].as_str().unwrap_or(""),
                user,
                group,
                d["status"].as_str().unwrap_or(""),
                d["attempts"]
            );
        }
    }

    println!();
    println!("Accounts now in the emulated tenant:");
    let guests: Vec<String> = graph.users().into_iter().filter(|u| u.user_type == "Guest").filter_map(|u| u.mail).collect();
    for u in graph.users() {
        println!("  {:<8} {:<28} {}", u.user_type, u.mail.as_deref().unwrap_or("-"), u.user_principal_name);
    }
    let throttled = graph.journal().iter().filter(|j| j.status == 429).count();
    println!("Graph answered 429 to {throttled} request(s); each was retried after Retry-After.");

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
    if views[3]["deliveries"].as_array().is_some_and(|d| !d.is_empty()) {
        problems.push("the Engineering event got a delivery".into());
    }
    if throttled == 0 {
        problems.push("the throttling burst was not exercised".into());
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("WRONG: {p}");
        }
        bail!("the demo outcome is wrong; see demo/hookhost.log");
    }
    println!();
    println!("OK: 2 guests invited, bob's guest removed, duplicate stored once, Engineering ignored, throttling retried.");
    println!("Admin API: curl -H 'Authorization: Bearer {ADMIN_TOKEN}' {url}/api/plugins");
    if std::env::var("KEEP").is_ok_and(|v| v == "1") {
        println!("KEEP=1: service left running at {url}; Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}
