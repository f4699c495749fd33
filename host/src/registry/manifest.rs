//! A plugin bundle's manifest, `<name>.toml`, read strictly.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::{config_scalar, toml_problem, LimitsSpec, RESERVED_PLUGIN_NAMES};
use crate::runtime::Origin;

/// What a plugin says about itself: identity, subscriptions, what it needs, its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    /// Semantic version (validated).
    pub version: String,
    pub description: Option<String>,
    /// Okta event types it handles.
    pub event_types: Vec<String>,
    /// Okta groups (display name, exact, or id) it handles; `None` means any group.
    pub groups: Option<Vec<String>>,
    /// Origins it needs to call.
    pub allowed_hosts: Vec<String>,
    /// Secret names it reads.
    pub secrets: Vec<String>,
    /// Names of private keys it signs with (`keys` import); never the same as a secret's.
    pub keys: Vec<String>,
    /// Default config, each value already as the string the plugin sees.
    pub config: BTreeMap<String, String>,
    pub limits: LimitsSpec,
    /// Whether a stale event for a user is skipped after a newer one ran (see docs/contract.md, "Supersede").
    pub supersede: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    description: Option<String>,
    event_types: Vec<String>,
    groups: Option<Vec<String>>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    limits: LimitsSpec,
    #[serde(default = "yes")]
    supersede: bool,
}

fn yes() -> bool {
    true
}

/// A plugin name: lower-case letters, digits, `-` and `_`, starting with a letter.
pub fn valid_plugin_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok_first || !ok_rest || name.len() > 64 {
        return Err(format!(
            "plugin name {name:?} must start with a lower-case letter and use only a-z, 0-9, '-' and '_' (at most 64)"
        ));
    }
    if RESERVED_PLUGIN_NAMES.contains(&name) {
        return Err(format!("plugin name {name:?} is reserved"));
    }
    Ok(())
}

/// Checks `[limits]` values are in range.
///
/// # Errors
/// A value out of range, named with `prefix`.
pub fn validate_limits(l: &LimitsSpec, prefix: &str) -> Result<(), String> {
    if let Some(m) = l.memory_mb {
        if !(1..=1024).contains(&m) {
            return Err(format!("{prefix}.memory_mb must be 1 to 1024, got {m}"));
        }
    }
    if let Some(t) = l.timeout_ms {
        if !(1..=600_000).contains(&t) {
            return Err(format!("{prefix}.timeout_ms must be 1 to 600000, got {t}"));
        }
    }
    if let Some(n) = l.max_http_requests {
        if n > 10_000 {
            return Err(format!("{prefix}.max_http_requests must be at most 10000, got {n}"));
        }
    }
    Ok(())
}

impl Manifest {
    /// Reads a manifest file.
    ///
    /// # Errors
    /// Unreadable, not TOML, an unknown key, or a bad value; the message names the file and key.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text = super::files::read_manifest(path)?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses manifest text.
    ///
    /// # Errors
    /// As [`Manifest::load`], without the file name.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        // No message below quotes a value from the file: a manifest may hold a secret by
        // mistake, and these messages reach logs and `last_error` (see `toml_problem`).
        let raw: RawManifest = toml::from_str(text).map_err(|e| toml_problem(&e, text))?;
        valid_plugin_name(&raw.name).map_err(|_| {
            "name must start with a lower-case letter, use only a-z, 0-9, '-' and '_' (at most 64); dir, watch and cache_dir are reserved".to_string()
        })?;
        semver::Version::parse(&raw.version)
            .map_err(|_| "version is not a semantic version like \"1.2.3\"".to_string())?;
        if raw.event_types.is_empty() {
            return Err("event_types must list at least one Okta event type, e.g. \"group.user_membership.add\"".into());
        }
        for (i, h) in raw.allowed_hosts.iter().enumerate() {
            Origin::parse_grant(h).map_err(|_| {
                format!("allowed_hosts[{i}] is not an origin like \"https://graph.microsoft.com\" (scheme://host[:port], no path)")
            })?;
        }
        if let Some(i) = raw.keys.iter().position(|k| raw.secrets.contains(k)) {
            return Err(format!(
                "keys[{i}] is also listed in secrets; a name is either a secret the plugin reads or a key it \
                 signs with, never both"
            ));
        }
        let mut config = BTreeMap::new();
        for (k, v) in &raw.config {
            config.insert(k.clone(), config_scalar(v).map_err(|e| format!("config.{k}: {e}"))?);
        }
        validate_limits(&raw.limits, "limits")?;
        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            event_types: raw.event_types,
            groups: raw.groups,
            allowed_hosts: raw.allowed_hosts,
            secrets: raw.secrets,
            keys: raw.keys,
            config,
            limits: raw.limits,
            supersede: raw.supersede,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "graph-guest"
version = "0.1.0"
event_types = ["group.user_membership.add"]
groups = ["O365Guest"]
allowed_hosts = ["https://graph.microsoft.com"]
secrets = ["client_secret"]
[config]
send_invitation_message = false
timeout = 30
[limits]
memory_mb = 32
"#;

