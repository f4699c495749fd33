//! A client of Okta's management API, for the calls hookhost makes to Okta itself: reading the
//! System Log (backfill) and managing event hooks (`hookhost okta register`).
//!
//! It exists apart from the plugin runtime's HTTP (which serves plugins under grants) because
//! these calls carry the operator's API token and must obey Okta's rules for API clients:
//!
//! - **Auth**: `Authorization: SSWS <okta.api_token>`, or `Bearer <access token>` of the
//!   `[okta.oauth]` service app ([`crate::okta_oauth`]; a 401 on a cached token gets one new
//!   token and one retry). Credentials go only to the configured org's origin, so a `Link`
//!   header pointing elsewhere is refused, not followed.
//! - **Paging**: the next page is the `Link: <…>; rel="next"` URL Okta gives, never one built
//!   here ([`next_link`]).
//! - **Rate limits**: after an answer with `X-Rate-Limit-Remaining: 0`, or a 429, no request
//!   goes out before `X-Rate-Limit-Reset` (epoch seconds). The wait is measured against the
//!   answer's `Date` header when present (Okta's own clock, rounded down, so the wait is never
//!   short), else against this machine's clock.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use crate::okta_oauth::OktaOAuth;
use crate::secret::Secret;

/// Largest page the System Log API returns.
pub const MAX_LOG_PAGE: u32 = 1000;

/// How long one call may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to Okta. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum OktaApiError {
    /// A 429; nothing is sent before `until`.
    #[error("Okta rate limit reached (429); waiting until the reset")]
    RateLimited,
    #[error("Okta answered {status} to {what}: {summary}")]
    Status { status: u16, what: String, summary: String },
    #[error("cannot reach Okta for {what}: {message}")]
    Transport { what: String, message: String },
    #[error("unexpected answer from Okta to {what}: {message}")]
    BadAnswer { what: String, message: String },
}

/// A page of the System Log: its LogEvents (raw JSON) and the next link, if any.
#[derive(Debug, Clone)]
pub struct LogPage {
    pub events: Vec<Value>,
    pub next: Option<String>,
}

/// How hookhost proves who it is to Okta.
enum Auth {
    /// `okta.api_token`.
    Ssws(Secret),
    /// `[okta.oauth]` (boxed: it holds a key and a token cache).
    OAuth(Box<OktaOAuth>),
}

/// A client of one Okta org.
pub struct OktaApi {
    origin: String,
    auth: Auth,
    http: reqwest::Client,
    /// No request before this moment (a rate limit's reset).
    not_before: Mutex<Option<tokio::time::Instant>>,
}

/// The `filter` OR-ing the event types (`eventType eq "a" or eventType eq "b"`), sorted and
/// without repeats so the same set always gives the same text; `None` for no types.
pub fn event_type_filter<S: AsRef<str>>(types: &[S]) -> Option<String> {
    let mut types: Vec<&str> = types.iter().map(AsRef::as_ref).collect();
    types.sort_unstable();
    types.dedup();
    if types.is_empty() {
        return None;
    }
    let quoted: Vec<String> =
        types.iter().map(|t| format!("eventType eq \"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    Some(quoted.join(" or "))
}

/// The `rel="next"` target among `Link` header values (RFC 8288: `<uri>; rel="next"`, several
/// links per header separated by commas, parameters in any order, `rel` quoted or not and
/// possibly naming several relations).
pub fn next_link<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    for value in values {
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else { break };
            let target = &rest[open + 1..open + close];
            let after = &rest[open + close + 1..];
            let params_end = after.find('<').unwrap_or(after.len());
            let params = &after[..params_end];
            let is_next = params.split(';').any(|p| {
                let Some((k, v)) = p.split_once('=') else { return false };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches(',')
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.trim().to_owned());
            }
            rest = &after[params_end..];
        }
    }
    None
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long from now until the rate limit's reset, by the answer's `Date` if it has one.
fn until_reset(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_u64(headers, "x-rate-limit-reset")?;
    let server_now = headers
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        .map(|d| d.timestamp() as f64)
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0));
    Some(Duration::from_secs_f64((reset as f64 - server_now).max(0.0)))
}

