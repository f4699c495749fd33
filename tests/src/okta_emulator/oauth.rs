//! OAuth 2.0 for Okta APIs, as the org authorization server does it for an API service app:
//! `POST /oauth2/v1/token` with the client credentials grant and `private_key_jwt`, and scoped
//! `Bearer` access tokens checked per endpoint.
//!
//! - A service app is registered with its public key (RSA or EC P-256), an optional `kid`
//!   and the Okta API scopes granted to it ([`super::OktaEmulator::register_service_app`]).
//! - The token endpoint wants a form body with `grant_type=client_credentials`, `scope` and a
//!   JWT `client_assertion` of type `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
//!   The assertion must be signed (RS256 or ES256) by the app's key, with `iss` = `sub` = the
//!   client id, `aud` = this token endpoint's URL, an `exp` in the future and at most an hour
//!   after `iat`, and a `jti` never seen before. Failures answer Okta's OAuth error shape
//!   (`{"error", "error_description"}`): `invalid_client` (401) for a bad assertion,
//!   `invalid_scope` (400) for a scope the app was not granted, `unsupported_grant_type` and
//!   `invalid_request` (400) for a malformed request.
//! - Tokens live `expires_in` = 3600 s. An API call with `Bearer <token>` needs a live token
//!   (401 `E0000011` otherwise, with `WWW-Authenticate: Bearer … error="invalid_token"`) holding
//!   the endpoint's scope (403 `E0000006` otherwise, `WWW-Authenticate` naming the scope with
//!   `error="insufficient_scope"`). A `.manage` scope also allows the `.read` endpoints.
//!   `Authorization: SSWS <api token>` keeps working beside it, as it does in Okta.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

use super::{okta_error, Shared};
use crate::ids;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const TOKEN_SECS: u64 = 3600;

/// A service app's public key, as the bytes aws-lc-rs verifies with: PKCS#1 `RSAPublicKey`
/// DER for RSA, the uncompressed point for P-256.
#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa(Vec<u8>),
    EcP256(Vec<u8>),
}

/// An API service app registered in the org.
#[derive(Clone, Debug)]
pub struct ServiceApp {
    pub client_id: String,
    pub key: PublicKey,
    /// The `kid` of its key; an assertion naming another `kid` is refused.
    pub kid: Option<String>,
    /// The Okta API scopes granted to it.
    pub scopes: Vec<String>,
}

/// What a token endpoint call was asked and answered, for tests.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub status: u16,
    /// `error` of a refusal.
    pub error: Option<String>,
}

struct IssuedToken {
    scopes: HashSet<String>,
    expires: SystemTime,
}

/// Apps, issued tokens and used assertion ids.
#[derive(Default)]
pub(super) struct OAuthState {
    apps: HashMap<String, ServiceApp>,
    tokens: HashMap<String, IssuedToken>,
    used_jtis: HashSet<String>,
    requests: Vec<TokenRequest>,
}

impl OAuthState {
    pub(super) fn register(&mut self, app: ServiceApp) {
        self.apps.insert(app.client_id.clone(), app);
    }

    pub(super) fn expire_tokens(&mut self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for t in self.tokens.values_mut() {
            t.expires = past;
        }
    }

    pub(super) fn requests(&self) -> Vec<TokenRequest> {
        self.requests.clone()
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({ "error": error, "error_description": description }))).into_response()
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `POST /oauth2/v1/token`.
pub(super) async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let scopes: Vec<String> =
        form.get("scope").map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
    let (answer, client_id) = issue(&shared, &headers, &form, &scopes);
    let status = answer.status().as_u16();
    let error = answer.error.clone();
    shared.lock().oauth.requests.push(TokenRequest { client_id, scopes, status, error });
    answer.into_response()
}

/// An answer of the token endpoint and, for the record, its `error`.
struct TokenAnswer {
    status: StatusCode,
    error: Option<String>,
    response: Response,
}

impl TokenAnswer {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn refuse(status: StatusCode, error: &str, description: &str) -> TokenAnswer {
        TokenAnswer { status, error: Some(error.to_owned()), response: oauth_error(status, error, description) }
    }
    fn into_response(self) -> Response {
        self.response
    }
}

