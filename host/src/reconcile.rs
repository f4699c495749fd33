//! Reconcile: does the target system match the Okta groups right now? Events are not state
//! (a hook can be lost, an account deleted by hand), so this compares the two directly,
//! reports the difference first, and repairs it through the event path with its safety.
//!
//! One run (`docs/contract.md`, "Reconcile"):
//!
//! 1. Okta: each of the plugin's granted groups (its effective `groups`) is found by name
//!    (`GET /api/v1/groups?q=NAME`, exact `profile.name`), and its members are paged through
//!    (`GET /api/v1/groups/{id}/users?limit=200`, `Link rel="next"`), with the SSWS client of
//!    [`crate::okta_api`] (rate limits respected). Deprovisioned users do not count as members.
//! 2. The plugin: `reconcile.managed-accounts` (WIT `hookhost:plugin@0.2.0`) in a sandbox like
//!    any attempt: the accounts it created or adopted, and whether the target still has them.
//! 3. The plan: `add` = members without an account in the target (never made, or deleted
//!    there since); `remove` = accounts the plugin manages, still present, whose user is in
//!    none of the groups. Only what the plugin lists can ever be removed: a guest it did not
//!    make and a Member account never appear.
//! 4. Apply (optional, within `max_changes` unless forced): each change becomes an ordinary
//!    event (`source: "reconcile"`, `group.user_membership.add|remove`, a new uuid,
//!    `published` = now) for this plugin only, stored through [`Store::ingest_page`]; the
//!    dispatcher runs them like any other (order per user, retries, history, console).
//!
//! Nothing here runs events or writes the target: it only reads Okta, asks the plugin, and
//! stores events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{ReconcileConfig, ReconcileMode};
use crate::okta::Event;
use crate::okta_api::{OktaApi, OktaApiError};
use crate::registry::ActivePlugin;
use crate::runtime::{KvBackend, Runtime};
use crate::store::{AsyncStore, NewEvent, Source, Status, Store};

/// Members per page asked of Okta (its recommended page size).
pub const MEMBERS_PAGE: u32 = 200;
/// How many 429s in a row one page may meet before the run gives up.
const MAX_THROTTLED: usize = 10;

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub okta_user_id: String,
    /// The Okta login, when known (from Okta for members, from the plugin for accounts).
    pub login: Option<String>,
    /// Why, in words.
    pub reason: String,
}

/// The plan: exactly the JSON object of `hookhost reconcile --json` and the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub plugin: String,
    /// Distinct members of the plugin's groups.
    pub okta_members: usize,
    pub add: Vec<Change>,
    pub remove: Vec<Change>,
    /// Whether the changes were stored as events.
    pub applied: bool,
}

impl Plan {
    /// How many changes the plan holds.
    pub fn changes(&self) -> usize {
        self.add.len() + self.remove.len()
    }
}

/// A finished run: the plan and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plan: Plan,
    /// The uuids of the events stored (empty unless applied).
    pub events: Vec<String>,
    /// Okta API pages read (group lookups and member pages).
    pub okta_pages: usize,
    /// Accounts the plugin reported under its management.
    pub managed_accounts: usize,
    /// RFC 3339 UTC, when the run ended.
    pub at: String,
    /// Why a requested apply did not happen (too many changes without force), if so.
    pub held_back: Option<String>,
}

/// Why a run could not produce a plan (or apply it).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The plugin cannot report what it manages (built against 0.1.0, or no export).
    #[error("{0}")]
    Unsupported(String),
    /// Something the run needs is not configured; the message names the setting.
    #[error("{0}")]
    NotConfigured(String),
    /// Okta refused, failed or answered unexpectedly.
    #[error("reading the Okta groups failed: {0}")]
    Okta(String),
    /// The plugin's `managed-accounts` failed.
    #[error("plugin {plugin} could not list the accounts it manages: {message}")]
    Plugin { plugin: String, message: String },
    /// Applying was asked for a plan larger than `max_changes`, without force.
    #[error(
        "the plan for plugin {plugin} has {changes} changes, more than max_changes ({max}); nothing was applied: \
         review the plan, then apply it with --force (HTTP: \"force\": true), or raise \
         [plugins.{plugin}.reconcile] max_changes"
    )]
    TooManyChanges { plugin: String, changes: usize, max: usize, plan: Box<Plan> },
    /// The events of this plugin's previous apply are not all processed yet: applying again
    /// would plan (and store) the same changes a second time.
    #[error("{0}")]
    Busy(String),
    /// The store failed while storing the events.
    #[error("storing the reconcile events failed: {0}")]
    Store(String),
}

