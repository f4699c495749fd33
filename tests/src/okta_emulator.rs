//! An emulator of the Okta org APIs hookhost itself calls (as opposed to [`crate::okta_users`],
//! which a plugin calls): the System Log (`GET /api/v1/logs`) that backfill polls, the Event
//! Hooks management API (`/api/v1/eventHooks`) that `hookhost okta register` drives, and the
//! Groups API that `hookhost reconcile` reads. It exists
//! because neither an Okta org nor its rate limits are reachable from CI, and because the
//! failure modes backfill must survive (pages that end in a cursor, events that show up late,
//! 429s) have to be produced on demand.
//!
//! What it does as Okta does:
//!
//! - Every call needs `Authorization: SSWS <api token>` (401 `E0000011` otherwise); errors use
//!   Okta's `{errorCode, errorSummary, errorLink, errorId, errorCauses}` shape.
//! - **System Log**: `since`, `until`, `limit` (1–1000, default 100), `sortOrder` (only
//!   `ASCENDING` is modelled; anything else is 400 naming the emulator), `filter` (a disjunction
//!   of `eventType eq "…"`, optionally parenthesised; other expressions are 400 `E0000031`), and
//!   `after`, an opaque cursor. Events are returned in the order they became *visible* in the
//!   log ([`OktaEmulator::append`]), which is how an event that Okta indexes late, with a
//!   `published` time before events already returned, still reaches a poller that follows the
//!   cursor. A query without `until` is Okta's polling mode: every page carries a
//!   `Link: <…>; rel="next"`, even an empty one; with `until` the next link stops when nothing
//!   is left. Each response also carries `Link: <…>; rel="self"`.
//! - **Rate limits**: every answer carries `X-Rate-Limit-Limit`, `-Remaining` and `-Reset`
//!   (epoch seconds) for a per-minute window of the log endpoint;
//!   [`OktaEmulator::throttle_logs`] makes the next requests answer 429 `E0000047` with a reset
//!   a chosen time ahead. A request that arrives before a 429's reset is recorded as such
//!   ([`RecordedRequest::before_reset`]), so a test can assert nobody jumped the gun.
//! - **Event hooks**: list, create, get, replace (`PUT`), `lifecycle/activate`,
//!   `lifecycle/deactivate` and `lifecycle/verify`, which makes a real
//!   `GET <channel uri>` with `x-okta-verification-challenge` and marks the hook `VERIFIED`
//!   only if the answer echoes the challenge. The auth scheme's `value` is write-only, as in
//!   Okta, but [`OktaEmulator::hooks`] shows it to tests. [`OktaEmulator::deliver`] POSTs a
//!   delivery to every active hook, as Okta does (about 3 s timeout, one retry).
//! - **Groups** (`okta_emulator/groups.rs`): `GET /api/v1/groups?q=` and
//!   `GET /api/v1/groups/{id}/users` with `after` paging, for reconcile.
//!
//! [`OktaEmulator::stall_logs`] holds log requests unanswered until
//! [`OktaEmulator::release_logs`], so a test can kill a poller while its page is in flight.
//!
//! Every request is recorded ([`OktaEmulator::requests`]). It runs its own server on
//! `127.0.0.1:0`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::ids;
use crate::server::ServerHandle;

mod groups;
mod oauth;
pub use groups::{OktaUser, GROUPS_RATE_LIMIT, MAX_MEMBERS_PAGE};
pub use oauth::{PublicKey, ServiceApp, TokenRequest};

/// Requests per minute the emulated log endpoint allows (Okta's default for `/api/v1/logs`
/// in many orgs is 120).
pub const LOG_RATE_LIMIT: u64 = 120;

/// One request the emulator received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// When it arrived (wall clock, as `X-Rate-Limit-Reset` is).
    pub at: SystemTime,
    pub method: String,
    pub path: String,
    /// The raw query string (empty if none).
    pub query: String,
    /// The answer's status.
    pub status: u16,
    /// The reset (epoch seconds) of the latest 429 given before this request, if this request
    /// arrived before it.
    pub before_reset: Option<u64>,
}

