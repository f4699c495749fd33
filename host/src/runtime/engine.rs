//! The one wasmtime [`Engine`] of the process, and the epoch ticker that bounds guest time.
//!
//! Pooling allocation pre-reserves slots for instances, memories and stacks so that a fresh
//! instance per attempt costs microseconds; it needs a large virtual address space, so when
//! the reservation fails (a low `ulimit -v`, a 39-bit VA kernel) the engine falls back to
//! on-demand allocation and says so in the log. Epoch interruption is the only thing that
//! stops a guest spinning in a loop: an async timeout only stops *waiting* for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Pooling when the address space allows it, else on-demand (logged).
    Auto,
    /// Pooling or fail.
    Pooling,
    /// Plain mmap per instance.
    OnDemand,
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub allocation: Allocation,
    /// How many instances may run at once across all plugins (pool size).
    pub max_instances: u32,
    /// Largest linear memory any plugin may be given.
    pub max_memory_bytes: usize,
    /// Epoch tick: the granularity of deadlines and of yielding to other tasks.
    pub epoch_tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            allocation: Allocation::Auto,
            max_instances: 256,
            max_memory_bytes: 1 << 30,
            // Spin's choice: fine enough for 30 s deadlines, rare enough to cost nothing.
            epoch_tick: Duration::from_millis(10),
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    config
}

/// hookhost's pooling settings (public so the benchmark's floor can use the same pool).
pub fn pooling_config(opts: &EngineOptions) -> PoolingAllocationConfig {
    let n = opts.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        // A Rust guest has 2-4 core instances; componentize-py and jco guests have ~10-20.
        .total_core_instances(n * 8)
        .max_core_instances_per_component(64)
        .total_memories(n * 2)
        .max_memories_per_component(8)
        .total_tables(n * 8)
        .max_tables_per_component(32)
        .total_stacks(n)
        .max_memory_size(opts.max_memory_bytes)
        .table_elements(100_000)
        // Language runtimes have large vmctx sizes; 1 MiB default is tight for Python.
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        // Return freed memory to the OS in batches: one madvise for many instances keeps
        // the per-attempt teardown off the syscall (and TLB shootdown) path.
        .decommit_batch_size(32)
        // Zero the first 128 KiB (a small-stack guest's stack top, data and heap start) with
        // memset instead of madvise, so the next instance in this slot does not page-fault
        // them in again: page faults were most of the per-attempt cost. Plugins built in this
        // workspace use a 64 KiB stack for this (see .cargo/config.toml).
        .linear_memory_keep_resident(128 << 10)
        .table_keep_resident(16 << 10);
    pool
}

/// Builds the engine.
///
/// # Errors
/// The configuration is refused by wasmtime (with `Allocation::Pooling`, also when the pool
/// cannot reserve its address space).
pub fn build(opts: &EngineOptions) -> wasmtime::Result<(Engine, bool)> {
    match opts.allocation {
        Allocation::OnDemand => Ok((Engine::new(&base_config())?, false)),
        Allocation::Pooling => {
            let mut config = base_config();
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(opts)));
            Ok((Engine::new(&config)?, true))
        }
        Allocation::Auto => {
            let mut config = base_config();
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(opts)));
            match Engine::new(&config) {
                Ok(engine) => Ok((engine, true)),
                Err(e) => {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "pooling allocator unavailable (address space too small?); using on-demand allocation, which is slower per event"
                    );
                    Ok((Engine::new(&base_config())?, false))
                }
            }
        }
    }
}

/// Advances the engine's epoch every tick on its own thread, until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("hookhost-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
