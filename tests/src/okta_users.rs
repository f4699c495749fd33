//! An emulator of the one Okta Users API call graph-guest may make: `GET /api/v1/users/{id}`
//! (by user id or login), to read `profile.email` when the login is not an address (DOMAIN §1.3:
//! event payloads carry no profile attributes).
//!
//! As Okta does, it requires `Authorization: SSWS <api token>` (401 `E0000011` "Invalid token
//! provided" otherwise), answers 404 `E0000007` for an unknown user, and can answer 429
//! `E0000047` with `X-Rate-Limit-*` headers on demand. Errors use Okta's shape
//! `{errorCode, errorSummary, errorLink, errorId, errorCauses}`. It runs its own server on
//! `127.0.0.1:0`, since an Okta org is a different origin from Graph.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::ids;
use crate::server::ServerHandle;

/// One Okta user as the emulator stores it.
#[derive(Clone, Debug)]
pub struct OktaUser {
    /// `00u…` id.
    pub id: String,
    /// `profile.login` (often, not always, an address).
    pub login: String,
    /// `profile.email`.
    pub email: String,
    /// `profile.firstName`.
    pub first_name: String,
    /// `profile.lastName`.
    pub last_name: String,
    /// `ACTIVE`, `SUSPENDED`, `DEPROVISIONED`, …
    pub status: String,
}

#[derive(Default)]
struct Org {
    users: Vec<OktaUser>,
    throttled: usize,
    requests: usize,
}

struct Shared {
    api_token: String,
    base_url: String,
    org: Mutex<Org>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Org> {
        self.org.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running Okta Users API emulator.
pub struct OktaUsersEmulator {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl OktaUsersEmulator {
    /// Starts the emulator on `127.0.0.1` at a free port; requests must carry
    /// `Authorization: SSWS {api_token}`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(api_token: &str) -> anyhow::Result<OktaUsersEmulator> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the Okta users emulator")?;
        let addr = listener.local_addr().context("reading the Okta users emulator's address")?;
        let shared = Arc::new(Shared {
            api_token: api_token.to_owned(),
            base_url: format!("http://{addr}"),
            org: Mutex::new(Org::default()),
        });
        let app = Router::new()
            .route("/api/v1/users/{id}", get(get_user))
            .fallback(|| async { okta_error(StatusCode::NOT_FOUND, "E0000007", "Not found: Resource not found") })
            .with_state(shared.clone());
        let server = ServerHandle::spawn(addr, |stop| {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .into_future()
        });
        Ok(OktaUsersEmulator { shared, server })
    }

    /// `http://127.0.0.1:PORT`, the value for graph-guest's `okta_url`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Adds an `ACTIVE` user; first and last name come from the address's local part.
    pub fn add_user(&self, id: &str, login: &str, email: &str) {
        let local = email.split('@').next().unwrap_or_default();
        let (first, last) = local.split_once('.').unwrap_or((local, "User"));
        self.insert(OktaUser {
            id: id.into(),
            login: login.into(),
            email: email.into(),
            first_name: capitalised(first),
            last_name: capitalised(last),
            status: "ACTIVE".into(),
        });
    }

    /// Adds (or replaces, by id) a user with every field chosen.
    pub fn insert(&self, user: OktaUser) {
        let mut org = self.shared.lock();
        org.users.retain(|u| u.id != user.id);
        org.users.push(user);
    }

    /// Sets a user's `status` (e.g. `DEPROVISIONED` after deactivation).
    pub fn set_status(&self, id: &str, status: &str) {
        if let Some(user) = self.shared.lock().users.iter_mut().find(|u| u.id == id) {
            user.status = status.into();
        }
    }

    /// Deletes a user: later lookups answer 404.
    pub fn remove_user(&self, id: &str) {
        self.shared.lock().users.retain(|u| u.id != id);
    }

    /// Answers the next `times` requests with 429 `E0000047`.
    pub fn throttle(&self, times: usize) {
        self.shared.lock().throttled += times;
    }

    /// Number of requests received.
    pub fn requests(&self) -> usize {
        self.shared.lock().requests
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

async fn get_user(State(shared): State<Arc<Shared>>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let mut org = shared.lock();
    org.requests += 1;
    let presented = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("SSWS "));
    if presented != Some(shared.api_token.as_str()) {
        return okta_error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided");
    }
    if org.throttled > 0 {
        org.throttled -= 1;
        let mut response = okta_error(
            StatusCode::TOO_MANY_REQUESTS,
            "E0000047",
            "API call exceeded rate limit due to too many requests.",
        );
        let reset = (chrono::Utc::now().timestamp() + 60).to_string();
        for (name, value) in
            [("x-rate-limit-limit", "600"), ("x-rate-limit-remaining", "0"), ("x-rate-limit-reset", reset.as_str())]
        {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    let Some(user) = org.users.iter().find(|u| u.id == key || u.login.eq_ignore_ascii_case(&key)) else {
        return okta_error(StatusCode::NOT_FOUND, "E0000007", &format!("Not found: Resource not found: {key} (User)"));
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Json(json!({
        "id": user.id,
        "status": user.status,
        "created": now,
        "activated": now,
        "statusChanged": now,
        "lastLogin": null,
        "lastUpdated": now,
        "passwordChanged": null,
        "type": { "id": "oty1emulator0000000x7" },
        "profile": {
            "firstName": user.first_name,
            "lastName": user.last_name,
            "mobilePhone": null,
            "secondEmail": null,
            "login": user.login,
            "email": user.email,
        },
        "credentials": { "provider": { "type": "OKTA", "name": "OKTA" } },
        "_links": { "self": { "href": format!("{}/api/v1/users/{}", shared.base_url, user.id) } },
    }))
    .into_response()
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

    async fn get(url: &str, auth: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(url);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap())
    }

    #[tokio::test]
    async fn users_api_needs_ssws_and_knows_its_users() {
        let okta = OktaUsersEmulator::start("okta-token").await.unwrap();
        okta.add_user("00uabc", "jdoe", "jane.doe@fabrikam.com");
        let url = format!("{}/api/v1/users/00uabc", okta.base_url());

        let (status, body) = get(&url, None).await;
        assert_eq!((status, body["errorCode"].as_str()), (401, Some("E0000011")));
        let (status, _) = get(&url, Some("Bearer okta-token")).await;
        assert_eq!(status, 401);

        let (status, body) = get(&url, Some("SSWS okta-token")).await;
        assert_eq!(status, 200);
        assert_eq!(body["profile"]["email"], "jane.doe@fabrikam.com");
        assert_eq!(body["profile"]["login"], "jdoe");
        assert_eq!(body["profile"]["firstName"], "Jane");
        assert_eq!(body["status"], "ACTIVE");

        let (status, body) = get(&format!("{}/api/v1/users/JDOE", okta.base_url()), Some("SSWS okta-token")).await;
        assert_eq!((status, body["id"].as_str()), (200, Some("00uabc")));

        let (status, body) = get(&format!("{}/api/v1/users/00unknown", okta.base_url()), Some("SSWS okta-token")).await;
        assert_eq!((status, body["errorCode"].as_str()), (404, Some("E0000007")));

        okta.throttle(1);
        let (status, body) = get(&url, Some("SSWS okta-token")).await;
        assert_eq!((status, body["errorCode"].as_str()), (429, Some("E0000047")));
        assert_eq!(get(&url, Some("SSWS okta-token")).await.0, 200);
        assert_eq!(okta.requests(), 7);
        okta.shutdown().await;
    }
}