impl RecordedRequest {
    /// The decoded value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// Seconds since the epoch, with fraction.
    pub fn epoch_secs(&self) -> f64 {
        self.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    }
}

/// An event hook as the emulator keeps it.
#[derive(Clone, Debug)]
pub struct EventHook {
    pub id: String,
    pub name: String,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// `UNVERIFIED` or `VERIFIED`.
    pub verification_status: String,
    pub uri: String,
    /// The auth header's name and value (`channel.config.authScheme`).
    pub auth: Option<(String, String)>,
    /// Extra `channel.config.headers`.
    pub headers: Vec<(String, String)>,
    pub event_types: Vec<String>,
    pub created: String,
    pub last_updated: String,
}

/// One endpoint family's per-minute rate limit, as Okta keeps it: a window and the 429s a
/// test has asked for.
#[derive(Default)]
struct RateLimit {
    /// The current window: its end (epoch seconds) and requests counted in it.
    window: (u64, u64),
    /// Pending 429s: how many, and how far ahead their reset lies.
    throttle: Option<(usize, Duration)>,
}

impl RateLimit {
    /// Counts one request against `limit` (requests a minute): the window's `(reset, used)`,
    /// or a pending 429 — Okta's `E0000047` with its headers — and that 429's reset.
    #[allow(clippy::result_large_err, reason = "the error is the HTTP answer itself, built once per refused request")]
    fn count(&mut self, limit: u64) -> Result<(u64, u64), (Response, u64)> {
        let now = epoch_now();
        if self.window.0 <= now {
            self.window = (now + 60, 0);
        }
        self.window.1 += 1;
        if let Some((times, reset_in)) = self.throttle.filter(|(times, _)| *times > 0) {
            self.throttle = if times > 1 { Some((times - 1, reset_in)) } else { None };
            let reset = (SystemTime::now() + reset_in)
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                .unwrap_or(0);
            let response = okta_error(
                StatusCode::TOO_MANY_REQUESTS,
                "E0000047",
                "API call exceeded rate limit due to too many requests.",
            );
            return Err((with_rate_limit(response, limit, (reset, limit)), reset));
        }
        Ok(self.window)
    }
}

/// Adds Okta's `X-Rate-Limit-*` headers for a window `(reset, used)` of `limit` a minute.
fn with_rate_limit(mut response: Response, limit: u64, (reset, used): (u64, u64)) -> Response {
    set_header(&mut response, "x-rate-limit-limit", &limit.to_string());
    set_header(&mut response, "x-rate-limit-remaining", &limit.saturating_sub(used).to_string());
    set_header(&mut response, "x-rate-limit-reset", &reset.to_string());
    response
}

#[derive(Default)]
struct Org {
    /// The System Log in the order events became visible.
    log: Vec<Value>,
    hooks: Vec<EventHook>,
    requests: Vec<RecordedRequest>,
    /// The log endpoint's rate limit.
    log_limit: RateLimit,
    /// The reset of the last 429 given (epoch seconds).
    last_reset: Option<u64>,
    /// Groups and users (the Groups API, `okta_emulator/groups.rs`).
    directory: groups::Directory,
    /// Service apps and their access tokens (`okta_emulator/oauth.rs`).
    oauth: oauth::OAuthState,
}

