//! The `http` import: outbound HTTP for plugins, default deny.
//!
//! Grants: requests to the origins (scheme, host, port) in the plugin's effective
//! `allowed_hosts`, at most `max_http_requests` per attempt, each bounded by the smaller of
//! its own timeout and the time left before the attempt's deadline, with the response body
//! capped at `max_response_bytes`.
//!
//! Refuses, before anything leaves the process: an origin not granted (the error names the
//! origin and the config line that would grant it), a non-http(s) URL, URLs with
//! credentials, and the headers the host owns (`host`, `content-length`, `connection`,
//! `transfer-encoding`, ...): overriding `Host` would let a plugin reach another virtual
//! host behind a granted address. Redirects are never followed: the 3xx comes back to the
//! plugin, which may follow it with a new request that is checked like any other.

use std::time::{Duration, Instant};

use super::bindings::http::{HttpError, Method, Request, Response};
use super::bindings::http::Host;
use super::grant::Origin;
use super::log::{LogLevel, LogSource};
use super::state::AttemptState;

/// Headers the host sets itself; a plugin may not.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
];

/// Default per-request timeout when the plugin gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared HTTP client: no redirects, no proxies from the environment, rustls.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("hookhost/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl AttemptState {
    fn refuse(&mut self, err: HttpError) -> Result<Response, HttpError> {
        let msg = match &err {
            HttpError::Denied(m)
            | HttpError::InvalidRequest(m)
            | HttpError::BudgetExhausted(m)
            | HttpError::Timeout(m)
            | HttpError::Connect(m)
            | HttpError::ResponseTooLarge(m) => m.clone(),
        };
        self.log.push(LogLevel::Warn, LogSource::Host, msg);
        Err(err)
    }

    fn check(&mut self, req: &Request) -> Result<url::Url, HttpError> {
        let plugin = &self.plugin.name;
        if self.http_requests >= self.plugin.limits.max_http_requests {
            return Err(HttpError::BudgetExhausted(format!(
                "plugin {plugin} used its {} HTTP requests for this attempt ([limits] max_http_requests)",
                self.plugin.limits.max_http_requests
            )));
        }
        let url = url::Url::parse(&req.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL {:?}: {e}", req.url)))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HttpError::InvalidRequest(
                "URLs with credentials are refused; send them in a header".into(),
            ));
        }
        let origin = Origin::of_url(&url).ok_or_else(|| {
            HttpError::InvalidRequest(format!(
                "only http and https URLs with a host are allowed, not {:?}",
                req.url
            ))
        })?;
        if !self.plugin.grant.allowed_origins.contains(&origin) {
            return Err(HttpError::Denied(format!(
                "plugin {plugin} asked for {origin}, which is not in its allowed_hosts; add \"{origin}\" to [plugins.{plugin}] allowed_hosts if intended"
            )));
        }
        for (name, _) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
                return Err(HttpError::InvalidRequest(format!(
                    "header {name:?} is set by the host and cannot be set by a plugin"
                )));
            }
        }
        Ok(url)
    }
}

impl Host for AttemptState {
    async fn send(&mut self, req: Request) -> Result<Response, HttpError> {
        let url = match self.check(&req) {
            Ok(url) => url,
            Err(e) => return self.refuse(e),
        };
        self.http_requests += 1;

        let left = self.deadline.saturating_duration_since(Instant::now());
        let own = req
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(DEFAULT_TIMEOUT);
        let timeout = own.min(left);
        if timeout.is_zero() {
            return self.refuse(HttpError::Timeout(
                "the attempt's deadline has passed; no request was sent".into(),
            ));
        }

        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.http.request(method, url.clone()).timeout(timeout);
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let request = match builder.build() {
            Ok(r) => r,
            Err(e) => {
                return self.refuse(HttpError::InvalidRequest(format!("bad request: {e}")))
            }
        };

        let cap = self.plugin.limits.max_response_bytes;
        let host_for_msg = Origin::of_url(&url).map(|o| o.to_string()).unwrap_or_default();
        let result = tokio::time::timeout(timeout, async {
            let mut resp = self.http.execute(request).await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect::<Vec<_>>();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > cap {
                    return Ok(Err(body.len() + chunk.len()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(Response { status, headers, body }))
        })
        .await;

        match result {
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(_seen))) => self.refuse(HttpError::ResponseTooLarge(format!(
                "response from {host_for_msg} is larger than {cap} bytes ([limits] max_response_bytes)"
            ))),
            Ok(Err(e)) if e.is_timeout() => self.refuse(HttpError::Timeout(format!(
                "no answer from {host_for_msg} within {} ms",
                timeout.as_millis()
            ))),
            Ok(Err(e)) => self.refuse(HttpError::Connect(format!(
                "request to {host_for_msg} failed: {}",
                error_chain(&e)
            ))),
            Err(_) => self.refuse(HttpError::Timeout(format!(
                "no answer from {host_for_msg} within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// The error and its causes on one line (reqwest's top-level message alone is vague).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
