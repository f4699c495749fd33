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
//!
//! # Checked twice: the origin, then the address
//!
//! A grant names a host, but a connection goes to an address, and whoever controls a DNS
//! name decides where it points. `https://api.example.com` resolving to `127.0.0.1`,
//! `10.0.0.5` or `169.254.169.254` (the cloud metadata service) would let a plugin, or
//! whoever serves that zone, reach services on the host's own network. So after the origin
//! check, every address a *name* resolves to is checked against the internal ranges
//! ([`blocked_range`]: loopback, link-local, private, shared/CGNAT, unspecified, multicast
//! and reserved, and the IPv4-mapped, -compatible and NAT64 IPv6 forms of them); if any is
//! internal, nothing is sent and the plugin gets `denied`.
//!
//! An internal address is reachable only when the grant names that address itself, e.g.
//! `http://127.0.0.1:8081`: an operator who writes an IP literal has chosen that machine.
//! This needs no knowledge of the grant inside the resolver: a URL whose host is an IP
//! literal is never resolved (the connector uses the literal), and it passed the origin
//! check only because the grant names exactly that literal; a URL whose host is a name goes
//! through [`CheckedResolver`], which allows public addresses only. The resolver is the
//! shared client's only resolver and returns exactly the addresses it checked, and the
//! connector connects to those without resolving again, so a name cannot be re-pointed
//! between the check and the connection (DNS rebinding). Proxies from the environment are
//! off, so no proxy resolves names on our behalf either.
//!
//! # Trace context and Graph's request ids
//!
//! With telemetry on ([`crate::telemetry`]), each request is a client span, a child of the
//! current span (the caller's: the dispatcher runs an attempt inside its attempt span; this
//! module knows no caller), and carries a W3C `traceparent` naming that span; a
//! `traceparent`/`tracestate` the plugin wrote is dropped, since the host owns the trace.
//! Whatever the setting, an answer carrying Microsoft Graph's `request-id` or
//! `client-request-id` leaves a host line with them in the attempt's log, because those ids
//! are what Microsoft support asks for about a call.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::attempt::{LogLevel, LogSource};
use crate::runtime::bindings::http::Host;
use crate::runtime::bindings::http::{HttpError, Method, Request, Response};
use crate::runtime::grant::Origin;
use crate::runtime::pace::Admission;
use crate::runtime::state::AttemptState;

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

/// W3C trace context headers: the host writes them when telemetry is on.
const TRACE_HEADERS: &[&str] = &["traceparent", "tracestate"];

/// The response headers Microsoft Graph (and Entra ID) identify a request by; support asks
/// for them, so they go on the HTTP span and in the attempt's log.
const GRAPH_ID_HEADERS: [&str; 2] = ["request-id", "client-request-id"];

/// A response header's value, capped, for a log line or span attribute.
fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.get(..128).unwrap_or(v.as_str()))
}

/// Status and Graph's ids on the HTTP span.
fn record_answer(span: &mut crate::telemetry::HttpSpan, resp: &Response) {
    span.answered(resp.status);
    for name in GRAPH_ID_HEADERS {
        if let Some(v) = header(resp, name) {
            span.header(name, v);
        }
    }
}

/// The attempt-log line of a call answered with Graph's ids, e.g. `POST https://graph.microsoft.com
/// answered 201 (request-id 5f…, client-request-id 5f…)`; `None` when it carried neither.
fn graph_ids_line(method: &str, origin: &Origin, resp: &Response) -> Option<String> {
    use std::fmt::Write;
    let mut line = String::new();
    for name in GRAPH_ID_HEADERS {
        if let Some(v) = header(resp, name) {
            let sep = if line.is_empty() { "" } else { ", " };
            let _ = write!(line, "{sep}{name} {}", crate::logsafe::Clean(v));
        }
    }
    (!line.is_empty()).then(|| format!("{method} {origin} answered {} ({line})", resp.status))
}