struct Shared {
    api_token: String,
    base_url: String,
    /// Makes cursors of different emulators differ (they are opaque).
    salt: String,
    org: Mutex<Org>,
    /// Open (`true`) unless a test stalls the log endpoint.
    logs_open: tokio::sync::watch::Sender<bool>,
    /// Log requests that arrived while the endpoint was stalled.
    stalled: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Org> {
        self.org.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running Okta org emulator (System Log and Event Hooks).
pub struct OktaEmulator {
    shared: Arc<Shared>,
    server: ServerHandle,
}

fn epoch_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl OktaEmulator {
    /// Starts the emulator on `127.0.0.1` at a free port; requests must carry
    /// `Authorization: SSWS {api_token}`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(api_token: &str) -> anyhow::Result<OktaEmulator> {
        let listener =
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the Okta emulator")?;
        let addr = listener.local_addr().context("reading the Okta emulator's address")?;
        let shared = Arc::new(Shared {
            api_token: api_token.to_owned(),
            base_url: format!("http://{addr}"),
            salt: ids::alphanumeric(6),
            org: Mutex::new(Org::default()),
            logs_open: tokio::sync::watch::Sender::new(true),
            stalled: std::sync::atomic::AtomicUsize::new(0),
        });
        let api = Router::new()
            .route("/api/v1/logs", get(logs))
            .route("/api/v1/eventHooks", get(list_hooks).post(create_hook))
            .route("/api/v1/eventHooks/{id}", get(get_hook).put(replace_hook))
            .route("/api/v1/eventHooks/{id}/lifecycle/{action}", post(hook_lifecycle))
            .route("/api/v1/groups", get(groups::list_groups))
            .route("/api/v1/groups/{id}/users", get(groups::group_users))
            .route_layer(axum::middleware::from_fn_with_state(shared.clone(), authenticate));
        let app = Router::new()
            .merge(api)
            .route("/oauth2/v1/token", post(oauth::token))
            .fallback(|| async {
                okta_error(StatusCode::NOT_FOUND, "E0000022", "The endpoint does not support the provided HTTP method")
            })
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let server = ServerHandle::spawn(addr, |stop| {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .into_future()
        });
        Ok(OktaEmulator { shared, server })
    }

    /// Registers an API service app that signs in with `private_key_jwt` at
    /// `/oauth2/v1/token` and may get tokens for its `scopes`.
    pub fn register_service_app(&self, app: ServiceApp) {
        self.shared.lock().oauth.register(app);
    }

    /// Makes every access token issued so far expire now (as a revoked or early-expired
    /// token looks to a client: the next call with it gets 401).
    pub fn expire_oauth_tokens(&self) {
        self.shared.lock().oauth.expire_tokens();
    }

    /// Every token request so far, in order.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.shared.lock().oauth.requests()
    }

    /// `http://127.0.0.1:PORT`: the value for `okta.org_url`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Makes LogEvents visible in the System Log, in this order (their `published` times may
    /// be anything: an event Okta indexes late has an earlier one than events before it).
    pub fn append(&self, events: &[Value]) {
        self.shared.lock().log.extend(events.iter().cloned());
    }

    /// How many events the log holds.
    pub fn log_len(&self) -> usize {
        self.shared.lock().log.len()
    }

    /// The next `times` requests to `/api/v1/logs` answer 429 `E0000047` with an
    /// `X-Rate-Limit-Reset` `reset_in` from the moment each is answered (rounded up to a
    /// whole second, as the header is).
    pub fn throttle_logs(&self, times: usize, reset_in: Duration) {
        self.shared.lock().log_limit.throttle = Some((times, reset_in));
    }

    /// From now on, requests to `/api/v1/logs` wait unanswered until [`Self::release_logs`].
    pub fn stall_logs(&self) {
        self.shared.logs_open.send_replace(false);
    }

    /// Answers the stalled log requests and stops stalling.
    pub fn release_logs(&self) {
        self.shared.logs_open.send_replace(true);
    }

