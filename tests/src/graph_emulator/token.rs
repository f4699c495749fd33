//! `POST /{tenant}/oauth2/v2.0/token`, the Microsoft identity platform's client-credentials grant
//! (DOMAIN §2.1; fixtures/graph/token.*). Success is `{token_type, expires_in, ext_expires_in,
//! access_token}` with an opaque random token. Each refusal carries Entra's OAuth error shape
//! (`error`, `error_description` starting with the AADSTS code and ending with trace and
//! correlation ids, `error_codes`, `timestamp`, `trace_id`, `correlation_id`), with the status
//! Entra uses: 400 for request problems, 401 `invalid_client` for client authentication.
//!
//! The app authenticates with its client secret in the form body, or with a client assertion
//! signed by the key of a certificate registered with [`super::GraphEmulator::register_certificate`]
//! (checked in `assertion.rs`). HTTP Basic client authentication (valid against Entra) gets a
//! 400 that says it is not emulated.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::time::Instant;

use super::assertion::{self, Expected, JWT_BEARER};
use super::Shared;
use crate::ids;

/// The scopes Entra accepts for app-only Graph access (resource URI or Graph's app id).
const GRAPH_SCOPES: [&str; 2] =
    ["https://graph.microsoft.com/.default", "00000003-0000-0000-c000-000000000000/.default"];

pub(super) async fn issue(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().token_requests += 1;
    let correlation_id =
        headers.get("client-request-id").and_then(|v| v.to_str().ok()).map_or_else(ids::uuid_v4, str::to_owned);
    let refuse =
        |status, error, code, description: String| oauth_error(status, error, code, &description, &correlation_id);

    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> =
        if is_form { url::form_urlencoded::parse(&body).into_owned().collect() } else { Vec::new() };
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let cfg = &shared.cfg;

    if !tenant.eq_ignore_ascii_case(&cfg.tenant_id) && !tenant.eq_ignore_ascii_case(&cfg.domain) {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 90002, format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ));
    }
    let Some(grant_type) = field("grant_type") else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 900144, missing("grant_type"));
    };
    if grant_type != "client_credentials" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    if headers.get(AUTHORIZATION).is_some() {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 900144, "graph-emulator emulates a client_secret or a client_assertion in the form body; HTTP Basic client authentication is not emulated.".into());
    }
    let Some(client_id) = field("client_id") else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 900144, missing("client_id"));
    };
    if !client_id.eq_ignore_ascii_case(&cfg.client_id) {
        return refuse(StatusCode::BAD_REQUEST, "unauthorized_client", 700016, format!(
            "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            cfg.domain
        ));
    }
    let Some(scope) = field("scope") else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 900144, missing("scope"));
    };
    if !GRAPH_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
        if !scope.split(' ').all(|s| s.ends_with("/.default")) {
            return refuse(StatusCode::BAD_REQUEST, "invalid_scope", 1002012, format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ));
        }
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        );
    }
    if let Some(jwt) = field("client_assertion") {
        if field("client_secret").is_some() {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "graph-emulator expects one client credential: client_secret or client_assertion, not both.".into(),
            );
        }
        if field("client_assertion_type") != Some(JWT_BEARER) {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                format!(
                    "The request body must contain the following parameter: 'client_assertion_type' ({JWT_BEARER})."
                ),
            );
        }
        let (certificates, audiences, now_s) = {
            let t = shared.lock();
            let audiences: Vec<String> = [&cfg.tenant_id, &cfg.domain]
                .iter()
                .map(|tenant| {
                    format!(
                        "{}/{tenant}/oauth2/v2.0/token",
                        t.assertion_login_url.as_deref().unwrap_or(&shared.base_url)
                    )
                })
                .collect();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.certificates.clone(), audiences, now.as_secs() as i64 + t.assertion_clock_offset_secs)
        };
        let expected = Expected { client_id, audiences: &audiences, now_s };
        if let Err(r) = assertion::verify(jwt, &certificates, &expected) {
            return refuse(StatusCode::UNAUTHORIZED, "invalid_client", r.code, r.description);
        }
        return issue_token(&shared);
    }
    let Some(secret) = field("client_secret") else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
        );
    };
    if secret != cfg.client_secret {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
            cfg.client_id
        ));
    }

    issue_token(&shared)
}

/// A new access token for the app, remembered with its expiry.
fn issue_token(shared: &Shared) -> Response {
    let cfg = &shared.cfg;
    let token = ids::alphanumeric(96);
    let expiry = Instant::now() + Duration::from_secs(cfg.token_ttl_secs);
    shared.lock().tokens.insert(token.clone(), expiry);
    Json(json!({
        "token_type": "Bearer",
        "expires_in": cfg.token_ttl_secs,
        "ext_expires_in": cfg.token_ttl_secs,
        "access_token": token,
    }))
    .into_response()
}

fn missing(parameter: &str) -> String {
    format!("The request body must contain the following parameter: '{parameter}'.")
}

/// Entra's OAuth error body, as in fixtures/graph/token.error.400.json.
fn oauth_error(status: StatusCode, error: &str, code: u32, description: &str, correlation_id: &str) -> Response {
    let trace_id = ids::uuid_v4();
    let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    });
    (status, Json(body)).into_response()
}
