//! From an Okta event to Graph calls: which flow an event type runs, which user it is
//! about, and the three flows (add, remove, offboard).
//!
//! The safety rule shapes the removal flows: an account is deleted or disabled only after a
//! fresh read of that very object id says `userType` is exactly `Guest`. The mapping and the
//! mail lookup only *propose* an account; the read decides. Offboarding (deactivate, delete)
//! acts only on accounts this plugin recorded, because a lifecycle event says nothing about
//! the group and a same-mail account may belong to someone else's process.

use crate::event::{Event, Failure, Outcome, Party};
use crate::graph::{is_object_id, GraphUser};
use crate::host::{Host, Level};
use crate::reconcile::LOGIN_KEY_PREFIX;
use crate::run::Run;
use crate::settings::{OnRemove, Settings};

/// Okta event type: a user was added to a group.
pub const MEMBERSHIP_ADD: &str = "group.user_membership.add";
/// Okta event type: a user was removed from a group.
pub const MEMBERSHIP_REMOVE: &str = "group.user_membership.remove";
/// Okta event type: a user was deactivated (memberships from group rules remain).
pub const USER_DEACTIVATE: &str = "user.lifecycle.deactivate";
/// Okta event type: a user's deletion started.
pub const USER_DELETE_INITIATED: &str = "user.lifecycle.delete.initiated";

/// KV key prefix of the mapping Okta user id → Entra object id of the guest this plugin
/// invited or adopted: `user:<okta user id>`.
pub const USER_KEY_PREFIX: &str = "user:";

/// A mapping this plugin made by **inviting** the account carries when it did so:
/// `user:<okta user id>` → `<entra id>;<invited at, Unix ms>:<lag retries used>` (an adopted
/// account's mapping is the bare id). Entra serves calls by id from replicas that may not
/// have a new account yet, so a read, PATCH or DELETE moments after the invitation can answer
/// 404 for an account that exists; for such a mapping a 404 is replication lag: retryable, a
/// few times, not "already gone". Kept in the mapping itself, so it costs no extra KV call.
pub const INVITED_MARK: char = ';';

/// How long after its invitation a 404 on an account may be replication lag.
pub const REPLICATION_LAG_WINDOW_MS: u64 = 10 * 60 * 1000;
/// How many times a removal is retried for a 404 on a fresh account before it counts as gone.
pub const REPLICATION_LAG_TRIES: u32 = 3;
/// When to try again after such a 404 (Entra's replicas usually catch up within seconds).
pub const REPLICATION_LAG_RETRY_MS: u64 = 2_000;

enum Flow {
    Add,
    Remove,
    Offboard,
}

/// Handles one Okta event: invites, adopts, deletes or disables the user's Entra guest.
///
/// Idempotent: a rerun of the same event finds its own earlier work (the account by mail,
/// the mapping, or a 404) and succeeds without repeating a change.
///
/// # Errors
///
/// [`Failure::Retryable`] for throttling, outages, timeouts and store errors;
/// [`Failure::Permanent`] for bad configuration, missing permissions, malformed events and
/// any refusal to touch a non-guest account. Messages never contain secrets or tokens.
pub fn handle(host: &mut impl Host, event: &Event) -> Result<Outcome, Failure> {
    let flow = match event.event_type.as_str() {
        MEMBERSHIP_ADD => Flow::Add,
        MEMBERSHIP_REMOVE => Flow::Remove,
        USER_DEACTIVATE | USER_DELETE_INITIATED => Flow::Offboard,
        other => {
            let summary = format!("ignored {other}");
            host.log(Level::Info, &summary);
            return Ok(Outcome { summary });
        }
    };
    let settings = match Settings::load(host) {
        Ok(settings) => settings,
        Err(failure) => {
            host.log(Level::Error, failure.message());
            return Err(failure);
        }
    };
    let mut run = Run::new(host, settings);
    let result = match flow {
        Flow::Add => add(&mut run, event),
        Flow::Remove => remove(&mut run, event),
        Flow::Offboard => offboard(&mut run, event),
    };
    match result {
        Ok(summary) => {
            let summary = run.scrub(&summary);
            run.log(Level::Info, &summary);
            Ok(Outcome { summary })
        }
        Err(failure) => {
            let failure = failure.map_message(|m| run.scrub(&m));
            run.log(Level::Error, failure.message());
            Err(failure)
        }
    }
}

