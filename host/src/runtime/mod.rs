//! The sandboxed plugin runtime: compile plugin components, and run one attempt of one
//! event in a fresh instance under the plugin's limits and grants.
//!
//! One [`Engine`] per process (pooling allocator, epoch interruption), one compiled
//! [`Component`] and pre-linked [`InstancePre`](wasmtime::component::InstancePre) per
//! plugin version ([`LoadedPlugin`]), and a fresh [`Store`] per attempt, dropped when the
//! attempt ends: nothing of one attempt can leak into the next. Per attempt:
//!
//! - memory: one budget over all the instance's memories and tables ([`limits`]);
//! - time: a wall-clock deadline enforced by epoch interruption (a guest spinning in a loop
//!   is stopped, not just abandoned), with host calls clipped to the time left;
//! - host calls: a budget of HTTP requests, capped responses, capped logs; private keys
//!   that sign for the plugin but never enter it (`keys.rs`);
//! - WASI: clocks and randomness only; no files (no preopens), no environment, no sockets,
//!   stdin closed, stdout/stderr captured into the attempt's log.
//!
//! The result is typed ([`AttemptResult`]): the plugin's own answer, or what stopped it.

pub mod bindings;
pub mod engine;
pub mod grant;
mod imports;
pub mod limits;
pub mod output;
pub mod pace;
pub mod state;
mod v0_1;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

pub use crate::attempt::{Attempt, AttemptResult, LogLevel, LogLine, LogSource};
pub use crate::kv::{KvBackend, MemoryKv};
pub use engine::{Allocation, EngineOptions};
pub use grant::{Grant, Origin};
pub use limits::Limits;

use crate::okta::Event;
use bindings::{handler, reconcile, types, v0_1 as wit01, v0_2 as wit02};
use engine::EpochTicker;
use imports::log::AttemptLog;
use limits::MemoryLimiter;
use output::CapturedOutput;
use state::{AttemptState, PluginContext};

/// Bytes of guest stdout and stderr kept per attempt.
const CAPTURE_BYTES: usize = 16 << 10;
/// Extra time past the deadline before the host stops waiting on a host call that hangs.
const GRACE: Duration = Duration::from_secs(2);

/// Why a component could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    NotAComponent(String),
    #[error("cannot compile: {0}")]
    Compile(String),
    #[error("does not implement the hookhost:plugin/plugin world: {0}")]
    WrongWorld(String),
    #[error("cannot read precompiled artifact: {0}")]
    Artifact(String),
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeError(String);

/// One plugin version, compiled and linked, ready for attempts.
#[derive(Clone)]
pub struct LoadedPlugin {
    ctx: Arc<PluginContext>,
    exports: Exports,
}

/// Which contract version a component was built against, found at load time, with what it
/// needs to call its exports.
#[derive(Clone)]
enum Exports {
    /// `hookhost:plugin@0.1.0`: `handler` only.
    V0_1(wit01::PluginPre<AttemptState>),
    /// `hookhost:plugin@0.2.0`: `handler`, and `reconcile` when the component exports it.
    V0_2 {
        pre: wasmtime::component::InstancePre<AttemptState>,
        handler: handler::GuestIndices,
        reconcile: Option<reconcile::GuestIndices>,
    },
}

/// One account a plugin reports under its management (WIT `reconcile.managed-account`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedAccount {
    pub okta_user_id: String,
    pub login: Option<String>,
    pub target_id: String,
    pub present: bool,
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.ctx.name
    }
    pub fn version(&self) -> &str {
        &self.ctx.version
    }
    pub fn sha256(&self) -> &str {
        &self.ctx.sha256
    }
    pub fn limits(&self) -> &Limits {
        &self.ctx.limits
    }
    pub fn grant(&self) -> &Grant {
        &self.ctx.grant
    }
    /// The WIT package version the component was built against, e.g. `0.2.0`.
    pub fn wit_version(&self) -> &'static str {
        match self.exports {
            Exports::V0_1(_) => "0.1.0",
            Exports::V0_2 { .. } => "0.2.0",
        }
    }
    /// Whether the component exports `reconcile` (so `hookhost reconcile` can ask it).
    pub fn can_reconcile(&self) -> bool {
        matches!(self.exports, Exports::V0_2 { reconcile: Some(_), .. })
    }
}

