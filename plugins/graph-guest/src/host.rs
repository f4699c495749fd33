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

/// A JWS signature algorithm (WIT `keys.algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256; RSA keys.
    Rs256,
    /// RSASSA-PSS with SHA-256; RSA keys. What Entra ID documents for client assertions.
    Ps256,
    /// ECDSA P-256 with SHA-256; EC keys (which Entra ID does not accept).
    Es256,
}

impl Algorithm {
    /// The JWS `alg` name, e.g. `"PS256"`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
            Algorithm::Es256 => "ES256",
        }
    }
}

/// What a granted key can do (WIT `keys.key-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The algorithms the key signs with.
    pub algorithms: Vec<Algorithm>,
    /// `x5t#S256` of the certificate that came with the key, if one did.
    pub certificate_thumbprint: Option<String>,
}

/// Why no signature came back (WIT `keys.sign-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The key is not granted.
    Denied(String),
    /// The algorithm does not fit the key, or the message is too large.
    InvalidRequest(String),
    /// The signature could not be made.
    Failed(String),
}

/// Private keys the operator granted, which the host signs with; the plugin never holds them.
///
/// The provided methods are those of a host that granted no key, so a runner without keys
/// (a test, a benchmark) implements it with an empty `impl`.
pub trait Keys {
    /// What the key called `name` can do, or `None` when it is not granted.
    fn key_info(&self, _name: &str) -> Option<KeyInfo> {
        None
    }

    /// The signature of `message` with the key called `name`.
    ///
    /// # Errors
    ///
    /// The key is not granted, does not sign with `algorithm`, or signing failed.
    fn sign(&mut self, name: &str, _algorithm: Algorithm, _message: &[u8]) -> Result<Vec<u8>, SignError> {
        Err(SignError::Denied(format!("key {name:?} is not granted")))
    }

    /// A fresh, unique id for a JWT's `jti`: a random UUID v4.
    ///
    /// The provided method draws on std's hasher seeds, which come from WASI 0.2's random
    /// source (granted to every component) in the component and from the OS natively.
    fn jwt_id(&self) -> String {
        use std::hash::{BuildHasher, Hasher};
        let mut bytes = [0u8; 16];
        for (i, half) in bytes.chunks_mut(8).enumerate() {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(i);
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }
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
/// implements the seven capability traits.
pub trait Host: Http + Kv + Secrets + Keys + Config + Log + Clock {}

impl<T: Http + Kv + Secrets + Keys + Config + Log + Clock> Host for T {}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoKeys;
    impl Keys for NoKeys {}

    #[test]
    fn jwt_ids_are_fresh_uuid_v4s() {
        let (a, b) = (NoKeys.jwt_id(), NoKeys.jwt_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
