//! An in-process emulator of Microsoft Graph (the slice graph-guest uses) and of the Entra ID
//! token endpoint, so the plugin and the host can be tested end to end without a tenant.
//!
//! It serves, on one `http://127.0.0.1:PORT` origin (use it as both `graph_url` and `login_url`):
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant, with Entra's OAuth error
//!   shape and AADSTS codes for each thing Entra rejects (see `token.rs`), by client secret or by
//!   a client assertion signed with a certificate's key ([`GraphEmulator::register_certificate`],
//!   checked as Entra checks it in `assertion.rs`).
//! - `POST /v1.0/invitations`, `GET /v1.0/users` (`$filter`, `$select`, `$top` 1–999, default
//!   100, `$count`; more results than a page give `@odata.nextLink` with a `$skiptoken`),
//!   `GET|PATCH|DELETE /v1.0/users/{id | userPrincipalName}` (see `directory.rs`, `filter.rs`).
//! - `GET /_emulator/users`, `GET /_emulator/journal`, `GET /_emulator/invitations` and
//!   `POST /_emulator/faults`: inspection and fault injection for demos and other processes
//!   (the `graph-emulator` binary, whose command line is [`cli`]).
//!
//! Behaviour follows Microsoft's public Graph and identity platform documentation and the
//! verbatim payloads in `tests/fixtures/graph`: every `/v1.0` call needs a bearer token this
//! emulator issued and that has not expired (401 `InvalidAuthenticationToken` otherwise); errors
//! use Graph's `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`
//! envelope, 429 carries `Retry-After`; `GET /users` returns only Graph's default property set
//! unless `$select` asks for more (so `userType` must be selected, as against real Graph);
//! advanced filters (`ne`, `not`, `endsWith`) need `ConsistencyLevel: eventual` and
//! `$count=true`. The emulator rejects what Graph rejects; where Graph would accept something the
//! emulator does not model, the error message names `graph-emulator` so the gap is obvious.
//!
//! Time is `tokio::time` throughout (token lifetime, replication lag, latency faults), so tests can
//! use `tokio::time::pause()`. With paused time the runtime jumps to the next timer whenever it
//! waits on a socket, so build the test's reqwest client with `.pool_idle_timeout(None)` (its pool
//! timer would otherwise advance the clock by 90 s at a time) and make lags and delays long.
//!
//! Faults ([`Fault`]) are queued rules consumed in FIFO order by `/v1.0` requests, before the
//! bearer check: each request takes the first queued rule whose method and path prefix match,
//! which then has one use fewer. The token endpoint is never faulted.

mod assertion;
pub mod cli;
mod conn;
mod directory;
mod filter;
#[cfg(test)]
mod tests;
mod token;

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::ids;
use crate::server::ServerHandle;

pub use assertion::Certificate;
pub use directory::{Invitation, NewUser, User};

/// The app registration and directory the emulator plays.
#[derive(Clone, Debug)]
pub struct TenantConfig {
    /// Directory (tenant) id; the token endpoint also accepts [`TenantConfig::domain`] in its place.
    pub tenant_id: String,
    /// Application (client) id of the only registered app.
    pub client_id: String,
    /// That app's client secret.
    pub client_secret: String,
    /// `expires_in` of issued tokens; tokens stop working this many seconds after issue.
    /// Entra answers 3599.
    pub token_ttl_secs: u64,
    /// The tenant's initial domain, the suffix of every UPN (`…#EXT#@contoso.onmicrosoft.com`).
    pub domain: String,
}

impl Default for TenantConfig {
    /// The fixed tenant of the `graph-emulator` binary and of most tests.
    fn default() -> Self {
        Self {
            tenant_id: "00000000-0000-0000-0000-000000000001".into(),
            client_id: "11111111-1111-1111-1111-111111111111".into(),
            client_secret: "emulator-secret".into(),
            token_ttl_secs: 3599,
            domain: "contoso.onmicrosoft.com".into(),
        }
    }
}

