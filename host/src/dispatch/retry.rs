//! The retry policy: where a delivery goes after an attempt.
//!
//! A retryable failure and a timeout (the plugin may have been waiting on a slow Graph) are
//! retried after an exponential backoff, `initial * 2^(n-1)` capped at `max_backoff`, with
//! **equal jitter**: half of that delay is fixed and half random, so deliveries that failed
//! together (a Graph outage) spread out but each still backs off. A plugin's retry-after hint
//! (Graph's `Retry-After`) is a floor: the retry never comes sooner, even past the cap. A
//! permanent failure, a trap, a memory blow-up, or the last allowed attempt ends `dead`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::RetryConfig;
use crate::runtime::AttemptResult;
use crate::store::Next;

/// The longest retry-after hint honoured: a plugin cannot park a delivery for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The backoff ceiling after `failed` failed attempts (1 for the first): `initial *
/// 2^(failed-1)`, at most `max_backoff_secs`.
pub fn backoff_ceiling(policy: &RetryConfig, failed: u32) -> Duration {
    let initial = Duration::from_millis(policy.initial_backoff_ms);
    let max = Duration::from_secs(policy.max_backoff_secs);
    let doublings = failed.saturating_sub(1).min(31);
    initial.saturating_mul(1u32 << doublings).min(max)
}

/// The delay after `failed` failed attempts, `jitter` in `[0, 1)`: between half the ceiling
/// and the ceiling.
pub fn backoff(policy: &RetryConfig, failed: u32, jitter: f64) -> Duration {
    let ceiling = backoff_ceiling(policy, failed);
    let half = ceiling / 2;
    half + (ceiling - half).mul_f64(jitter.clamp(0.0, 1.0))
}

/// Where a delivery goes after an attempt that ended with `result`, when `attempts_before`
/// attempts were made before it. `jitter` in `[0, 1)` (random in service, fixed in tests).
pub fn next_after(
    result: &AttemptResult,
    attempts_before: u32,
    policy: &RetryConfig,
    now: DateTime<Utc>,
    jitter: f64,
) -> Next {
    let hint = match result {
        AttemptResult::Done { .. } => return Next::Done,
        AttemptResult::Permanent(_) | AttemptResult::Trapped(_) | AttemptResult::OutOfMemory => return Next::Dead,
        AttemptResult::Retryable { retry_after, .. } => retry_after.unwrap_or_default(),
        AttemptResult::TimedOut => Duration::ZERO,
    };
    let failed = attempts_before.saturating_add(1);
    if failed >= policy.max_attempts {
        return Next::Dead;
    }
    let delay = backoff(policy, failed, jitter).max(hint.min(MAX_RETRY_AFTER));
    let at = TimeDelta::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or_else(|| now + TimeDelta::days(1));
    Next::Retry { at }
}
