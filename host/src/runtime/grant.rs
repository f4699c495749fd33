//! What the operator grants one plugin: origins it may call, secrets it may read, keys it
//! may sign with, its effective configuration. Built by the registry from the manifest and the operator's
//! `[plugins.<name>]` overrides; read-only for the runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::private_key::SigningKey;
use crate::secret::Secret;

/// Everything a plugin may reach besides its own KV namespace.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Origins the `http` import may call. Empty means no network at all.
    pub allowed_origins: Vec<Origin>,
    /// Secrets by name; only these names are readable.
    pub secrets: BTreeMap<String, Secret>,
    /// Private keys by name, read once at load; the `keys` import signs with them and never
    /// hands them out.
    pub keys: BTreeMap<String, Arc<SigningKey>>,
    /// The effective config (manifest defaults overlaid by operator values), as strings.
    pub config: BTreeMap<String, String>,
    /// `[[plugins.<name>.pace]]`: outbound rate limits per origin.
    pub pace: Vec<super::pace::PaceRule>,
}

/// An origin: scheme, host and port, compared exactly (default ports implied).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses an `allowed_hosts` entry such as `https://graph.microsoft.com` or
    /// `http://127.0.0.1:8081`.
    ///
    /// # Errors
    /// Not an absolute http(s) URL, or it has a path, query, fragment or credentials.
    pub fn parse_grant(entry: &str) -> Result<Origin, String> {
        let url = url::Url::parse(entry)
            .map_err(|e| format!("{entry:?} is not an origin like \"https://graph.microsoft.com\": {e}"))?;
        if !(url.path().is_empty() || url.path() == "/")
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(format!(
                "{entry:?} must be an origin only (scheme://host[:port]), without path, query or credentials"
            ));
        }
        Self::of_url(&url).ok_or_else(|| format!("{entry:?} must use http or https and name a host"))
    }

    /// The origin of a request URL; `None` for schemes other than http(s) or a missing host.
    pub fn of_url(url: &url::Url) -> Option<Origin> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        Some(Origin {
            scheme: scheme.to_string(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = matches!((self.scheme.as_str(), self.port), ("http", 80) | ("https", 443));
        if default {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_implied_and_paths_refused() {
        let a = Origin::parse_grant("https://Graph.Microsoft.com").unwrap();
        let b = Origin::of_url(&url::Url::parse("https://graph.microsoft.com:443/v1.0/users").unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://graph.microsoft.com");
        assert!(Origin::parse_grant("https://graph.microsoft.com/v1.0").is_err());
        assert!(Origin::parse_grant("ftp://x").is_err());
        assert_ne!(a, Origin::parse_grant("http://graph.microsoft.com").unwrap());
    }
}