/// Default per-request timeout when the plugin gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared HTTP client: no redirects, no proxies from the environment, rustls, and
/// names resolved only to public addresses ([`CheckedResolver`]).
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(CheckedResolver)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("hookhost/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl AttemptState {
    fn refuse(&mut self, err: HttpError) -> Result<Response, HttpError> {
        match &err {
            // The host's own refusals (grants, budget, caps, host-owned headers).
            HttpError::Denied(m)
            | HttpError::InvalidRequest(m)
            | HttpError::BudgetExhausted(m)
            | HttpError::ResponseTooLarge(m) => self.refused("http", m.clone()),
            // The network's answer, not a refusal.
            HttpError::Timeout(m) | HttpError::Connect(m) => self.log.push(LogLevel::Warn, LogSource::Host, m.clone()),
        }
        Err(err)
    }

    /// The host's own answer while `origin` has paused this plugin's calls: a 429 with the
    /// remaining `Retry-After`, shaped like Graph's throttling error, and nothing sent.
    fn paused_answer(&mut self, origin: &Origin, remaining: Duration) -> Response {
        let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        let message = format!(
            "not sent: {origin} asked this plugin to slow down (429/503 with Retry-After); calls to it resume in {secs} s"
        );
        self.log.push(LogLevel::Warn, LogSource::Host, message.clone());
        let body = serde_json::json!({"error": {"code": "TooManyRequests", "message": message}});
        Response {
            status: 429,
            headers: vec![
                ("retry-after".into(), secs.to_string()),
                ("content-type".into(), "application/json".into()),
                ("x-hookhost-paused".into(), "true".into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    /// The request's URL and its (granted) origin, or why the host refuses it.
    fn check(&mut self, req: &Request) -> Result<(url::Url, Origin), HttpError> {
        let plugin = &self.plugin.name;
        if self.http_requests >= self.plugin.limits.max_http_requests {
            return Err(HttpError::BudgetExhausted(format!(
                "plugin {plugin} used its {} HTTP requests for this attempt ([limits] max_http_requests)",
                self.plugin.limits.max_http_requests
            )));
        }
        let url =
            url::Url::parse(&req.url).map_err(|e| HttpError::InvalidRequest(format!("bad URL {:?}: {e}", req.url)))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HttpError::InvalidRequest("URLs with credentials are refused; send them in a header".into()));
        }
        let origin = Origin::of_url(&url).ok_or_else(|| {
            HttpError::InvalidRequest(format!("only http and https URLs with a host are allowed, not {:?}", req.url))
        })?;
        if !self.plugin.grant.allowed_origins.contains(&origin) {
            return Err(HttpError::Denied(format!(
                "plugin {plugin} asked for {origin}, which is not in its allowed_hosts; add \"{origin}\" to [plugins.{plugin}] allowed_hosts if intended"
            )));
        }
        for (name, _) in &req.headers {
            if FORBIDDEN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                return Err(HttpError::InvalidRequest(format!(
                    "header {name:?} is set by the host and cannot be set by a plugin"
                )));
            }
        }
        Ok((url, origin))
    }
}

impl Host for AttemptState {
    async fn send(&mut self, req: Request) -> Result<Response, HttpError> {
        let (url, origin) = match self.check(&req) {
            Ok(checked) => checked,
            Err(e) => return self.refuse(e),
        };
        self.http_requests += 1;

        let method_name = method_name(req.method);
        match self.plugin.pacer.admit(&origin, method_name).await {
            Admission::Go { waited } => {
                if !waited.is_zero() {
                    self.deadline += waited;
                    self.paced.fetch_add(waited.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Admission::Paused { remaining } => return Ok(self.paused_answer(&origin, remaining)),
        }

        let left = self.deadline.saturating_duration_since(Instant::now());
        let own = req.timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))).unwrap_or(DEFAULT_TIMEOUT);
        let timeout = own.min(left);
        if timeout.is_zero() {
            return self.refuse(HttpError::Timeout("the attempt's deadline has passed; no request was sent".into()));
        }

        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        debug_assert_eq!(method.as_str(), method_name);
        let mut builder = self.http.request(method, url.clone()).timeout(timeout);
        // With telemetry on, the call is a span of the current one (the attempt's) and the
        // request names it in `traceparent`, replacing any trace context the plugin wrote.
        let mut span =
            crate::telemetry::http_span(method_name, url.host_str().unwrap_or_default(), url.port_or_known_default());
        let traceparent = span.as_ref().map(crate::telemetry::HttpSpan::traceparent);
        for (name, value) in &req.headers {
            if traceparent.is_some() && TRACE_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(value) = &traceparent {
            builder = builder.header("traceparent", value.as_str());
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let request = match builder.build() {
            Ok(r) => r,
            Err(e) => return self.refuse(HttpError::InvalidRequest(format!("bad request: {e}"))),
        };

        let cap = self.plugin.limits.max_response_bytes;
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

        if let Some(span) = &mut span {
            match &result {
                Ok(Ok(Ok(resp))) => record_answer(span, resp),
                _ => span.failed(),
            }
        }
        drop(span);
        match result {
            Ok(Ok(Ok(resp))) => {
                if let Some(line) = graph_ids_line(method_name, &origin, &resp) {
                    self.log.push(LogLevel::Info, LogSource::Host, line);
                }
                if let Some(pause) = self.plugin.pacer.observe(&origin, resp.status, &resp.headers) {
                    self.log.push(
                        LogLevel::Warn,
                        LogSource::Host,
                        format!(
                            "{origin} answered {} with Retry-After: pausing this plugin's calls to it for {} ms",
                            resp.status,
                            pause.as_millis()
                        ),
                    );
                }
                Ok(resp)
            }
            Ok(Err(e)) if blocked_in(&e).is_some() => {
                let msg = blocked_in(&e).map(|b| b.refusal(&self.plugin.name, &url)).unwrap_or_default();
                self.refuse(HttpError::Denied(msg))
            }
            Ok(Ok(Err(_seen))) => self.refuse(HttpError::ResponseTooLarge(format!(
                "response from {origin} is larger than {cap} bytes ([limits] max_response_bytes)"
            ))),
            Ok(Err(e)) if e.is_timeout() => {
                self.refuse(HttpError::Timeout(format!("no answer from {origin} within {} ms", timeout.as_millis())))
            }
            Ok(Err(e)) => self.refuse(HttpError::Connect(format!("request to {origin} failed: {}", error_chain(&e)))),
            Err(_) => {
                self.refuse(HttpError::Timeout(format!("no answer from {origin} within {} ms", timeout.as_millis())))
            }
        }
    }
}

/// The upper-case name of a WIT method, as pace rules name it.
fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
    }
}

/// Why a name was not resolved: it points at an internal address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {addr}, {range}; a DNS name may not lead to an internal address")]
pub struct BlockedAddress {
    pub host: String,
    pub addr: IpAddr,
    /// Which internal range, in words (`"a loopback address (127.0.0.0/8)"`).
    pub range: &'static str,
}

impl BlockedAddress {
    /// The plugin-facing refusal: what was asked, where it points, and the grant that would
    /// allow it on purpose.
    fn refusal(&self, plugin: &str, url: &url::Url) -> String {
        let origin = Origin::of_url(url).map(|o| o.to_string()).unwrap_or_default();
        let literal = match self.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "plugin {plugin} asked for {origin}, but {} resolves to {}, {}; nothing was sent. \
             A granted name may not lead to an internal address; if this service is meant to \
             be reached, grant the address itself (\"{}://{literal}{port}\") in [plugins.{plugin}] allowed_hosts",
            self.host,
            self.addr,
            self.range,
            url.scheme()
        )
    }
}

