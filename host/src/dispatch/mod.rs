//! Dispatch: claims due deliveries, runs each on its plugin, and records where it goes next.
//!
//! One claim loop per process. Each turn it returns expired leases to pending (a crashed
//! host's work), claims up to its free worker slots, and starts one task per claim; then it
//! sleeps until [`Dispatcher::notify`] (ingest committed new deliveries), a task finishes
//! (which may unblock the same user's next event), or [`POLL`] passes (retries coming due,
//! other hosts' expired leases). Ordering per (plugin, user) and the per-plugin concurrency
//! cap are enforced by the store's claim, so they hold across hosts sharing one store.
//!
//! A claim is a lease: the task renews it every third of `lease_secs` while the plugin
//! runs, so only a dead host's work is ever taken over. If the renewal finds the claim gone
//! (this host stalled past its lease and another took it), the attempt is dropped
//! unrecorded; the new owner's attempt is the one that counts.
//!
//! Store calls are blocking transactions, so they run on the blocking pool ([`AsyncStore::run`]).

pub mod retry;
mod run;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::config::DispatchConfig;
use crate::metrics::Metrics;
use crate::registry::PluginSet;
use crate::runtime::Runtime;
use crate::store::{AsyncStore, Store, StoreError};

/// How often the loop looks for due work when nothing woke it: the worst-case delay of a
/// retry coming due or of taking over another host's expired lease. Cheap (one indexed
/// query), and short next to any backoff.
pub const POLL: Duration = Duration::from_millis(250);

/// What the dispatcher works with.
pub struct DispatchDeps {
    pub store: Arc<dyn Store>,
    /// The plugins in service; a delivery whose plugin is absent waits (pending).
    pub plugins: Arc<PluginSet>,
    pub runtime: Arc<Runtime>,
    pub config: DispatchConfig,
    /// Names this process's claims (leases); unique per running host.
    pub host_id: String,
    /// Where attempt durations are recorded (delivery counts come from the store).
    pub metrics: Arc<Metrics>,
}

/// What every attempt task shares.
struct Shared {
    store: Arc<dyn Store>,
    plugins: Arc<PluginSet>,
    runtime: Arc<Runtime>,
    config: DispatchConfig,
    host_id: String,
    /// `lease_secs`, at least one second.
    lease: Duration,
    metrics: Arc<Metrics>,
}

/// The running claim loop. Stop it with [`Dispatcher::shutdown`]; dropping the handle
/// stops it too, without grace.
pub struct Dispatcher {
    notify: Arc<Notify>,
    stop: oneshot::Sender<Duration>,
    task: JoinHandle<()>,
}

impl Dispatcher {
    /// Spawns the claim loop on the current tokio runtime. Returns a handle.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(deps: DispatchDeps) -> Dispatcher {
        let shared = Arc::new(Shared {
            lease: Duration::from_secs(deps.config.lease_secs.max(1)),
            store: deps.store,
            plugins: deps.plugins,
            runtime: deps.runtime,
            config: deps.config,
            host_id: deps.host_id,
            metrics: deps.metrics,
        });
        let notify = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(claim_loop(shared, notify.clone(), stopped));
        Dispatcher { notify, stop, task }
    }

    /// Wake the loop now (what the [`Dispatcher::waker`] closure does; the tests call it
    /// directly). A wake-up while the loop is busy is kept for its next wait, so none is lost.
    #[cfg(test)]
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    /// A closure that wakes the loop now and outlives this handle, for ingest and the replay
    /// endpoint to keep (they call it after committing new deliveries). A wake-up while the
    /// loop is busy is kept for its next wait, so none is lost.
    pub fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let notify = self.notify.clone();
        Arc::new(move || notify.notify_one())
    }

    /// Stop claiming; wait up to `grace` for running attempts; release the claims of
    /// attempts still running (back to pending) so nothing waits for a lease.
    pub async fn shutdown(self, grace: Duration) {
        // The loop may already have ended (it cannot, short of a panic); nothing to tell it.
        let _ = self.stop.send(grace);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the dispatch loop ended abnormally");
        }
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn report(finished: Result<(), JoinError>) {
    if let Err(e) = finished {
        if e.is_panic() {
            // Its claim stays running until the lease expires, then runs again.
            tracing::error!(error = %e, "an attempt task panicked; its delivery returns to pending when its lease expires");
        }
    }
}

