//! `make bench BENCH=burst`: the day a group rule adds thousands of users at once, against a
//! Graph that enforces a write quota, with and without a `[[plugins.graph-guest.pace]]` rule.
//!
//! Each phase: a fresh Graph emulator, a fresh `hookhost serve` (SQLite) running graph-guest
//! against it. After a warm-up (plugin compiled, app token cached), the emulator's write
//! quota is set to `R` writes/s (bucket of `R`, as Graph lets a short burst through), then
//! `N` users are added at once (Okta deliveries of 50 events, each user different). The
//! clock runs from the first post until the store counts every delivery finished.
//!
//! An invitation is one write (`POST /v1.0/invitations`; the two lookups are reads and the
//! token endpoint is not Graph), so `ideal_s = N / R`. Paced: a pace rule of `R`/s on writes
//! with a small burst (`R / 10`); the goal is `paced_s / ideal_s <= 1.10`, no dead delivery
//! and at most 1 % of the writes answered 429. Unpaced: only the shared 429 cooldown.
//!
//! `HOOKHOST_BENCH_BURST_USERS` (default 2000) and `HOOKHOST_BENCH_BURST_RATE` (writes/s,
//! default 200) change `N` and `R`. Last line:
//! `{"bench":"burst","users","limit_per_sec","ideal_s","paced_s","ratio","throttled","dead","unpaced_s","unpaced_throttled"}`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookhost_tests::okta::{delivery, group_membership_event, timestamp, Membership};
use hookhost_tests::{GraphEmulator, TenantConfig};

const SECRET: &str = "Basic YmVuY2g6YmVuY2g=";
const ADMIN: &str = "bench-admin";
const WARMUP: usize = 5;
/// Events per Okta delivery (Okta batches up to 50).
const BATCH: usize = 50;
/// Writes graph-guest makes per new user (the invitation).
const WRITES_PER_ADD: usize = 1;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

fn required(p: PathBuf) -> PathBuf {
    assert!(p.exists(), "{} is missing: run `make build` first (make bench does)", p.display());
    p
}

fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

/// A `hookhost serve` process, killed when dropped.
struct Host {
    child: Child,
    url: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_host(dir: &Path, graph: &GraphEmulator, pace: Option<f64>) -> Host {
    let port = free_port();
    std::fs::create_dir_all(dir.join("plugins.d")).unwrap();
    std::fs::copy(required(workspace().join("dist/plugins/graph-guest.wasm")), dir.join("plugins.d/graph-guest.wasm"))
        .unwrap();
    std::fs::copy(workspace().join("dist/plugins/graph-guest.toml"), dir.join("plugins.d/graph-guest.toml")).unwrap();
    let base = graph.base_url();
    let cfg = graph.config();
    let pace = match pace {
        Some(rate) => format!(
            "[[plugins.graph-guest.pace]]\norigin = \"{base}\"\nper_second = {rate}\nburst = {}\nmethods = [\"POST\", \"PATCH\", \"DELETE\"]\n",
            ((rate / 10.0).ceil() as u32).max(1)
        ),
        None => String::new(),
    };
    std::fs::write(
        dir.join("host.toml"),
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
[okta]
auth_secret = {{ value = {SECRET:?} }}
[store]
url = "sqlite://state/hookhost.db"
[dispatch]
max_concurrency = 32
[plugins]
dir = "plugins.d"
watch = false
[admin]
token = {{ value = {ADMIN:?} }}
[plugins.graph-guest]
allowed_hosts = ["{base}"]
[plugins.graph-guest.config]
graph_url = "{base}"
login_url = "{base}"
[plugins.graph-guest.secrets]
tenant_id = {{ value = {:?} }}
client_id = {{ value = {:?} }}
client_secret = {{ value = {:?} }}
{pace}"#,
            cfg.tenant_id, cfg.client_id, cfg.client_secret
        ),
    )
    .unwrap();
    let child = Command::new(required(workspace().join("target/release/hookhost")))
        .args(["serve", "--config"])
        .arg(dir.join("host.toml"))
        .env("HOOKHOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .expect("spawn hookhost serve");
    let host = Host { child, url: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    let t = Instant::now();
    while !matches!(http.get(format!("{}/healthz", host.url)).send().await, Ok(r) if r.status().is_success()) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "serve did not start: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host
}

/// Deliveries the store counts in `status`.
async fn count(http: &reqwest::Client, host: &Host, status: &str) -> usize {
    let text = match http.get(format!("{}/metrics", host.url)).bearer_auth(ADMIN).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    let label = format!("status=\"{status}\"");
    text.lines()
        .filter(|l| l.starts_with("hookhost_deliveries_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Posts users `first..first + n` in deliveries of [`BATCH`], then waits until the store
/// counts `first + n` deliveries done or dead. Returns the elapsed time.
async fn run(host: &Host, first: usize, n: usize) -> Duration {
    let http = reqwest::Client::new();
    let t = Instant::now();
    let users: Vec<usize> = (first..first + n).collect();
    for chunk in users.chunks(BATCH) {
        let events = chunk
            .iter()
            .map(|i| {
                group_membership_event(
                    Membership::Add,
                    &format!("00uburst{i}"),
                    &format!("burst{i}@burst.example"),
                    &format!("Burst {i}"),
                    "00gO365",
                    "O365Guest",
                    &timestamp(-1000),
                )
            })
            .collect();
        let r = http
            .post(format!("{}/hooks/okta", host.url))
            .header("authorization", SECRET)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&delivery(events)).unwrap())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200);
    }
    loop {
        if count(&http, host, "done").await + count(&http, host, "dead").await >= first + n {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(1800), "deliveries did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Phase {
    secs: f64,
    throttled: u64,
    accepted: u64,
    dead: usize,
}

async fn phase(label: &str, users: usize, rate: f64, paced: bool) -> Phase {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), &graph, paced.then_some(rate)).await;
    run(&host, 0, WARMUP).await;
    graph.set_write_quota(rate, rate.ceil() as u32);
    let before = graph.write_counts();
    let elapsed = run(&host, WARMUP, users).await;
    let after = graph.write_counts();
    let dead = count(&reqwest::Client::new(), &host, "dead").await;
    let guests = graph.users().len();
    let p = Phase {
        secs: elapsed.as_secs_f64(),
        throttled: after.throttled - before.throttled,
        accepted: after.accepted - before.accepted,
        dead,
    };
    println!(
        "{label}: {users} users in {:.2} s; writes accepted {}, answered 429 {}; dead {dead}; guests {guests}",
        p.secs, p.accepted, p.throttled
    );
    drop(host);
    p
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users = env_number("HOOKHOST_BENCH_BURST_USERS", 2000.0) as usize;
    let rate = env_number("HOOKHOST_BENCH_BURST_RATE", 200.0);
    assert!(users >= 1 && rate > 0.0, "HOOKHOST_BENCH_BURST_USERS and _RATE must be positive");
    let ideal = (users * WRITES_PER_ADD) as f64 / rate;
    let paced = phase("paced", users, rate, true).await;
    let unpaced = phase("unpaced", users, rate, false).await;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "burst",
            "users": users,
            "limit_per_sec": rate,
            "ideal_s": round(ideal),
            "paced_s": round(paced.secs),
            "ratio": round(paced.secs / ideal),
            "throttled": paced.throttled,
            "dead": paced.dead,
            "unpaced_s": round(unpaced.secs),
            "unpaced_throttled": unpaced.throttled,
        })
    );
}
