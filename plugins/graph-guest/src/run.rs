//! One run's working state: the host, the checked settings, the app token in hand, and the
//! scrubbing of secrets out of everything the plugin writes.
//!
//! All host calls go through [`Run`] so that two rules hold everywhere without each caller
//! remembering them: a KV failure is retryable, and no secret or token reaches a log line or a
//! failure message (even when an upstream error body echoes one back).

use crate::event::Failure;
use crate::host::{Algorithm, Host, HttpError, Keys, Kv, Level, Request, Response, SignError};
use crate::settings::Settings;

/// How long one outbound request may take. Well under the manifest's 30 s attempt deadline,
/// so a stalled call leaves time to report a clean retryable failure; the host takes the
/// smaller of this and the time left anyway.
pub(crate) const REQUEST_TIMEOUT_MS: u32 = 10_000;

/// Entries per `kv.scan` answer (the WIT's page size): fewer means the last page.
const KV_SCAN_PAGE: usize = 1000;

/// Shorter than this, a "secret" would match ordinary words; real credentials are far longer.
const MIN_SCRUBBED_LEN: usize = 3;

/// The state of one `handle` call.
pub(crate) struct Run<'h, H: Host> {
    host: &'h mut H,
    /// The checked configuration and credentials.
    pub(crate) settings: Settings,
    /// Values that must never be written out.
    secrets: Secrets,
    /// The app token obtained or read from the cache during this run.
    pub(crate) token: Option<String>,
    /// Whether this run already replaced its token after a 401: one refresh per run, so a
    /// token Graph keeps refusing cannot loop through the request budget.
    pub(crate) token_refreshed: bool,
}

impl<'h, H: Host> Run<'h, H> {
    pub(crate) fn new(host: &'h mut H, settings: Settings) -> Self {
        let mut run = Run { host, secrets: Secrets::default(), token: None, token_refreshed: false, settings };
        let values: Vec<String> = run.settings.secret_values().iter().map(|s| s.to_string()).collect();
        for value in values {
            run.add_secret(value);
        }
        run
    }

    /// Registers another value to scrub (the access token, the Okta API token).
    pub(crate) fn add_secret(&mut self, value: String) {
        self.secrets.add(value);
    }

    /// `text` with every registered secret replaced by `[redacted]`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// Logs one scrubbed line.
    pub(crate) fn log(&mut self, level: Level, message: &str) {
        let line = self.scrub(message);
        self.host.log(level, &line);
    }

    pub(crate) fn host(&self) -> &H {
        self.host
    }

    pub(crate) fn now_unix_ms(&self) -> u64 {
        self.host.now_unix_ms()
    }

    /// Asks the host to sign `message` with the granted key `name`.
    pub(crate) fn sign(&mut self, name: &str, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
        Keys::sign(self.host, name, algorithm, message)
    }

    pub(crate) fn kv_get(&mut self, key: &str) -> Result<Option<String>, Failure> {
        Kv::get(self.host, key).map_err(|e| kv_failure("read", key, &e))
    }

    pub(crate) fn kv_set(&mut self, key: &str, value: &str) -> Result<(), Failure> {
        Kv::set(self.host, key, value).map_err(|e| kv_failure("write", key, &e))
    }