fn add<H: Host>(run: &mut Run<'_, H>, event: &Event) -> Result<String, Failure> {
    let user = user_target(event)?;
    let addr = address(run, user)?;
    run.log(
        Level::Info,
        &format!("Okta user {} joined {}; looking for an account with mail {addr}", user.id, group_label(event)),
    );
    let found = run.find_by_mail(&addr)?;
    let key = mapping_key(user);
    match found.as_slice() {
        [] => {
            let id = run.invite(&addr, user.display_name.as_deref())?;
            let kind = run.settings.invited_user_type.clone();
            if kind == "Guest" {
                let invited_at = run.now_unix_ms();
                record(run, user, &key, &format!("{id}{INVITED_MARK}{invited_at}:0"))?;
            } else {
                // Removal only ever touches guests, so recording a member would only
                // produce failed removals later.
                run.log(
                    Level::Warn,
                    &format!("invited_user_type is {kind}: {id} not recorded, graph-guest will not remove it"),
                );
            }
            Ok(format!("invited {addr} as {kind} {id} for Okta user {}", user.id))
        }
        [existing] if existing.is_guest() => {
            if !is_object_id(&existing.id) {
                return Err(Failure::Permanent(format!(
                    "Graph listed guest {} with an id graph-guest cannot use; nothing recorded",
                    existing.describe()
                )));
            }
            record(run, user, &key, &existing.id)?;
            let disabled = if existing.account_enabled == Some(false) {
                "; its sign-in is blocked (accountEnabled=false) and was left so"
            } else {
                ""
            };
            Ok(format!(
                "already present: {addr} is guest {}; recorded for Okta user {}, no invitation sent{disabled}",
                existing.describe(),
                user.id
            ))
        }
        [existing] => Ok(format!(
            "already present: {addr} is {} account {}; no invitation sent, not recorded \
             (graph-guest never removes non-guests)",
            existing.user_type_name(),
            existing.describe()
        )),
        several => Ok(format!(
            "already present: {} accounts have mail {addr} ({}); no invitation sent, none recorded",
            several.len(),
            describe_all(several)
        )),
    }
}

fn remove<H: Host>(run: &mut Run<'_, H>, event: &Event) -> Result<String, Failure> {
    let user = user_target(event)?;
    let key = mapping_key(user);
    run.log(Level::Info, &format!("Okta user {} left {}", user.id, group_label(event)));
    if let Some(mapping) = run.kv_get(&key)? {
        let (id, invited) = parse_mapping(&mapping);
        return remove_account(run, user, &key, id, invited);
    }
    let addr = address(run, user)?;
    let found = run.find_by_mail(&addr)?;
    match found.as_slice() {
        [] => Ok(format!("no guest for {addr}; nothing to do")),
        [candidate] => remove_account(run, user, &key, &candidate.id, None),
        several => Err(Failure::Permanent(format!(
            "{} accounts have mail {addr} ({}); graph-guest will not guess which to remove; \
             nothing was changed",
            several.len(),
            describe_all(several)
        ))),
    }
}

fn offboard<H: Host>(run: &mut Run<'_, H>, event: &Event) -> Result<String, Failure> {
    let user = user_target(event)?;
    let key = mapping_key(user);
    match run.kv_get(&key)? {
        Some(mapping) => {
            let (id, invited) = parse_mapping(&mapping);
            remove_account(run, user, &key, id, invited)
        }
        None => Ok(format!("no guest recorded for Okta user {}{}; nothing changed", user.id, login_suffix(user))),
    }
}