    #[test]
    fn good_manifest_parses_with_scalar_config_as_text() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.config["send_invitation_message"], "false");
        assert_eq!(m.config["timeout"], "30");
        assert!(m.supersede);
    }

    #[test]
    fn bad_manifests_name_the_key() {
        let e = Manifest::parse(&GOOD.replace("0.1.0", "one")).unwrap_err();
        assert!(e.contains("version"), "{e}");
        let e = Manifest::parse(&format!("bogus = 1\n{GOOD}")).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = Manifest::parse(&GOOD.replace("memory_mb = 32", "memory_mb = 0")).unwrap_err();
        assert!(e.contains("memory_mb"), "{e}");
        let e = Manifest::parse(&GOOD.replace("\"graph-guest\"", "\"watch\"")).unwrap_err();
        assert!(e.contains("reserved"), "{e}");
        let e = Manifest::parse(&GOOD.replace("https://graph.microsoft.com\"", "https://graph.microsoft.com/v1.0\""))
            .unwrap_err();
        assert!(e.contains("allowed_hosts"), "{e}");
    }

    #[test]
    fn keys_are_declared_by_name_and_never_share_a_secret_name() {
        let with_keys = GOOD
            .replace("secrets = [\"client_secret\"]", "secrets = [\"client_secret\"]\nkeys = [\"client_certificate\"]");
        assert_eq!(Manifest::parse(&with_keys).unwrap().keys, ["client_certificate"]);
        assert!(Manifest::parse(GOOD).unwrap().keys.is_empty());
        let both =
            GOOD.replace("secrets = [\"client_secret\"]", "secrets = [\"client_secret\"]\nkeys = [\"client_secret\"]");
        let e = Manifest::parse(&both).unwrap_err();
        assert!(e.contains("keys[0]") && e.contains("secrets"), "{e}");
    }

    /// A manifest's errors name the key or the line and column, never a value from it.
    #[test]
    fn errors_never_quote_the_manifest() {
        const SECRET: &str = "s3cr3t-MNF-4242";
        let cases = [
            GOOD.replace("\"0.1.0\"", &format!("\"{SECRET}\"")),
            GOOD.replace("\"graph-guest\"", &format!("\"{SECRET}\"")),
            GOOD.replace("\"https://graph.microsoft.com\"", &format!("\"https://{SECRET}.example/path\"")),
            GOOD.replace("memory_mb = 32", &format!("memory_mb = \"{SECRET}\"")),
            GOOD.replace("timeout = 30", &format!("timeout = [\"{SECRET}\"]")),
            GOOD.replace("send_invitation_message = false", &format!("send_invitation_message = \"{SECRET}")),
            format!("{GOOD}\ntoken = \"{SECRET}\"\n"),
            format!("{GOOD}\n{SECRET}\n"),
            GOOD.replace("secrets = [\"client_secret\"]", &format!("secrets = \"{SECRET}\"")),
            GOOD.replace(
                "event_types = [\"group.user_membership.add\"]",
                &format!("event_types = {{ a = \"{SECRET}\" }}"),
            ),
        ];
        for text in &cases {
            let e = Manifest::parse(text).unwrap_err();
            assert!(!e.contains(SECRET) && !e.contains("s3cr3t"), "gave {e}");
        }
        let e = Manifest::parse(&GOOD.replace("memory_mb = 32", &format!("memory_mb = \"{SECRET}\""))).unwrap_err();
        assert!(e.contains("line 12") && e.contains("invalid type"), "{e}");
    }

    mod properties {
        //! Whatever a bundle's manifest holds, parsing answers a manifest or a message.

        use proptest::prelude::*;

        use super::super::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                ".{0,20}".prop_map(|s| format!("{s:?}")),
                Just("\"1.0.0\"".to_string()),
                Just("\"https://graph.microsoft.com\"".to_string()),
                prop::collection::vec(".{0,16}", 0..4).prop_map(|v| format!("{v:?}")),
                Just("[\"https://a.example\", \"http://127.0.0.1:1\"]".to_string()),
                Just("{}".to_string()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
                if let Err(e) = Manifest::parse(&text) {
                    prop_assert!(!e.is_empty());
                }
            }

            #[test]
            fn any_value_in_any_key_is_a_manifest_or_a_message(
                name in prop_oneof![Just("\"echo\"".to_string()), value()],
                version in prop_oneof![Just("\"1.0.0\"".to_string()), value()],
                event_types in prop_oneof![Just("[\"group.user_membership.add\"]".to_string()), value()],
                allowed_hosts in value(),
                secrets in value(),
                groups in value(),
                config_value in value(),
                memory_mb in value(),
                timeout_ms in value(),
            ) {
                let text = format!(
                    "name = {name}\nversion = {version}\nevent_types = {event_types}\n\
                     allowed_hosts = {allowed_hosts}\nsecrets = {secrets}\ngroups = {groups}\n\
                     [config]\nk = {config_value}\n[limits]\nmemory_mb = {memory_mb}\ntimeout_ms = {timeout_ms}\n"
                );
                match Manifest::parse(&text) {
                    Ok(m) => {
                        prop_assert!(valid_plugin_name(&m.name).is_ok());
                        prop_assert!(semver::Version::parse(&m.version).is_ok());
                        prop_assert!(!m.event_types.is_empty());
                        for h in &m.allowed_hosts {
                            prop_assert!(Origin::parse_grant(h).is_ok());
                        }
                        prop_assert!(m.limits.memory_mb.is_none_or(|v| (1..=1024).contains(&v)));
                    }
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }

            #[test]
            fn any_grant_text_is_an_origin_or_a_message(entry in "(?s).{0,80}") {
                match Origin::parse_grant(&entry) {
                    Ok(o) => prop_assert!(o.scheme == "http" || o.scheme == "https"),
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }
        }
    }
}
