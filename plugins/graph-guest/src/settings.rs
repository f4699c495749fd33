//! The plugin's secrets and configuration, read and checked once per run.
//!
//! Every problem here is permanent (retrying cannot fix a typo) and its message names the
//! key and where to set it, because the operator reads it in the execution history, not the
//! source. Secret *values* never appear in these messages; config values do, since they are
//! not secret and quoting them is the quickest way to spot the typo.

use crate::event::Failure;
use crate::host::{Algorithm, Config, Keys, Secrets};

/// The key name of the app registration's certificate credential (`[plugins.graph-guest.keys]`).
pub const CERTIFICATE_KEY: &str = "client_certificate";

/// How the plugin proves it is the app registration to Entra ID's token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A client secret (secret `client_secret`), sent in the token request.
    Secret(String),
    /// A certificate credential (key `client_certificate`): a client assertion the host signs
    /// with the key, which never enters the plugin.
    Certificate {
        /// `x5t#S256` of the certificate uploaded to the app registration.
        thumbprint: String,
        /// PS256, the algorithm Microsoft documents for client assertions.
        algorithm: Algorithm,
    },
}

/// What to do with a guest when its user leaves the group or is offboarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRemove {
    /// `DELETE /v1.0/users/{id}` (soft delete, restorable for 30 days).
    Delete,
    /// `PATCH /v1.0/users/{id}` with `accountEnabled: false`.
    Disable,
}

/// The checked configuration and credentials for one run.
///
/// URLs are absolute `http(s)` URLs without a trailing slash.
#[derive(Clone)]
pub struct Settings {
    /// Entra tenant GUID or domain name (secret `tenant_id`); letters, digits, `.` and `-` only.
    pub tenant_id: String,
    /// App registration client id (secret `client_id`).
    pub client_id: String,
    /// The app registration's credential: key `client_certificate` when granted, else
    /// secret `client_secret`.
    pub credential: Credential,
    /// Graph base URL (config `graph_url`), e.g. `https://graph.microsoft.com`.
    pub graph_url: String,
    /// Entra login base URL (config `login_url`).
    pub login_url: String,
    /// Scope for the client-credentials token (config `graph_scope`).
    pub graph_scope: String,
    /// Where an invited guest lands after redemption (config `invite_redirect_url`).
    pub invite_redirect_url: String,
    /// Whether Graph emails the invitation (config `send_invitation_message`).
    pub send_invitation_message: bool,
    /// `Guest` or `Member` (config `invited_user_type`).
    pub invited_user_type: String,
    /// Delete or disable on removal (config `on_remove`).
    pub on_remove: OnRemove,
    /// Okta org URL (config `okta_url`); when set, the address is the user's `profile.email`.
    pub okta_url: Option<String>,
}

// Secrets hold credentials: keep them out of `{:?}` output by construction.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("graph_url", &self.graph_url)
            .field("login_url", &self.login_url)
            .field("graph_scope", &self.graph_scope)
            .field("invite_redirect_url", &self.invite_redirect_url)
            .field("send_invitation_message", &self.send_invitation_message)
            .field("invited_user_type", &self.invited_user_type)
            .field("on_remove", &self.on_remove)
            .field("okta_url", &self.okta_url)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Reads and checks every secret and config key the Graph flows need.
    ///
    /// # Errors
    ///
    /// [`Failure::Permanent`] naming the first missing or malformed key and where to set it.
    pub fn load(host: &(impl Secrets + Keys + Config)) -> Result<Self, Failure> {
        let tenant_id = secret(host, "tenant_id")?.trim().to_string();
        // The tenant goes into the token URL's path: refuse anything that could change the path.
        if !tenant_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
            return Err(Failure::Permanent(
                "secret tenant_id is not a tenant GUID or domain name (only letters, digits, '.' \
                 and '-'); check [plugins.graph-guest.secrets] tenant_id"
                    .into(),
            ));
        }
        let client_id = secret(host, "client_id")?.trim().to_string();
        let credential = credential(host)?;

        let send_invitation_message = match required(host, "send_invitation_message")?.as_str() {
            "true" => true,
            "false" => false,
            other => return Err(bad_value("send_invitation_message", other, "true or false")),
        };
        let invited_user_type = match required(host, "invited_user_type")?.as_str() {
            v @ ("Guest" | "Member") => v.to_string(),
            other => return Err(bad_value("invited_user_type", other, "\"Guest\" or \"Member\"")),
        };
        let on_remove = match required(host, "on_remove")?.as_str() {
            "delete" => OnRemove::Delete,
            "disable" => OnRemove::Disable,
            other => return Err(bad_value("on_remove", other, "\"delete\" or \"disable\"")),
        };
        let graph_scope = required(host, "graph_scope")?;
        if graph_scope.trim().is_empty() {
            return Err(bad_value(
                "graph_scope",
                &graph_scope,
                "a scope such as \"https://graph.microsoft.com/.default\"",
            ));
        }
        let okta_url = match Config::get(host, "okta_url") {
            Some(v) if !v.trim().is_empty() => Some(base_url("okta_url", &v)?),
            _ => None,
        };
        Ok(Settings {
            tenant_id,
            client_id,
            credential,
            graph_url: base_url("graph_url", &required(host, "graph_url")?)?,
            login_url: base_url("login_url", &required(host, "login_url")?)?,
            graph_scope,
            invite_redirect_url: redirect_url(&required(host, "invite_redirect_url")?)?,
            send_invitation_message,
            invited_user_type,
            on_remove,
            okta_url,
        })
    }

    /// Every secret value, for scrubbing them out of anything the plugin writes.
    pub(crate) fn secret_values(&self) -> Vec<&str> {
        let mut values = vec![self.tenant_id.as_str(), self.client_id.as_str()];
        if let Credential::Secret(secret) = &self.credential {
            values.push(secret);
        }
        values
    }
}