/// A failure to serve instead of (or before) the real answer to a `/v1.0` request.
///
/// As JSON (for `POST /_emulator/faults`): `{"kind":"throttle","times":2,"retry_after":"2.128"}`,
/// `{"kind":"latency","times":1,"delay_ms":1500}`, optionally with `"method"` and `"path_prefix"`
/// beside `kind` to scope it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// 429 `TooManyRequests` with `Retry-After: {retry_after}` (seconds, e.g. `"2.128"` or `"10"`).
    Throttle {
        /// Number of requests that get it.
        times: usize,
        /// The `Retry-After` header value, verbatim.
        retry_after: String,
    },
    /// 503 `serviceNotAvailable`, with `Retry-After` when given.
    Unavailable {
        /// Number of requests that get it.
        times: usize,
        /// The `Retry-After` header value, verbatim.
        #[serde(default)]
        retry_after: Option<String>,
    },
    /// 504 Gateway Timeout.
    GatewayTimeout {
        /// Number of requests that get it.
        times: usize,
    },
    /// Waits `delay` (tokio time), then serves the request normally.
    Latency {
        /// Number of requests that get it.
        times: usize,
        /// How long each is held.
        #[serde(rename = "delay_ms", with = "millis")]
        delay: Duration,
    },
    /// 403 `Authorization_RequestDenied` ("Insufficient privileges…"), as for a missing permission.
    Forbidden {
        /// Number of requests that get it.
        times: usize,
    },
    /// Closes the connection after reading the request, without answering.
    ResetConnection {
        /// Number of requests that get it.
        times: usize,
    },
}

impl Fault {
    fn times(&self) -> usize {
        match self {
            Fault::Throttle { times, .. }
            | Fault::Unavailable { times, .. }
            | Fault::GatewayTimeout { times }
            | Fault::Latency { times, .. }
            | Fault::Forbidden { times }
            | Fault::ResetConnection { times } => *times,
        }
    }
}

