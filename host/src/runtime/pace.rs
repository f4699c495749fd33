//! Outbound pacing per plugin and origin: a token bucket that keeps a plugin's calls under a
//! target's rate limit, and a shared cooldown so one throttled call slows its siblings.
//!
//! A burst of a thousand group changes becomes a thousand attempts; without pacing each one
//! hammers Graph until it is refused with its own 429 and backs off alone. Here every attempt
//! of one plugin shares one [`Pacer`] (kept by the runtime across versions, so a hot reload
//! does not reset it):
//!
//! - `[[plugins.<name>.pace]]` rules (`origin`, `per_second`, `burst`, optional `methods`)
//!   hold a request until its bucket has a token. Tokens are reserved in arrival order (the
//!   bucket may go into debt), so waiters are served first come, first served, and the wait
//!   is known at once.
//! - Always on: a 429 or 503 carrying `Retry-After` from an origin pauses all of that
//!   plugin's calls to it until then.
//!
//! Neither wait counts against the attempt's deadline: the caller extends the deadline by
//! the time waited. A pause longer than [`MAX_PAUSE_WAIT`] is not waited out inside an
//! attempt (that would pin a worker for minutes); the request is answered by the host with
//! a synthetic 429 and the remaining `Retry-After`, without being sent, so the plugin fails
//! retryable and dispatch reschedules it for when the pause ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::grant::Origin;

/// The longest pause waited out inside an attempt; longer ones answer a synthetic 429.
pub const MAX_PAUSE_WAIT: Duration = Duration::from_secs(5);
/// The longest pause one `Retry-After` may impose (a bogus huge value is clamped).
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// One `[[plugins.<name>.pace]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PaceRule {
    pub origin: Origin,
    /// Sustained requests per second (> 0).
    pub per_second: f64,
    /// Requests that may go at once after a quiet spell (≥ 1).
    pub burst: u32,
    /// Upper-case HTTP methods this rule paces; empty = all.
    pub methods: Vec<String>,
}

impl PaceRule {
    fn applies(&self, origin: &Origin, method: &str) -> bool {
        &self.origin == origin && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// What the pacer decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Send it now; the caller already waited this long (zero when it did not wait).
    Go { waited: Duration },
    /// Do not send: the origin asked this plugin to pause for this much longer.
    Paused { remaining: Duration },
}

struct Bucket {
    rule: PaceRule,
    /// Tokens available now; negative when waiters have reserved future tokens.
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    /// Reserves one token and says how long to wait for it.
    fn reserve(&mut self, now: Instant) -> Duration {
        let burst = f64::from(self.rule.burst);
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rule.per_second).min(burst);
        self.refilled_at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rule.per_second)
        }
    }
}

/// One plugin's pacing state, shared by all its attempts and versions.
#[derive(Default)]
pub struct Pacer {
    buckets: Mutex<Vec<Bucket>>,
    /// Origin → until when its calls are paused.
    paused_until: Mutex<HashMap<Origin, Instant>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").finish_non_exhaustive()
    }
}

impl Pacer {
    /// Installs this version's rules. A rule that is unchanged keeps its bucket (a reload
    /// must not hand out a fresh burst); new or changed rules start full.
    pub fn set_rules(&self, rules: &[PaceRule]) {
        let Ok(mut buckets) = self.buckets.lock() else { return };
        let mut old: Vec<Bucket> = std::mem::take(&mut *buckets);
        for rule in rules {
            let bucket = match old.iter().position(|b| &b.rule == rule) {
                Some(i) => old.swap_remove(i),
                None => Bucket { rule: rule.clone(), tokens: f64::from(rule.burst), refilled_at: Instant::now() },
            };
            buckets.push(bucket);
        }
    }

    /// Waits until a request with `method` to `origin` may go, or says it must not.
    pub async fn admit(&self, origin: &Origin, method: &str) -> Admission {
        let start = Instant::now();
        let pause = self.paused_until.lock().ok().and_then(|p| p.get(origin).copied());
        if let Some(until) = pause {
            let remaining = until.saturating_duration_since(start);
            if remaining > MAX_PAUSE_WAIT {
                return Admission::Paused { remaining };
            }
            if !remaining.is_zero() {
                tokio::time::sleep(remaining).await;
            }
        }
        let wait = match self.buckets.lock() {
            Ok(mut buckets) => {
                let now = Instant::now();
                buckets.iter_mut().filter(|b| b.rule.applies(origin, method)).map(|b| b.reserve(now)).max()
            }
            Err(_) => None,
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            tokio::time::sleep(wait).await;
        }
        Admission::Go { waited: start.elapsed() }
    }

    /// Records an answer from `origin`: a 429 or 503 with a `Retry-After` pauses every call
    /// of this plugin to that origin until then. Returns the pause when one was set.
    pub fn observe(&self, origin: &Origin, status: u16, headers: &[(String, String)]) -> Option<Duration> {
        if status != 429 && status != 503 {
            return None;
        }
        let pause = retry_after(headers)?.min(MAX_PAUSE);
        let until = Instant::now() + pause;
        if let Ok(mut paused) = self.paused_until.lock() {
            let entry = paused.entry(origin.clone()).or_insert(until);
            if *entry < until {
                *entry = until;
            }
        }
        Some(pause)
    }
}

