//! In-process stand-ins for the incoming webhooks the notifier and SIEM plugins post to:
//! a Slack incoming webhook, a Microsoft Teams webhook (Workflows or legacy connector) and a
//! Splunk HTTP Event Collector. Each runs on its own `http://127.0.0.1:PORT`, records every
//! POST (path, headers, body, the status answered) and can be told to throttle.
//!
//! They accept what the services document and refuse the rest the way the services do:
//!
//! - **Slack** (`POST /services/T…/B…/…`): a JSON body with a non-empty `text` (or `blocks`);
//!   answers `200 ok` as `text/html`; `400 invalid_payload` for non-JSON, `400 no_text`
//!   without text, `404 no_service` for another path. Throttled: `429` with `Retry-After`.
//! - **Teams** (a Workflows "Send webhook alerts to a channel" URL): either a `message` with
//!   an Adaptive Card attachment (`contentType` `application/vnd.microsoft.card.adaptive`,
//!   `content.type` `AdaptiveCard`), answered `202 Accepted` as Workflows does, or a legacy
//!   `MessageCard` (`@type`, `@context`, `text` or `summary`), answered `200 1` as connectors
//!   did; anything else `400`. Throttled: `429` with `Retry-After`.
//! - **Splunk HEC** (`POST /services/collector/event`): `Authorization: Splunk <token>`
//!   (`401 {"text":"Token is required","code":2}` without it, `401 … "Invalid authorization",
//!   "code":3` for another scheme, `403 … "Invalid token","code":4` for a wrong token); a
//!   body of one or more JSON event objects, each with a non-empty `event` (`400 … "Invalid
//!   data format","code":6` / `"Event field is required","code":12` / `"Event field cannot be
//!   blank","code":13`); success is `200 {"text":"Success","code":0}`. Throttled: `503
//!   {"text":"Server is busy","code":9}` with `Retry-After`, as an overloaded indexer answers.
//! - **Generic** (`POST /hooks/<random>`): the plain JSON webhook most services offer, guarded
//!   by a shared secret in one header when told so: `401` without it or with another value, `400` for a
//!   body that is not JSON, `404` for another path, `200 {"ok":true}`. Throttled: `429`
//!   with `Retry-After`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::ids;
use crate::server::ServerHandle;

/// Which service a [`WebhookReceiver`] plays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookKind {
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams webhook (Workflows Adaptive Card message or legacy MessageCard).
    Teams,
    /// A Splunk HTTP Event Collector that accepts this token.
    SplunkHec {
        /// The HEC token (`Authorization: Splunk <token>`).
        token: String,
    },
    /// A generic JSON webhook; with `secret`, it wants that header (lower-case name) and
    /// value on every POST.
    Generic { secret: Option<(String, String)> },
}

/// One POST the receiver got.
#[derive(Clone, Debug)]
pub struct ReceivedPost {
    /// Path as sent.
    pub path: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status answered.
    pub status: u16,
}

impl ReceivedPost {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Value::Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Inner {
    posts: Vec<ReceivedPost>,
    /// Requests still to be throttled, and the `Retry-After` value they get.
    throttle: Option<(usize, String)>,
}

struct Shared {
    kind: WebhookKind,
    /// The path the webhook URL names (Slack, Teams); HEC has its fixed paths.
    path: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running webhook stand-in.
pub struct WebhookReceiver {
    shared: Arc<Shared>,
    base_url: String,
    server: ServerHandle,
}

impl WebhookReceiver {
    /// Starts one on `127.0.0.1` at a free port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(kind: WebhookKind) -> anyhow::Result<WebhookReceiver> {
        let listener =
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the webhook receiver")?;
        let addr = listener.local_addr().context("reading the webhook receiver's address")?;
        let path = match &kind {
            // The shape of a real Slack webhook path: team id, bot id, secret.
            WebhookKind::Slack => {
                format!("/services/T0HOOKHOST/B0{}/{}", ids::alphanumeric(8).to_uppercase(), ids::alphanumeric(24))
            }
            WebhookKind::Teams => {
                format!("/workflows/{}/triggers/manual/paths/invoke", ids::uuid_v4().replace('-', ""))
            }
            WebhookKind::SplunkHec { .. } => "/services/collector/event".into(),
            WebhookKind::Generic { .. } => format!("/hooks/{}", ids::alphanumeric(16)),
        };
        let shared = Arc::new(Shared { kind, path, inner: Mutex::new(Inner { posts: Vec::new(), throttle: None }) });
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let server = ServerHandle::spawn(addr, |stop| {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .into_future()
        });
        Ok(WebhookReceiver { shared, base_url: format!("http://{addr}"), server })
    }

    /// `http://127.0.0.1:PORT`: the origin to grant in `allowed_hosts`, and HEC's `hec_url`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The whole webhook URL (Slack, Teams: the secret `webhook_url`; HEC: the event endpoint).
    pub fn url(&self) -> String {
        format!("{}{}", self.base_url, self.shared.path)
    }