/// Milliseconds on the wire for [`Fault::Latency`].
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(delay: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// One request the emulator received (admin `/_emulator/*` calls are not recorded).
#[derive(Clone, Debug, Serialize)]
pub struct JournalEntry {
    /// HTTP method.
    pub method: String,
    /// Path as sent (percent-encoded).
    pub path: String,
    /// Raw query string as sent, if any; see [`JournalEntry::query_param`].
    pub query: Option<String>,
    /// Status answered; 0 when a [`Fault::ResetConnection`] dropped the connection instead.
    pub status: u16,
    /// Wall-clock receive time, RFC 3339.
    pub at: String,
    /// Receive time on the tokio clock, for measuring gaps (e.g. that `Retry-After` was honoured).
    #[serde(skip)]
    pub received: Instant,
    /// The `request-id` the emulator answered with.
    pub request_id: String,
    /// The `Retry-After` header the emulator answered with (throttling and outage faults).
    pub retry_after: Option<String>,
    /// The W3C `traceparent` request header, when the caller sent one (trace propagation).
    pub traceparent: Option<String>,
}

impl JournalEntry {
    /// The decoded value of query parameter `name` (e.g. `"$filter"`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    }
}

/// A running emulator: one tenant, one registered app, one HTTP origin.
pub struct GraphEmulator {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl GraphEmulator {
    /// Starts the emulator on `127.0.0.1` at a free port.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(cfg: TenantConfig) -> anyhow::Result<GraphEmulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Starts the emulator on `addr` (port 0 picks a free one).
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr, cfg: TenantConfig) -> anyhow::Result<GraphEmulator> {
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("binding the Graph emulator to {addr}"))?;
        let local = listener.local_addr().context("reading the Graph emulator's address")?;
        let shared =
            Arc::new(Shared { cfg, base_url: format!("http://{local}"), tenant: Mutex::new(Tenant::default()) });
        let app = router(shared.clone()).into_make_service_with_connect_info::<conn::Connection>();
        let server = ServerHandle::spawn(local, |stop| {
            axum::serve(conn::DroppableListener::new(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .into_future()
        });
        Ok(GraphEmulator { shared, server })
    }

    /// `http://127.0.0.1:PORT`, the value for both `graph_url` and `login_url`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The tenant this emulator plays.
    pub fn config(&self) -> &TenantConfig {
        &self.shared.cfg
    }

    /// Adds a member (employee) account with this mail; returns its object id. Seeded users are
    /// visible to list queries at once, whatever the replication lag.
    pub fn seed_member(&self, mail: &str, display_name: &str) -> String {
        self.seed_user(NewUser::member(mail, display_name))
    }

    /// Adds an accepted guest account for this address (`#EXT#` UPN, `creationType: Invitation`);
    /// returns its object id.
    pub fn seed_guest(&self, mail: &str, display_name: &str) -> String {
        self.seed_user(NewUser::guest(mail, display_name))
    }

    /// Adds any account, e.g. a guest whose address is only in `otherMails` (the contact-collision
    /// case of DOMAIN §2.4) or a disabled one; returns its object id.
    pub fn seed_user(&self, spec: NewUser) -> String {
        let user = spec.into_user(&self.shared.cfg, None);
        let id = user.id.clone();
        self.shared.lock().users.push(user);
        id
    }

    /// Deletes a user the way an administrator does in the Entra admin center (not through
    /// this emulator's API, so nothing is journaled): it moves to deleted items. Whether
    /// it existed.
    pub fn delete_directly(&self, id: &str) -> bool {
        let mut tenant = self.shared.lock();
        match tenant.users.iter().position(|u| u.id == id) {
            Some(i) => {
                let user = tenant.users.remove(i);
                tenant.deleted.push(user);
                true
            }
            None => false,
        }
    }

    /// Snapshot of the directory's live (not deleted) users, in creation order.
    pub fn users(&self) -> Vec<User> {
        self.shared.lock().users.clone()
    }

    /// The live user with this object id, if any.
    pub fn user(&self, id: &str) -> Option<User> {
        self.shared.lock().users.iter().find(|u| u.id == id).cloned()
    }

    /// Users removed by `DELETE /v1.0/users/{id}` (Entra keeps them 30 days in deleted items).
    pub fn deleted_users(&self) -> Vec<User> {
        self.shared.lock().deleted.clone()
    }

    /// Every accepted `POST /v1.0/invitations`, including whether an email would have been sent.
    pub fn invitations(&self) -> Vec<Invitation> {
        self.shared.lock().invitations.clone()
    }

    /// Every request received so far, oldest first.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.shared.lock().journal.clone()
    }

    /// Queues `fault` for the next `/v1.0` requests, whatever their method and path.
    pub fn inject(&self, fault: Fault) {
        self.shared.queue_fault(FaultRule::new(fault, None, None));
    }

    /// Queues `fault` for `/v1.0` requests with this method (`None`: any) whose path starts with
    /// `path_prefix` (e.g. `"/v1.0/invitations"`).
    pub fn inject_for(&self, method: Option<Method>, path_prefix: &str, fault: Fault) {
        self.shared.queue_fault(FaultRule::new(fault, method, Some(path_prefix.to_owned())));
    }

    /// Number of fault uses still queued.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.iter().map(|rule| rule.remaining).sum()
    }

    /// Hides users created through `/v1.0/invitations` from `GET /v1.0/users` until they are
    /// `lag` old (Graph's "replication delays for users that were recently created"); GET by id
    /// sees them at once. Applies to existing users too.
    pub fn set_replication_lag(&self, lag: Duration) {
        self.shared.lock().replication_lag = lag;
    }

    /// Entra's other replication delay: a user created through `/v1.0/invitations` is not
    /// yet on the replica that serves the next calls by id. Its first `reads` calls to
    /// `GET|PATCH|DELETE /v1.0/users/{id}` answer 404 `Request_ResourceNotFound`, as Entra
    /// does moments after an invitation; later ones see it. Applies to users invited from now
    /// on; 0 (the default) turns it off.
    pub fn set_by_id_lag(&self, reads: usize) {
        self.shared.lock().by_id_lag_reads = reads;
    }

    /// Graph's write quota (its identity writes are limited per app and tenant): from now on
    /// POST, PATCH and DELETE under `/v1.0` take a token from a bucket refilled at
    /// `per_second` and holding at most `burst`; with none left the answer is Graph's 429
    /// `TooManyRequests` with `Retry-After` in whole seconds (at least 1), and nothing is
    /// done. Reads and the token endpoint are not counted.
    pub fn set_write_quota(&self, per_second: f64, burst: u32) {
        let burst = f64::from(burst.max(1));
        self.shared.lock().write_quota =
            Some(WriteQuota { per_second: per_second.max(0.001), burst, tokens: burst, last: Instant::now() });
    }

    /// Writes the quota let through and answered 429, since the emulator started.
    pub fn write_counts(&self) -> WriteCounts {
        let t = self.shared.lock();
        WriteCounts { accepted: t.writes_accepted, throttled: t.writes_throttled }
    }

    /// Expires every token issued so far: the next Graph call with one gets 401.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expiry in self.shared.lock().tokens.values_mut() {
            *expiry = now;
        }
    }

    /// Every access token issued so far (expired or not), e.g. to check none leaks.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().tokens.keys().cloned().collect()
    }

    /// Uploads a certificate (DER) to the app registration, as in the Entra admin center
    /// (Certificates & secrets → Certificates): client assertions signed with its key and
    /// naming it by `x5t#S256` (or `x5t`) are accepted from now on.
    ///
    /// # Errors
    /// The bytes are not an X.509 certificate.
    pub fn register_certificate(&self, der: &[u8]) -> Result<(), String> {
        let certificate = Certificate::from_der(der)?;
        self.shared.lock().certificates.push(certificate);
        Ok(())
    }

    /// Runs the token endpoint's clock for client assertions `secs` seconds ahead (negative:
    /// behind) of this machine's, as when the host's clock is off against Entra's: a fresh
    /// assertion is then expired, or not yet valid (AADSTS700024).
    pub fn skew_assertion_clock(&self, secs: i64) {
        self.shared.lock().assertion_clock_offset_secs = secs;
    }

    /// The login URL the token endpoint knows itself by, when clients reach it through another
    /// (a proxy, say): client assertions must then name `{url}/{tenant}/oauth2/v2.0/token` as
    /// their audience, and one naming the URL the client called is refused (AADSTS700023).
    pub fn set_audience_login_url(&self, url: &str) {
        self.shared.lock().assertion_login_url = Some(url.trim_end_matches('/').to_owned());
    }

    /// Number of requests to the token endpoint, successful or not.
    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_requests
    }

    /// Stops the server, letting requests in flight finish for a few seconds.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// State shared by the handlers and the [`GraphEmulator`] handle.
