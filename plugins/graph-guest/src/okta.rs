//! The user's `profile.email` from the Okta Users API, for orgs whose logins are not
//! their mail addresses (event payloads carry only the login; see the Users API in docs/contract.md, "graph-guest").

use serde::Deserialize;

use crate::encoding::{percent_encode, retry_after_ms};
use crate::event::Failure;
use crate::host::{Host, Method, Request};
use crate::run::{Run, REQUEST_TIMEOUT_MS};
use crate::settings::secret;

#[derive(Deserialize)]
struct OktaUser {
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    email: Option<String>,
}

impl<H: Host> Run<'_, H> {
    /// `GET {okta_url}/api/v1/users/{user_id}` → `profile.email`.
    pub(crate) fn okta_email(&mut self, okta_url: &str, user_id: &str) -> Result<String, Failure> {
        let token = secret(self.host(), "okta_api_token")?;
        self.add_secret(token.clone());
        let request = Request {
            method: Method::Get,
            url: format!("{okta_url}/api/v1/users/{}", percent_encode(user_id)),
            headers: vec![
                ("authorization".into(), format!("SSWS {token}")),
                ("accept".into(), "application/json".into()),
            ],
            body: None,
            timeout_ms: Some(REQUEST_TIMEOUT_MS),
        };
        let response = self.send("Okta user read", request)?;
        let status = response.status;
        match status {
            200 => {}
            404 => {
                return Err(Failure::Permanent(format!(
                    "Okta has no user {user_id} at {okta_url}; check okta_url under \
                     [plugins.graph-guest.config]"
                )))
            }
            401 | 403 => {
                return Err(Failure::Permanent(format!(
                    "Okta refused reading user {user_id} (HTTP {status}); check \
                     [plugins.graph-guest.secrets] okta_api_token (it needs to read users)"
                )))
            }
            429 | 500..=599 => {
                // Okta's rate limiter says when the window resets (epoch seconds), not how long to wait.
                let from_reset = response
                    .header("x-rate-limit-reset")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|reset_s| reset_s.saturating_mul(1000).saturating_sub(self.now_unix_ms()));
                return Err(Failure::Retryable {
                    message: format!("Okta answered HTTP {status} reading user {user_id}; will retry"),
                    retry_after_ms: response.header("retry-after").and_then(retry_after_ms).or(from_reset),
                });
            }
            _ => {
                return Err(Failure::Permanent(format!(
                    "Okta answered HTTP {status} reading user {user_id}; check okta_url under \
                     [plugins.graph-guest.config]"
                )))
            }
        }
        let email = serde_json::from_slice::<OktaUser>(&response.body)
            .ok()
            .and_then(|u| u.profile)
            .and_then(|p| p.email)
            .map(|e| e.trim().to_string())
            .unwrap_or_default();
        if email.is_empty() {
            return Err(Failure::Permanent(format!(
                "Okta user {user_id} has no profile.email; give the user an email in Okta"
            )));
        }
        Ok(email)
    }
}