/// The internal range `ip` is in, in words, or `None` for a public address.
///
/// IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`) are judged by that IPv4 address, since that is where the
/// packets end up.
pub fn blocked_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (0, _) => "an unspecified address (0.0.0.0/8)",
        (127, _) => "a loopback address (127.0.0.0/8)",
        (10, _) => "a private address (10.0.0.0/8)",
        (172, 16..=31) => "a private address (172.16.0.0/12)",
        (192, 168) => "a private address (192.168.0.0/16)",
        (169, 254) => "a link-local address (169.254.0.0/16, incl. the cloud metadata service 169.254.169.254)",
        (100, 64..=127) => "a shared (carrier-grade NAT) address (100.64.0.0/10)",
        (224..=239, _) => "a multicast address (224.0.0.0/4)",
        (240..=255, _) => "a reserved or broadcast address (240.0.0.0/4)",
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("an unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("a loopback address (::1)");
    }
    let seg = ip.segments();
    let embedded = |hi: [u16; 6]| -> Option<Ipv4Addr> {
        (seg[..6] == hi).then(|| {
            let [a, b] = seg[6].to_be_bytes();
            let [c, d] = seg[7].to_be_bytes();
            Ipv4Addr::new(a, b, c, d)
        })
    };
    let carried = embedded([0, 0, 0, 0, 0, 0xffff]) // IPv4-mapped
        .or_else(|| embedded([0, 0, 0, 0, 0, 0])) // IPv4-compatible (deprecated)
        .or_else(|| embedded([0x64, 0xff9b, 0, 0, 0, 0])); // NAT64 well-known prefix
    if let Some(v4) = carried {
        return blocked_v4(v4);
    }
    Some(match seg[0] {
        s if s & 0xffc0 == 0xfe80 => "a link-local address (fe80::/10)",
        s if s & 0xffc0 == 0xfec0 => "a site-local address (fec0::/10)",
        s if s & 0xfe00 == 0xfc00 => "a unique local (private) address (fc00::/7)",
        s if s & 0xff00 == 0xff00 => "a multicast address (ff00::/8)",
        _ => return None,
    })
}

