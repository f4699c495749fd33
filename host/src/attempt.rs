//! What one attempt of one delivery leaves behind: how it ended and what it logged.
//!
//! A leaf: plain data with no wasmtime in it, so the runtime can produce it and the store can
//! record it without either knowing the other.

use std::time::{Duration, SystemTime};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The plugin handled the event.
    Done { summary: String },
    /// The plugin asked to be retried, not before `retry_after` when given.
    Retryable { message: String, retry_after: Option<Duration> },
    /// The plugin says retrying will not help.
    Permanent(String),
    /// The guest trapped (a panic, an abort, a bad instruction); the message says where.
    Trapped(String),
    /// The attempt hit its deadline and was stopped.
    TimedOut,
    /// The guest tried to grow past its memory limit and was stopped.
    OutOfMemory,
}

impl AttemptResult {
    /// The stable name used in the store, the API and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AttemptResult::Done { .. } => "done",
            AttemptResult::Retryable { .. } => "retryable",
            AttemptResult::Permanent(_) => "permanent",
            AttemptResult::Trapped(_) => "trapped",
            AttemptResult::TimedOut => "timed_out",
            AttemptResult::OutOfMemory => "out_of_memory",
        }
    }

    /// A one-line description, the `last_error` of a failed delivery.
    pub fn describe(&self) -> String {
        match self {
            AttemptResult::Done { summary } => summary.clone(),
            AttemptResult::Retryable { message, retry_after: Some(d) } => {
                format!("retryable: {message} (retry after {} ms)", d.as_millis())
            }
            AttemptResult::Retryable { message, .. } => format!("retryable: {message}"),
            AttemptResult::Permanent(m) => format!("permanent: {m}"),
            AttemptResult::Trapped(m) => format!("trapped: {m}"),
            AttemptResult::TimedOut => {
                "timed out: the attempt passed its deadline ([limits] timeout_ms) and was stopped".into()
            }
            AttemptResult::OutOfMemory => {
                "out of memory: the plugin tried to grow past its memory limit ([limits] memory_mb) and was stopped"
                    .into()
            }
        }
    }
}

/// The record of one attempt: what ran, how long, how it ended, what it logged.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub plugin: String,
    pub plugin_version: String,
    pub plugin_sha256: String,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub result: AttemptResult,
    pub log: Vec<LogLine>,
    /// Log lines dropped past the caps.
    pub log_dropped: u32,
    pub http_requests: u32,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The plugin's `log` import.
    Plugin,
    /// Captured guest stdout.
    Stdout,
    /// Captured guest stderr (panic messages land here).
    Stderr,
    /// The host, about this attempt (e.g. a refused HTTP call).
    Host,
}

/// One line of an attempt's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// Milliseconds since the attempt started.
    pub at_ms: u64,
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
}