    /// How many log requests have arrived while the endpoint was stalled.
    pub fn stalled_log_requests(&self) -> usize {
        self.shared.stalled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests to one path.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// The event hooks, as created.
    pub fn hooks(&self) -> Vec<EventHook> {
        self.shared.lock().hooks.clone()
    }

    /// POSTs a delivery of `events` to every active hook, as Okta does: the hook's auth header
    /// and extra headers, about 3 s timeout, one retry. Returns the final status per hook
    /// (`None` when no answer came).
    pub async fn deliver(&self, events: &[Value]) -> Vec<Option<u16>> {
        let hooks: Vec<EventHook> = self.hooks().into_iter().filter(|h| h.status == "ACTIVE").collect();
        let body = json!({
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1",
            "source": format!("{}/api/v1/eventHooks", self.shared.base_url),
            "eventId": ids::uuid_v4(),
            "data": { "events": events },
            "eventTime": now_text(),
            "contentType": "application/json",
        });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap_or_default();
        let mut out = Vec::new();
        for hook in hooks {
            let mut status = None;
            for _ in 0..2 {
                let mut request = client
                    .post(&hook.uri)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap_or_default());
                if let Some((k, v)) = &hook.auth {
                    request = request.header(k.as_str(), v.as_str());
                }
                for (k, v) in &hook.headers {
                    request = request.header(k.as_str(), v.as_str());
                }
                status = request.send().await.ok().map(|r| r.status().as_u16());
                if status.is_some_and(|s| (200..300).contains(&s)) {
                    break;
                }
            }
            out.push(status);
        }
        out
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Records each request with its answer's status.
async fn record(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let at = SystemTime::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let before_reset = {
        let org = shared.lock();
        org.last_reset
            .filter(|reset| at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0) < *reset as f64)
    };
    let response = next.run(request).await;
    let status = response.status().as_u16();
    shared.lock().requests.push(RecordedRequest { at, method, path, query, status, before_reset });
    response
}

/// Every `/api/v1` call needs the API token or an access token with the endpoint's scope
/// ([`oauth::authorize`]), checked before the endpoint does anything else.
async fn authenticate(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let checked = oauth::authorize(&shared, request.headers(), request.method().as_str(), request.uri().path());
    match checked {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().append(name, v);
    }
}

/// The parsed `filter`: the event types it allows (`None`: no filter).
fn parse_filter(filter: &str) -> Result<Vec<String>, String> {
    let mut text = filter.trim();
    while text.starts_with('(') && text.ends_with(')') {
        text = text[1..text.len() - 1].trim();
    }
    let mut types = Vec::new();
    for clause in split_or(text) {
        let clause = clause.trim().trim_start_matches('(').trim_end_matches(')').trim();
        let rest = clause.strip_prefix("eventType").ok_or_else(|| format!("unsupported filter clause {clause:?}"))?;
        let rest = rest.trim_start();
        let rest = rest
            .strip_prefix("eq ")
            .or_else(|| rest.strip_prefix("EQ "))
            .ok_or_else(|| format!("only `eq` is supported: {clause:?}"))?;
        let value = rest.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("the value must be in double quotes: {clause:?}"))?;
        types.push(value.to_owned());
    }
    Ok(types)
}

/// Splits on the word `or` outside quotes.
fn split_or(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && c == ' ' && i + 3 < chars.len() {
            let word: String = chars[i + 1..i + 3].iter().collect::<String>().to_ascii_lowercase();
            if word == "or" && chars[i + 3] == ' ' {
                parts.push(std::mem::take(&mut current));
                i += 4;
                continue;
            }
        }
        current.push(c);
        i += 1;
    }
    parts.push(current);
    parts
}

