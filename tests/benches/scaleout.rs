//! `make bench BENCH=scaleout`: end-to-end events per second with one `hookhost serve` and
//! with two on the same PostgreSQL database, in one run.
//!
//! Each phase: a fresh database (on the `scripts/test-postgres` server, or
//! `HOOKHOST_TEST_PG_URL`), a fresh Graph emulator, real `hookhost serve` processes running
//! graph-guest against it. After a warm-up (plugin compiled, connections open), `EVENTS`
//! Okta deliveries — one `group.user_membership.add` each, every one a different user so
//! per-user ordering never holds work back — are posted by 16 concurrent senders, spread
//! round-robin over the hosts. The clock stops when the store counts every delivery done.
//! events/s = EVENTS / (first post → last done).
//!
//! Everything (hosts, emulator, PostgreSQL, senders) shares this machine's cores, so the
//! ratio says how much a second host adds *here*; see the issue note for where the limit is.
//! Last line: `{"bench":"scaleout","one_host_eps":…,"two_hosts_eps":…,"ratio":…}`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost::store::postgres::testing::TestDatabase;
use hookhost_tests::okta::{delivery, group_membership_event, timestamp, Membership};
use hookhost_tests::serve::{free_port, graph_guest_tables, install_dist, ServeProcess, ServeSetup};
use hookhost_tests::{GraphEmulator, TenantConfig};

const EVENTS: usize = 3000;
const WARMUP: usize = 40;
const SENDERS: usize = 16;
const SECRET: &str = "Basic YmVuY2g6YmVuY2g=";
const ADMIN: &str = "bench-admin";

async fn start_host(dir: &Path, graph: &GraphEmulator, store_url: &str) -> ServeProcess {
    let port = free_port();
    install_dist(&dir.join("plugins.d"), "graph-guest").unwrap_or_else(|e| panic!("{e:#}"));
    let setup = ServeSetup {
        okta_secret: SECRET.into(),
        admin_token: ADMIN.into(),
        store_url: Some(store_url.into()),
        dispatch_extra: "max_concurrency = 32\n".into(),
        plugins_extra: "watch = false\n".into(),
        extra: graph_guest_tables(graph),
        log_filter: Some("warn".into()),
        ..ServeSetup::plain()
    };
    setup.write(dir, port, None).expect("host.toml");
    ServeProcess::spawn(dir, port, setup, Duration::from_secs(60)).await.expect("hookhost serve starts")
}

/// Deliveries the store counts done (a gauge every host reads from the shared store).
async fn done(http: &reqwest::Client, host: &ServeProcess) -> usize {
    let text = match http.get(format!("{}/metrics", host.url)).bearer_auth(ADMIN).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .filter(|l| l.starts_with("hookhost_deliveries_total{") && l.contains("status=\"done\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Posts deliveries for users `first..first + n`, spread over `hosts`, then waits until the
/// store counts `expect_done` deliveries done. Returns the elapsed time.
async fn run(hosts: &[ServeProcess], first: usize, n: usize, expect_done: usize) -> Duration {
    let http = reqwest::Client::new();
    let urls: Arc<Vec<String>> = Arc::new(hosts.iter().map(|h| h.url.clone()).collect());
    let next = Arc::new(AtomicUsize::new(first));
    let t = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (http, urls, next) = (http.clone(), urls.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= first + n {
                    return;
                }
                let event = group_membership_event(
                    Membership::Add,
                    &format!("00ubench{i}"),
                    &format!("bench{i}@scale.example"),
                    &format!("Bench {i}"),
                    "00gO365",
                    "O365Guest",
                    &timestamp(-1000),
                );
                let body = serde_json::to_vec(&delivery(vec![event])).unwrap();
                let r = http
                    .post(format!("{}/hooks/okta", urls[i % urls.len()]))
                    .header("authorization", SECRET)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 200);
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    loop {
        if done(&http, &hosts[0]).await >= expect_done {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(600), "deliveries did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU seconds a process has used (utime + stime from `/proc/<pid>/stat`; 100 ticks/s).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by every running `postgres` process (server and backends).
fn postgres_cpu() -> f64 {
    let mut sum = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.bytes().all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        {
            sum += cpu_secs(&pid);
        }
    }
    sum
}

/// Busy and total CPU seconds of the whole machine so far (`/proc/stat`).
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

async fn phase(label: &str, hosts_n: usize) -> f64 {
    let db = TestDatabase::create(&format!("bench_{label}")).unwrap_or_else(|e| panic!("{e}"));
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..hosts_n).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hosts = Vec::new();
    for d in &dirs {
        hosts.push(start_host(d.path(), &graph, &db.url).await);
    }
    run(&hosts, 0, WARMUP, WARMUP).await;
    let pids: Vec<String> = hosts.iter().map(|h| h.child.id().to_string()).collect();
    let hosts_cpu = |pids: &[String]| pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let (h0, b0, p0, m0) = (hosts_cpu(&pids), cpu_secs("self"), postgres_cpu(), machine_cpu());
    let elapsed = run(&hosts, WARMUP, EVENTS, WARMUP + EVENTS).await;
    let (h1, b1, p1, m1) = (hosts_cpu(&pids), cpu_secs("self"), postgres_cpu(), machine_cpu());
    let (busy, total) = (m1.0 - m0.0, m1.1 - m0.1);
    let per_k = |secs: f64| secs * 1000.0 / EVENTS as f64;
    println!(
        "{label}: CPU s per 1000 events: hookhost {:.2}, PostgreSQL {:.2}, emulator+senders {:.2}, anything else {:.2}; machine busy {:.0}%",
        per_k(h1 - h0),
        per_k(p1 - p0),
        per_k(b1 - b0),
        per_k(busy - (h1 - h0) - (p1 - p0) - (b1 - b0)),
        100.0 * busy / total.max(0.001),
    );
    let guests = graph.users().len();
    assert_eq!(guests, WARMUP + EVENTS, "every event made one guest");
    let eps = EVENTS as f64 / elapsed.as_secs_f64();
    println!("{label}: {hosts_n} host(s), {EVENTS} events in {:.2} s = {eps:.0} events/s", elapsed.as_secs_f64());
    drop(hosts);
    eps
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let one = phase("one", 1).await;
    let two = phase("two", 2).await;
    println!(
        "{}",
        serde_json::json!({
            "bench": "scaleout",
            "one_host_eps": (one * 10.0).round() / 10.0,
            "two_hosts_eps": (two * 10.0).round() / 10.0,
            "ratio": (two / one * 100.0).round() / 100.0,
        })
    );
}