fn issue(
    shared: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    scopes: &[String],
) -> (TokenAnswer, Option<String>) {
    let refuse = TokenAnswer::refuse;
    let form_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return (
            refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded.",
            ),
            None,
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            ),
            None,
        );
    }
    if form.contains_key("client_secret") {
        return (
            refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client Credentials requests to the Org Authorization Server must use the private_key_jwt token_endpoint_auth_method.",
            ),
            None,
        );
    }
    if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
        return (
            refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The client_assertion_type is missing or not supported.",
            ),
            None,
        );
    }
    let Some(assertion) = form.get("client_assertion") else {
        return (refuse(StatusCode::BAD_REQUEST, "invalid_request", "The client_assertion is missing."), None);
    };
    let aud = format!("{}/oauth2/v1/token", shared.base_url);
    let mut org = shared.lock();
    let client_id = match verify(&org.oauth, assertion, &aud) {
        Ok((client_id, jti)) => {
            if !org.oauth.used_jtis.insert(jti) {
                return (
                    refuse(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "The client_assertion token has already been used (jti reused).",
                    ),
                    Some(client_id),
                );
            }
            client_id
        }
        Err((description, client)) => {
            return (refuse(StatusCode::UNAUTHORIZED, "invalid_client", &description), client)
        }
    };
    if scopes.is_empty() {
        return (
            refuse(StatusCode::BAD_REQUEST, "invalid_scope", "The authorization server requires a scope."),
            Some(client_id),
        );
    }
    let granted = &org.oauth.apps[&client_id].scopes;
    let missing: Vec<&str> = scopes.iter().filter(|s| !granted.contains(s)).map(String::as_str).collect();
    if !missing.is_empty() {
        return (
            refuse(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                &format!(
                    "The following scopes were requested, but not granted to the client app: {}",
                    missing.join(" ")
                ),
            ),
            Some(client_id),
        );
    }
    let token = ids::alphanumeric(40);
    org.oauth.tokens.insert(
        token.clone(),
        IssuedToken {
            scopes: scopes.iter().cloned().collect(),
            expires: SystemTime::now() + Duration::from_secs(TOKEN_SECS),
        },
    );
    let body = json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_SECS,
        "access_token": token,
        "scope": scopes.join(" "),
    });
    (TokenAnswer { status: StatusCode::OK, error: None, response: Json(body).into_response() }, Some(client_id))
}

/// Checks a client assertion; the client id and `jti`, or why not (and the claimed client).
fn verify(state: &OAuthState, assertion: &str, aud: &str) -> Result<(String, String), (String, Option<String>)> {
    let malformed = || ("The client_assertion is not a well-formed JWT.".to_owned(), None);
    let Some(jws) = crate::jws::parse(assertion) else { return Err(malformed()) };
    let (h, c, sig) = (&jws.header, &jws.claims, &jws.signature);
    let iss = c["iss"].as_str().map(str::to_owned);
    let Some(app) = iss.as_deref().and_then(|i| state.apps.get(i)) else {
        return Err(("The client_assertion token's iss claim is not a registered client_id.".into(), iss));
    };
    let refuse = |why: &str| Err((why.to_owned(), iss.clone()));
    if c["sub"].as_str() != iss.as_deref() {
        return refuse("The client_assertion token must have the same iss and sub claims (the client_id).");
    }
    if c["aud"].as_str() != Some(aud) {
        return refuse(
            "The audience [aud] claim for client_assertion must be the endpoint invoking the client_assertion.",
        );
    }
    let now = epoch(SystemTime::now());
    let (Some(exp), iat) = (c["exp"].as_u64(), c["iat"].as_u64()) else {
        return refuse("The client_assertion token must have an exp claim.");
    };
    if exp <= now {
        return refuse("The client_assertion token is expired.");
    }
    if exp.saturating_sub(iat.unwrap_or(now)) > 3600 {
        return refuse("The client_assertion token has an expiration too far into the future.");
    }
    if let (Some(want), Some(got)) = (&app.kid, h["kid"].as_str()) {
        if want != got {
            return refuse("The client_assertion token's kid does not match a key of the client.");
        }
    }
    let message = jws.signing_input;
    let verified = match (&app.key, h["alg"].as_str()) {
        (PublicKey::Rsa(k), Some("RS256")) => {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, k).verify(message.as_bytes(), sig).is_ok()
        }
        (PublicKey::EcP256(k), Some("ES256")) => {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k).verify(message.as_bytes(), sig).is_ok()
        }
        _ => return refuse("The client_assertion token's alg does not fit the client's key."),
    };
    if !verified {
        return refuse("The client_assertion signature is invalid.");
    }
    let Some(jti) = c["jti"].as_str().filter(|j| !j.is_empty()) else {
        return refuse("The client_assertion token must have a jti claim.");
    };
    Ok((app.client_id.clone(), jti.to_owned()))
}