struct Shared {
    cfg: TenantConfig,
    base_url: String,
    tenant: Mutex<Tenant>,
}

/// Everything that changes. Guarded by one mutex, never held across an `.await`.
#[derive(Default)]
struct Tenant {
    /// Live users in creation order.
    users: Vec<User>,
    deleted: Vec<User>,
    invitations: Vec<Invitation>,
    /// Issued access token → the instant it stops being accepted.
    tokens: HashMap<String, Instant>,
    token_requests: usize,
    journal: Vec<JournalEntry>,
    faults: VecDeque<FaultRule>,
    replication_lag: Duration,
    /// Graph's write quota, when set: a token bucket over POST, PATCH and DELETE.
    write_quota: Option<WriteQuota>,
    /// Writes let through the quota (whatever their answer) and writes answered 429 by it.
    writes_accepted: u64,
    writes_throttled: u64,
    /// Reads by id (GET, PATCH, DELETE) of a newly invited user answered 404 first.
    by_id_lag_reads: usize,
    /// Per invited user id: how many of those 404s are still to come.
    lagging: HashMap<String, usize>,
    /// Certificates uploaded to the app registration.
    certificates: Vec<Certificate>,
    /// Seconds the assertion clock runs ahead of the system clock.
    assertion_clock_offset_secs: i64,
    /// The login URL in assertion audiences, when not the emulator's base URL.
    assertion_login_url: Option<String>,
}

/// A token bucket: `per_second` refill, at most `burst` tokens.
struct WriteQuota {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl WriteQuota {
    /// Takes a token, or answers how long until one is free.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
        }
    }
}

/// What the write quota did so far ([`GraphEmulator::write_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// POST, PATCH and DELETE requests to `/v1.0` the quota let through.
    pub accepted: u64,
    /// Those it answered 429 `TooManyRequests` with `Retry-After`.
    pub throttled: u64,
}

struct FaultRule {
    fault: Fault,
    remaining: usize,
    method: Option<Method>,
    path_prefix: Option<String>,
}

