//! `make bench BENCH=reload`: how fast a dropped-in bundle goes live, and how fast the
//! service starts with a cold and with a warm compiled-artifact cache.
//!
//! Everything runs against the real `target/release/hookhost serve` with the graph-guest
//! bundle (built by `make build`):
//!
//! - start: spawn to `/healthz` answering 200 (the bundles present at start are in service
//!   by then), with an empty cache directory (cold: graph-guest is compiled) and with the
//!   cache the previous start left (warm: deserialized). Median of several starts each.
//! - swap: the recommended deploy (write `graph-guest.{wasm,toml}.tmp` beside, rename both
//!   over the bundle) to `/api/plugins` reporting the new version, polled every 5 ms.
//!   Each of the 20 swaps brings a new manifest version and the other of two wasm builds
//!   (the same plugin with a different custom section, so a different sha256), both
//!   compiled once before measuring: the path of a redeploy or a rollback to a build the
//!   host has seen. A build never seen before also pays for compiling it; that is measured
//!   separately (3 swaps) and printed on the line before the JSON.
//!
//! Last line: `{"bench":"reload","swap_p50_ms":…,"swap_max_ms":…,"start_cold_ms":…,"start_warm_ms":…}`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hookhost_tests::serve::{free_port, wasm as wasm_path, wasm_variant, workspace, ServeProcess, ServeSetup};

const ADMIN: &str = "bench-admin";
const SWAPS: usize = 20;
const COLD_STARTS: usize = 3;
const WARM_STARTS: usize = 5;
const POLL: Duration = Duration::from_millis(5);

struct Bench {
    dir: tempfile::TempDir,
    port: u16,
    setup: ServeSetup,
    http: reqwest::Client,
}

impl Bench {
    fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins.d")
    }

    /// Spawns serve; returns it and the time from spawn to `/healthz` 200.
    async fn start(&self) -> (ServeProcess, Duration) {
        let t = Instant::now();
        let serve = ServeProcess::spawn(self.dir.path(), self.port, self.setup.clone(), Duration::from_secs(60))
            .await
            .expect("hookhost serve starts");
        let ready = t.elapsed();
        let v = self.version(&serve).await;
        assert!(v.is_some(), "graph-guest is not active after start");
        (serve, ready)
    }

    /// graph-guest's version if it is active.
    async fn version(&self, serve: &ServeProcess) -> Option<String> {
        let r = self.http.get(format!("{}/api/plugins", serve.url)).bearer_auth(ADMIN).send().await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
        let p = v["plugins"].as_array()?.iter().find(|p| p["name"] == "graph-guest")?.clone();
        (p["state"] == "active").then(|| p["version"].as_str().map(str::to_owned))?
    }

    /// Deploys (write beside, rename) and returns the time until the version serves.
    async fn swap(&self, serve: &ServeProcess, wasm: &[u8], manifest: &str, version: &str) -> Duration {
        let dir = self.plugins();
        let manifest = manifest.replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
        std::fs::write(dir.join("graph-guest.wasm.tmp"), wasm).expect("write wasm");
        std::fs::write(dir.join("graph-guest.toml.tmp"), manifest).expect("write manifest");
        let t = Instant::now();
        std::fs::rename(dir.join("graph-guest.wasm.tmp"), dir.join("graph-guest.wasm")).expect("rename wasm");
        std::fs::rename(dir.join("graph-guest.toml.tmp"), dir.join("graph-guest.toml")).expect("rename manifest");
        loop {
            if self.version(serve).await.as_deref() == Some(version) {
                return t.elapsed();
            }
            if t.elapsed() > Duration::from_secs(60) {
                panic!("version {version} never served:\n{}", serve.run_log());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wasm = std::fs::read(wasm_path("graph-guest")).expect("read wasm");
    let manifest =
        std::fs::read_to_string(workspace().join("plugins/graph-guest/graph-guest.toml")).expect("read manifest");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    std::fs::create_dir_all(dir.path().join("plugins.d")).expect("plugins.d");
    std::fs::write(dir.path().join("plugins.d/graph-guest.wasm"), &wasm).expect("bundle");
    std::fs::write(dir.path().join("plugins.d/graph-guest.toml"), &manifest).expect("bundle");
    let setup =
        ServeSetup { okta_secret: "Basic YmVuY2g6YmVuY2g=".into(), admin_token: ADMIN.into(), ..ServeSetup::plain() };
    setup.write(dir.path(), port, None).expect("host.toml");
    let bench = Bench { dir, port, setup, http: reqwest::Client::new() };
    let cache = bench.plugins().join(".cache");

    let mut cold = Vec::new();
    for _ in 0..COLD_STARTS {
        let _ = std::fs::remove_dir_all(&cache);
        let (serve, t) = bench.start().await;
        cold.push(t);
        drop(serve);
    }
    let mut warm = Vec::new();
    for _ in 0..WARM_STARTS {
        let (serve, t) = bench.start().await;
        warm.push(t);
        drop(serve);
    }
    println!("start cold (ms): {:?}", cold.iter().map(|d| ms(*d)).collect::<Vec<_>>());
    println!("start warm (ms): {:?}", warm.iter().map(|d| ms(*d)).collect::<Vec<_>>());

    let (serve, _) = bench.start().await;
    let builds = [wasm.clone(), wasm_variant(&wasm, "b")];
    // Both builds compiled (and cached) once before measuring.
    bench.swap(&serve, &builds[1], &manifest, "0.1.1").await;
    bench.swap(&serve, &builds[0], &manifest, "0.1.2").await;
    let mut swaps = Vec::new();
    for i in 0..SWAPS {
        let version = format!("0.2.{i}");
        swaps.push(bench.swap(&serve, &builds[(i + 1) % 2], &manifest, &version).await);
    }
    println!("swap, seen build (ms): {:?}", swaps.iter().map(|d| ms(*d)).collect::<Vec<_>>());
    let mut fresh = Vec::new();
    for i in 0..3 {
        let new_build = wasm_variant(&wasm, &format!("fresh-{i}-{}", fastrand::u64(..)));
        fresh.push(bench.swap(&serve, &new_build, &manifest, &format!("0.3.{i}")).await);
    }
    println!("swap, never-seen build (compiles; ms): {:?}", fresh.iter().map(|d| ms(*d)).collect::<Vec<_>>());
    drop(serve);

    let max = swaps.iter().max().copied().unwrap_or_default();
    println!(
        "{{\"bench\":\"reload\",\"swap_p50_ms\":{},\"swap_max_ms\":{},\"start_cold_ms\":{},\"start_warm_ms\":{}}}",
        ms(median(swaps)),
        ms(max),
        ms(median(cold)),
        ms(median(warm))
    );
}
