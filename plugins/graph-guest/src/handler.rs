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
                record(run, user, &key, &id)?;
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
    if let Some(id) = run.kv_get(&key)? {
        return remove_account(run, user, &key, &id);
    }
    let addr = address(run, user)?;
    let found = run.find_by_mail(&addr)?;
    match found.as_slice() {
        [] => Ok(format!("no guest for {addr}; nothing to do")),
        [candidate] => remove_account(run, user, &key, &candidate.id),
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
        Some(id) => remove_account(run, user, &key, &id),
        None => Ok(format!("no guest recorded for Okta user {}{}; nothing changed", user.id, login_suffix(user))),
    }
}

/// Deletes or disables `id` after checking it is a guest; drops the mapping once it is gone.
fn remove_account<H: Host>(run: &mut Run<'_, H>, user: &Party, key: &str, id: &str) -> Result<String, Failure> {
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

/// Records `id` as this user's guest, with the user's Okta login beside it (for reconcile's
/// report); the login first, so a mapping never exists without it once written by 0.2.0.
fn record<H: Host>(run: &mut Run<'_, H>, user: &Party, key: &str, id: &str) -> Result<(), Failure> {
    if let Some(login) = user.alternate_id.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        run.kv_set(&format!("{LOGIN_KEY_PREFIX}{}", user.id), login)?;
    }
    run.kv_set(key, id)
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
