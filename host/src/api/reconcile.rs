//! The reconcile endpoints: `POST /api/plugins/{name}/reconcile` plans (and, if asked,
//! applies) reconcile for one plugin, answering the plan object of `hookhost reconcile
//! --json`; `GET /api/reconcile` gives the last report of each plugin (scheduled or asked
//! for), which the console's Drift panel shows. The work is [`crate::reconcile`]'s: it reads
//! Okta, asks the plugin, and changes state only by storing events in the store.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{error, ApiState};
use crate::reconcile::{Options, ReconcileError};

/// The request body; both default to false, and an empty body is a report.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Body {
    apply: bool,
    force: bool,
}

pub(super) async fn run(State(state): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(reconciler) = state.reconcile.clone() else {
        return error(StatusCode::NOT_FOUND, "reconcile is not available in this service");
    };
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be {{\"apply\": false|true, \"force\": false|true}}: {e}"),
                )
            }
        }
    };
    let Some(plugin) = state.plugins.get(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no active plugin named {name:?} (see GET /api/plugins)"));
    };
    match reconciler.run(&plugin, Options { apply: body.apply, force: body.force }).await {
        Ok(report) => Json(report.plan).into_response(),
        Err(e) => {
            let message = e.to_string();
            let code = match &e {
                ReconcileError::Unsupported(_)
                | ReconcileError::NotConfigured(_)
                | ReconcileError::TooManyChanges { .. }
                | ReconcileError::Busy(_) => StatusCode::CONFLICT,
                ReconcileError::Okta(_) | ReconcileError::Plugin { .. } => StatusCode::BAD_GATEWAY,
                ReconcileError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            tracing::warn!(plugin = %name, error = %message, "reconcile failed");
            match e {
                ReconcileError::TooManyChanges { plan, .. } => {
                    (code, Json(json!({ "error": message, "plan": plan }))).into_response()
                }
                _ => error(code, message),
            }
        }
    }
}

/// The last report of every plugin that has one, by name.
pub(super) async fn reports(State(state): State<ApiState>) -> Response {
    let Some(reconciler) = state.reconcile.clone() else {
        return Json(json!({ "reports": [] })).into_response();
    };
    let reports: Vec<serde_json::Value> = state
        .plugins
        .statuses()
        .iter()
        .filter_map(|p| {
            let report = reconciler.last_report(&p.name)?;
            let s = reconciler.settings(&p.name);
            Some(json!({
                "plugin": p.name,
                "at": report.at,
                "okta_members": report.plan.okta_members,
                "managed_accounts": report.managed_accounts,
                "add": report.plan.add,
                "remove": report.plan.remove,
                "applied": report.plan.applied,
                "events": report.events,
                "held_back": report.held_back,
                "every_secs": s.every_secs,
                "mode": match s.mode { crate::config::ReconcileMode::Report => "report", crate::config::ReconcileMode::Apply => "apply" },
                "max_changes": s.max_changes,
            }))
        })
        .collect();
    Json(json!({ "reports": reports })).into_response()
}
