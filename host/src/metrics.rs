//! Process metrics, rendered as Prometheus text by the API.
//!
//! Counters live here (ingest responses, attempt durations, plugin compiles and artifact
//! cache loads); delivery counts and queue depth are read from the store at scrape time, so
//! they are right across restarts and hosts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the attempt-duration histogram buckets.
const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Counters of this process.
#[derive(Default)]
pub struct Metrics {
    ingest: Mutex<BTreeMap<u16, u64>>,
    attempts: Mutex<BTreeMap<String, Histogram>>,
    /// Components compiled from `.wasm` by this process (a warm restart compiles none).
    plugin_compiles: AtomicU64,
    /// Components loaded from the compiled-artifact cache instead.
    plugin_cache_loads: AtomicU64,
    /// Bundles refused on load or reload (the previous version, if any, kept serving).
    plugin_load_failures: AtomicU64,
    /// Events stored for the first time, by how they arrived.
    events_ingested: Mutex<BTreeMap<&'static str, u64>>,
    /// When the System Log poller last had an answer from Okta (Unix milliseconds; 0: never).
    backfill_last_poll_ms: AtomicU64,
    /// Times each plugin's guard tripped (began holding deliveries) on this process.
    guard_trips: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Counts one answer of the Okta endpoint.
    pub fn ingest_response(&self, code: u16) {
        if let Ok(mut m) = self.ingest.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    /// Counts events stored for the first time (duplicates are not counted).
    pub fn events_ingested(&self, source: crate::store::Source, n: u64) {
        if let Ok(mut m) = self.events_ingested.lock() {
            *m.entry(source.as_str()).or_default() += n;
        }
    }

    /// Records that the System Log poller got an answer from Okta at `at`.
    pub fn backfill_polled(&self, at: chrono::DateTime<chrono::Utc>) {
        self.backfill_last_poll_ms.store(u64::try_from(at.timestamp_millis()).unwrap_or(0), Ordering::Relaxed);
    }

    /// Counts one trip of `plugin`'s guard (the first delivery it held).
    pub fn guard_tripped(&self, plugin: &str) {
        if let Ok(mut m) = self.guard_trips.lock() {
            *m.entry(plugin.to_owned()).or_default() += 1;
        }
    }

    /// Counts one component compiled from its `.wasm`.
    pub fn plugin_compiled(&self) {
        self.plugin_compiles.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one component loaded from the compiled-artifact cache.
    pub fn plugin_loaded_from_cache(&self) {
        self.plugin_cache_loads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refused bundle.
    pub fn plugin_load_failed(&self) {
        self.plugin_load_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Components compiled so far.
    pub fn plugin_compiles(&self) -> u64 {
        self.plugin_compiles.load(Ordering::Relaxed)
    }

    /// Records one attempt's duration for `plugin`.
    pub fn observe_attempt(&self, plugin: &str, seconds: f64) {
        if let Ok(mut m) = self.attempts.lock() {
            let h = m
                .entry(plugin.to_owned())
                .or_insert_with(|| Histogram { counts: vec![0; BUCKETS.len()], ..Histogram::default() });
            for (i, le) in BUCKETS.iter().enumerate() {
                if seconds <= *le {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// Prometheus text; `deliveries` is (plugin, status, count) from the store.
    pub fn render(&self, deliveries: &[(String, &str, u64)], host_id: &str) -> String {
        let mut out = String::new();
        let host = escape(host_id);
        out.push_str("# HELP hookhost_ingest_requests_total Answers of the Okta endpoint by HTTP status.\n");
        out.push_str("# TYPE hookhost_ingest_requests_total counter\n");
        if let Ok(m) = self.ingest.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(out, "hookhost_ingest_requests_total{{host=\"{host}\",code=\"{code}\"}} {n}");
            }
        }
        for (name, help, counter) in [
            (
                "hookhost_plugin_compiles_total",
                "Plugin components compiled from .wasm by this process.",
                &self.plugin_compiles,
            ),
            (
                "hookhost_plugin_cache_loads_total",
                "Plugin components loaded from the compiled-artifact cache.",
                &self.plugin_cache_loads,
            ),
            (
                "hookhost_plugin_load_failures_total",
                "Plugin bundles refused on load or reload.",
                &self.plugin_load_failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{host=\"{host}\"}} {}", counter.load(Ordering::Relaxed));
        }
        out.push_str("# HELP hookhost_events_ingested_total Events stored for the first time, by how they arrived.\n");
        out.push_str("# TYPE hookhost_events_ingested_total counter\n");
        if let Ok(m) = self.events_ingested.lock() {
            for source in crate::store::Source::ALL {
                let n = m.get(source.as_str()).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "hookhost_events_ingested_total{{host=\"{host}\",source=\"{}\"}} {n}",
                    source.as_str()
                );
            }
        }
        let last = self.backfill_last_poll_ms.load(Ordering::Relaxed);
        if last > 0 {
            out.push_str(
                "# HELP hookhost_backfill_last_poll_timestamp_seconds When the System Log poller last had an answer from Okta.\n",
            );
            out.push_str("# TYPE hookhost_backfill_last_poll_timestamp_seconds gauge\n");
            let _ = writeln!(
                out,
                "hookhost_backfill_last_poll_timestamp_seconds{{host=\"{host}\"}} {}",
                last as f64 / 1000.0
            );
        }
        out.push_str("# HELP hookhost_deliveries_total Deliveries by plugin and current status.\n");
        out.push_str("# TYPE hookhost_deliveries_total gauge\n");
        let mut depth: BTreeMap<&str, u64> = BTreeMap::new();
        for (plugin, status, n) in deliveries {
            let _ = writeln!(
                out,
                "hookhost_deliveries_total{{host=\"{host}\",plugin=\"{}\",status=\"{status}\"}} {n}",
                escape(plugin)
            );
            let d = depth.entry(plugin.as_str()).or_default();
            if matches!(*status, "pending" | "retrying" | "running") {
                *d += n;
            }
        }
        out.push_str("# HELP hookhost_queue_depth Deliveries not finished yet (pending, retrying, running).\n");
        out.push_str("# TYPE hookhost_queue_depth gauge\n");
        for (plugin, n) in &depth {
            let _ = writeln!(out, "hookhost_queue_depth{{host=\"{host}\",plugin=\"{}\"}} {n}", escape(plugin));
        }
        out.push_str(
            "# HELP hookhost_deliveries_held Deliveries the plugin's guard holds for an operator's decision.\n",
        );
        out.push_str("# TYPE hookhost_deliveries_held gauge\n");
        for plugin in depth.keys() {
            let n: u64 = deliveries.iter().filter(|(p, s, _)| p == plugin && *s == "held").map(|(_, _, n)| n).sum();
            let _ = writeln!(out, "hookhost_deliveries_held{{host=\"{host}\",plugin=\"{}\"}} {n}", escape(plugin));
        }
        out.push_str("# HELP hookhost_guard_trips_total Times a plugin's guard tripped (began holding deliveries) on this process.\n");
        out.push_str("# TYPE hookhost_guard_trips_total counter\n");
        if let Ok(m) = self.guard_trips.lock() {
            for (plugin, n) in m.iter() {
                let _ =
                    writeln!(out, "hookhost_guard_trips_total{{host=\"{host}\",plugin=\"{}\"}} {n}", escape(plugin));
            }
        }
        out.push_str("# HELP hookhost_attempt_duration_seconds Duration of plugin attempts.\n");
        out.push_str("# TYPE hookhost_attempt_duration_seconds histogram\n");
        if let Ok(m) = self.attempts.lock() {
            for (plugin, h) in m.iter() {
                let p = escape(plugin);
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "hookhost_attempt_duration_seconds_bucket{{host=\"{host}\",plugin=\"{p}\",le=\"{le}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "hookhost_attempt_duration_seconds_bucket{{host=\"{host}\",plugin=\"{p}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ =
                    writeln!(out, "hookhost_attempt_duration_seconds_sum{{host=\"{host}\",plugin=\"{p}\"}} {}", h.sum);
                let _ = writeln!(
                    out,
                    "hookhost_attempt_duration_seconds_count{{host=\"{host}\",plugin=\"{p}\"}} {}",
                    h.count
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