/// Deletes or disables `id` after checking it is a guest; drops the mapping once it is gone.
fn remove_account<H: Host>(
    run: &mut Run<'_, H>,
    user: &Party,
    key: &str,
    id: &str,
    invited: Option<Invited>,
) -> Result<String, Failure> {
    let verb = match run.settings.on_remove {
        OnRemove::Delete => "delete",
        OnRemove::Disable => "disable",
    };
    if !is_object_id(id) {
        return Err(Failure::Permanent(format!(
            "refusing to {verb} {id:?} for Okta user {}: not an Entra object id (from {key}); \
             nothing was changed",
            user.id
        )));
    }
    let Some(account) = run.get_user(id)? else {
        replication_lag(run, user, key, id, invited)?;
        forget(run, key)?;
        return Ok(format!("guest {id} for Okta user {} already gone; nothing to do", user.id));
    };
    if !account.id.eq_ignore_ascii_case(id) {
        return Err(Failure::Permanent(format!(
            "refusing to {verb} {id}: Graph answered with account {} instead; nothing was changed",
            account.describe()
        )));
    }
    if !account.is_guest() {
        return Err(Failure::Permanent(format!(
            "refusing to {verb} account {} for Okta user {}: its userType is {}, not Guest, and \
             graph-guest only removes guests; nothing was changed",
            account.describe(),
            user.id,
            account.user_type_name()
        )));
    }
    let existed = match run.settings.on_remove {
        OnRemove::Delete => run.delete_user(&account.id)?,
        OnRemove::Disable => run.disable_user(&account.id)?,
    };
    if !existed {
        replication_lag(run, user, key, &account.id, invited)?;
    }
    forget(run, key)?;
    Ok(if existed {
        let done = match run.settings.on_remove {
            OnRemove::Delete => "deleted",
            OnRemove::Disable => "disabled",
        };
        format!("{done} guest {} for Okta user {}", account.describe(), user.id)
    } else {
        format!("guest {} for Okta user {} already gone; nothing to do", account.describe(), user.id)
    })
}

/// The event's one `User` target; several or none is a malformed event for these types.
fn user_target(event: &Event) -> Result<&Party, Failure> {
    let mut users = event.targets.iter().filter(|t| t.kind == "User");
    match (users.next(), users.next()) {
        (Some(user), None) if !user.id.is_empty() => Ok(user),
        (Some(_), None) => Err(Failure::Permanent(format!(
            "event {} ({}) has a User target without an id",
            event.id, event.event_type
        ))),
        (None, _) => Err(Failure::Permanent(format!("event {} ({}) has no User target", event.id, event.event_type))),
        (Some(_), Some(_)) => Err(Failure::Permanent(format!(
            "event {} ({}) has several User targets; graph-guest will not guess which one is meant",
            event.id, event.event_type
        ))),
    }
}

/// `group O365Guest (00g…)` for log lines; the host already routed by group.
fn group_label(event: &Event) -> String {
    match event.targets.iter().find(|t| t.kind == "UserGroup") {
        Some(group) => match group.display_name.as_deref() {
            Some(name) if !name.is_empty() => format!("group {name} ({})", group.id),
            _ => format!("group {}", group.id),
        },
        None => "a group".to_string(),
    }
}

/// When this plugin invited a mapped account, and how many lag retries it used since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Invited {
    at_ms: u64,
    lag_retries: u32,
}

/// A mapping's Entra id, and its [`INVITED_MARK`] part when it has one (a part that does not
/// parse counts as none: the 404 is then taken as "gone", as before the mark existed).
pub(crate) fn parse_mapping(value: &str) -> (&str, Option<Invited>) {
    match value.split_once(INVITED_MARK) {
        None => (value, None),
        Some((id, mark)) => {
            let invited = mark
                .split_once(':')
                .and_then(|(at, n)| Some(Invited { at_ms: at.parse().ok()?, lag_retries: n.parse().ok()? }));
            (id, invited)
        }
    }
}

