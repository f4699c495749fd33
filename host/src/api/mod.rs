//! The admin/status API, on the same listener as the Okta endpoint.
//!
//! `GET /healthz` is open (it says only whether the store answers). Everything else needs
//! `Authorization: Bearer <admin.token>`; without a configured token it is closed (401),
//! never open. Shapes and status names are the contract of docs/contract.md. `POST
//! /api/plugins/reload` rescans the plugin directory on demand (as SIGHUP does); `POST
//! /api/plugins/{name}/reconcile` runs [`crate::reconcile`] (see `reconcile.rs`).
//!
//! The operator [`console`] (`GET /`) is a static shell; the data it shows comes from the
//! same protected endpoints, two of which exist for it: `GET /api/events` (search, newest
//! first) and `GET /api/queue` (the queue at a glance).

mod console;
mod reconcile;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;
use crate::registry::{PluginSet, Registry, SyncOutcome};
use crate::secret::Secret;
use crate::store::{AsyncStore, EventFilter, ReplayOutcome, Source, Status, Store, StoreError};

/// What the API needs.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub plugins: Arc<PluginSet>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<Secret>,
    pub host_id: String,
    /// Called after a replay puts a delivery back to pending (wakes the dispatcher).
    pub on_replay: Arc<dyn Fn() + Send + Sync>,
    /// The plugin directory, for `POST /api/plugins/reload`; `None` where plugins are not
    /// loaded from a directory (the endpoint then answers 404).
    pub registry: Option<Arc<Registry>>,
    /// Reconcile (`POST /api/plugins/{name}/reconcile`, `GET /api/reconcile`); `None` where
    /// the service does not offer it (the endpoints then answer 404 / no reports).
    pub reconcile: Option<Arc<crate::reconcile::Reconciler>>,
}

/// `/healthz`, `/metrics` and `/api/*`.
pub fn routes(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/reload", post(reload))
        .route("/api/plugins/{name}/held/release", post(release_held))
        .route("/api/plugins/{name}/held/discard", post(discard_held))
        .route("/api/plugins/{name}/reconcile", post(reconcile::run))
        .route("/api/reconcile", get(reconcile::reports))
        .route("/api/events", get(events))
        .route("/api/events/{uuid}", get(event))
        .route("/api/queue", get(queue))
        .route("/api/deliveries", get(deliveries))
        .route("/api/deliveries/{id}/attempts", get(attempts))
        .route("/api/deliveries/{id}/replay", post(replay))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    Router::new().route("/healthz", get(healthz)).merge(console::routes()).merge(protected).with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "store error in admin API");
    error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable")
}

/// A store call through [`AsyncStore::run`], its failure as the HTTP answer.
async fn store_call<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match store.run(f).await {
        Ok(v) => Ok(v),
        Err(StoreError::Interrupted(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("task failed: {e}"))),
        Err(e) => Err(store_error(e)),
    }
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let presented =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let ok = match (&state.admin_token, presented) {
        (Some(token), Some(p)) => bool::from(p.as_bytes().ct_eq(token.expose().as_bytes())),
        _ => false,
    };
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "send Authorization: Bearer <admin.token>"})),
        )
            .into_response();
    }
    next.run(req).await
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let backend = state.store.kind();
    let why = match state.store.run(|s| s.busy()).await {
        Ok(_) => {
            return Json(json!({
                "status": "ok", "store": "ok", "store_backend": backend, "host": state.host_id,
            }))
            .into_response()
        }
        Err(StoreError::Interrupted(e)) => format!("store check failed: {e}"),
        Err(e) => e.to_string(),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "degraded", "store": "unavailable", "store_backend": backend,
            "store_error": why, "host": state.host_id,
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let counts = match store_call(&state.store, move |s| s.counts()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rows: Vec<(String, &str, u64)> = counts.into_iter().map(|(p, s, n)| (p, s.as_str(), n)).collect();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&rows, &state.host_id)).into_response()
}

async fn plugins(State(state): State<ApiState>) -> Response {
    Json(json!({ "plugins": state.plugins.statuses() })).into_response()
}