/// The certificate when the operator granted key `client_certificate` (checked to be one
/// Entra ID can use), else the client secret; neither is a permanent failure naming both.
/// The key is looked at first, so a certificate-only configuration never asks for a
/// secret it does not have (the host would log that as a refused request).
fn credential(host: &(impl Secrets + Keys)) -> Result<Credential, Failure> {
    if let Some(info) = host.key_info(CERTIFICATE_KEY) {
        if !info.algorithms.contains(&Algorithm::Ps256) {
            return Err(Failure::Permanent(format!(
                "key {CERTIFICATE_KEY} is not an RSA key, and Entra ID accepts only RSA certificates \
                 for client assertions (PS256/RS256); create an RSA key and certificate (README, \
                 \"Certificate credentials for Graph\"), upload the certificate to the app \
                 registration and grant it under [plugins.graph-guest.keys]"
            )));
        }
        let Some(thumbprint) = info.certificate_thumbprint else {
            return Err(Failure::Permanent(format!(
                "key {CERTIFICATE_KEY} has no certificate: Entra ID finds the key by its \
                 certificate's thumbprint, so put the certificate uploaded to the app registration \
                 after the private key in the PEM file granted under [plugins.graph-guest.keys]"
            )));
        };
        return Ok(Credential::Certificate { thumbprint, algorithm: Algorithm::Ps256 });
    }
    match host.get("client_secret") {
        Some(v) if !v.trim().is_empty() => Ok(Credential::Secret(v)),
        Some(_) => Err(Failure::Permanent(
            "secret client_secret is empty; give it a value under [plugins.graph-guest.secrets], \
             or sign in with a certificate instead: [plugins.graph-guest.keys] \
             client_certificate = { file = \"/run/secrets/graph-app.pem\" }"
                .into(),
        )),
        None => Err(Failure::Permanent(
            "no credential for the app registration: grant a certificate under \
             [plugins.graph-guest.keys] (client_certificate = { file = \"/run/secrets/graph-app.pem\" }, \
             the key and its certificate in one PEM; recommended) or a client secret under \
             [plugins.graph-guest.secrets] (client_secret = { env = \"...\" })"
                .into(),
        )),
    }
}

/// A granted, non-empty secret.
pub(crate) fn secret(host: &impl Secrets, name: &str) -> Result<String, Failure> {
    match host.get(name) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(Failure::Permanent(format!(
            "secret {name} is empty; give it a value under [plugins.graph-guest.secrets] \
             (e.g. {name} = {{ env = \"...\" }})"
        ))),
        None => Err(Failure::Permanent(format!(
            "secret {name} is not set; set it under [plugins.graph-guest.secrets] \
             (e.g. {name} = {{ env = \"...\" }})"
        ))),
    }
}

fn required(host: &impl Config, key: &str) -> Result<String, Failure> {
    host.get(key).ok_or_else(|| {
        Failure::Permanent(format!(
            "config {key} is not set; set it under [plugins.graph-guest.config] \
             (the manifest graph-guest.toml gives a default)"
        ))
    })
}

fn bad_value(key: &str, got: &str, allowed: &str) -> Failure {
    Failure::Permanent(format!(
        "config {key} = {got:?} is not allowed; use {allowed} under [plugins.graph-guest.config]"
    ))
}

/// An absolute `http(s)` URL with its trailing slashes removed, so paths can be appended.
fn base_url(key: &str, value: &str) -> Result<String, Failure> {
    let trimmed = value.trim().trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
    let well_formed = match rest {
        Some(rest) => {
            !rest.is_empty()
                && !rest.starts_with('/')
                && !rest.contains(['?', '#'])
                && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !well_formed {
        return Err(bad_value(key, value, "an absolute http(s) URL such as https://example.com"));
    }
    // A common slip: pasting the versioned Graph root would produce /v1.0/v1.0/… requests.
    if key == "graph_url" && (trimmed.ends_with("/v1.0") || trimmed.ends_with("/beta")) {
        return Err(bad_value(key, value, "the Graph origin without a version path, e.g. https://graph.microsoft.com"));
    }
    Ok(trimmed.to_string())
}

/// The invitation's redirect URL: kept as given (a query string is legitimate there), but it
/// must be absolute, because Graph refuses anything else only after the token round trip.
fn redirect_url(value: &str) -> Result<String, Failure> {
    let trimmed = value.trim();
    let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://")).unwrap_or("");
    if rest.is_empty() || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad_value(
            "invite_redirect_url",
            value,
            "an absolute http(s) URL such as https://myapps.microsoft.com",
        ));
    }
    Ok(trimmed.to_string())
}