    /// Every entry whose key starts with `prefix`, following `kv.scan` pages to the end.
    pub(crate) fn kv_scan_all(&mut self, prefix: &str) -> Result<Vec<(String, String)>, Failure> {
        let mut out: Vec<(String, String)> = Vec::new();
        loop {
            let after = out.last().map(|(k, _)| k.clone());
            let page = Kv::scan(self.host, prefix, after.as_deref()).map_err(|e| kv_failure("scan", prefix, &e))?;
            let full = page.len() >= KV_SCAN_PAGE;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    pub(crate) fn kv_delete(&mut self, key: &str) -> Result<(), Failure> {
        Kv::delete(self.host, key).map_err(|e| kv_failure("delete", key, &e))
    }

    /// Sends one request, logging it (without headers) at debug level. `what` names the call
    /// in failures, e.g. "Graph user lookup".
    ///
    /// A response of any status comes back `Ok`; only a missing response is a [`Failure`]:
    /// timeouts and connection failures are retryable, everything else permanent.
    pub(crate) fn send(&mut self, what: &str, request: Request) -> Result<Response, Failure> {
        let line = format!("{} {}", request.method.as_str(), request.url);
        match self.host.send(request) {
            Ok(response) => {
                self.log(Level::Debug, &format!("{line} -> {}", response.status));
                Ok(response)
            }
            Err(error) => {
                self.log(Level::Debug, &format!("{line} -> no response: {error:?}"));
                Err(http_failure(what, error))
            }
        }
    }
}

/// The values a run must never write out, and the bytes they start with.
struct Secrets {
    /// Longest first, so a secret containing another is replaced whole.
    values: Vec<String>,
    /// `starts[b]`: some value starts with byte `b`.
    starts: [bool; 256],
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets { values: Vec::new(), starts: [false; 256] }
    }
}

impl Secrets {
    /// Adds `value`, unless it is too short to be told from ordinary words or already known.
    fn add(&mut self, value: String) {
        if value.len() >= MIN_SCRUBBED_LEN && !self.values.contains(&value) {
            self.starts[usize::from(value.as_bytes()[0])] = true;
            self.values.push(value);
            self.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every value replaced by `[redacted]`.
    ///
    /// One pass that stops only where some value could start (one table lookup per byte),
    /// then compares the values there. (`str::contains` per value per line built a two-way
    /// searcher each time: ~30 % of this plugin's instructions per event.) A match starts at
    /// a character boundary, since a value is UTF-8 text too.
    fn redact(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let (mut at, mut copied) = (0, 0);
        while let Some(offset) = bytes[at..].iter().position(|&b| self.starts[usize::from(b)]) {
            at += offset;
            let here = &bytes[at..];
            match self.values.iter().find(|v| here.starts_with(v.as_bytes())) {
                Some(value) => {
                    out.push_str(&text[copied..at]);
                    out.push_str("[redacted]");
                    at += value.len();
                    copied = at;
                }
                None => at += 1,
            }
        }
        out.push_str(&text[copied..]);
        out
    }
}

fn kv_failure(action: &str, key: &str, error: &str) -> Failure {
    Failure::retryable(format!("could not {action} plugin state {key:?}: {error}"))
}

fn http_failure(what: &str, error: HttpError) -> Failure {
    match error {
        HttpError::Timeout(m) => Failure::retryable(format!("{what} timed out: {m}")),
        HttpError::Connect(m) => Failure::retryable(format!("{what} could not connect: {m}")),
        HttpError::Denied(m) => Failure::Permanent(format!("{what} was refused by hookhost: {m}")),
        HttpError::InvalidRequest(m) => Failure::Permanent(format!("{what} was malformed (a graph-guest bug): {m}")),
        // The budget is per attempt and a flow sends at most eight requests (Okta, token,
        // two lookups, read, write, and one token refresh with its resend), so a spent
        // budget is a limit set below that: retrying would spend it the same way.
        HttpError::BudgetExhausted(m) => Failure::Permanent(format!(
            "{what} was not sent: {m}; graph-guest needs up to 8 requests per event, \
             raise max_http_requests in [limits]"
        )),
        HttpError::ResponseTooLarge(m) => {
            Failure::Permanent(format!("{what} answered more than hookhost accepts: {m}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Secrets;

    fn redact(text: &str, values: &[&str]) -> String {
        let mut secrets = Secrets::default();
        for v in values {
            secrets.add((*v).to_string());
        }
        secrets.redact(text)
    }

    #[test]
    fn every_occurrence_of_every_secret_is_redacted_longest_first() {
        // Added shortest first: the longest must still win.
        let secrets = ["tok3n", "abc-secret", "abc-secret-long", "ab"];
        assert_eq!(
            redact("x abc-secret-long y abc-secret z tok3ntok3n", &secrets),
            "x [redacted] y [redacted] z [redacted][redacted]"
        );
        assert_eq!(redact("nothing here", &secrets), "nothing here");
        assert_eq!(redact("", &secrets), "");
        assert_eq!(redact("ünïcode tok3n ✓", &secrets), "ünïcode [redacted] ✓");
        assert_eq!(redact("abc-secre", &secrets), "abc-secre");
        // Shorter than MIN_SCRUBBED_LEN: not a secret, left alone.
        assert_eq!(redact("a ab b", &secrets), "a ab b");
        assert_eq!(redact("tok3n", &[]), "tok3n");
    }
}