fn published_of(event: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    event["published"]
        .as_str()
        .and_then(|p| chrono::DateTime::parse_from_rfc3339(p).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn parse_time(name: &str, value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("Bad request. Invalid date: {name}={value}"))
}

/// The opaque cursor after position `index` of the log.
fn cursor(shared: &Shared, index: usize) -> String {
    format!("{}{}_{}", 1_700_000_000_000u64 + index as u64, shared.salt, index)
}

fn cursor_index(value: &str) -> Option<usize> {
    value.rsplit_once('_').and_then(|(_, i)| i.parse().ok())
}

async fn logs(State(shared): State<Arc<Shared>>, uri: Uri, Query(query): Query<Vec<(String, String)>>) -> Response {
    let mut open = shared.logs_open.subscribe();
    if !*open.borrow_and_update() {
        shared.stalled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = open.wait_for(|open| *open).await;
    }
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut org = shared.lock();
    let window = match org.log_limit.count(LOG_RATE_LIMIT) {
        Ok(window) => window,
        Err((throttled, reset)) => {
            org.last_reset = Some(reset);
            return throttled;
        }
    };
    let since = match param("since").map(|v| parse_time("since", v)).transpose() {
        Ok(v) => v,
        Err(why) => return okta_error(StatusCode::BAD_REQUEST, "E0000030", &why),
    };
    let until = match param("until").map(|v| parse_time("until", v)).transpose() {
        Ok(v) => v,
        Err(why) => return okta_error(StatusCode::BAD_REQUEST, "E0000030", &why),
    };
    if let Some(order) = param("sortOrder") {
        if order != "ASCENDING" {
            return okta_error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                &format!("okta-emulator models only sortOrder=ASCENDING, got {order:?}"),
            );
        }
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return okta_error(StatusCode::BAD_REQUEST, "E0000001", "limit must be between 1 and 1000"),
    };
    let types = match param("filter").map(parse_filter).transpose() {
        Ok(t) => t,
        Err(why) => return okta_error(StatusCode::BAD_REQUEST, "E0000031", &format!("Invalid search criteria. {why}")),
    };
    let start = match param("after") {
        None => 0,
        Some(after) => match cursor_index(after) {
            Some(i) => i,
            None => return okta_error(StatusCode::BAD_REQUEST, "E0000001", "Invalid after cursor"),
        },
    };
    let matches = |e: &Value| {
        let t = published_of(e);
        since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && until.is_none_or(|u| t.is_some_and(|t| t < u))
            && types.as_ref().is_none_or(|ts| ts.iter().any(|x| e["eventType"].as_str() == Some(x.as_str())))
    };
    let mut page = Vec::new();
    let mut position = start.min(org.log.len());
    while position < org.log.len() && page.len() < limit {
        if matches(&org.log[position]) {
            page.push(org.log[position].clone());
        }
        position += 1;
    }
    let more = org.log[position..].iter().any(matches);
    drop(org);

    // The next link repeats the query with the new cursor, as Okta's does.
    let mut next_query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &query {
        if k != "after" {
            next_query.append_pair(k, v);
        }
    }
    next_query.append_pair("after", &cursor(&shared, position));
    let next = format!("{}{}?{}", shared.base_url, uri.path(), next_query.finish());
    let this = format!("{}{}{}", shared.base_url, uri.path(), uri.query().map(|q| format!("?{q}")).unwrap_or_default());
    let mut response = Json(Value::Array(page)).into_response();
    set_header(&mut response, "link", &format!("<{this}>; rel=\"self\""));
    if until.is_none() || more {
        set_header(&mut response, "link", &format!("<{next}>; rel=\"next\""));
    }
    with_rate_limit(response, LOG_RATE_LIMIT, window)
}

fn hook_json(shared: &Shared, h: &EventHook) -> Value {
    let headers: Vec<Value> = h.headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    json!({
        "id": h.id,
        "status": h.status,
        "verificationStatus": h.verification_status,
        "name": h.name,
        "created": h.created,
        "createdBy": "00uemulatoradmin",
        "lastUpdated": h.last_updated,
        "events": { "type": "EVENT_TYPE", "items": h.event_types },
        "channel": {
            "type": "HTTP",
            "version": "1.0.0",
            "config": {
                "uri": h.uri,
                "headers": headers,
                // Okta never returns the secret value.
                "authScheme": h.auth.as_ref().map(|(k, _)| json!({"type": "HEADER", "key": k})),
            }
        },
        "_links": {
            "self": { "href": format!("{}/api/v1/eventHooks/{}", shared.base_url, h.id) },
            "verify": { "href": format!("{}/api/v1/eventHooks/{}/lifecycle/verify", shared.base_url, h.id), "hints": {"allow": ["POST"]} },
        }
    })
}