impl FaultRule {
    fn new(fault: Fault, method: Option<Method>, path_prefix: Option<String>) -> Self {
        Self { remaining: fault.times(), fault, method, path_prefix }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tenant> {
        self.tenant.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue_fault(&self, rule: FaultRule) {
        if rule.remaining > 0 {
            self.lock().faults.push_back(rule);
        }
    }

    fn take_fault(&self, method: &Method, path: &str) -> Option<Fault> {
        let mut tenant = self.lock();
        let index = tenant.faults.iter().position(|rule| rule.matches(method, path))?;
        let rule = tenant.faults.get_mut(index)?;
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        if rule.remaining == 0 {
            tenant.faults.remove(index);
        }
        Some(fault)
    }

    /// Checks `Authorization: Bearer <token>` against the issued, unexpired tokens.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), GraphError> {
        let value = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => "",
        };
        if token.is_empty() {
            return Err(GraphError::unauthenticated("Access token is empty."));
        }
        match self.lock().tokens.get(token) {
            None => Err(GraphError::unauthenticated("Access token validation failure. Invalid audience.")),
            Some(expiry) if Instant::now() >= *expiry => {
                Err(GraphError::unauthenticated("Lifetime validation failed, the token is expired."))
            }
            Some(_) => Ok(()),
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::issue))
        .route("/v1.0/invitations", post(directory::invite))
        .route("/v1.0/users", get(directory::list_users))
        .route("/v1.0/users/{id}", get(directory::get_user).patch(directory::patch_user).delete(directory::delete_user))
        .route("/_emulator/users", get(admin_users))
        .route("/_emulator/journal", get(admin_journal))
        .route("/_emulator/invitations", get(admin_invitations))
        .route("/_emulator/faults", post(admin_fault))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Wraps every request: request ids, faults and the bearer check for `/v1.0`, rendering of
/// [`GraphError`]s with those ids, and the journal.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/_emulator/") {
        return next.run(request).await;
    }
    let received = Instant::now();
    let method = request.method().clone();
    let query = request.uri().query().map(str::to_owned);
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request_id = ids::uuid_v4();
    let client_request_id = request
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| request_id.clone(), str::to_owned);

    let mut dropped = false;
    let mut early = None;
    if path == "/v1.0" || path.starts_with("/v1.0/") {
        match shared.take_fault(&method, &path) {
            Some(Fault::Latency { delay, .. }) => tokio::time::sleep(delay).await,
            Some(Fault::ResetConnection { .. }) => {
                if let Some(ConnectInfo(conn)) = request.extensions().get::<ConnectInfo<conn::Connection>>() {
                    conn.drop_connection();
                    dropped = true;
                }
                early = Some(StatusCode::BAD_GATEWAY.into_response());
            }
            Some(fault) => early = Some(GraphError::from_fault(&fault).into_response()),
            None => {}
        }
        if early.is_none() {
            if let Err(err) = shared.authorize(request.headers()) {
                early = Some(err.into_response());
            }
        }
        if early.is_none() && matches!(method, Method::POST | Method::PATCH | Method::DELETE) {
            let mut tenant = shared.lock();
            let verdict = tenant.write_quota.as_mut().map(|q| q.take(received));
            match verdict {
                None | Some(Ok(())) => tenant.writes_accepted += 1,
                Some(Err(wait)) => {
                    tenant.writes_throttled += 1;
                    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                    early = Some(
                        GraphError {
                            retry_after: Some(secs.to_string()),
                            ..GraphError::new(
                                StatusCode::TOO_MANY_REQUESTS,
                                "TooManyRequests",
                                "Please retry again later.",
                            )
                        }
                        .into_response(),
                    );
                }
            }
        }
    }
    let mut response = match early {
        Some(response) => response,
        None => next.run(request).await,
    };
    if let Some(err) = response.extensions_mut().remove::<GraphError>() {
        response = err.render(&request_id, &client_request_id);
    }
    for (name, value) in [("request-id", &request_id), ("client-request-id", &client_request_id)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    shared.lock().journal.push(JournalEntry {
        method: method.to_string(),
        path,
        query,
        status: if dropped { 0 } else { response.status().as_u16() },
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        received,
        request_id,
        retry_after: response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned),
        traceparent,
    });
    response
}