fn summary(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let code = v["errorCode"].as_str()?.to_owned();
            Some(format!("{code} {}", v["errorSummary"].as_str().unwrap_or_default()))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// The scope a 403 names in `WWW-Authenticate: Bearer ... error="insufficient_scope",
/// scope="okta.logs.read"` (RFC 6750 §3), when it names one.
fn missing_scope(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(reqwest::header::WWW_AUTHENTICATE)?.to_str().ok()?;
    if !value.contains("insufficient_scope") {
        return None;
    }
    let start = value.find("scope=\"")? + "scope=\"".len();
    let len = value[start..].find('"')?;
    Some(value[start..start + len].to_owned())
}

impl OktaApi {
    /// A client of the org at `origin` (`okta.org_url`, already checked by config).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(origin: &str, token: Secret) -> Result<OktaApi, OktaApiError> {
        Self::with_auth(origin, Auth::Ssws(token))
    }

    /// A client of the org at `origin` that signs in as the `[okta.oauth]` service app.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn with_oauth(origin: &str, oauth: OktaOAuth) -> Result<OktaApi, OktaApiError> {
        Self::with_auth(origin, Auth::OAuth(Box::new(oauth)))
    }

    fn with_auth(origin: &str, auth: Auth) -> Result<OktaApi, OktaApiError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookhost/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OktaApiError::Transport { what: "the HTTP client".into(), message: e.to_string() })?;
        Ok(OktaApi { origin: origin.trim_end_matches('/').to_owned(), auth, http, not_before: Mutex::new(None) })
    }

    /// The org's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The first System Log query: events published from `since` (and before `until`),
    /// oldest first, `limit` per page, of the `filter`'s types.
    pub fn logs_url(&self, since: &str, until: Option<&str>, limit: u32, filter: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("since", since);
        if let Some(u) = until {
            q.append_pair("until", u);
        }
        q.append_pair("sortOrder", "ASCENDING");
        q.append_pair("limit", &limit.clamp(1, MAX_LOG_PAGE).to_string());
        if let Some(f) = filter {
            q.append_pair("filter", f);
        }
        format!("{}/api/v1/logs?{}", self.origin, q.finish())
    }

    /// Whether `url` is on the org's origin (the only place the token may go).
    fn own(&self, url: &str) -> bool {
        url::Url::parse(url).is_ok_and(|u| u.origin().ascii_serialization() == self.origin)
    }

    /// Sleeps until a rate limit's reset has passed.
    pub async fn wait_turn(&self) {
        let until = self.not_before.lock().map(|g| *g).unwrap_or(None);
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
    }

    /// Remembers the reset when the answer says no requests are left (or it is a 429).
    fn note_limits(&self, status: u16, headers: &HeaderMap) {
        let exhausted = status == 429 || header_u64(headers, "x-rate-limit-remaining") == Some(0);
        if !exhausted {
            return;
        }
        // A 429 without a reset: Okta's windows are a minute long.
        let wait = until_reset(headers).unwrap_or(Duration::from_secs(60));
        let at = tokio::time::Instant::now() + wait;
        if let Ok(mut g) = self.not_before.lock() {
            *g = Some(g.map_or(at, |old| old.max(at)));
        }
        tracing::info!(wait_secs = wait.as_secs_f64(), status, "Okta rate limit: pausing until its reset");
    }

    /// One call; the status, headers and body. Waits for a rate limit's reset first. With
    /// `[okta.oauth]`, a 401 to a cached access token (revoked, or expired early) gets one
    /// new token and one retry.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<(u16, HeaderMap, bytes::Bytes), OktaApiError> {
        if !self.own(url) {
            return Err(OktaApiError::BadAnswer {
                what: what.into(),
                message: format!("refusing to send Okta credentials outside {} (to {url})", self.origin),
            });
        }
        let mut retried = false;
        loop {
            self.wait_turn().await;
            let (authorization, bearer) = match &self.auth {
                Auth::Ssws(token) => (format!("SSWS {}", token.expose()), None),
                Auth::OAuth(oauth) => {
                    let token = oauth.token(&self.http).await?;
                    (format!("Bearer {}", token.expose()), Some((oauth, token)))
                }
            };
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(reqwest::header::AUTHORIZATION, authorization)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(b) = body {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
            }
            let transport = |e: reqwest::Error| OktaApiError::Transport { what: what.into(), message: e.to_string() };
            let response = request.send().await.map_err(transport)?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            self.note_limits(status, &headers);
            let bytes = response.bytes().await.map_err(transport)?;
            if let (401, Some((oauth, token)), false) = (status, &bearer, retried) {
                oauth.forget(token).await;
                retried = true;
                continue;
            }
            if status == 429 {
                return Err(OktaApiError::RateLimited);
            }
            if !(200..300).contains(&status) {
                let mut summary = summary(&bytes);
                if status == 403 && bearer.is_some() {
                    if let Some(scope) = missing_scope(&headers) {
                        summary.push_str(&format!(
                            " (the access token lacks the scope {scope}: grant it to the service app under \
                             Okta API Scopes and add it to okta.oauth.scopes)"
                        ));
                    }
                }
                return Err(OktaApiError::Status { status, what: what.into(), summary });
            }
            return Ok((status, headers, bytes));
        }
    }

    /// One page of the System Log at `url` (a [`logs_url`](Self::logs_url) or a next link).
    ///
    /// # Errors
    /// Okta refuses or cannot be reached, throttles (after which the next call waits), or
    /// the answer is not an array of LogEvents.
    pub async fn log_page(&self, url: &str) -> Result<LogPage, OktaApiError> {
        let (events, next) = self.list_page(url, "GET /api/v1/logs").await?;
        Ok(LogPage { events, next })
    }

    /// One page of a paged list at `url` (a first-page URL on the org, or a next link): its
    /// JSON array and the `Link rel="next"` target, which must stay on the org.
    ///
    /// # Errors
    /// Okta refuses or cannot be reached, throttles (after which the next call waits), or
    /// the answer is not a JSON array.
    pub async fn list_page(&self, url: &str, what: &str) -> Result<(Vec<Value>, Option<String>), OktaApiError> {
        let (_, headers, body) = self.send(Method::GET, url, None, what).await?;
        let items = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items,
            Ok(_) => return Err(OktaApiError::BadAnswer { what: what.into(), message: "not a JSON array".into() }),
            Err(e) => return Err(OktaApiError::BadAnswer { what: what.into(), message: e.to_string() }),
        };
        let next = next_link(headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()));
        if let Some(n) = &next {
            if !self.own(n) {
                return Err(OktaApiError::BadAnswer {
                    what: what.into(),
                    message: format!("the next link {n} leaves {}", self.origin),
                });
            }
        }
        Ok((items, next))
    }

    /// A JSON call to a path of the org (`/api/v1/eventHooks`…); the answer's JSON.
    ///
    /// # Errors
    /// As [`log_page`](Self::log_page).
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, OktaApiError> {
        let what = format!("{method} {path}");
        let url = format!("{}{path}", self.origin);
        let (_, _, bytes) = self.send(method, &url, body, &what).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| OktaApiError::BadAnswer { what, message: e.to_string() })
    }
}

