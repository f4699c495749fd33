//! Per-attempt limits and the memory limiter that enforces them.
//!
//! wasmtime's own `StoreLimits` caps each linear memory separately, so a component with
//! several memories (Python guests have more than one core module) could use several times
//! the cap. [`MemoryLimiter`] counts every memory and table of the instance against one
//! budget, and refuses a growth past it with an error, which traps the guest at once and
//! lets the runtime report `OutOfMemory` instead of a confusing abort.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Limits for one attempt of one plugin. Defaults suit a plugin that makes a few HTTP calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory and tables for the whole instance.
    pub memory_bytes: usize,
    /// Wall-clock deadline for one attempt, host calls included.
    pub timeout: Duration,
    /// Outbound HTTP requests per attempt.
    pub max_http_requests: u32,
    /// Largest HTTP response body accepted.
    pub max_response_bytes: usize,
    /// Log lines kept per attempt (plugin log calls plus captured stdout/stderr).
    pub max_log_lines: usize,
    /// Log bytes kept per attempt.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            max_http_requests: 32,
            max_response_bytes: 4 << 20,
            max_log_lines: 500,
            max_log_bytes: 64 << 10,
        }
    }
}

/// Counts an instance's memories and tables against one budget.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: usize,
    used: usize,
    /// Set when a growth was refused: the attempt ran out of memory.
    pub exceeded: Option<usize>,
}

impl MemoryLimiter {
    pub fn new(cap: usize) -> Self {
        MemoryLimiter { cap, used: 0, exceeded: None }
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.cap {
            self.exceeded = Some(next);
            return Err(wasmtime::format_err!(
                "plugin tried to use {} KiB of memory, over its limit of {} KiB ([limits] memory_mb)",
                next >> 10,
                self.cap >> 10
            ));
        }
        self.used = next;
        Ok(true)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let slot = std::mem::size_of::<usize>();
        self.grow(current.saturating_mul(slot), desired.saturating_mul(slot))
    }
}
