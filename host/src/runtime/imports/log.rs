//! The `log` import: plugin log lines into the attempt's history and the host's `tracing`.
//!
//! Grants: any number of calls. Refuses: nothing, but keeps at most `max_log_lines` lines
//! and `max_log_bytes` bytes per attempt (a line is cut at 4 KiB) and counts the rest, so a
//! plugin that logs in a loop cannot fill the store or the host's log.

use std::time::Instant;

use crate::attempt::{LogLevel, LogLine, LogSource};
use crate::runtime::bindings::log::{Host, Level};
use crate::runtime::state::AttemptState;

const MAX_LINE_BYTES: usize = 4 << 10;

/// The capped log of one attempt.
#[derive(Debug)]
pub struct AttemptLog {
    started: Instant,
    max_lines: usize,
    max_bytes: usize,
    bytes: usize,
    pub lines: Vec<LogLine>,
    /// Lines dropped past the caps.
    pub dropped: u32,
}

impl AttemptLog {
    pub fn new(started: Instant, max_lines: usize, max_bytes: usize) -> Self {
        AttemptLog { started, max_lines, max_bytes, bytes: 0, lines: Vec::new(), dropped: 0 }
    }

    /// Appends a line unless a cap is reached.
    pub fn push(&mut self, level: LogLevel, source: LogSource, mut message: String) {
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …[cut]");
        }
        if self.lines.len() >= self.max_lines || self.bytes + message.len() > self.max_bytes {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.bytes += message.len();
        self.lines.push(LogLine { at_ms: self.started.elapsed().as_millis() as u64, level, source, message });
    }
}

impl From<Level> for LogLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

impl Host for AttemptState {
    async fn log(&mut self, level: Level, message: String) {
        let level = LogLevel::from(level);
        let plugin = self.plugin.name.as_str();
        // The plugin's text (often event fields) is escaped: it cannot forge a host log line.
        let line = crate::logsafe::Clean(&message);
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{line}"),
            LogLevel::Debug => tracing::debug!(plugin, "{line}"),
            LogLevel::Info => tracing::info!(plugin, "{line}"),
            LogLevel::Warn => tracing::warn!(plugin, "{line}"),
            LogLevel::Error => tracing::error!(plugin, "{line}"),
        }
        self.log.push(level, LogSource::Plugin, message);
    }
}
