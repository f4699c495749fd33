//! Scoped OAuth 2.0 access tokens for hookhost's own Okta API calls (`[okta.oauth]`), the
//! alternative to a long-lived SSWS API token that Okta recommends for services.
//!
//! An Okta "API service" app authenticates with `private_key_jwt`: hookhost signs a short
//! client assertion with the app's private key (kept in the host, see [`crate::private_key`]) and
//! trades it at `{org}/oauth2/v1/token` for an access token with the configured scopes
//! (client credentials grant; Okta's org authorization server accepts no other method for
//! service apps). The token is cached until shortly before it expires and sent as
//! `Authorization: Bearer`; a 401 on a cached token makes the next call fetch a new one.
//!
//! Errors name Okta's `error` code and description (`invalid_client`, `invalid_scope`, ...),
//! never the assertion, the token or the key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::OktaOAuthConfig;
use crate::okta_api::OktaApiError;
use crate::private_key::{Alg, KeyKind, SigningKey};
use crate::secret::Secret;

/// `client_assertion_type` for a JWT client assertion (RFC 7523).
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion; Okta refuses one that lives longer than an hour.
const ASSERTION_SECS: u64 = 300;
/// A token is renewed this long before Okta says it expires (or at half its life if shorter).
const RENEW_EARLY: Duration = Duration::from_secs(60);

/// Why the key or settings of `[okta.oauth]` cannot be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum OktaOAuthError {
    #[error("okta.oauth.private_key: {0}")]
    Key(String),
}

/// The token client of one service app.
pub struct OktaOAuth {
    client_id: String,
    key_id: Option<String>,
    scopes: String,
    key: SigningKey,
    alg: Alg,
    token_url: String,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    token: Secret,
    renew_at: tokio::time::Instant,
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl OktaOAuth {
    /// The client for the org at `origin`, with the app's key read now.
    ///
    /// # Errors
    /// The key cannot be read or is not an RSA or P-256 private key.
    pub fn new(origin: &str, config: &OktaOAuthConfig) -> Result<OktaOAuth, OktaOAuthError> {
        let pem = config.private_key.read().map_err(|e| OktaOAuthError::Key(e.to_string()))?;
        let key = SigningKey::from_pem(pem.expose().as_bytes()).map_err(|e| OktaOAuthError::Key(e.to_string()))?;
        let alg = match key.kind() {
            KeyKind::Rsa => Alg::Rs256,
            KeyKind::EcP256 => Alg::Es256,
        };
        Ok(OktaOAuth {
            client_id: config.client_id.clone(),
            key_id: config.key_id.clone(),
            scopes: config.scopes.join(" "),
            key,
            alg,
            token_url: format!("{}/oauth2/v1/token", origin.trim_end_matches('/')),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    ///
    /// # Errors
    /// Okta refuses the assertion or the scopes, or cannot be reached.
    pub async fn token(&self, http: &reqwest::Client) -> Result<Secret, OktaApiError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| tokio::time::Instant::now() < c.renew_at) {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch(http).await?;
        let early = RENEW_EARLY.min(lifetime / 2);
        *cached = Some(Cached { token: token.clone(), renew_at: tokio::time::Instant::now() + lifetime - early });
        Ok(token)
    }

    /// Drops `token` from the cache (Okta answered 401 to it: revoked, or expired early).
    pub async fn forget(&self, token: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == token) {
            *cached = None;
        }
    }

    /// A signed client assertion for one token request.
    fn assertion(&self) -> Result<String, OktaApiError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_SECS,
            "jti": crate::reconcile::uuid_v4(),
        });
        let mut header = serde_json::Map::new();
        if let Some(kid) = &self.key_id {
            header.insert("kid".into(), Value::String(kid.clone()));
        }
        self.key.jwt(self.alg, &header, &claims).map_err(|e| OktaApiError::BadAnswer {
            what: "an access token".into(),
            message: format!("cannot sign the client assertion with okta.oauth.private_key: {e}"),
        })
    }

    /// One token request: the token and how long it lives.
    async fn fetch(&self, http: &reqwest::Client) -> Result<(Secret, Duration), OktaApiError> {
        let what = || format!("a token request for client {} (okta.oauth)", self.client_id);
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", self.scopes.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &self.assertion()?),
        ];
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let response = http
            .post(&self.token_url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| OktaApiError::Transport { what: what(), message: e.to_string() })?;
        let status = response.status().as_u16();
        let bytes =
            response.bytes().await.map_err(|e| OktaApiError::Transport { what: what(), message: e.to_string() })?;
        if status == 429 {
            return Err(OktaApiError::RateLimited);
        }
        if !(200..300).contains(&status) {
            return Err(OktaApiError::Status { status, what: what(), summary: oauth_error(&bytes) });
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes).map_err(|_| OktaApiError::BadAnswer {
            what: what(),
            message: "the answer is not a token response (no access_token)".into(),
        })?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") {
            return Err(OktaApiError::BadAnswer {
                what: what(),
                message: format!(
                    "token_type is {:?}, expected Bearer (a DPoP-bound app needs \"Require DPoP\" turned off)",
                    answer.token_type
                ),
            });
        }
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600).max(1));
        Ok((Secret::new(answer.access_token), lifetime))
    }
}

/// `error: error_description` of an OAuth error answer, with the fix for the usual ones.
fn oauth_error(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return "an answer that is not an OAuth error object".into();
    };
    let code = v["error"].as_str().unwrap_or("unknown_error");
    let description = v["error_description"].as_str().unwrap_or_default();
    let hint = match code {
        "invalid_client" => {
            " (check okta.oauth.client_id and that the app's public key, or key_id, matches okta.oauth.private_key)"
        }
        "invalid_scope" => {
            " (grant these scopes to the app under Okta API Scopes, or remove them from okta.oauth.scopes)"
        }
        "unauthorized_client" => " (the app must be an API service app with the client credentials grant)",
        _ => "",
    };
    format!("{code}: {description}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oauth_error_names_the_code_the_description_and_the_fix() {
        let s = oauth_error(
            br#"{"error":"invalid_scope","error_description":"The following scopes are not allowed: okta.logs.read"}"#,
        );
        assert!(s.starts_with("invalid_scope: The following scopes"), "{s}");
        assert!(s.contains("Okta API Scopes"), "{s}");
        assert_eq!(oauth_error(b"<html>"), "an answer that is not an OAuth error object");
    }
}
