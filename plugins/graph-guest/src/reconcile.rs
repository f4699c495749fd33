//! What graph-guest manages, for `hookhost reconcile` (WIT `reconcile.managed-accounts`).
//!
//! The mapping in KV (`user:<okta id>` → Entra object id, and `login:<okta id>` → the Okta
//! login recorded with it) says which accounts this plugin created or adopted; ONE paged
//! listing of the tenant's guests says which of them Entra still has. Nothing else is
//! listed: guests the plugin never recorded and Member accounts cannot appear, so the host
//! can never plan to remove them. Read-only: no Graph write, no KV write.

use std::collections::HashMap;

use crate::event::Failure;
use crate::handler::{parse_mapping, USER_KEY_PREFIX};
use crate::host::{Host, Level};
use crate::run::Run;
use crate::settings::Settings;

/// KV key prefix of the Okta login recorded with a mapping: `login:<okta user id>`. Kept
/// apart from the mapping, whose value is the object id (and its invitation mark).
/// Mappings made before 0.2.0 have none (reported as login unknown).
pub const LOGIN_KEY_PREFIX: &str = "login:";

/// One account under graph-guest's management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedAccount {
    pub okta_user_id: String,
    pub login: Option<String>,
    /// The Entra object id.
    pub target_id: String,
    /// Whether the tenant still lists it as a guest.
    pub present: bool,
}

/// Every account in the mapping, with whether Entra still has it as a guest.
///
/// # Errors
///
/// As `handle`: retryable for throttling, outages and store errors; permanent for bad
/// configuration and missing permissions (`User.Read.All`).
pub fn managed_accounts(host: &mut impl Host) -> Result<Vec<ManagedAccount>, Failure> {
    let settings = Settings::load(host).inspect_err(|f| host.log(Level::Error, f.message()))?;
    let mut run = Run::new(host, settings);
    let result = collect(&mut run);
    match &result {
        Ok(accounts) => {
            let gone = accounts.iter().filter(|a| !a.present).count();
            run.log(Level::Info, &format!("{} managed guests, {gone} of them no longer in the tenant", accounts.len()));
        }
        Err(failure) => {
            let message = run.scrub(failure.message());
            run.log(Level::Error, &message);
        }
    }
    result.map_err(|f| f.map_message(|m| run.scrub(&m)))
}

fn collect<H: Host>(run: &mut Run<'_, H>) -> Result<Vec<ManagedAccount>, Failure> {
    let mappings = run.kv_scan_all(USER_KEY_PREFIX)?;
    if mappings.is_empty() {
        return Ok(Vec::new());
    }
    let logins: HashMap<String, String> = run
        .kv_scan_all(LOGIN_KEY_PREFIX)?
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(LOGIN_KEY_PREFIX).map(|id| (id.to_string(), v)))
        .collect();
    let guests = run.list_guest_ids()?;
    Ok(mappings
        .into_iter()
        .filter_map(|(key, mapping)| {
            let okta_user_id = key.strip_prefix(USER_KEY_PREFIX)?.to_string();
            let target_id = parse_mapping(&mapping).0.to_string();
            Some(ManagedAccount {
                login: logins.get(&okta_user_id).cloned().filter(|l| !l.is_empty()),
                present: guests.contains(&target_id.to_ascii_lowercase()),
                okta_user_id,
                target_id,
            })
        })
        .collect())
}
