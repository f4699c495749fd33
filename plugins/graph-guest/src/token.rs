//! The Graph app token: OAuth 2.0 client credentials against Entra's v2.0 token endpoint,
//! cached in KV so that a burst of events costs one token request, not one each.
//!
//! The app proves itself with its client secret, or, when the operator granted the key
//! `client_certificate`, with a client assertion (Microsoft's "certificate credentials"): a
//! JWT with the certificate's `x5t#S256` in its header, `aud` = the token endpoint, `iss` =
//! `sub` = the client id, a fresh `jti` and a five-minute life, which this plugin writes
//! and the host signs (PS256) with the key the plugin never sees.
//!
//! The cache entry remembers which login URL, tenant, client and scope it was issued for
//! (as a hash, so no credential is copied into the store): after the operator changes any
//! of them, the old token is simply not used.

use serde::{Deserialize, Serialize};

use crate::encoding::{base64url, form_encode, percent_encode, retry_after_ms};
use crate::event::Failure;
use crate::host::{Host, Level, Method, Request, SignError};
use crate::run::{Run, REQUEST_TIMEOUT_MS};
use crate::settings::{Credential, CERTIFICATE_KEY};

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a client assertion is valid: Microsoft asks for 5 to 10 minutes at most.
const ASSERTION_LIFETIME_S: u64 = 5 * 60;

/// KV key of the cached token: JSON `{access_token, expires_at_unix_ms, issued_for}`.
pub const TOKEN_KEY: &str = "token";

/// Stop using a token this long before Entra says it expires, so that a request started
/// just before expiry does not arrive with a dead token (Entra tokens last about an hour).
const EXPIRY_MARGIN_MS: u64 = 5 * 60 * 1000;

#[derive(Serialize, Deserialize)]
struct CachedToken {
    access_token: String,
    expires_at_unix_ms: u64,
    #[serde(default)]
    issued_for: String,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

impl<H: Host> Run<'_, H> {
    /// The app token: the one this run already has, else a live cached one, else a new one.
    pub(crate) fn access_token(&mut self) -> Result<String, Failure> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Some(raw) = self.kv_get(TOKEN_KEY)? {
            match serde_json::from_str::<CachedToken>(&raw) {
                Ok(cached)
                    if cached.issued_for == self.credentials_fingerprint()
                        && !cached.access_token.is_empty()
                        && self.now_unix_ms() < cached.expires_at_unix_ms =>
                {
                    self.add_secret(cached.access_token.clone());
                    self.log(Level::Debug, "using the cached app token");
                    self.token = Some(cached.access_token.clone());
                    return Ok(cached.access_token);
                }
                Ok(_) => self.log(Level::Debug, "cached app token expired or issued for other credentials"),
                Err(_) => self.log(Level::Warn, "cached app token unreadable; replacing it"),
            }
        }
        self.request_token()
    }

    /// Drops the token Graph just refused (here and in the cache) and gets a new one.
    pub(crate) fn refresh_token(&mut self) -> Result<String, Failure> {
        self.token = None;
        self.token_refreshed = true;
        self.kv_delete(TOKEN_KEY)?;
        self.request_token()
    }

    fn request_token(&mut self) -> Result<String, Failure> {
        let s = &self.settings;
        let url = format!("{}/{}/oauth2/v2.0/token", s.login_url, percent_encode(&s.tenant_id));
        let body = match s.credential.clone() {
            Credential::Secret(secret) => form_encode(&[
                ("client_id", &s.client_id),
                ("client_secret", &secret),
                ("scope", &s.graph_scope),
                ("grant_type", "client_credentials"),
            ]),
            Credential::Certificate { thumbprint, algorithm } => {
                let (client_id, scope) = (s.client_id.clone(), s.graph_scope.clone());
                let assertion = self.client_assertion(&url, &thumbprint, algorithm)?;
                form_encode(&[
                    ("client_id", &client_id),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                    ("scope", &scope),
                    ("grant_type", "client_credentials"),
                ])
            }
        };
        let request = Request {
            method: Method::Post,
            url,
            headers: vec![
                ("content-type".into(), "application/x-www-form-urlencoded".into()),
                ("accept".into(), "application/json".into()),
            ],
            body: Some(body.into_bytes()),
            timeout_ms: Some(REQUEST_TIMEOUT_MS),
        };
        let response = self.send("token request", request)?;
        let status = response.status;
        if status == 429 || (500..=599).contains(&status) {
            return Err(Failure::Retryable {
                message: format!("token endpoint answered HTTP {status}; will retry"),
                retry_after_ms: response.header("retry-after").and_then(retry_after_ms),
            });
        }
        if status != 200 {
            return Err(Failure::Permanent(token_refusal(status, &response.body)));
        }
        let json: serde_json::Value = serde_json::from_slice(&response.body).map_err(|_| {
            Failure::Permanent(
                "token endpoint answered 200 without a JSON body; check login_url under \
                 [plugins.graph-guest.config]"
                    .into(),
            )
        })?;
        let access_token = match json.get("access_token").and_then(|v| v.as_str()) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => {
                return Err(Failure::Permanent(
                    "token endpoint answered 200 without an access_token; check login_url under \
                     [plugins.graph-guest.config]"
                        .into(),
                ))
            }
        };
        self.add_secret(access_token.clone());
        // Entra sends a number; older endpoints and some proxies send it as a string.
        let expires_in_s = match json.get("expires_in") {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
            _ => 0,
        };
        let lifetime_ms = expires_in_s.saturating_mul(1000);
        // Short-lived tokens (an emulator's, say) keep half their life rather than none.
        let usable_ms = lifetime_ms - EXPIRY_MARGIN_MS.min(lifetime_ms / 2);
        let cached = CachedToken {
            access_token: access_token.clone(),
            expires_at_unix_ms: self.now_unix_ms().saturating_add(usable_ms),
            issued_for: self.credentials_fingerprint(),
        };
        let text = serde_json::to_string(&cached)
            .map_err(|e| Failure::Permanent(format!("could not encode the token cache: {e}")))?;
        self.kv_set(TOKEN_KEY, &text)?;
        self.log(Level::Debug, &format!("new app token, valid for {expires_in_s} s"));
        self.token = Some(access_token.clone());
        Ok(access_token)
    }

    /// A client assertion for `token_url`, signed by the host with key `client_certificate`.
    fn client_assertion(
        &mut self,
        token_url: &str,
        thumbprint: &str,
        algorithm: crate::host::Algorithm,
    ) -> Result<String, Failure> {
        let now_s = self.now_unix_ms() / 1000;
        let client_id = &self.settings.client_id;
        let header = serde_json::json!({"alg": algorithm.name(), "typ": "JWT", "x5t#S256": thumbprint});
        let claims = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": self.host().jwt_id(),
            "nbf": now_s,
            "iat": now_s,
            "exp": now_s + ASSERTION_LIFETIME_S,
        });
        let signing_input =
            format!("{}.{}", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()));
        let signature = self.sign(CERTIFICATE_KEY, algorithm, signing_input.as_bytes()).map_err(|e| match e {
            SignError::Failed(m) => Failure::retryable(format!("hookhost could not sign the client assertion: {m}")),
            SignError::Denied(m) | SignError::InvalidRequest(m) => {
                Failure::Permanent(format!("hookhost refused to sign the client assertion: {m}"))
            }
        })?;
        self.log(Level::Debug, &format!("signed a client assertion ({}) for {token_url}", algorithm.name()));
        Ok(format!("{signing_input}.{}", base64url(&signature)))
    }

    /// FNV-1a of what a token is bound to. Not a security measure: only a change detector
    /// that keeps the credentials themselves out of the store.
    fn credentials_fingerprint(&self) -> String {
        let s = &self.settings;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [&s.login_url, &s.tenant_id, &s.client_id, &s.graph_scope] {
            for b in part.bytes().chain(std::iter::once(0)) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{hash:016x}")
    }
}