/// The scope an Okta API call needs, by method and path (`None`: not an OAuth-able endpoint
/// in this emulator).
pub(super) fn scope_for(method: &str, path: &str) -> Option<&'static str> {
    let read = method == "GET";
    if path == "/api/v1/logs" {
        return Some("okta.logs.read");
    }
    if path.starts_with("/api/v1/groups") {
        return Some(if read { "okta.groups.read" } else { "okta.groups.manage" });
    }
    if path.starts_with("/api/v1/eventHooks") {
        return Some(if read { "okta.eventHooks.read" } else { "okta.eventHooks.manage" });
    }
    None
}

/// Checks a call's credentials: the API token, or a live access token holding the scope of
/// the endpoint. `Some` is the refusal to answer with.
pub(super) fn authorize(shared: &Shared, headers: &HeaderMap, method: &str, path: &str) -> Option<Response> {
    let auth = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if auth.strip_prefix("SSWS ") == Some(shared.api_token.as_str()) {
        return None;
    }
    let Some(token) = auth.strip_prefix("Bearer ") else { return Some(invalid_token(shared)) };
    let org = shared.lock();
    let Some(issued) = org.oauth.tokens.get(token).filter(|t| SystemTime::now() < t.expires) else {
        return Some(invalid_token(shared));
    };
    let Some(scope) = scope_for(method, path) else { return Some(invalid_token(shared)) };
    let manage = scope.replace(".read", ".manage");
    if issued.scopes.contains(scope) || issued.scopes.contains(&manage) {
        return None;
    }
    let mut answer =
        okta_error(StatusCode::FORBIDDEN, "E0000006", "You do not have permission to perform the requested action");
    let challenge = format!(
        "Bearer authorization_uri=\"{base}/oauth2/v1/authorize\", realm=\"{base}\", scope=\"{scope}\", \
         error=\"insufficient_scope\", error_description=\"The access token provided does not contain the required scopes.\", \
         resource=\"{path}\"",
        base = shared.base_url
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        answer.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    Some(answer)
}

fn invalid_token(shared: &Shared) -> Response {
    let mut answer = okta_error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided");
    let challenge = format!(
        "Bearer authorization_uri=\"{base}/oauth2/v1/authorize\", realm=\"{base}\", error=\"invalid_token\", \
         error_description=\"The token is not valid.\"",
        base = shared.base_url
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        answer.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, TestKey};
    use crate::OktaEmulator;
    use serde_json::Value;

    const CLIENT: &str = "0oa1serviceapp";

    fn claims(okta: &OktaEmulator) -> Value {
        let now = epoch(SystemTime::now());
        json!({
            "iss": CLIENT, "sub": CLIENT, "aud": format!("{}/oauth2/v1/token", okta.base_url()),
            "iat": now, "exp": now + 300, "jti": ids::alphanumeric(16),
        })
    }

    async fn ask(okta: &OktaEmulator, assertion: &str, scope: &str) -> (u16, Value) {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion),
            ])
            .finish();
        let response = reqwest::Client::new()
            .post(format!("{}/oauth2/v1/token", okta.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), serde_json::from_slice(&response.bytes().await.unwrap()).unwrap())
    }

    async fn call(okta: &OktaEmulator, path: &str, token: &str) -> reqwest::Response {
        reqwest::Client::new().get(format!("{}{path}", okta.base_url())).bearer_auth(token).send().await.unwrap()
    }

    async fn setup(key: &TestKey, scopes: &[&str]) -> OktaEmulator {
        let okta = OktaEmulator::start("ssws-token").await.unwrap();
        okta.register_service_app(ServiceApp {
            client_id: CLIENT.into(),
            key: key.public.clone(),
            kid: Some("k1".into()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        });
        okta
    }

    #[tokio::test]
    async fn a_signed_assertion_gets_a_token_good_only_for_its_scopes() {
        let key = keys::ec_p256();
        let okta = setup(&key, &["okta.logs.read", "okta.groups.read"]).await;
        let (status, body) =
            ask(&okta, &key.jwt(&json!({"alg": "ES256", "kid": "k1"}), &claims(&okta)), "okta.logs.read").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(3600)));
        let token = body["access_token"].as_str().unwrap();

        assert_eq!(call(&okta, "/api/v1/logs?since=2026-01-01T00:00:00Z", token).await.status(), 200);
        let refused = call(&okta, "/api/v1/groups", token).await;
        assert_eq!(refused.status(), 403);
        let challenge = refused.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"okta.groups.read\""),
            "{challenge}"
        );
        let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
        assert_eq!(body["errorCode"], "E0000006");

        assert_eq!(call(&okta, "/api/v1/logs", "made-up").await.status(), 401);
        okta.expire_oauth_tokens();
        let expired = call(&okta, "/api/v1/logs", token).await;
        assert_eq!(expired.status(), 401);
        assert!(expired.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    }

    #[tokio::test]
    async fn bad_assertions_and_ungranted_scopes_are_refused_as_okta_does() {
        let key = keys::rsa();
        let okta = setup(&key, &["okta.logs.read"]).await;
        let header = json!({"alg": "RS256"});
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = claims(&okta);
            change(&mut c);
            key.jwt(&header, &c)
        };
        let cases: Vec<(&str, String)> = vec![
            ("wrong audience", with(&|c| c["aud"] = json!("https://elsewhere.example/oauth2/v1/token"))),
            ("expired", with(&|c| c["exp"] = json!(epoch(SystemTime::now()) - 10))),
            ("too long", with(&|c| c["exp"] = json!(epoch(SystemTime::now()) + 7200))),
            ("sub is not iss", with(&|c| c["sub"] = json!("someone"))),
            (
                "unknown client",
                with(&|c| {
                    c["iss"] = json!("0oa-other");
                    c["sub"] = json!("0oa-other");
                }),
            ),
            (
                "no jti",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
            ),
            ("another key", keys::rsa().jwt(&header, &claims(&okta))),
            ("wrong kid", key.jwt(&json!({"alg": "RS256", "kid": "k2"}), &claims(&okta))),
            ("alg not of the key", key.jwt(&json!({"alg": "ES256"}), &claims(&okta))),
        ];
        for (case, assertion) in cases {
            let (status, body) = ask(&okta, &assertion, "okta.logs.read").await;
            assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{case}: {body}");
        }
        let mut tampered = key.jwt(&header, &claims(&okta));
        tampered.insert_str(tampered.rfind('.').unwrap() + 1, "AA");
        assert_eq!(ask(&okta, &tampered, "okta.logs.read").await.0, 401);

        let once = key.jwt(&header, &claims(&okta));
        assert_eq!(ask(&okta, &once, "okta.logs.read").await.0, 200);
        let (status, body) = ask(&okta, &once, "okta.logs.read").await;
        assert_eq!(status, 401, "a jti is single use: {body}");

        let (status, body) = ask(&okta, &key.jwt(&header, &claims(&okta)), "okta.logs.read okta.groups.read").await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
        assert!(body["error_description"].as_str().unwrap().contains("okta.groups.read"), "{body}");

        let requests = okta.token_requests();
        assert_eq!(requests.len(), 13);
        assert_eq!(requests.iter().filter(|r| r.status == 200).count(), 1);
        assert_eq!(requests.last().unwrap().error.as_deref(), Some("invalid_scope"));
    }
}