/// `Retry-After` as seconds (whole or decimal, as Graph sends it) or as an HTTP date.
/// Microsoft's `x-ms-retry-after-ms` (the same wait in milliseconds, sent by Graph and Azure
/// beside `Retry-After` on throttled answers) wins when present: it is the finer of the two.
pub fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let ms = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("x-ms-retry-after-ms"));
    if let Some(ms) = ms.and_then(|(_, v)| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))?.1.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        Origin::parse_grant(s).unwrap()
    }

    fn rule(per_second: f64, burst: u32, methods: &[&str]) -> PaceRule {
        PaceRule {
            origin: origin("https://graph.microsoft.com"),
            per_second,
            burst,
            methods: methods.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn a_bucket_lets_the_burst_through_then_spaces_requests_in_arrival_order() {
        let now = Instant::now();
        let mut b = Bucket { rule: rule(10.0, 2, &[]), tokens: 2.0, refilled_at: now };
        assert_eq!(b.reserve(now), Duration::ZERO);
        assert_eq!(b.reserve(now), Duration::ZERO);
        // The third and fourth wait one and two token periods (100 ms each).
        let third = b.reserve(now);
        let fourth = b.reserve(now);
        assert!((third.as_secs_f64() - 0.1).abs() < 1e-9, "{third:?}");
        assert!((fourth.as_secs_f64() - 0.2).abs() < 1e-9, "{fourth:?}");
        // A quiet second refills to the burst, never beyond it.
        let later = now + Duration::from_secs(5);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert!(b.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn rules_apply_to_their_origin_and_methods_only() {
        let writes = rule(1.0, 1, &["POST", "PATCH", "DELETE"]);
        assert!(writes.applies(&origin("https://graph.microsoft.com"), "POST"));
        assert!(!writes.applies(&origin("https://graph.microsoft.com"), "GET"));
        assert!(!writes.applies(&origin("https://login.microsoftonline.com"), "POST"));
        assert!(rule(1.0, 1, &[]).applies(&origin("https://graph.microsoft.com:443"), "GET"));
    }

    #[test]
    fn retry_after_reads_seconds_decimals_and_dates() {
        let h = |v: &str| vec![("Retry-After".to_string(), v.to_string())];
        assert_eq!(retry_after(&h("10")), Some(Duration::from_secs(10)));
        assert_eq!(retry_after(&h("2.128")), Some(Duration::from_millis(2128)));
        assert_eq!(retry_after(&h("-1")), None);
        assert_eq!(retry_after(&h("soon")), None);
        assert_eq!(retry_after(&h("Wed, 21 Oct 2015 07:28:00 GMT")), Some(Duration::ZERO));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(100)).to_rfc2822();
        let d = retry_after(&h(&future)).unwrap();
        assert!(d > Duration::from_secs(90) && d <= Duration::from_secs(100), "{d:?}");
        assert_eq!(retry_after(&[]), None);
        let both =
            vec![("Retry-After".to_string(), "3".to_string()), ("x-ms-retry-after-ms".to_string(), "2500".to_string())];
        assert_eq!(retry_after(&both), Some(Duration::from_millis(2500)));
        let bogus =
            vec![("Retry-After".to_string(), "3".to_string()), ("x-ms-retry-after-ms".to_string(), "x".to_string())];
        assert_eq!(retry_after(&bogus), Some(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn a_throttled_answer_pauses_the_origin_and_a_long_pause_is_not_waited_out() {
        let pacer = Pacer::default();
        let graph = origin("https://graph.microsoft.com");
        let login = origin("https://login.microsoftonline.com");
        let hdr = |v: &str| vec![("retry-after".to_string(), v.to_string())];
        assert_eq!(pacer.observe(&graph, 500, &hdr("30")), None, "only 429 and 503 pause");
        assert_eq!(pacer.observe(&graph, 429, &[]), None, "no Retry-After, no pause");
        assert_eq!(pacer.observe(&graph, 429, &hdr("30")), Some(Duration::from_secs(30)));
        match pacer.admit(&graph, "GET").await {
            Admission::Paused { remaining } => assert!(remaining > Duration::from_secs(25), "{remaining:?}"),
            other => panic!("expected a pause, got {other:?}"),
        }
        // Other origins are not paused.
        assert!(matches!(pacer.admit(&login, "POST").await, Admission::Go { .. }));
    }

    #[test]
    fn unchanged_rules_keep_their_bucket_across_a_reload() {
        let pacer = Pacer::default();
        let r = rule(1.0, 1, &[]);
        pacer.set_rules(std::slice::from_ref(&r));
        let now = Instant::now();
        assert_eq!(pacer.buckets.lock().unwrap()[0].reserve(now), Duration::ZERO);
        pacer.set_rules(std::slice::from_ref(&r));
        assert!(pacer.buckets.lock().unwrap()[0].reserve(now) > Duration::ZERO, "the spent token came back");
        pacer.set_rules(&[rule(2.0, 1, &[])]);
        assert_eq!(
            pacer.buckets.lock().unwrap()[0].reserve(Instant::now()),
            Duration::ZERO,
            "a changed rule starts full"
        );
    }
}