/// The message for a token request Entra refused: its AADSTS code and first description
/// line, and which setting to check. The caller scrubs secrets from it.
fn token_refusal(status: u16, body: &[u8]) -> String {
    let Ok(error) = serde_json::from_slice::<TokenError>(body) else {
        return format!(
            "token request refused: HTTP {status} without an OAuth error body; check login_url \
             under [plugins.graph-guest.config]"
        );
    };
    // The description's first line holds the code and the reason; Trace/Correlation ids follow.
    let first_line = error.error_description.lines().next().unwrap_or("").trim().chars().take(300).collect::<String>();
    let code = aadsts_code(&first_line).or(error.error_codes.first().copied());
    let detail = match code {
        Some(code) if !first_line.contains("AADSTS") => format!("AADSTS{code}: {first_line}"),
        _ if first_line.is_empty() => "no description".to_string(),
        _ => first_line,
    };
    let hint = match code {
        Some(7_000_215 | 7_000_222 | 7_000_216) => {
            "check [plugins.graph-guest.secrets] client_secret (the secret's value, not its id, \
             and not expired)"
        }
        Some(700_016 | 7_000_112) => {
            "check [plugins.graph-guest.secrets] client_id, and that the app is registered and \
             enabled in tenant_id"
        }
        Some(700_027) => {
            "check that the certificate granted under [plugins.graph-guest.keys] client_certificate \
             is the one uploaded to the app registration (Certificates & secrets → Certificates) \
             and that the key in the PEM is its private key"
        }
        Some(700_024) => {
            "the client assertion was not within its valid time range: check the host's clock \
             (NTP)"
        }
        Some(700_021) => "check [plugins.graph-guest.secrets] client_id: the assertion is issued for it",
        Some(700_023) => {
            "the client assertion's audience is the token endpoint: check login_url under \
             [plugins.graph-guest.config] and [plugins.graph-guest.secrets] tenant_id"
        }
        Some(5_002_738) => "Entra ID accepts only RSA certificates for client assertions",
        Some(90_002 | 900_023 | 90_013) => "check [plugins.graph-guest.secrets] tenant_id",
        Some(70_011 | 1_002_012) => "check graph_scope under [plugins.graph-guest.config]",
        _ => {
            "check tenant_id, client_id and client_secret under [plugins.graph-guest.secrets] \
             (or client_certificate under [plugins.graph-guest.keys]) and graph_scope under \
             [plugins.graph-guest.config]"
        }
    };
    let error_name = if error.error.is_empty() { String::new() } else { format!(" {}", error.error) };
    format!("token request refused (HTTP {status}{error_name}): {detail}; {hint}")
}

/// The number in the first `AADSTS<digits>` of `text`.
fn aadsts_code(text: &str) -> Option<u64> {
    let start = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_the_code_and_the_setting() {
        let body =
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/graph/token.error.400.json"));
        let message = token_refusal(400, body.as_bytes());
        assert!(message.starts_with("token request refused (HTTP 400 invalid_scope): AADSTS70011:"));
        assert!(message.contains("graph_scope"));
        assert!(!message.contains("Trace ID"));

        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215]}"#;
        let message = token_refusal(401, body);
        assert!(message.contains("AADSTS7000215: Invalid client secret provided."));
        assert!(message.contains("[plugins.graph-guest.secrets] client_secret"));

        let body = br#"{"error":"unauthorized_client","error_codes":[700016]}"#;
        assert!(token_refusal(400, body).contains("AADSTS700016"));
        assert!(token_refusal(404, b"<html>").contains("login_url"));
    }
}