/// What [`register_event_hook`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    /// A new hook was created (otherwise one with the same URL was updated).
    pub created: bool,
    /// Okta's `verificationStatus` after the verify call (`VERIFIED` when hookhost answered).
    pub verification_status: String,
}

/// The name a hook created by `hookhost okta register` gets.
pub const HOOK_NAME: &str = "hookhost";

/// Creates the event hook that delivers to `uri` or, if one with that channel URI exists,
/// updates it in place (so running it twice leaves one hook); then activates it and asks
/// Okta to verify it, which makes Okta GET hookhost's challenge endpoint.
///
/// # Errors
/// Okta refused a call (the message has its `errorCode` and summary) or cannot be reached.
pub async fn register_event_hook(
    api: &OktaApi,
    uri: &str,
    auth_header: &str,
    auth_secret: &Secret,
    event_types: &[String],
) -> Result<Registered, OktaApiError> {
    let hooks = api.json(Method::GET, "/api/v1/eventHooks", None).await?;
    let existing =
        hooks.as_array().into_iter().flatten().find(|h| h["channel"]["config"]["uri"].as_str() == Some(uri)).cloned();
    let mut types: Vec<&str> = event_types.iter().map(String::as_str).collect();
    types.sort_unstable();
    types.dedup();
    let name = existing.as_ref().and_then(|h| h["name"].as_str()).unwrap_or(HOOK_NAME).to_owned();
    let body = serde_json::json!({
        "name": name,
        "events": { "type": "EVENT_TYPE", "items": types },
        "channel": {
            "type": "HTTP",
            "version": "1.0.0",
            "config": {
                "uri": uri,
                "headers": [],
                "authScheme": { "type": "HEADER", "key": auth_header, "value": auth_secret.expose() },
            },
        },
    });
    let bad = |what: &str, message: &str| OktaApiError::BadAnswer { what: what.into(), message: message.into() };
    let hook = match &existing {
        Some(h) => {
            let id = h["id"].as_str().ok_or_else(|| bad("GET /api/v1/eventHooks", "a hook without an id"))?;
            api.json(Method::PUT, &format!("/api/v1/eventHooks/{id}"), Some(&body)).await?
        }
        None => api.json(Method::POST, "/api/v1/eventHooks", Some(&body)).await?,
    };
    let id = hook["id"].as_str().ok_or_else(|| bad("the event hook", "no id in Okta's answer"))?.to_owned();
    if hook["status"].as_str() != Some("ACTIVE") {
        api.json(Method::POST, &format!("/api/v1/eventHooks/{id}/lifecycle/activate"), None).await?;
    }
    let verified = api.json(Method::POST, &format!("/api/v1/eventHooks/{id}/lifecycle/verify"), None).await?;
    let verification_status = verified["verificationStatus"].as_str().unwrap_or("UNKNOWN").to_owned();
    Ok(Registered { id, created: existing.is_none(), verification_status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_however_the_header_is_written() {
        let okta = r#"<https://x.okta.com/api/v1/logs?limit=2>; rel="self""#;
        let next = r#"<https://x.okta.com/api/v1/logs?limit=2&after=17_1>; rel="next""#;
        assert_eq!(next_link([okta, next]).as_deref(), Some("https://x.okta.com/api/v1/logs?limit=2&after=17_1"));
        // Both in one header, next first or last, other parameters, unquoted and multi-valued rel.
        let both = format!("{okta}, {next}");
        assert_eq!(next_link([both.as_str()]).as_deref(), Some("https://x.okta.com/api/v1/logs?limit=2&after=17_1"));
        assert_eq!(next_link([r#"<a?x=1>; title="n, m"; rel=next, <b>; rel="self""#]).as_deref(), Some("a?x=1"));
        assert_eq!(next_link([r#"<a>; REL="prev next""#]).as_deref(), Some("a"));
        assert_eq!(next_link([okta]), None);
        assert_eq!(next_link([r#"<a>; rel="nextish""#, "garbage", "<unclosed"]), None);
        assert_eq!(next_link(std::iter::empty()), None);
    }

    #[test]
    fn the_filter_ors_each_event_type_once_in_a_stable_order() {
        assert_eq!(
            event_type_filter(&["user.lifecycle.deactivate", "group.user_membership.add", "user.lifecycle.deactivate"])
                .as_deref(),
            Some(r#"eventType eq "group.user_membership.add" or eventType eq "user.lifecycle.deactivate""#)
        );
        assert_eq!(event_type_filter(&["a"]).as_deref(), Some(r#"eventType eq "a""#));
        assert_eq!(event_type_filter::<&str>(&[]), None);
        assert_eq!(event_type_filter(&[r#"we"ird"#]).as_deref(), Some(r#"eventType eq "we\"ird""#));
    }

    #[test]
    fn the_first_query_asks_for_oldest_first_and_encodes_the_filter() {
        let api = OktaApi::new("https://x.okta.com", Secret::new("t".into())).unwrap();
        let url = api.logs_url("2024-01-01T00:00:00Z", None, 5000, Some(r#"eventType eq "a""#));
        assert_eq!(
            url,
            "https://x.okta.com/api/v1/logs?since=2024-01-01T00%3A00%3A00Z&sortOrder=ASCENDING&limit=1000&filter=eventType+eq+%22a%22"
        );
        assert!(api.own(&url));
        assert!(!api.own("https://evil.example/api/v1/logs"));
        assert!(!api.own("https://x.okta.com.evil.example/api/v1/logs"));
    }

    #[test]
    fn a_reset_is_measured_by_the_servers_clock() {
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-reset", "1700000010".parse().unwrap());
        h.insert(reqwest::header::DATE, "Tue, 14 Nov 2023 22:13:27 GMT".parse().unwrap()); // 1700000007
        assert_eq!(until_reset(&h), Some(Duration::from_secs(3)));
        h.insert(reqwest::header::DATE, "Tue, 14 Nov 2023 22:13:40 GMT".parse().unwrap());
        assert_eq!(until_reset(&h), Some(Duration::ZERO));
    }
}
