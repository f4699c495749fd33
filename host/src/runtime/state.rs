//! The per-attempt store data: everything one plugin instance can touch, and nothing more.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::grant::Grant;
use super::imports::log::AttemptLog;
use super::limits::{Limits, MemoryLimiter};
use crate::attempt::{LogLevel, LogSource};
use crate::kv::KvBackend;
use crate::logsafe::Clean;

/// A loaded plugin version's identity, grants and limits, shared by all its attempts.
#[derive(Debug)]
pub struct PluginContext {
    pub name: String,
    pub version: String,
    /// Hex sha256 of the `.wasm`.
    pub sha256: String,
    pub grant: Grant,
    pub limits: Limits,
    /// The plugin's outbound pacing, shared with its other versions.
    pub pacer: Arc<super::pace::Pacer>,
}

/// Store data for one attempt. Lives exactly as long as the attempt's `Store`.
pub struct AttemptState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) plugin: Arc<PluginContext>,
    pub(super) limiter: MemoryLimiter,
    pub(super) log: AttemptLog,
    pub(super) http: reqwest::Client,
    /// Requests made so far (counted against `max_http_requests`).
    pub(super) http_requests: u32,
    pub(super) kv: Arc<dyn KvBackend>,
    /// When the attempt must end; HTTP timeouts are clipped to it and the epoch callback
    /// interrupts the guest past it.
    pub(super) deadline: Instant,
    /// Milliseconds this attempt waited for pace so far (the deadline was moved by as much).
    pub(super) paced: Arc<std::sync::atomic::AtomicU64>,
    /// The delivery this attempt is for, when the caller has one (for the host's log).
    pub(super) delivery: Option<String>,
}

impl AttemptState {
    /// Records a request of the plugin that the host refused on its own authority (not a
    /// remote failure): in the attempt's log, and as a `warn` line in the host's log naming
    /// the plugin and the delivery, so an operator sees probing without opening attempts.
    pub(super) fn refused(&mut self, import: &'static str, message: String) {
        tracing::warn!(
            plugin = %self.plugin.name,
            delivery = %Clean(self.delivery.as_deref().unwrap_or("-")),
            import,
            reason = %Clean(&message),
            "refused a plugin's request"
        );
        crate::telemetry::refusal(import, &message);
        self.log.push(LogLevel::Warn, LogSource::Host, message);
    }
}

impl WasiView for AttemptState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl super::bindings::types::Host for AttemptState {}
