//! What the plugin needs from whoever runs it, as plain Rust traits.
//!
//! In the component these are the hookhost WIT imports (`src/component.rs` binds them); in
//! native tests and benchmarks they are whatever the caller writes (a scripted fake, a
//! blocking HTTP client). The types mirror the WIT `http` and `log` interfaces one to one so
//! the binding is a field-by-field copy and no behaviour hides in it.

use std::time::{SystemTime, UNIX_EPOCH};

/// An HTTP request method (WIT `http.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method as it appears on the wire, e.g. `"GET"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// An outbound request (WIT `http.request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// Absolute `http` or `https` URL; its origin must be granted to the plugin.
    pub url: String,
    /// Header names and values, in order. Never `host`, `content-length`, `connection` or
    /// `transfer-encoding` (the host sets those).
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// The plugin's own timeout; the host uses the smaller of this and the attempt's time left.
    pub timeout_ms: Option<u32>,
}

impl Request {
    /// The value of the first header called `name` (ASCII case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response, whatever its status (WIT `http.response`): a 4xx or 5xx is a response, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names and values (the hookhost runtime lower-cases names; lookups here do not rely on it).
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (ASCII case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Why no response came back (WIT `http.http-error`). Each carries the host's message, which
/// says what happened and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The origin is not granted to this plugin; nothing left the host.
    Denied(String),
    /// The request is malformed (bad URL, forbidden header); nothing left the host.
    InvalidRequest(String),
    /// The attempt's budget of HTTP requests is spent; nothing left the host.
    BudgetExhausted(String),
    /// No answer in time.
    Timeout(String),
    /// The connection failed (DNS, refused, reset, TLS).
    Connect(String),
    /// The response body was larger than the host's cap.
    ResponseTooLarge(String),
}

/// A log level (WIT `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Requests made and their statuses (never tokens or secrets).
    Debug,
    /// What was done.
    Info,
    /// Something odd that did not stop the run.
    Warn,
    /// Why the run failed.
    Error,
}

/// Outbound HTTP, limited by the host to the origins the operator granted.
pub trait Http {
    /// Send one request and wait for the whole response. Redirects are not followed.
    ///
    /// # Errors
    ///
    /// An [`HttpError`] when no response came back.
    fn send(&mut self, request: Request) -> Result<Response, HttpError>;
}

/// Durable key-value state private to this plugin.
pub trait Kv {
    /// The value stored under `key`, or `None`.
    ///
    /// # Errors
    ///
    /// The store failed; the message says how.
    fn get(&mut self, key: &str) -> Result<Option<String>, String>;
    /// Store `value` under `key`, durably, replacing any earlier value.
    ///
    /// # Errors
    ///
    /// The store failed; the message says how.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String>;
    /// Remove `key`; removing a missing key is not an error.
    ///
    /// # Errors
    ///
    /// The store failed; the message says how.
    fn delete(&mut self, key: &str) -> Result<(), String>;
    /// Up to 1000 entries whose key starts with `prefix`, in ascending key order, after the
    /// key `after` (WIT `kv.scan`).
    ///
    /// # Errors
    ///
    /// The store failed; the message says how.
    fn scan(&mut self, prefix: &str, after: Option<&str>) -> Result<Vec<(String, String)>, String>;
}

/// Secrets the operator granted this plugin by name.
pub trait Secrets {
    /// The secret's value, or `None` when it is not granted or has no value.
    fn get(&self, name: &str) -> Option<String>;
}

/// The plugin's effective configuration (manifest `[config]` overlaid by the operator's).
pub trait Config {
    /// The value for `key` as a string (`false` → `"false"`), or `None` when unset.
    fn get(&self, key: &str) -> Option<String>;
}

/// Log lines recorded with the attempt.
pub trait Log {
    /// Record one line.
    fn log(&mut self, level: Level, message: &str);
}

/// Wall-clock time, for the token cache's expiry.
///
/// The provided method reads the system clock, which WASI 0.2 grants every component; a
/// test overrides it to make expiry deterministic.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Everything [`crate::handle`] needs, in one bound. Implemented for every type that
/// implements the six capability traits.
pub trait Host: Http + Kv + Secrets + Config + Log + Clock {}

impl<T: Http + Kv + Secrets + Config + Log + Clock> Host for T {}
