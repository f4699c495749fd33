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

use std::path::Path;
use std::time::{Duration, Instant};

use hookhost_tests::okta::{delivery, group_membership_event, timestamp, Membership};
use hookhost_tests::serve::{free_port, graph_guest_tables, install_dist, ServeProcess, ServeSetup};
use hookhost_tests::{GraphEmulator, TenantConfig};

const SECRET: &str = "Basic YmVuY2g6YmVuY2g=";
const ADMIN: &str = "bench-admin";
const WARMUP: usize = 5;
/// Events per Okta delivery (Okta batches up to 50).
const BATCH: usize = 50;
/// Writes graph-guest makes per new user (the invitation).
const WRITES_PER_ADD: usize = 1;

fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

async fn start_host(dir: &Path, graph: &GraphEmulator, pace: Option<f64>) -> ServeProcess {
    let port = free_port();
    install_dist(&dir.join("plugins.d"), "graph-guest").unwrap_or_else(|e| panic!("{e:#}"));
    let pace = match pace {
        Some(rate) => format!(
            "[[plugins.graph-guest.pace]]\norigin = \"{}\"\nper_second = {rate}\nburst = {}\nmethods = [\"POST\", \"PATCH\", \"DELETE\"]\n",
            graph.base_url(),
            ((rate / 10.0).ceil() as u32).max(1)
        ),
        None => String::new(),
    };
    let setup = ServeSetup {
        okta_secret: SECRET.into(),
        admin_token: ADMIN.into(),
        dispatch_extra: "max_concurrency = 32\n".into(),
        plugins_extra: "watch = false\n".into(),
        extra: format!("{}{pace}", graph_guest_tables(graph)),
        log_filter: Some("warn".into()),
        ..ServeSetup::plain()
    };
    setup.write(dir, port, None).expect("host.toml");
    ServeProcess::spawn(dir, port, setup, Duration::from_secs(60)).await.expect("hookhost serve starts")
}

/// Deliveries the store counts in `status`.
async fn count(http: &reqwest::Client, host: &ServeProcess, status: &str) -> usize {
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
async fn run(host: &ServeProcess, first: usize, n: usize) -> Duration {
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
