//! Builders for Okta Event Hook deliveries in the real format, for driving hookhost's ingest.
//!
//! The envelope follows Okta's documented sample
//! (fixtures/okta/okta-docs_event-hook-delivery_user.session.start_2023.json; DOMAIN §1.2):
//! `eventType: "com.okta.event_hook"`, `eventTypeVersion: "1.0"`, `cloudEventsVersion: "0.1"`,
//! `source` (the hook's URL), a fresh `eventId`, `eventTime`, `contentType` and `data.events[]`.
//! Each event is a System Log LogEvent shaped like the captured
//! fixtures/okta/demisto-content_logevent_group.user_membership.remove.json (membership) and
//! fixtures/okta/okta-docs_logevent_user.lifecycle.deactivate.json (lifecycle): a `User` target
//! whose `alternateId` is the Okta login and, for membership, a `UserGroup` target whose
//! `alternateId` is the literal `"unknown"` (DOMAIN §1.3). Every event gets a fresh `uuid`.
//! Callers who need a variation (another actor, target order, a missing field) edit the `Value`.

use serde_json::{json, Value};

use crate::ids;

/// The `source` of deliveries built here: an event hook of an example org.
pub const HOOK_SOURCE: &str = "https://hookhost-test.okta.com/api/v1/eventHooks/who7hphp39JoHLni81d7";

/// Which membership event to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// `group.user_membership.add`
    Add,
    /// `group.user_membership.remove`
    Remove,
}

/// A fresh random UUID, for `eventId`s and LogEvent `uuid`s a test wants to know in advance.
pub fn uuid() -> String {
    ids::uuid_v4()
}

/// Now plus `offset_ms` (may be negative), formatted as Okta's `published`/`eventTime`:
/// `2023-03-26T21:05:32.159Z`.
pub fn timestamp(offset_ms: i64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A `group.user_membership.add` or `.remove` LogEvent: user `user_id` (`00u…`, login `login`)
/// added to or removed from group `group_id` (`00g…`) named `group_name`, at `published`.
pub fn group_membership_event(
    kind: Membership,
    user_id: &str,
    login: &str,
    display_name: &str,
    group_id: &str,
    group_name: &str,
    published: &str,
) -> Value {
    let (event_type, legacy, message) = match kind {
        Membership::Add => {
            ("group.user_membership.add", "core.user_group_member.user_add", "Add user to group membership")
        }
        Membership::Remove => {
            ("group.user_membership.remove", "core.user_group_member.user_remove", "Remove user from group membership")
        }
    };
    let mut event =
        log_event(event_type, Some(legacy), message, published, &format!("/api/v1/groups/{group_id}/users/{user_id}"));
    event["target"] = json!([
        user_target(user_id, login, display_name),
        { "alternateId": "unknown", "detailEntry": null, "displayName": group_name, "id": group_id, "type": "UserGroup" },
    ]);
    event
}

/// A user lifecycle LogEvent such as `user.lifecycle.deactivate` or
/// `user.lifecycle.delete.initiated`, with the user as its only target.
pub fn user_lifecycle_event(
    event_type: &str,
    user_id: &str,
    login: &str,
    display_name: &str,
    published: &str,
) -> Value {
    let (legacy, message, action) = match event_type {
        "user.lifecycle.deactivate" => {
            (Some("core.user.config.user_deactivated"), "Deactivate Okta User", "deactivate")
        }
        "user.lifecycle.delete.initiated" => (None, "Delete Okta user initiated", "delete"),
        "user.lifecycle.suspend" => (None, "Suspend Okta user", "suspend"),
        "user.lifecycle.activate" => (None, "Activate Okta user", "activate"),
        _ => (None, event_type, "unknown"),
    };
    let mut event =
        log_event(event_type, legacy, message, published, &format!("/api/v1/users/{user_id}/lifecycle/{action}"));
    event["target"] = json!([user_target(user_id, login, display_name)]);
    event
}

/// The Event Hook POST body carrying `events`, with a fresh `eventId` and `eventTime` now.
pub fn delivery(events: Vec<Value>) -> Value {
    json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": HOOK_SOURCE,
        "eventId": uuid(),
        "data": { "events": events },
        "eventTime": timestamp(0),
        "contentType": "application/json",
    })
}

fn user_target(id: &str, login: &str, display_name: &str) -> Value {
    json!({ "alternateId": login, "detailEntry": null, "displayName": display_name, "id": id, "type": "User" })
}

