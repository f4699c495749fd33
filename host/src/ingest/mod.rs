//! The Okta Event Hook endpoint.
//!
//! Okta waits about 3 seconds and retries once at most, so this handler only checks,
//! stores and answers; plugins run later, from the store. In order:
//!
//! 1. the auth header, compared in constant time, before anything else is read (401, nothing
//!    stored);
//! 2. the content type (415 unless exactly `application/json`, parameters allowed; also
//!    when absent), the body size (413 past `max_body_bytes`) and the
//!    time the body takes to arrive (408 past `read_timeout`, counted from when the handler
//!    starts reading: a sender trickling or stalling mid-body cannot hold a task and a
//!    connection open);
//! 3. the envelope, parsed by field name (400 with a JSON body naming the problem; an object
//!    that repeats a key is refused too, since readers disagree on which value counts);
//! 4. one durable commit of every event plus one delivery per subscribed plugin, *then* 200.
//!    A duplicate event (same LogEvent `uuid`) is stored once. If the store fails: 503, so
//!    Okta retries.
//!
//! `GET` answers Okta's one-time verification challenge; it reveals nothing and needs no auth.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::logsafe::Clean;
use crate::metrics::Metrics;
use crate::okta::Delivery;
use crate::registry::PluginSet;
use crate::secret::Secret;
use crate::store::{AsyncStore, NewEvent, Source, Store};
use crate::telemetry;

/// What the endpoint needs.
#[derive(Clone)]
pub struct IngestState {
    pub store: Arc<dyn Store>,
    pub plugins: Arc<PluginSet>,
    pub auth_header: HeaderName,
    pub auth_secret: Secret,
    pub max_body_bytes: usize,
    /// How long the whole body may take to arrive (`okta.read_timeout_secs`).
    pub read_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Called after new deliveries are committed (wakes the dispatcher).
    pub on_stored: Arc<dyn Fn() + Send + Sync>,
}

/// The routes at `path` (GET verification, POST deliveries).
pub fn routes(path: &str, state: IngestState) -> Router {
    Router::new().route(path, get(verify).post(receive)).with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

async fn verify(State(state): State<IngestState>, headers: HeaderMap) -> Response {
    let resp = match headers.get("x-okta-verification-challenge").and_then(|v| v.to_str().ok()) {
        Some(challenge) => Json(json!({ "verification": challenge })).into_response(),
        None => error(
            StatusCode::BAD_REQUEST,
            "missing header x-okta-verification-challenge (Okta sends it when you click Verify)",
        ),
    };
    state.metrics.ingest_response(resp.status().as_u16());
    resp
}

async fn receive(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let resp = receive_inner(&state, &headers, body).await;
    state.metrics.ingest_response(resp.status().as_u16());
    resp
}

/// Whether the request says its body is JSON: exactly one Content-Type whose media type is
/// `application/json` (any case; parameters such as `charset=utf-8` allowed). A prefix match
/// would let `application/jsonx` through; a missing type is not assumed to be JSON.
fn json_content_type(headers: &HeaderMap) -> Result<(), String> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err("content-type must be application/json (exactly one Content-Type header)".into());
    };
    let text = value.to_str().unwrap_or_default();
    let media_type = text.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(format!("content-type must be application/json, got {:?}", media_type.to_ascii_lowercase()))
    }
}

fn authorized(state: &IngestState, headers: &HeaderMap) -> bool {
    let expected = state.auth_secret.expose().as_bytes();
    // Every value of the header is compared, so a duplicated header cannot smuggle a match.
    let mut values = headers.get_all(&state.auth_header).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => bool::from(v.as_bytes().ct_eq(expected)),
        _ => false,
    }
}

async fn receive_inner(state: &IngestState, headers: &HeaderMap, body: Body) -> Response {
    let started = std::time::SystemTime::now();
    if !authorized(state, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            format!("missing or wrong {} header; it must equal the configured okta.auth_secret", state.auth_header),
        );
    }
    if let Err(why) = json_content_type(headers) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, why);
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than okta.max_body_bytes ({} bytes)", state.max_body_bytes),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return too_large();
    }
    let read = tokio::time::timeout(state.read_timeout, axum::body::to_bytes(body, state.max_body_bytes)).await;
    let Ok(read) = read else {
        return error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within okta.read_timeout_secs ({} s); nothing was stored",
                state.read_timeout.as_secs()
            ),
        );
    };
    let bytes: Bytes = match read {
        Ok(b) => b,
        Err(e) => {
            let length_limit =
                std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if length_limit {
                too_large()
            } else {
                error(StatusCode::BAD_REQUEST, format!("could not read the body: {e}"))
            };
        }
    };
    let delivery = match Delivery::parse(&bytes) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let events: Vec<NewEvent> = delivery
        .events
        .into_iter()
        .map(|event| NewEvent { plugins: state.plugins.subscribers(&event), event })
        .collect();
    let in_delivery = events.len();
    let okta_id = delivery.delivery_id.clone();
    let committed = state.store.run(move |s| s.ingest(okta_id.as_deref(), &events)).await;
    match committed {
        Ok(report) => {
            state.metrics.events_ingested(Source::Hook, report.stored as u64);
            if report.deliveries > 0 {
                (state.on_stored)();
            }
            let origin = telemetry::IngestOrigin {
                source: Source::Hook.as_str(),
                okta_delivery_id: delivery.delivery_id.as_deref(),
                events: in_delivery,
            };
            telemetry::record_ingest(origin, &report.new_events, started);
            tracing::info!(
                okta_delivery_id = %Clean(delivery.delivery_id.as_deref().unwrap_or("-")),
                stored = report.stored,
                duplicates = report.duplicates,
                deliveries = report.deliveries,
                "okta delivery acknowledged"
            );
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "store failed; answering 503 so Okta retries");
            error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry later")
        }
    }
}