/// After Graph answered 404 for account `id`: if this plugin invited it moments ago and has
/// not retried for that too often, the 404 is replication lag and the run fails retryably
/// (after [`REPLICATION_LAG_RETRY_MS`]), counting the retry in the mapping; otherwise `Ok`:
/// the account is gone.
fn replication_lag<H: Host>(
    run: &mut Run<'_, H>,
    user: &Party,
    key: &str,
    id: &str,
    invited: Option<Invited>,
) -> Result<(), Failure> {
    let Some(invited) = invited else {
        return Ok(());
    };
    let age = run.now_unix_ms().saturating_sub(invited.at_ms);
    let used = invited.lag_retries;
    if age >= REPLICATION_LAG_WINDOW_MS || used >= REPLICATION_LAG_TRIES {
        return Ok(());
    }
    run.kv_set(key, &format!("{id}{INVITED_MARK}{}:{}", invited.at_ms, used + 1))?;
    Err(Failure::Retryable {
        message: format!(
            "Graph answered 404 for guest {id}, invited {} s ago for Okta user {}: Entra has not \
             replicated the new account yet (try {} of {REPLICATION_LAG_TRIES}); trying again",
            age / 1000,
            user.id,
            used + 1
        ),
        retry_after_ms: Some(REPLICATION_LAG_RETRY_MS),
    })
}

/// Records `mapping` (the guest's id, with its invitation mark when this plugin invited it)
/// as this user's guest, with the user's Okta login beside it (for reconcile's report); the
/// login first, so a mapping never exists without it once written by 0.2.0.
fn record<H: Host>(run: &mut Run<'_, H>, user: &Party, key: &str, mapping: &str) -> Result<(), Failure> {
    if let Some(login) = user.alternate_id.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        run.kv_set(&format!("{LOGIN_KEY_PREFIX}{}", user.id), login)?;
    }
    run.kv_set(key, mapping)
}

/// Drops the mapping `key` and the login recorded with it.
fn forget<H: Host>(run: &mut Run<'_, H>, key: &str) -> Result<(), Failure> {
    run.kv_delete(key)?;
    match key.strip_prefix(USER_KEY_PREFIX) {
        Some(okta_id) => run.kv_delete(&format!("{LOGIN_KEY_PREFIX}{okta_id}")),
        None => Ok(()),
    }
}

fn mapping_key(user: &Party) -> String {
    format!("{USER_KEY_PREFIX}{}", user.id)
}

fn login_suffix(user: &Party) -> String {
    match user.alternate_id.as_deref() {
        Some(login) if !login.is_empty() => format!(" ({login})"),
        _ => String::new(),
    }
}

fn describe_all(users: &[GraphUser]) -> String {
    users.iter().map(|u| format!("{} {}", u.user_type_name(), u.describe())).collect::<Vec<_>>().join("; ")
}

/// The user's mail address: the Okta login, or `profile.email` when `okta_url` is set.
fn address<H: Host>(run: &mut Run<'_, H>, user: &Party) -> Result<String, Failure> {
    let (addr, source) = match run.settings.okta_url.clone() {
        Some(okta_url) => (run.okta_email(&okta_url, &user.id)?, "profile.email"),
        None => (user.alternate_id.clone().unwrap_or_default().trim().to_string(), "login"),
    };
    if addr.is_empty() {
        return Err(Failure::Permanent(format!(
            "Okta user {} has no login in the event; set okta_url under \
             [plugins.graph-guest.config] to read profile.email instead",
            user.id
        )));
    }
    let plausible = addr.len() <= 320
        && addr.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible {
        let fix = if source == "login" {
            "; set okta_url under [plugins.graph-guest.config] to use profile.email instead"
        } else {
            ""
        };
        return Err(Failure::Permanent(format!(
            "the {source} {addr:?} of Okta user {} is not a mail address{fix}",
            user.id
        )));
    }
    Ok(addr)
}