    /// The next `times` POSTs are throttled with `Retry-After: retry_after` (seconds).
    pub fn throttle(&self, times: usize, retry_after: &str) {
        self.shared.lock().throttle = Some((times, retry_after.to_owned()));
    }

    /// Every POST so far, in order.
    pub fn posts(&self) -> Vec<ReceivedPost> {
        self.shared.lock().posts.clone()
    }

    /// The POSTs answered 2xx.
    pub fn accepted(&self) -> Vec<ReceivedPost> {
        self.posts().into_iter().filter(|p| (200..300).contains(&p.status)).collect()
    }

    /// What a person sees for each accepted POST: the chat message (Slack's escapes undone),
    /// or, for HEC, each event record as JSON text.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for post in self.accepted() {
            let body = post.json();
            match &self.shared.kind {
                WebhookKind::Slack => out.push(
                    body["text"]
                        .as_str()
                        .unwrap_or_default()
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&"),
                ),
                WebhookKind::Teams => {
                    let card = &body["attachments"][0]["content"]["body"][0]["text"];
                    out.push(card.as_str().or(body["text"].as_str()).unwrap_or_default().to_owned());
                }
                WebhookKind::SplunkHec { .. } => {
                    for event in serde_json::Deserializer::from_slice(&post.body).into_iter::<Value>().flatten() {
                        out.push(event.to_string());
                    }
                }
                WebhookKind::Generic { .. } => out.push(body.to_string()),
            }
        }
        out
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn hec(status: StatusCode, text: &str, code: u16) -> (StatusCode, Value) {
    (status, json!({ "text": text, "code": code }))
}

/// Checks a POST the way the service would: `Ok` with the success answer, `Err` with a refusal.
fn judge(shared: &Shared, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let text = |status: StatusCode, body: &'static str| (status, [("content-type", "text/html")], body).into_response();
    match &shared.kind {
        WebhookKind::Slack => {
            if path != shared.path {
                return text(StatusCode::NOT_FOUND, "no_service");
            }
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return text(StatusCode::BAD_REQUEST, "invalid_payload");
            };
            let has_text = v["text"].as_str().is_some_and(|t| !t.is_empty());
            let has_blocks = v["blocks"].as_array().is_some_and(|b| !b.is_empty());
            if !has_text && !has_blocks {
                return text(StatusCode::BAD_REQUEST, "no_text");
            }
            text(StatusCode::OK, "ok")
        }
        WebhookKind::Teams => {
            if path != shared.path {
                return (StatusCode::NOT_FOUND, "").into_response();
            }
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return (StatusCode::BAD_REQUEST, "Invalid JSON payload").into_response();
            };
            if v["@type"] == "MessageCard" {
                if v["@context"] != "https://schema.org/extensions" {
                    return (
                        StatusCode::BAD_REQUEST,
                        "Invalid MessageCard: @context must be https://schema.org/extensions",
                    )
                        .into_response();
                }
                if v["text"].as_str().is_none() && v["summary"].as_str().is_none() {
                    return (StatusCode::BAD_REQUEST, "Summary or Text is required.").into_response();
                }
                return (StatusCode::OK, "1").into_response();
            }
            let attachment = &v["attachments"][0];
            let adaptive = v["type"] == "message"
                && attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
                && attachment["content"]["type"] == "AdaptiveCard"
                && attachment["content"]["body"].is_array();
            if !adaptive {
                return (
                    StatusCode::BAD_REQUEST,
                    "expected {\"type\":\"message\",\"attachments\":[{\"contentType\":\"application/vnd.microsoft.card.adaptive\",\"content\":{\"type\":\"AdaptiveCard\",…}}]}",
                )
                    .into_response();
            }
            StatusCode::ACCEPTED.into_response()
        }
        WebhookKind::SplunkHec { token } => {
            let (status, answer) = if path != "/services/collector/event" && path != "/services/collector" {
                hec(StatusCode::NOT_FOUND, "The requested URL was not found on this server.", 404)
            } else {
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    None => hec(StatusCode::UNAUTHORIZED, "Token is required", 2),
                    Some(auth) => match auth.strip_prefix("Splunk ") {
                        None => hec(StatusCode::UNAUTHORIZED, "Invalid authorization", 3),
                        Some(t) if t != token => hec(StatusCode::FORBIDDEN, "Invalid token", 4),
                        Some(_) => hec_events(body),
                    },
                }
            };
            (status, axum::Json(answer)).into_response()
        }
        WebhookKind::Generic { secret } => generic(shared, secret.as_ref(), path, headers, body),
    }
}

/// The generic webhook's checks: path, secret header, JSON body.
fn generic(
    shared: &Shared,
    secret: Option<&(String, String)>,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if path != shared.path {
        return (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "no such hook" }))).into_response();
    }
    if let Some((header, value)) = secret {
        if headers.get(header).and_then(|v| v.to_str().ok()) != Some(value) {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": format!("missing or wrong {header}") })))
                .into_response();
        }
    }
    if serde_json::from_slice::<Value>(body).is_err() {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "body is not JSON" }))).into_response();
    }
    (StatusCode::OK, axum::Json(json!({ "ok": true }))).into_response()
}