/// Rescans the plugin directory now (as SIGHUP does) and answers what each plugin's sync
/// did, then the plugins as `GET /api/plugins` shows them.
async fn reload(State(state): State<ApiState>) -> Response {
    let Some(registry) = state.registry.clone() else {
        return error(StatusCode::NOT_FOUND, "this service has no plugin directory to reload");
    };
    let results = match tokio::task::spawn_blocking(move || registry.scan()).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("rescan failed: {e}")),
    };
    let results: Vec<serde_json::Value> = results
        .iter()
        .map(|(name, outcome)| {
            let (version, error) = match outcome {
                SyncOutcome::Activated { version, .. } => (Some(version.clone()), None),
                SyncOutcome::Failed(e) => (None, Some(e.clone())),
                _ => (None, None),
            };
            json!({"name": name, "result": outcome.kind(), "version": version, "error": error})
        })
        .collect();
    Json(json!({ "results": results, "plugins": state.plugins.statuses() })).into_response()
}

async fn event(State(state): State<ApiState>, Path(uuid): Path<String>) -> Response {
    match store_call(&state.store, move |s| s.event(&uuid)).await {
        Ok(Some(e)) => Json(e).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no event with that id"),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    q: Option<String>,
    event_type: Option<String>,
    group: Option<String>,
    status: Option<String>,
    source: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

/// `GET /api/events?q=&event_type=&group=&status=&source=&limit=&before=`: the console's event list.
async fn events(State(state): State<ApiState>, Query(q): Query<EventsQuery>) -> Response {
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match parse_status(s) {
            Ok(s) => Some(s),
            Err(r) => return r,
        },
    };
    let source = match q.source.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match Source::parse(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("source must be hook, system_log or reconcile; got {s:?}"),
                )
            }
        },
    };
    let filter = EventFilter {
        text: q.q,
        event_type: q.event_type,
        group: q.group,
        status,
        source,
        limit: q.limit.unwrap_or(50),
        before: q.before,
    };
    match store_call(&state.store, move |s| s.search_events(&filter)).await {
        Ok(page) => Json(page).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/queue`: counts per plugin, the oldest waiting delivery, attempts per minute.
async fn queue(State(state): State<ApiState>) -> Response {
    match store_call(&state.store, move |s| s.queue_stats(chrono::Utc::now())).await {
        Ok(stats) => Json(stats).into_response(),
        Err(r) => r,
    }
}

#[allow(clippy::result_large_err, reason = "the error is the HTTP answer itself, built once per bad request")]
fn parse_status(s: &str) -> Result<Status, Response> {
    Status::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        error(StatusCode::BAD_REQUEST, format!("status must be one of {}; got {s:?}", names.join(", ")))
    })
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn deliveries(State(state): State<ApiState>, Query(q): Query<DeliveriesQuery>) -> Response {
    let status = match q.status.as_deref().map(parse_status) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(r)) => return r,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match store_call(&state.store, move |s| s.deliveries(status, limit, q.after.as_deref())).await {
        Ok((items, next)) => Json(json!({"deliveries": items, "next": next})).into_response(),
        Err(r) => r,
    }
}

async fn attempts(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match store_call(&state.store, move |s| s.attempts(&id)).await {
        Ok(a) => Json(json!({ "attempts": a })).into_response(),
        Err(r) => r,
    }
}

async fn replay(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match store_call(&state.store, move |s| s.replay(&id)).await {
        Ok(ReplayOutcome::Accepted) => {
            (state.on_replay)();
            (StatusCode::ACCEPTED, Json(json!({"status": "pending"}))).into_response()
        }
        Ok(ReplayOutcome::NotFound) => error(StatusCode::NOT_FOUND, "no delivery with that id"),
        Ok(ReplayOutcome::Conflict(s)) => error(
            StatusCode::CONFLICT,
            format!("delivery is {}; only done, dead, held or discarded deliveries can be replayed", s.as_str()),
        ),
        Err(r) => r,
    }
}

/// `POST /api/plugins/{name}/held/release`: the operator approves the held deliveries; they
/// run in their usual order and the guard's window starts afresh.
async fn release_held(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    let plugin = name.clone();
    match store_call(&state.store, move |s| s.release_held(&plugin, chrono::Utc::now())).await {
        Ok(n) => {
            tracing::info!(plugin = %crate::logsafe::Clean(&name), released = n, "an operator released the held deliveries");
            (state.on_replay)();
            Json(json!({ "released": n })).into_response()
        }
        Err(r) => r,
    }
}

/// `POST /api/plugins/{name}/held/discard`: the operator refuses the held deliveries; they
/// end `discarded`, never run, and stay in the history.
async fn discard_held(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    let plugin = name.clone();
    match store_call(&state.store, move |s| s.discard_held(&plugin, chrono::Utc::now())).await {
        Ok(n) => {
            tracing::info!(plugin = %crate::logsafe::Clean(&name), discarded = n, "an operator discarded the held deliveries");
            Json(json!({ "discarded": n })).into_response()
        }
        Err(r) => r,
    }
}