async fn claim_loop(ctx: Arc<Shared>, notify: Arc<Notify>, mut stop: oneshot::Receiver<Duration>) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    // Whatever this host had claimed before it restarted is not running any more.
    let host = ctx.host_id.clone();
    match ctx.store.run(move |s| s.release_claims(now(), Some(&host))).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(released = n, host = %ctx.host_id, "took back this host's claims from before the restart")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot take back this host's earlier claims; they return when their leases expire")
        }
    }

    // The sweep for expired leases runs at most once per POLL, not after every finished
    // attempt: leases are whole seconds, and on a busy host the loop turns per event.
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let grace = loop {
        if last_sweep.is_none_or(|t| t.elapsed() >= POLL) {
            last_sweep = Some(tokio::time::Instant::now());
            match ctx.store.run(|s| s.release_claims(now(), None)).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    released = n,
                    "claims whose lease expired (a host stopped or stalled) are pending again"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot release expired claims"),
            }
        }
        let free = (ctx.config.workers as usize).saturating_sub(tasks.len());
        if free > 0 {
            match claim(&ctx, free).await {
                Ok(batch) => {
                    for h in batch.held.iter().filter(|h| h.trips) {
                        ctx.metrics.guard_tripped(&h.plugin);
                        let held = batch.held.iter().filter(|o| o.plugin == h.plugin).count();
                        tracing::warn!(
                            plugin = %h.plugin,
                            held,
                            "the guard tripped: more deliveries of its guarded event types began than \
                             [plugins.{}.guard] max_per_window allows; the next ones are held until an operator \
                             releases (POST /api/plugins/{}/held/release) or discards (…/held/discard) them",
                            h.plugin,
                            h.plugin,
                        );
                    }
                    for c in batch.claims {
                        tasks.spawn(run::run_claim(ctx.clone(), c));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim deliveries; retrying shortly"),
            }
        }
        tokio::select! {
            biased;
            grace = &mut stop => break grace.unwrap_or(Duration::ZERO),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => report(done),
            () = notify.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    };

    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = tasks.join_next().await {
            report(done);
        }
    })
    .await
    .is_ok();
    if !drained {
        let still = tasks.len();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let host = ctx.host_id.clone();
        match ctx.store.run(move |s| s.release_claims(now(), Some(&host))).await {
            Ok(n) => tracing::info!(
                stopped = still,
                released = n,
                "attempts still running at shutdown were stopped; their deliveries are pending again"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the claims of stopped attempts; they return when their leases expire")
            }
        }
    }
}

async fn claim(ctx: &Arc<Shared>, limit: usize) -> Result<crate::store::ClaimBatch, StoreError> {
    let plugins = ctx.plugins.clone();
    let default_cap = ctx.config.max_concurrency;
    let host = ctx.host_id.clone();
    let lease = ctx.lease;
    ctx.store
        .run(move |s| {
            // A plugin not in service gets 0: its deliveries stay pending until it is back.
            let cap = |name: &str| {
                plugins.get(name).map(|p| p.spec.max_concurrency.unwrap_or(default_cap) as usize).unwrap_or(0)
            };
            // The guard's rule of each plugin in service (docs/contract.md, "Guard").
            let guard = |name: &str| plugins.get(name).and_then(|p| p.spec.guard.clone());
            s.claim_guarded(&host, now(), lease, limit, &cap, &guard)
        })
        .await
}