/// The shared client's resolver: the system resolver, then [`blocked_range`] on every
/// address. Only names reach it (IP literals are connected to as written).
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckedResolver;

impl CheckedResolver {
    /// Resolves `host` and returns its addresses if none is internal.
    ///
    /// # Errors
    /// The name does not resolve, or resolves to an internal address ([`BlockedAddress`]).
    pub async fn lookup(host: &str) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        if addrs.is_empty() {
            return Err(format!("{host} resolves to no address").into());
        }
        if let Some((addr, range)) = addrs.iter().find_map(|a| blocked_range(a.ip()).map(|r| (a.ip(), r))) {
            return Err(Box::new(BlockedAddress { host: host.to_owned(), addr, range }));
        }
        Ok(addrs)
    }
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = Self::lookup(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`BlockedAddress`] somewhere in a request error's causes, if that is why it failed.
fn blocked_in(e: &reqwest::Error) -> Option<&BlockedAddress> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<BlockedAddress>() {
            return Some(b);
        }
        cur = err.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ip: &str) -> Option<&'static str> {
        blocked_range(ip.parse().unwrap())
    }

    #[test]
    fn internal_ranges_are_blocked_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(range(ip).is_some(), "{ip} must be blocked");
        }
        assert!(range("169.254.169.254").unwrap().contains("metadata"));
        assert!(range("::ffff:127.0.0.1").unwrap().contains("loopback"));
    }

    #[test]
    fn graphs_request_ids_make_one_attempt_log_line() {
        let origin = Origin::of_url(&url::Url::parse("https://graph.microsoft.com/v1.0/users").unwrap()).unwrap();
        let resp = |headers: &[(&str, &str)]| Response {
            status: 201,
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            body: Vec::new(),
        };
        let line = graph_ids_line("POST", &origin, &resp(&[("Request-Id", "r-1"), ("client-request-id", "c\n2")]));
        assert_eq!(
            line.as_deref(),
            Some("POST https://graph.microsoft.com answered 201 (request-id r-1, client-request-id c\\n2)")
        );
        assert_eq!(graph_ids_line("GET", &origin, &resp(&[("content-type", "application/json")])), None);
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "20.190.160.1",
            "2001:4860:4860::8888",
            "2603:1030::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(range(ip), None, "{ip} must be allowed");
        }
    }

    #[tokio::test]
    async fn a_name_for_loopback_is_refused_by_the_resolver() {
        let err = CheckedResolver::lookup("localhost").await.unwrap_err();
        let blocked = err.downcast_ref::<BlockedAddress>().expect("a BlockedAddress");
        assert!(blocked.range.contains("loopback"), "{blocked}");
        let url = url::Url::parse("http://localhost:8081/x").unwrap();
        let msg = blocked.refusal("demo", &url);
        assert!(msg.contains("http://localhost:8081") && msg.contains("[plugins.demo] allowed_hosts"), "{msg}");
        assert!(msg.contains("\"http://127.0.0.1:8081\"") || msg.contains("\"http://[::1]:8081\""), "{msg}");
    }
}