/// Who a plugin version is.
#[derive(Debug, Clone)]
pub struct PluginIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// The process's plugin runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<AttemptState>,
    http: reqwest::Client,
    pooling: bool,
    /// Each plugin's pacing state by name, shared by all its versions and attempts.
    pacers: std::sync::Mutex<std::collections::HashMap<String, Arc<pace::Pacer>>>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Starts the engine and its epoch ticker.
    ///
    /// # Errors
    /// wasmtime refuses the configuration, or the ticker thread or HTTP client cannot start.
    pub fn new(opts: &EngineOptions) -> Result<Runtime, RuntimeError> {
        let (engine, pooling) = engine::build(opts).map_err(|e| RuntimeError(format!("{e:#}")))?;
        let mut linker = Linker::<AttemptState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError(format!("linking WASI: {e:#}")))?;
        // Both contract versions' imports: a component takes the ones it was built against.
        wit02::Reconciler::add_to_linker::<AttemptState, HasSelf<AttemptState>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError(format!("linking hookhost@0.2.0 imports: {e:#}")))?;
        wit01::Plugin::add_to_linker::<AttemptState, HasSelf<AttemptState>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError(format!("linking hookhost@0.1.0 imports: {e:#}")))?;
        let ticker =
            EpochTicker::start(&engine, opts.epoch_tick).map_err(|e| RuntimeError(format!("epoch ticker: {e}")))?;
        let http = imports::http::client().map_err(|e| RuntimeError(format!("HTTP client: {e}")))?;
        Ok(Runtime { engine, linker, http, pooling, pacers: Default::default(), _ticker: ticker })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether instances come from the pooling allocator.
    pub fn uses_pooling(&self) -> bool {
        self.pooling
    }

    /// Compiles a `.wasm` component. Slow (tens of ms for Rust, seconds for Python): keep it
    /// off the async runtime's worker threads.
    ///
    /// # Errors
    /// The bytes are not a component (a core module, not wasm at all) or do not compile.
    pub fn compile(&self, wasm: &[u8]) -> Result<Component, LoadError> {
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            return Err(LoadError::NotAComponent("not a WebAssembly file (no \\0asm header)".into()));
        }
        // Byte 4..8 is the version/layer: components are layer 1 (0x0d 0x00 0x01 0x00).
        if wasm[6..8] != [1, 0] {
            return Err(LoadError::NotAComponent(
                "this is a core wasm module, not a component; build with `cargo build --target wasm32-wasip2` (or componentize-py / jco) so it becomes a WASI 0.2 component".into(),
            ));
        }
        Component::new(&self.engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    /// Serializes a compiled component for the artifact cache.
    ///
    /// # Errors
    /// wasmtime cannot serialize it.
    pub fn serialize(&self, component: &Component) -> Result<Vec<u8>, LoadError> {
        component.serialize().map_err(|e| LoadError::Artifact(format!("{e:#}")))
    }

    /// Loads a precompiled artifact written by [`Runtime::serialize`] with this same engine
    /// configuration and wasmtime version; anything else is refused by wasmtime.
    ///
    /// # Safety
    /// The bytes must be produced by `serialize` of this program (the cache is keyed by the
    /// engine's compatibility hash and lives in a directory only the host writes).
    ///
    /// # Errors
    /// The artifact is from another engine or corrupt.
    pub unsafe fn deserialize(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        // SAFETY: the caller upholds this function's contract (bytes written by `serialize`
        // of this engine configuration); wasmtime checks the version and configuration itself.
        unsafe { Component::deserialize(&self.engine, bytes) }.map_err(|e| LoadError::Artifact(format!("{e:#}")))
    }

    /// Links a compiled component as a plugin version.
    ///
    /// # Errors
    /// [`LoadError::WrongWorld`] when it imports something hookhost does not provide or
    /// exports neither `hookhost:plugin/handler@0.2.0` nor `@0.1.0`; the message says which.
    pub fn load(
        &self,
        component: &Component,
        identity: PluginIdentity,
        grant: Grant,
        limits: Limits,
    ) -> Result<LoadedPlugin, LoadError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        // 0.2.0 first; a component exporting the 0.1.0 handler is served as 0.1.0.
        let exports = match handler::GuestIndices::new(&pre) {
            Ok(indices) => {
                let reconcile = reconcile::GuestIndices::new(&pre).ok();
                Exports::V0_2 { pre, handler: indices, reconcile }
            }
            Err(v2) => match wit01::PluginPre::new(pre) {
                Ok(pre) => Exports::V0_1(pre),
                Err(v1) => {
                    return Err(LoadError::WrongWorld(format!(
                        "hookhost:plugin@0.2.0: {v2:#}; hookhost:plugin@0.1.0: {v1:#}"
                    )))
                }
            },
        };
        let pacer = self.pacer(&identity.name);
        pacer.set_rules(&grant.pace);
        Ok(LoadedPlugin {
            ctx: Arc::new(PluginContext {
                name: identity.name,
                version: identity.version,
                sha256: identity.sha256,
                grant,
                limits,
                pacer,
            }),
            exports,
        })
    }

    /// The pacing state of the plugin called `name`, made on first use.
    fn pacer(&self, name: &str) -> Arc<pace::Pacer> {
        match self.pacers.lock() {
            Ok(mut pacers) => pacers.entry(name.to_owned()).or_default().clone(),
            // A panic while holding the map cannot leave it inconsistent; pace on a fresh one.
            Err(_) => Arc::default(),
        }
    }

    /// Runs one attempt of `event` on `plugin` in a fresh instance.
    ///
    /// Never fails: whatever happens inside the sandbox is an [`AttemptResult`].
    pub async fn run(&self, plugin: &LoadedPlugin, event: &Event, kv: Arc<dyn KvBackend>) -> Attempt {
        self.run_for(plugin, event, kv, None).await
    }

    /// As [`Runtime::run`], for the delivery `delivery_id`: the host's own refusals of the
    /// plugin's requests (an ungranted origin or secret, a spent budget, an oversized KV
    /// write) are logged at `warn` with the plugin and this id, besides the attempt's log.
    pub async fn run_for(
        &self,
        plugin: &LoadedPlugin,
        event: &Event,
        kv: Arc<dyn KvBackend>,
        delivery_id: Option<&str>,
    ) -> Attempt {
        let started_at = SystemTime::now();
        let mut sandbox = self.sandbox(plugin, kv, delivery_id);
        let wit_event = to_wit(event);
        // The call borrows the store; it is dropped at the end of this block.
        let outcome = {
            let store = &mut sandbox.store;
            let call = async {
                match &plugin.exports {
                    Exports::V0_2 { pre, handler, .. } => {
                        let instance = pre.instantiate_async(&mut *store).await?;
                        handler.load(&mut *store, &instance)?.call_handle(&mut *store, &wit_event).await
                    }
                    Exports::V0_1(pre) => {
                        let instance = pre.instantiate_async(&mut *store).await?;
                        let event = v0_1::event(&wit_event);
                        let answer = instance.hookhost_plugin_handler().call_handle(&mut *store, &event).await?;
                        Ok(answer.map(v0_1::outcome).map_err(v0_1::failure))
                    }
                }
            };
            bounded(call, sandbox.start, &plugin.ctx.limits, &sandbox.paced).await
        };

        let result = match outcome {
            Err(_) => AttemptResult::TimedOut,
            Ok(Ok(Ok(o))) => AttemptResult::Done { summary: o.summary },
            Ok(Ok(Err(types::Failure::Retryable(r)))) => AttemptResult::Retryable {
                message: r.message,
                retry_after: r.retry_after_ms.map(Duration::from_millis),
            },
            Ok(Ok(Err(types::Failure::Permanent(m)))) => AttemptResult::Permanent(m),
            Ok(Err(e)) => classify_trap(&e, sandbox.store.data(), &sandbox.stderr),
        };
        sandbox.finish(plugin, started_at, result)
    }

    /// Asks `plugin` for the accounts it manages (WIT `reconcile.managed-accounts`), in a
    /// fresh instance under the plugin's limits, like an attempt. The [`Attempt`] says how
    /// the call went (its log, HTTP requests, duration); the accounts come back only when
    /// the plugin answered with them.
    ///
    /// # Errors
    /// The component cannot reconcile (built against 0.1.0, or without the `reconcile`
    /// export): the message names the fix. Nothing ran then.
    pub async fn managed_accounts(
        &self,
        plugin: &LoadedPlugin,
        kv: Arc<dyn KvBackend>,
    ) -> Result<(Attempt, Option<Vec<ManagedAccount>>), String> {
        let (pre, indices) = match &plugin.exports {
            Exports::V0_2 { pre, reconcile: Some(indices), .. } => (pre, indices),
            Exports::V0_2 { reconcile: None, .. } => {
                return Err(format!(
                    "plugin {} {} is built against hookhost:plugin@0.2.0 but does not export the \
                     `reconcile` interface, so it cannot report the accounts it manages; build it \
                     for world \"reconciler\" of wit/plugin.wit (see docs/plugins.md)",
                    plugin.ctx.name, plugin.ctx.version
                ))
            }
            Exports::V0_1(_) => {
                return Err(format!(
                    "plugin {} {} is built against hookhost:plugin@0.1.0, which cannot report the \
                     accounts it manages, so it cannot be reconciled; rebuild it for world \
                     \"reconciler\" of wit/plugin.wit (hookhost:plugin@0.2.0) and implement \
                     `managed-accounts` (see \"Migrating to 0.2.0\" in docs/plugins.md)",
                    plugin.ctx.name, plugin.ctx.version
                ))
            }
        };
        let started_at = SystemTime::now();
        let mut sandbox = self.sandbox(plugin, kv, None);
        let outcome = {
            let store = &mut sandbox.store;
            let call = async {
                let instance = pre.instantiate_async(&mut *store).await?;
                indices.load(&mut *store, &instance)?.call_managed_accounts(&mut *store).await
            };
            bounded(call, sandbox.start, &plugin.ctx.limits, &sandbox.paced).await
        };
        let (result, accounts) = match outcome {
            Err(_) => (AttemptResult::TimedOut, None),
            Ok(Ok(Ok(list))) => {
                let summary = format!("reported {} managed accounts", list.len());
                let accounts = list
                    .into_iter()
                    .map(|a| ManagedAccount {
                        okta_user_id: a.okta_user_id,
                        login: a.login,
                        target_id: a.target_id,
                        present: a.present,
                    })
                    .collect();
                (AttemptResult::Done { summary }, Some(accounts))
            }
            Ok(Ok(Err(types::Failure::Retryable(r)))) => (
                AttemptResult::Retryable {
                    message: r.message,
                    retry_after: r.retry_after_ms.map(Duration::from_millis),
                },
                None,
            ),
            Ok(Ok(Err(types::Failure::Permanent(m)))) => (AttemptResult::Permanent(m), None),
            Ok(Err(e)) => (classify_trap(&e, sandbox.store.data(), &sandbox.stderr), None),
        };
        Ok((sandbox.finish(plugin, started_at, result), accounts))
    }

    /// A fresh store for one call into `plugin`, with its limits, grants and deadline.
    fn sandbox(&self, plugin: &LoadedPlugin, kv: Arc<dyn KvBackend>, delivery_id: Option<&str>) -> Sandbox {
        let start = Instant::now();
        let limits = &plugin.ctx.limits;
        let deadline = start + limits.timeout;
        // Time spent waiting for pace, in ms: it moves the deadline (and the host's own
        // backstop below) later, since waiting for a target's rate limit is not the plugin's time.
        let paced = Arc::new(std::sync::atomic::AtomicU64::new(0));

        let stdout = CapturedOutput::new(CAPTURE_BYTES);
        let stderr = CapturedOutput::new(CAPTURE_BYTES);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = AttemptState {
            wasi,
            table: ResourceTable::new(),
            plugin: plugin.ctx.clone(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            log: AttemptLog::new(start, limits.max_log_lines, limits.max_log_bytes),
            http: self.http.clone(),
            http_requests: 0,
            kv,
            deadline,
            paced: paced.clone(),
            delivery: delivery_id.map(str::to_owned),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Check the deadline at every tick, and yield to other tasks meanwhile, so a busy
        // guest neither overruns nor starves the executor.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        Sandbox { store, stdout, stderr, start, paced }
    }
}

/// One call's store and what is read back from it afterwards.
struct Sandbox {
    store: Store<AttemptState>,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    start: Instant,
    paced: Arc<std::sync::atomic::AtomicU64>,
}

impl Sandbox {
    /// The attempt record: the result plus the call's log, captured output and counters.
    fn finish(self, plugin: &LoadedPlugin, started_at: SystemTime, result: AttemptResult) -> Attempt {
        let mut state = self.store.into_data();
        capture_into_log(&mut state.log, &self.stdout, LogSource::Stdout, LogLevel::Info);
        capture_into_log(&mut state.log, &self.stderr, LogSource::Stderr, LogLevel::Warn);
        Attempt {
            plugin: plugin.ctx.name.clone(),
            plugin_version: plugin.ctx.version.clone(),
            plugin_sha256: plugin.ctx.sha256.clone(),
            started_at,
            duration: self.start.elapsed(),
            result,
            log: std::mem::take(&mut state.log.lines),
            log_dropped: state.log.dropped,
            http_requests: state.http_requests,
        }
    }
}

/// Waits for `call` until the host's backstop (deadline + grace + time spent waiting for
/// pace), which moves later while the call waits for pace.
async fn bounded<F: std::future::Future>(
    call: F,
    start: Instant,
    limits: &Limits,
    paced: &std::sync::atomic::AtomicU64,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(call);
    loop {
        let paced_for = Duration::from_millis(paced.load(std::sync::atomic::Ordering::Relaxed));
        let backstop = start + limits.timeout + GRACE + paced_for;
        match tokio::time::timeout_at(backstop.into(), &mut call).await {
            Ok(done) => break Ok(done),
            // Waiting for pace moved the deadline since this backstop was set.
            Err(_) if paced.load(std::sync::atomic::Ordering::Relaxed) > paced_for.as_millis() as u64 => continue,
            Err(elapsed) => break Err(elapsed),
        }
    }
}

fn classify_trap(e: &wasmtime::Error, state: &AttemptState, stderr: &CapturedOutput) -> AttemptResult {
    if state.limiter.exceeded.is_some() {
        return AttemptResult::OutOfMemory;
    }
    let trap = e.downcast_ref::<Trap>();
    if trap == Some(&Trap::Interrupt) {
        return AttemptResult::TimedOut;
    }
    let mut msg = match trap {
        Some(t) => t.to_string(),
        None => e.chain().last().map(|c| c.to_string()).unwrap_or_else(|| e.to_string()),
    };
    // A Rust panic prints its message to stderr just before trapping; put it in the error.
    if let Some(buf) = stderr.buf_snapshot() {
        let panic: Vec<&str> = buf.lines().skip_while(|l| !l.contains("panicked at")).take(3).collect();
        if !panic.is_empty() {
            msg = format!("{msg}; guest stderr: {}", panic.join(" "));
        }
    }
    AttemptResult::Trapped(msg)
}

fn capture_into_log(log: &mut AttemptLog, out: &CapturedOutput, source: LogSource, level: LogLevel) {
    let (text, dropped) = out.take();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        log.push(level, source, line.to_owned());
    }
    if dropped > 0 {
        log.push(LogLevel::Warn, LogSource::Host, format!("{dropped} more bytes of guest {source:?} were dropped"));
    }
}

fn to_wit(event: &Event) -> types::Event {
    let party = |p: &crate::okta::Party| types::Party {
        id: p.id.clone(),
        kind: p.kind.clone(),
        alternate_id: p.alternate_id.clone(),
        display_name: p.display_name.clone(),
    };
    types::Event {
        id: event.uuid.clone(),
        event_type: event.event_type.clone(),
        published: event.published.clone(),
        actor: event.actor.as_ref().map(party),
        targets: event.targets.iter().map(party).collect(),
        raw: event.raw.clone(),
    }
}