/// The parts every LogEvent shares; the admin acting is the same example admin throughout.
fn log_event(event_type: &str, legacy: Option<&str>, message: &str, published: &str, request_uri: &str) -> Value {
    let request_id = ids::alphanumeric(27);
    let geo = json!({
        "city": "Toronto", "country": "Canada", "postalCode": "M4M", "state": "Ontario",
        "geolocation": { "lat": 43.6567, "lon": -79.34 },
    });
    json!({
        "actor": {
            "alternateId": "admin@example.com", "detailEntry": null, "displayName": "Example Admin",
            "id": "00u1qw6mqitPHM8AJ0g7", "type": "User",
        },
        "authenticationContext": {
            "authenticationProvider": null, "authenticationStep": 0, "credentialProvider": null,
            "credentialType": null, "externalSessionId": ids::alphanumeric(25), "interface": null, "issuer": null,
        },
        "client": {
            "device": "Computer", "geographicalContext": geo, "id": null, "ipAddress": "142.126.158.61",
            "userAgent": { "browser": "CHROME", "os": "Mac OS X", "rawUserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)" },
            "zone": "null",
        },
        "debugContext": {
            "debugData": {
                "requestId": request_id, "requestUri": request_uri, "threatSuspected": "false",
                "url": format!("{request_uri}?"),
            },
        },
        "displayMessage": message,
        "eventType": event_type,
        "legacyEventType": legacy,
        "outcome": { "reason": null, "result": "SUCCESS" },
        "published": published,
        "request": { "ipChain": [{ "geographicalContext": geo, "ip": "142.126.158.61", "source": null, "version": "V4" }] },
        "securityContext": { "asNumber": null, "asOrg": null, "domain": null, "isProxy": null, "isp": null },
        "severity": "INFO",
        "target": [],
        "transaction": { "detail": {}, "id": request_id, "type": "WEB" },
        "uuid": uuid(),
        "version": "0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    /// Every key of `real` (recursively through objects and the first array element) exists in
    /// `built`, so the builders never drop a field real payloads carry.
    fn assert_same_keys(real: &Value, built: &Value, path: &str) {
        match (real, built) {
            (Value::Object(r), Value::Object(b)) => {
                for (key, value) in r {
                    let child = b.get(key).unwrap_or_else(|| panic!("{path}.{key} missing"));
                    assert_same_keys(value, child, &format!("{path}.{key}"));
                }
            }
            (Value::Array(r), Value::Array(b)) if !r.is_empty() && !b.is_empty() => {
                assert_same_keys(&r[0], &b[0], &format!("{path}[0]"))
            }
            _ => {}
        }
    }

    #[test]
    fn membership_event_matches_the_captured_shape() {
        let real = fixtures::load("okta/demisto-content_logevent_group.user_membership.remove.json");
        let built = group_membership_event(
            Membership::Remove,
            "00uptu0jj9V91p5QM0h7",
            "test@this.com",
            "test this",
            "00g8mo0l5wuTxmoIC0h7",
            "test1",
            "2020-03-03T20:23:17.573Z",
        );
        assert_same_keys(&real, &built, "event");
        for key in ["eventType", "legacyEventType", "displayMessage", "target", "published"] {
            assert_eq!(real[key], built[key], "{key}");
        }
        assert_eq!(real["debugContext"]["debugData"]["requestUri"], built["debugContext"]["debugData"]["requestUri"]);
        assert_ne!(built["uuid"], group_membership_event(Membership::Add, "a", "b", "c", "d", "e", "f")["uuid"]);
    }

    #[test]
    fn lifecycle_event_and_envelope_match_the_documented_shape() {
        let real = fixtures::load("okta/okta-docs_logevent_user.lifecycle.deactivate.json");
        let built = user_lifecycle_event(
            "user.lifecycle.deactivate",
            "00u3m90rxKjGQ0G6L1d6",
            "john.doe@example.com",
            "John Doe",
            "2020-11-16T18:15:12.862Z",
        );
        assert_same_keys(&real, &built, "event");
        assert_eq!(real["target"], built["target"]);
        assert_eq!(real["legacyEventType"], built["legacyEventType"]);

        let envelope = fixtures::load("okta/okta-docs_event-hook-delivery_user.session.start_2023.json");
        let built = delivery(vec![built]);
        let real_keys: Vec<_> = envelope.as_object().unwrap().keys().collect();
        let built_keys: Vec<_> = built.as_object().unwrap().keys().collect();
        assert_eq!(real_keys.len(), built_keys.len());
        assert!(real_keys.iter().all(|k| built_keys.contains(k)));
        for key in ["eventType", "eventTypeVersion", "cloudEventsVersion", "contentType"] {
            assert_eq!(envelope[key], built[key]);
        }
        assert_eq!(built["eventId"].as_str().unwrap().len(), 36);
        assert!(built["eventTime"].as_str().unwrap().ends_with('Z'));
    }
}