/// HEC's checks of an event body: one or more concatenated JSON objects, each with an `event`.
fn hec_events(body: &[u8]) -> (StatusCode, Value) {
    let mut n = 0;
    for item in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let Ok(item) = item else {
            return hec(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        match item.get("event") {
            None => return hec(StatusCode::BAD_REQUEST, "Event field is required", 12),
            Some(Value::Null) => return hec(StatusCode::BAD_REQUEST, "Event field cannot be blank", 13),
            Some(Value::String(s)) if s.is_empty() => {
                return hec(StatusCode::BAD_REQUEST, "Event field cannot be blank", 13)
            }
            Some(_) => n += 1,
        }
    }
    if n == 0 {
        return hec(StatusCode::BAD_REQUEST, "No data", 5);
    }
    hec(StatusCode::OK, "Success", 0)
}

async fn receive(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let throttled = {
        let mut inner = shared.lock();
        match inner.throttle.as_mut() {
            Some((times, retry_after)) if *times > 0 => {
                *times -= 1;
                Some(retry_after.clone())
            }
            _ => None,
        }
    };
    let response = match throttled {
        Some(retry_after) => match shared.kind {
            WebhookKind::SplunkHec { .. } => {
                let (status, answer) = hec(StatusCode::SERVICE_UNAVAILABLE, "Server is busy", 9);
                (status, [("retry-after", retry_after)], axum::Json(answer)).into_response()
            }
            _ => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", retry_after)], "rate_limited").into_response(),
        },
        None => judge(&shared, uri.path(), &headers, &body),
    };
    let post = ReceivedPost {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        status: response.status().as_u16(),
    };
    shared.lock().posts.push(post);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut req = reqwest::Client::new().post(url).body(body.to_owned());
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn slack_accepts_text_and_throttles_on_demand() {
        let slack = WebhookReceiver::start(WebhookKind::Slack).await.unwrap();
        assert_eq!(post(&slack.url(), &[], r#"{"text":"a &lt;b&gt;"}"#).await, (200, "ok".into()));
        assert_eq!(post(&slack.url(), &[], "not json").await, (400, "invalid_payload".into()));
        assert_eq!(post(&slack.url(), &[], "{}").await, (400, "no_text".into()));
        assert_eq!(post(&format!("{}/services/x", slack.base_url()), &[], r#"{"text":"a"}"#).await.0, 404);
        slack.throttle(1, "300");
        assert_eq!(post(&slack.url(), &[], r#"{"text":"b"}"#).await.0, 429);
        assert_eq!(slack.posts().last().unwrap().status, 429);
        assert_eq!(slack.messages(), vec!["a <b>".to_string()]);
        slack.shutdown().await;
    }

    #[tokio::test]
    async fn teams_accepts_adaptive_cards_and_message_cards() {
        let teams = WebhookReceiver::start(WebhookKind::Teams).await.unwrap();
        let card = r#"{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","contentUrl":null,"content":{"type":"AdaptiveCard","version":"1.4","body":[{"type":"TextBlock","text":"hi"}]}}]}"#;
        assert_eq!(post(&teams.url(), &[], card).await.0, 202);
        let legacy = r#"{"@type":"MessageCard","@context":"https://schema.org/extensions","text":"yo"}"#;
        assert_eq!(post(&teams.url(), &[], legacy).await, (200, "1".into()));
        assert_eq!(post(&teams.url(), &[], r#"{"text":"plain"}"#).await.0, 400);
        assert_eq!(teams.messages(), vec!["hi".to_string(), "yo".to_string()]);
    }

    #[tokio::test]
    async fn hec_checks_the_token_and_the_event_envelope() {
        let hec = WebhookReceiver::start(WebhookKind::SplunkHec { token: "t0k".into() }).await.unwrap();
        let url = hec.url();
        let ok = r#"{"event":{"a":1},"sourcetype":"x","time":1}"#;
        assert_eq!(
            post(&url, &[("authorization", "Splunk t0k")], ok).await,
            (200, r#"{"code":0,"text":"Success"}"#.into())
        );
        assert_eq!(post(&url, &[], ok).await.0, 401);
        assert_eq!(post(&url, &[("authorization", "Bearer t0k")], ok).await.0, 401);
        assert_eq!(post(&url, &[("authorization", "Splunk nope")], ok).await.0, 403);
        assert!(post(&url, &[("authorization", "Splunk t0k")], r#"{"time":1}"#).await.1.contains("\"code\":12"));
        hec.throttle(1, "2");
        assert!(post(&url, &[("authorization", "Splunk t0k")], ok).await.1.contains("\"code\":9"));
        assert_eq!(hec.messages(), vec![r#"{"event":{"a":1},"sourcetype":"x","time":1}"#.to_string()]);
    }
}