/// Reads a create/replace body into `hook` (keeps id, status, times).
fn apply_body(hook: &mut EventHook, body: &[u8]) -> Result<(), String> {
    let bad = |why: &str| format!("Api validation failed: eventHook. {why}");
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let name = v["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| bad("name: required"))?;
    if v["events"]["type"] != "EVENT_TYPE" {
        return Err(bad("events.type must be EVENT_TYPE"));
    }
    let types: Vec<String> = v["events"]["items"]
        .as_array()
        .ok_or_else(|| bad("events.items: required"))?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    if types.is_empty() {
        return Err(bad("events.items: at least one event type"));
    }
    let config = &v["channel"]["config"];
    if v["channel"]["type"] != "HTTP" || v["channel"]["version"] != "1.0.0" {
        return Err(bad("channel: type HTTP, version 1.0.0"));
    }
    let uri = config["uri"].as_str().ok_or_else(|| bad("channel.config.uri: required"))?;
    let auth = match &config["authScheme"] {
        Value::Null => None,
        a => {
            if a["type"] != "HEADER" {
                return Err(bad("channel.config.authScheme.type must be HEADER"));
            }
            let key = a["key"].as_str().ok_or_else(|| bad("authScheme.key: required"))?;
            // Okta keeps the old secret when an update leaves the value out.
            match a["value"].as_str() {
                Some(value) => Some((key.to_owned(), value.to_owned())),
                None => hook.auth.clone().map(|(_, value)| (key.to_owned(), value)),
            }
        }
    };
    let headers = config["headers"]
        .as_array()
        .map(|hs| {
            hs.iter().filter_map(|h| Some((h["key"].as_str()?.to_owned(), h["value"].as_str()?.to_owned()))).collect()
        })
        .unwrap_or_default();
    hook.name = name.to_owned();
    hook.uri = uri.to_owned();
    hook.auth = auth;
    hook.headers = headers;
    hook.event_types = types;
    hook.last_updated = now_text();
    Ok(())
}

async fn list_hooks(State(shared): State<Arc<Shared>>) -> Response {
    let hooks: Vec<Value> = shared.lock().hooks.iter().map(|h| hook_json(&shared, h)).collect();
    Json(Value::Array(hooks)).into_response()
}

async fn create_hook(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut hook = EventHook {
        id: format!("who{}", ids::alphanumeric(17)),
        name: String::new(),
        status: "ACTIVE".into(),
        verification_status: "UNVERIFIED".into(),
        uri: String::new(),
        auth: None,
        headers: Vec::new(),
        event_types: Vec::new(),
        created: now_text(),
        last_updated: now_text(),
    };
    if let Err(why) = apply_body(&mut hook, &body) {
        return okta_error(StatusCode::BAD_REQUEST, "E0000001", &why);
    }
    let out = hook_json(&shared, &hook);
    shared.lock().hooks.push(hook);
    Json(out).into_response()
}

fn not_found(id: &str) -> Response {
    okta_error(StatusCode::NOT_FOUND, "E0000007", &format!("Not found: Resource not found: {id} (EventHook)"))
}

async fn get_hook(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let org = shared.lock();
    match org.hooks.iter().find(|h| h.id == id) {
        Some(h) => Json(hook_json(&shared, h)).into_response(),
        None => not_found(&id),
    }
}

async fn replace_hook(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let mut org = shared.lock();
    let Some(hook) = org.hooks.iter_mut().find(|h| h.id == id) else {
        return not_found(&id);
    };
    let mut updated = hook.clone();
    if let Err(why) = apply_body(&mut updated, &body) {
        return okta_error(StatusCode::BAD_REQUEST, "E0000001", &why);
    }
    // A changed URI must be verified again.
    if updated.uri != hook.uri {
        updated.verification_status = "UNVERIFIED".into();
    }
    *hook = updated;
    Json(hook_json(&shared, hook)).into_response()
}

async fn hook_lifecycle(State(shared): State<Arc<Shared>>, Path((id, action)): Path<(String, String)>) -> Response {
    let hook = {
        let mut org = shared.lock();
        let Some(hook) = org.hooks.iter_mut().find(|h| h.id == id) else {
            return not_found(&id);
        };
        match action.as_str() {
            "activate" => hook.status = "ACTIVE".into(),
            "deactivate" => hook.status = "INACTIVE".into(),
            "verify" => {}
            _ => return okta_error(StatusCode::NOT_FOUND, "E0000007", "Not found: Resource not found"),
        }
        hook.clone()
    };
    if action != "verify" {
        return Json(hook_json(&shared, &hook)).into_response();
    }
    // Okta's verification: GET the channel with a one-time challenge, expect it echoed.
    let challenge = ids::alphanumeric(32);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap_or_default();
    let mut request = client.get(&hook.uri).header("x-okta-verification-challenge", &challenge);
    for (k, v) in &hook.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let echoed = match request.send().await {
        Ok(r) if r.status().is_success() => {
            let body = r.bytes().await.ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            body.and_then(|v| v["verification"].as_str().map(|s| s == challenge))
        }
        _ => None,
    };
    if echoed != Some(true) {
        return okta_error(
            StatusCode::BAD_REQUEST,
            "E0000001",
            "Api validation failed: Verification. The event hook's endpoint did not echo the verification challenge",
        );
    }
    let mut org = shared.lock();
    let Some(hook) = org.hooks.iter_mut().find(|h| h.id == id) else {
        return not_found(&id);
    };
    hook.verification_status = "VERIFIED".into();
    Json(hook_json(&shared, hook)).into_response()
}

fn okta_error(status: StatusCode, code: &str, summary: &str) -> Response {
    let body: Value = json!({
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": format!("oae{}", ids::alphanumeric(19)),
        "errorCauses": [],
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::{group_membership_event, timestamp, Membership};

    const TOKEN: &str = "okta-api-token";

    struct Page {
        status: u16,
        body: Value,
        next: Option<String>,
        headers: reqwest::header::HeaderMap,
    }

    async fn get(url: &str, auth: Option<&str>) -> Page {
        let mut request = reqwest::Client::new().get(url);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let next = headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            v.strip_suffix("; rel=\"next\"").map(|l| l.trim_start_matches('<').trim_end_matches('>').to_owned())
        });
        Page { status, body: serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(), next, headers }
    }

    fn event(n: u32, kind: Membership, offset_ms: i64) -> Value {
        group_membership_event(
            kind,
            &format!("00u{n}"),
            &format!("u{n}@x.example"),
            "U",
            "00g1",
            "G",
            &timestamp(offset_ms),
        )
    }

    fn uuids(v: &Value) -> Vec<String> {
        v.as_array().unwrap().iter().map(|e| e["uuid"].as_str().unwrap().to_owned()).collect()
    }

    #[tokio::test]
    async fn the_log_pages_by_cursor_filters_by_type_and_keeps_polling() {
        let okta = OktaEmulator::start(TOKEN).await.unwrap();
        let events: Vec<Value> = (0..5).map(|n| event(n, Membership::Add, -60_000 + i64::from(n))).collect();
        okta.append(&events);
        let mut lifecycle = event(9, Membership::Add, -1000);
        lifecycle["eventType"] = json!("user.session.start");
        okta.append(&[lifecycle]);
        let since = timestamp(-3_600_000);
        let first = format!(
            "{}/api/v1/logs?since={since}&sortOrder=ASCENDING&limit=2&filter={}",
            okta.base_url(),
            url::form_urlencoded::byte_serialize(br#"eventType eq "group.user_membership.add" or eventType eq "x""#)
                .collect::<String>()
        );
        assert_eq!(get(&first, None).await.status, 401);
        assert_eq!(get(&first, Some(&format!("Bearer {TOKEN}"))).await.status, 401);

        let mut seen = Vec::new();
        let mut url = first;
        let mut empty_pages = 0;
        while empty_pages < 2 {
            let page = get(&url, Some(&format!("SSWS {TOKEN}"))).await;
            assert_eq!(page.status, 200, "{}", page.body);
            assert!(page.headers.get("x-rate-limit-reset").is_some());
            let got = uuids(&page.body);
            if got.is_empty() {
                empty_pages += 1;
            }
            seen.extend(got);
            url = page.next.expect("polling mode always links the next page");
        }
        let expected: Vec<String> = events.iter().map(|e| e["uuid"].as_str().unwrap().to_owned()).collect();
        assert_eq!(seen, expected);

        // An event indexed late, published before the others, comes after the cursor.
        let late = event(7, Membership::Add, -120_000);
        okta.append(std::slice::from_ref(&late));
        let page = get(&url, Some(&format!("SSWS {TOKEN}"))).await;
        assert_eq!(uuids(&page.body), vec![late["uuid"].as_str().unwrap().to_owned()]);

        let bad = format!("{}/api/v1/logs?filter=displayMessage%20co%20%22x%22", okta.base_url());
        let page = get(&bad, Some(&format!("SSWS {TOKEN}"))).await;
        assert_eq!((page.status, page.body["errorCode"].as_str()), (400, Some("E0000031")));
        okta.shutdown().await;
    }

    #[tokio::test]
    async fn a_bounded_query_ends_and_a_throttled_one_names_its_reset() {
        let okta = OktaEmulator::start(TOKEN).await.unwrap();
        okta.append(&[
            event(1, Membership::Add, -5000),
            event(2, Membership::Add, -4000),
            event(3, Membership::Add, 60_000),
        ]);
        let url = format!(
            "{}/api/v1/logs?since={}&until={}&limit=1&sortOrder=ASCENDING",
            okta.base_url(),
            timestamp(-10_000),
            timestamp(0)
        );
        let auth = format!("SSWS {TOKEN}");
        let p1 = get(&url, Some(&auth)).await;
        assert_eq!(uuids(&p1.body).len(), 1);
        let p2 = get(&p1.next.unwrap(), Some(&auth)).await;
        assert_eq!(uuids(&p2.body).len(), 1);
        assert!(p2.next.is_none(), "nothing is left before until");

        okta.throttle_logs(1, Duration::from_secs(2));
        let throttled = get(&url, Some(&auth)).await;
        assert_eq!((throttled.status, throttled.body["errorCode"].as_str()), (429, Some("E0000047")));
        let reset: u64 = throttled.headers["x-rate-limit-reset"].to_str().unwrap().parse().unwrap();
        assert!(reset > epoch_now());
        assert_eq!(get(&url, Some(&auth)).await.status, 200);
        let requests = okta.requests_to("/api/v1/logs");
        assert_eq!(requests.last().unwrap().before_reset, Some(reset), "an early request is flagged");
        assert_eq!(requests.last().unwrap().param("limit").as_deref(), Some("1"));
        okta.shutdown().await;
    }

    #[test]
    fn filters_are_disjunctions_of_event_types() {
        assert_eq!(
            parse_filter(r#"eventType eq "a.b" or eventType eq "c""#).unwrap(),
            vec!["a.b".to_string(), "c".to_string()]
        );
        assert_eq!(parse_filter(r#"(eventType eq "a or b")"#).unwrap(), vec!["a or b".to_string()]);
        assert!(parse_filter(r#"eventType co "a""#).is_err());
        assert!(parse_filter(r#"actor.id eq "a""#).is_err());
    }

    #[tokio::test]
    async fn hooks_are_created_replaced_activated_and_verified_against_the_endpoint() {
        let okta = OktaEmulator::start(TOKEN).await.unwrap();
        // An endpoint that answers the challenge, as hookhost does.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/hooks/okta",
            axum::routing::get(|h: axum::http::HeaderMap| async move {
                Json(json!({"verification": h["x-okta-verification-challenge"].to_str().unwrap()}))
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let body = json!({
            "name": "hookhost",
            "events": {"type": "EVENT_TYPE", "items": ["group.user_membership.add"]},
            "channel": {"type": "HTTP", "version": "1.0.0", "config": {
                "uri": format!("http://{addr}/hooks/okta"),
                "headers": [],
                "authScheme": {"type": "HEADER", "key": "Authorization", "value": "s3cret"}
            }}
        });
        let hooks = format!("{}/api/v1/eventHooks", okta.base_url());
        assert_eq!(client.post(&hooks).body(body.to_string()).send().await.unwrap().status(), 401);
        let created: Value = client
            .post(&hooks)
            .header("Authorization", format!("SSWS {TOKEN}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap();
        assert_eq!(created["verificationStatus"], "UNVERIFIED");
        assert!(created["channel"]["config"]["authScheme"]["value"].is_null(), "the secret is write-only");
        let id = created["id"].as_str().unwrap();
        let verified: Value = client
            .post(format!("{hooks}/{id}/lifecycle/verify"))
            .header("Authorization", format!("SSWS {TOKEN}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap();
        assert_eq!(verified["verificationStatus"], "VERIFIED", "{verified}");
        assert_eq!(okta.hooks()[0].auth, Some(("Authorization".to_string(), "s3cret".to_string())));
        okta.shutdown().await;
    }
}