/// What a run is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub apply: bool,
    pub force: bool,
}

/// Everything reconcile needs; one per process.
pub struct Reconciler {
    okta: Option<Arc<OktaApi>>,
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    /// Each plugin's `[plugins.<name>.reconcile]`.
    settings: BTreeMap<String, ReconcileConfig>,
    /// Called after events were stored (wakes the dispatcher).
    on_stored: Arc<dyn Fn() + Send + Sync>,
    /// The last report of each plugin, for the console's Drift panel.
    last: Mutex<HashMap<String, Report>>,
    /// One run per plugin at a time: two concurrent applies would store every change twice.
    running: tokio::sync::Mutex<()>,
}

impl Reconciler {
    /// `okta` is `None` when `okta.org_url`/`okta.api_token` are not set (runs then fail with
    /// [`ReconcileError::NotConfigured`]).
    pub fn new(
        okta: Option<Arc<OktaApi>>,
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        settings: BTreeMap<String, ReconcileConfig>,
        on_stored: Arc<dyn Fn() + Send + Sync>,
    ) -> Reconciler {
        Reconciler {
            okta,
            runtime,
            store,
            settings,
            on_stored,
            last: Mutex::new(HashMap::new()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The plugin's reconcile settings (defaults when it has none).
    pub fn settings(&self, plugin: &str) -> ReconcileConfig {
        self.settings.get(plugin).cloned().unwrap_or_default()
    }

    /// Plugins with a schedule: name, period and mode.
    pub fn schedules(&self) -> Vec<(String, std::time::Duration, ReconcileMode)> {
        self.settings
            .iter()
            .filter_map(|(name, s)| {
                s.every_secs.map(|secs| (name.clone(), std::time::Duration::from_secs(secs), s.mode))
            })
            .collect()
    }

    /// The last report of `plugin` in this process, if any.
    pub fn last_report(&self, plugin: &str) -> Option<Report> {
        self.last.lock().ok()?.get(plugin).cloned()
    }

    /// Plans (and, if asked, applies) reconcile for `plugin`.
    ///
    /// # Errors
    /// See [`ReconcileError`]; every message names the problem and the fix.
    pub async fn run(&self, plugin: &ActivePlugin, options: Options) -> Result<Report, ReconcileError> {
        let _one_at_a_time = self.running.lock().await;
        let name = plugin.spec.name.clone();
        if !plugin.loaded.can_reconcile() {
            // Ask anyway for the runtime's message (it names the version and the fix).
            let kv: Arc<dyn KvBackend> = self.store.clone();
            if let Err(why) = self.runtime.managed_accounts(&plugin.loaded, kv).await {
                return Err(ReconcileError::Unsupported(why));
            }
        }
        let okta = self.okta.as_ref().ok_or_else(|| {
            ReconcileError::NotConfigured(
                "reconcile reads the Okta groups, so it needs okta.org_url (e.g. \"https://example.okta.com\") \
                 and okta.api_token (e.g. { env = \"OKTA_API_TOKEN\" }, a token that may read groups) in the host config"
                    .into(),
            )
        })?;
        let groups = plugin.spec.groups.clone().filter(|g| !g.is_empty()).ok_or_else(|| {
            ReconcileError::NotConfigured(format!(
                "plugin {name} has no groups: reconcile compares the target with the members of the plugin's \
                 groups; set groups = [\"…\"] in its manifest or under [plugins.{name}]"
            ))
        })?;

        let mut pages = 0usize;
        let mut resolved = Vec::new();
        for wanted in &groups {
            resolved.push(resolve_group(okta, wanted, &mut pages).await?);
        }
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        for group in &resolved {
            for (id, login) in group_members(okta, &group.id, &mut pages).await? {
                members.entry(id).or_insert(Member { login, group: group.clone() });
            }
        }

        let kv: Arc<dyn KvBackend> = self.store.clone();
        let (attempt, accounts) =
            self.runtime.managed_accounts(&plugin.loaded, kv).await.map_err(ReconcileError::Unsupported)?;
        let Some(accounts) = accounts else {
            return Err(ReconcileError::Plugin { plugin: name, message: attempt.result.describe() });
        };
        let managed_accounts = accounts.len();
        let managed: BTreeMap<String, crate::runtime::ManagedAccount> =
            accounts.into_iter().map(|a| (a.okta_user_id.clone(), a)).collect();

        let group_names = resolved.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ");
        let mut add = Vec::new();
        for (id, member) in &members {
            let reason = match managed.get(id) {
                None => format!("member of {}, but no account in the target", member.group.name),
                Some(a) if !a.present => {
                    format!("member of {}, but account {} is gone from the target", member.group.name, a.target_id)
                }
                Some(_) => continue,
            };
            add.push(Change { okta_user_id: id.clone(), login: member.login.clone(), reason });
        }
        let mut remove = Vec::new();
        for (id, account) in &managed {
            if account.present && !members.contains_key(id) {
                remove.push(Change {
                    okta_user_id: id.clone(),
                    login: account.login.clone(),
                    reason: format!(
                        "account {} is managed by {name}, but the user is not a member of {group_names}",
                        account.target_id
                    ),
                });
            }
        }
        let mut plan = Plan { plugin: name.clone(), okta_members: members.len(), add, remove, applied: false };

        let mut events = Vec::new();
        let mut held_back = None;
        let max = self.settings(&name).max_changes;
        if options.apply && plan.changes() > 0 {
            if plan.changes() > max && !options.force {
                let err = ReconcileError::TooManyChanges {
                    plugin: name.clone(),
                    changes: plan.changes(),
                    max,
                    plan: Box::new(plan.clone()),
                };
                held_back = Some(err.to_string());
                self.remember(&name, &plan, &events, pages, managed_accounts, held_back.clone());
                return Err(err);
            }
            if let Some(busy) = self.previous_apply_unfinished(&name).await {
                return Err(ReconcileError::Busy(busy));
            }
            let fallback =
                resolved.first().cloned().unwrap_or_else(|| Group { id: String::new(), name: group_names.clone() });
            let mut new_events = Vec::new();
            for change in &plan.add {
                let group =
                    members.get(&change.okta_user_id).map(|m| m.group.clone()).unwrap_or_else(|| fallback.clone());
                new_events.push(membership_event(MEMBERSHIP_ADD, change, &group)?);
            }
            for change in &plan.remove {
                new_events.push(membership_event(MEMBERSHIP_REMOVE, change, &fallback)?);
            }
            events = new_events.iter().map(|e| e.uuid.clone()).collect();
            let batch: Vec<NewEvent> =
                new_events.into_iter().map(|event| NewEvent { event, plugins: vec![name.clone()] }).collect();
            let (started, in_batch) = (std::time::SystemTime::now(), batch.len());
            let report = self
                .store
                .run(move |s| s.ingest_page(Source::Reconcile, &batch, None))
                .await
                .map_err(|e| ReconcileError::Store(e.to_string()))?;
            if let Some(report) = report {
                let origin = crate::telemetry::IngestOrigin {
                    source: Source::Reconcile.as_str(),
                    okta_delivery_id: None,
                    events: in_batch,
                };
                crate::telemetry::record_ingest(origin, &report.new_events, started);
            }
            (self.on_stored)();
            plan.applied = true;
            tracing::info!(plugin = %name, add = plan.add.len(), remove = plan.remove.len(), "reconcile applied: events stored");
        }
        Ok(self.remember(&name, &plan, &events, pages, managed_accounts, held_back))
    }

    /// Why the previous apply of `name` (in this process) is not finished, if it is not:
    /// some of its events still have a delivery pending, running or retrying.
    async fn previous_apply_unfinished(&self, name: &str) -> Option<String> {
        let events = self.last_report(name).map(|r| r.events).unwrap_or_default();
        if events.is_empty() {
            return None;
        }
        let total = events.len();
        let busy = self.store.run(move |store| {
            Ok(events
                .iter()
                .filter(|uuid| match store.event(uuid) {
                    Ok(Some(view)) => view
                        .deliveries
                        .iter()
                        .any(|d| matches!(d.status, Status::Pending | Status::Running | Status::Retrying)),
                    // Unreadable: do not guess that it finished.
                    Ok(None) | Err(_) => true,
                })
                .count())
        });
        let busy = busy.await.unwrap_or(total);
        (busy > 0).then(|| {
            format!(
                "{busy} of the {total} events of the previous reconcile apply for plugin {name} are still being \
                 processed; nothing was applied now, so the same changes are not stored twice: wait for them \
                 (GET /api/events?source=reconcile) and run again"
            )
        })
    }

    fn remember(
        &self,
        name: &str,
        plan: &Plan,
        events: &[String],
        okta_pages: usize,
        managed_accounts: usize,
        held_back: Option<String>,
    ) -> Report {
        let report = Report {
            plan: plan.clone(),
            events: events.to_vec(),
            okta_pages,
            managed_accounts,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            held_back,
        };
        if let Ok(mut last) = self.last.lock() {
            last.insert(name.to_owned(), report.clone());
        }
        report
    }
}

/// An Okta group: id and `profile.name`.
#[derive(Debug, Clone)]
struct Group {
    id: String,
    name: String,
}

struct Member {
    login: Option<String>,
    /// The first of the plugin's groups the user was found in.
    group: Group,
}

const MEMBERSHIP_ADD: &str = "group.user_membership.add";
const MEMBERSHIP_REMOVE: &str = "group.user_membership.remove";

/// A page, retried while Okta answers 429 (the client waits for the reset itself).
async fn page(
    okta: &OktaApi,
    url: &str,
    what: &str,
    pages: &mut usize,
) -> Result<(Vec<Value>, Option<String>), ReconcileError> {
    let mut throttled = 0;
    loop {
        match okta.list_page(url, what).await {
            Ok(p) => {
                *pages += 1;
                return Ok(p);
            }
            Err(OktaApiError::RateLimited) if throttled < MAX_THROTTLED => throttled += 1,
            Err(e) => return Err(ReconcileError::Okta(e.to_string())),
        }
    }
}

/// Whether `s` has the shape of an Okta group id (`00g` and 17 more letters or digits).
fn is_group_id(s: &str) -> bool {
    s.len() == 20 && s.starts_with("00g") && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The group named exactly `wanted` (`q` matches by prefix, so the name is checked here).
async fn resolve_group(okta: &OktaApi, wanted: &str, pages: &mut usize) -> Result<Group, ReconcileError> {
    if is_group_id(wanted) {
        return Ok(Group { id: wanted.to_owned(), name: wanted.to_owned() });
    }
    let url = format!("{}/api/v1/groups?q={}", okta.origin(), encode_path(wanted));
    let (groups, _) = page(okta, &url, "GET /api/v1/groups", pages).await?;
    let exact: Vec<&Value> = groups.iter().filter(|g| g["profile"]["name"].as_str() == Some(wanted)).collect();
    match exact.as_slice() {
        [g] => match g["id"].as_str() {
            Some(id) if !id.is_empty() => Ok(Group { id: id.to_owned(), name: wanted.to_owned() }),
            _ => Err(ReconcileError::Okta(format!("Okta listed group {wanted:?} without an id"))),
        },
        [] => {
            let near: Vec<&str> = groups.iter().filter_map(|g| g["profile"]["name"].as_str()).take(5).collect();
            let near =
                if near.is_empty() { String::new() } else { format!(" (names starting so: {})", near.join(", ")) };
            Err(ReconcileError::NotConfigured(format!(
                "no Okta group is named exactly {wanted:?}{near}; fix the plugin's groups (its manifest or [plugins.<name>] groups) \
                 to the group's exact name or its id (00g…)"
            )))
        }
        several => Err(ReconcileError::NotConfigured(format!(
            "{} Okta groups are named {wanted:?}; name the group by its id (00g…) in the plugin's groups instead",
            several.len()
        ))),
    }
}

/// Every member of group `id`: (user id, login). Deprovisioned users are left out: they are
/// offboarded, not members to provision.
async fn group_members(
    okta: &OktaApi,
    id: &str,
    pages: &mut usize,
) -> Result<Vec<(String, Option<String>)>, ReconcileError> {
    let mut url = format!("{}/api/v1/groups/{}/users?limit={MEMBERS_PAGE}", okta.origin(), encode_path(id));
    let what = format!("GET /api/v1/groups/{id}/users");
    let mut out = Vec::new();
    loop {
        let (users, next) = page(okta, &url, &what, pages).await?;
        for u in users {
            if u["status"].as_str() == Some("DEPROVISIONED") {
                continue;
            }
            if let Some(uid) = u["id"].as_str().filter(|s| !s.is_empty()) {
                out.push((uid.to_owned(), u["profile"]["login"].as_str().map(str::to_owned)));
            }
        }
        match next {
            Some(n) => url = n,
            None => return Ok(out),
        }
    }
}

fn encode_path(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A random (version 4) UUID, as Okta's LogEvent uuids are.
pub(crate) fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The LogEvent a planned change becomes: what Okta would have sent for it.
fn membership_event(event_type: &str, change: &Change, group: &Group) -> Result<Event, ReconcileError> {
    let (verb, message) = if event_type == MEMBERSHIP_ADD {
        ("add", "Add user to group membership")
    } else {
        ("remove", "Remove user from group membership")
    };
    let value = json!({
        "uuid": uuid_v4(),
        "published": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "displayMessage": format!("{message} (hookhost reconcile)"),
        "actor": {
            "id": "hookhost-reconcile",
            "type": "SystemPrincipal",
            "alternateId": "hookhost reconcile",
            "displayName": "hookhost reconcile",
        },
        "outcome": { "result": "SUCCESS" },
        "debugContext": { "debugData": { "hookhostReconcile": verb, "reason": change.reason } },
        "target": [
            {
                "id": change.okta_user_id,
                "type": "User",
                "alternateId": change.login,
                "displayName": change.login,
            },
            {
                "id": group.id,
                "type": "UserGroup",
                "alternateId": "unknown",
                "displayName": group.name,
            },
        ],
    });
    Event::from_value(&value).map_err(|e| ReconcileError::Store(format!("building a reconcile event: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_differ() {
        let (a, b) = (uuid_v4(), uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn group_ids_are_told_from_names() {
        assert!(is_group_id("00g1abcdefghijklmnop"));
        assert!(!is_group_id("O365Guest"));
    }

    #[test]
    fn a_reconcile_event_is_an_ordinary_membership_event() {
        let change = Change { okta_user_id: "00u1".into(), login: Some("a@b.c".into()), reason: "why".into() };
        let group = Group { id: "00g1".into(), name: "O365Guest".into() };
        let e = membership_event(MEMBERSHIP_REMOVE, &change, &group).unwrap();
        assert_eq!(e.event_type, MEMBERSHIP_REMOVE);
        assert_eq!(e.targets[0].id, "00u1");
        assert_eq!(e.targets[0].alternate_id.as_deref(), Some("a@b.c"));
        assert_eq!(e.targets[1].display_name.as_deref(), Some("O365Guest"));
    }
}