/// `Content-Type` of Graph's successful JSON answers.
const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// A successful Graph JSON answer.
fn odata(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response
}

/// A Graph error. Handlers return it as a bodiless response carrying the error as an extension;
/// [`gate`] renders the body, because only it knows the request ids.
#[derive(Clone, Debug)]
pub(crate) struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<String>,
    details: Option<Value>,
}

impl GraphError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, details: None }
    }

    /// 400 `BadRequest`: OData-level problems (syntax, unknown JSON property, bad payload).
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 400 `Request_BadRequest`: the directory refuses the request.
    fn request_bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    /// 400 `Request_UnsupportedQuery`: a query the directory cannot run.
    fn unsupported_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", message)
    }

    /// 404 `Request_ResourceNotFound`, worded as in fixtures/graph/graph-error.404….json.
    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
        )
    }

    fn unauthenticated(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn from_fault(fault: &Fault) -> Self {
        match fault {
            Fault::Throttle { retry_after, .. } => Self {
                retry_after: Some(retry_after.clone()),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Please retry again later.")
            },
            Fault::Unavailable { retry_after, .. } => Self {
                retry_after: retry_after.clone(),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "serviceNotAvailable",
                    "The service is temporarily unavailable. Try the request again after a delay.",
                )
            },
            Fault::GatewayTimeout { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "UnknownError", "The gateway did not receive a timely response.")
            }
            Fault::Forbidden { .. } => Self::new(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
            // Served by `gate` itself; never rendered.
            Fault::Latency { .. } | Fault::ResetConnection { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "UnknownError", "")
            }
        }
    }

    fn render(self, request_id: &str, client_request_id: &str) -> Response {
        let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
        let mut inner = json!({ "date": date, "request-id": request_id, "client-request-id": client_request_id });
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // fixtures/graph/graph-error.429.json repeats the status inside innerError.
            inner["code"] = json!("429");
            inner["status"] = json!("429");
            inner["message"] = json!("Please retry after");
        }
        let mut error = json!({ "code": self.code, "message": self.message, "innerError": inner });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        if let Some(retry_after) = self.retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(RETRY_AFTER, retry_after);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
                ),
            );
        }
        response
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Graph's answer to a path it has no resource for.
async fn unknown_route(uri: Uri) -> GraphError {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1.0", rest @ ..] => {
            let segment = match rest {
                ["users", _, segment, ..] | ["invitations", segment, ..] | [segment, ..] => *segment,
                [] => "",
            };
            GraphError::bad_request(format!("Resource not found for the segment '{segment}'."))
        }
        [version, ..] => GraphError::bad_request(format!(
            "Invalid version: {version} (graph-emulator serves only v1.0 and /{{tenant}}/oauth2/v2.0/token)"
        )),
        [] => GraphError::bad_request("Invalid version: "),
    }
}

async fn method_not_allowed() -> GraphError {
    GraphError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

async fn admin_users(State(shared): State<Arc<Shared>>) -> Json<Vec<User>> {
    Json(shared.lock().users.clone())
}

async fn admin_journal(State(shared): State<Arc<Shared>>) -> Json<Vec<JournalEntry>> {
    Json(shared.lock().journal.clone())
}

async fn admin_invitations(State(shared): State<Arc<Shared>>) -> Json<Vec<Invitation>> {
    Json(shared.lock().invitations.clone())
}

/// Body of `POST /_emulator/faults`: a [`Fault`] plus optional scope.
#[derive(Deserialize)]
struct FaultRequest {
    #[serde(flatten)]
    fault: Fault,
    method: Option<String>,
    path_prefix: Option<String>,
}

async fn admin_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("invalid fault: {err}\n")).into_response(),
    };
    let method = match request.method.as_deref().map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes())) {
        None => None,
        Some(Ok(method)) => Some(method),
        Some(Err(err)) => return (StatusCode::BAD_REQUEST, format!("invalid method: {err}\n")).into_response(),
    };
    shared.queue_fault(FaultRule::new(request.fault, method, request.path_prefix));
    StatusCode::NO_CONTENT.into_response()
}
