//! The Okta Groups API part of the emulator, for `hookhost reconcile`: finding a group by name
//! (`GET /api/v1/groups?q=NAME`) and paging through its members
//! (`GET /api/v1/groups/{id}/users?limit=N`). Kept apart from the System Log and Event Hooks
//! code so the two evolve (and merge) independently.
//!
//! What it does as Okta's Groups API does (developer.okta.com, Group API):
//!
//! - SSWS auth and Okta's error shape, as the rest of the emulator.
//! - `q` finds groups whose `profile.name` *starts with* the value, case-insensitively (so an
//!   exact match must be checked by the caller); a query is not paged and returns at most
//!   `limit` (default 300) groups. `search`, `filter` and `expand` are not modelled: 400.
//! - Members come back as User objects (`id`, `status`, `profile.login`, `profile.email`, …)
//!   in ascending user-id order; `limit` defaults to 1000 and larger values are capped at 1000
//!   (Okta documents no fixed maximum and advises not to rely on one); `after` is the opaque
//!   cursor from the `Link: <…>; rel="next"` header, present while more members follow.
//!   Every page also carries `rel="self"`. An unknown group id is 404 `E0000007`.
//! - Rate limits: every answer carries `X-Rate-Limit-Limit/-Remaining/-Reset` for a per-minute
//!   window of the groups endpoints ([`GROUPS_RATE_LIMIT`]);
//!   [`OktaEmulator::throttle_groups`] makes the next requests answer 429 `E0000047`.
//!
//! Seeding: [`OktaEmulator::add_group`], [`OktaEmulator::add_user`],
//! [`OktaEmulator::add_member`], [`OktaEmulator::remove_member`]. Counting:
//! [`OktaEmulator::group_pages`] (every answered groups request is a page).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{okta_error, set_header, with_rate_limit, OktaEmulator, RateLimit, Shared};

/// Requests per minute the emulated groups endpoints allow.
pub const GROUPS_RATE_LIMIT: u64 = 500;
/// Largest page of group members served.
pub const MAX_MEMBERS_PAGE: usize = 1000;
/// Members per page when no `limit` is given.
const DEFAULT_MEMBERS_PAGE: usize = 1000;
/// Groups a `q` query returns when no `limit` is given.
const DEFAULT_QUERY_LIMIT: usize = 300;

/// An Okta user as the Groups API lists it.
#[derive(Clone, Debug)]
pub struct OktaUser {
    pub id: String,
    pub login: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// The org's groups and users.
#[derive(Default)]
pub(super) struct Directory {
    users: BTreeMap<String, OktaUser>,
    /// Group id → (name, member user ids).
    groups: BTreeMap<String, (String, BTreeSet<String>)>,
    /// The Groups API's rate limit.
    limit: RateLimit,
    next_id: u64,
}

impl Directory {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        // Okta ids: a 3-character type prefix and 17 more characters; zero-padded so the
        // ascending order of ids is the order of creation.
        format!("{prefix}{:017}", self.next_id)
    }
}

impl OktaEmulator {
    /// Creates an `OKTA_GROUP` named `name`; its id.
    pub fn add_group(&self, name: &str) -> String {
        let mut org = self.shared.lock();
        let id = org.directory.new_id("00g");
        org.directory.groups.insert(id.clone(), (name.to_owned(), BTreeSet::new()));
        id
    }

    /// Creates an active user with this login (also its email); its id.
    pub fn add_user(&self, login: &str, first_name: &str, last_name: &str) -> String {
        let mut org = self.shared.lock();
        let id = org.directory.new_id("00u");
        let user = OktaUser {
            id: id.clone(),
            login: login.to_owned(),
            email: login.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
        };
        org.directory.users.insert(id.clone(), user);
        id
    }

    /// Adds user `user_id` to group `group_id` (both must exist; a no-op otherwise).
    pub fn add_member(&self, group_id: &str, user_id: &str) {
        let mut org = self.shared.lock();
        if !org.directory.users.contains_key(user_id) {
            return;
        }
        if let Some((_, members)) = org.directory.groups.get_mut(group_id) {
            members.insert(user_id.to_owned());
        }
    }

    /// Removes user `user_id` from group `group_id`.
    pub fn remove_member(&self, group_id: &str, user_id: &str) {
        if let Some((_, members)) = self.shared.lock().directory.groups.get_mut(group_id) {
            members.remove(user_id);
        }
    }

    /// The member ids of a group, ascending.
    pub fn members(&self, group_id: &str) -> Vec<String> {
        self.shared.lock().directory.groups.get(group_id).map(|(_, m)| m.iter().cloned().collect()).unwrap_or_default()
    }

    /// A user by id.
    pub fn user(&self, user_id: &str) -> Option<OktaUser> {
        self.shared.lock().directory.users.get(user_id).cloned()
    }

    /// The next `times` requests to the groups endpoints answer 429 `E0000047` with an
    /// `X-Rate-Limit-Reset` `reset_in` ahead (rounded up to a whole second).
    pub fn throttle_groups(&self, times: usize, reset_in: Duration) {
        self.shared.lock().directory.limit.throttle = Some((times, reset_in));
    }

    /// Requests answered by the groups endpoints (each one a page), by status 200 only.
    pub fn group_pages(&self) -> usize {
        self.requests().iter().filter(|r| r.path.starts_with("/api/v1/groups") && r.status == 200).count()
    }
}

/// Counts the request in the Groups API's window and answers a pending 429, else the
/// window for the answer's headers.
#[allow(clippy::result_large_err, reason = "the error is the HTTP answer itself, built once per refused request")]
fn rate_limit(shared: &Shared) -> Result<(u64, u64), Response> {
    let mut org = shared.lock();
    org.directory.limit.count(GROUPS_RATE_LIMIT).map_err(|(throttled, reset)| {
        org.last_reset = Some(reset);
        throttled
    })
}

fn with_limits(response: Response, window: (u64, u64)) -> Response {
    with_rate_limit(response, GROUPS_RATE_LIMIT, window)
}

#[allow(clippy::result_large_err, reason = "the error is the HTTP answer itself, built once per bad request")]
fn parse_limit(value: Option<&str>, default: usize) -> Result<usize, Response> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n as usize),
            _ => Err(okta_error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                &format!("Api validation failed: limit must be a positive integer, got {v:?}"),
            )),
        },
    }
}

fn group_json(base: &str, id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "created": "2026-01-01T00:00:00.000Z",
        "lastUpdated": "2026-01-01T00:00:00.000Z",
        "lastMembershipUpdated": "2026-01-01T00:00:00.000Z",
        "objectClass": ["okta:user_group"],
        "type": "OKTA_GROUP",
        "profile": { "name": name, "description": null },
        "_links": {
            "self": { "href": format!("{base}/api/v1/groups/{id}") },
            "users": { "href": format!("{base}/api/v1/groups/{id}/users") },
        },
    })
}

fn user_json(base: &str, u: &OktaUser) -> Value {
    json!({
        "id": u.id,
        "status": "ACTIVE",
        "created": "2026-01-01T00:00:00.000Z",
        "activated": "2026-01-01T00:00:00.000Z",
        "statusChanged": "2026-01-01T00:00:00.000Z",
        "lastLogin": null,
        "lastUpdated": "2026-01-01T00:00:00.000Z",
        "passwordChanged": null,
        "type": { "id": "oty1default" },
        "profile": {
            "firstName": u.first_name,
            "lastName": u.last_name,
            "mobilePhone": null,
            "secondEmail": null,
            "login": u.login,
            "email": u.email,
        },
        "credentials": { "provider": { "type": "OKTA", "name": "OKTA" } },
        "_links": { "self": { "href": format!("{base}/api/v1/users/{}", u.id) } },
    })
}

/// `GET /api/v1/groups[?q=NAME&limit=N]`.
pub(super) async fn list_groups(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let window = match rate_limit(&shared) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    for unsupported in ["search", "filter", "expand", "after"] {
        if param(unsupported).is_some() {
            return okta_error(
                StatusCode::BAD_REQUEST,
                "E0000031",
                &format!("Invalid search criteria: the emulator does not model `{unsupported}` on /api/v1/groups"),
            );
        }
    }
    let q = param("q").map(str::to_lowercase);
    let limit = match parse_limit(param("limit"), if q.is_some() { DEFAULT_QUERY_LIMIT } else { 10_000 }) {
        Ok(l) => l.min(10_000),
        Err(r) => return r,
    };
    let org = shared.lock();
    let groups: Vec<Value> = org
        .directory
        .groups
        .iter()
        .filter(|(_, (name, _))| q.as_deref().is_none_or(|q| name.to_lowercase().starts_with(q)))
        .take(limit)
        .map(|(id, (name, _))| group_json(&shared.base_url, id, name))
        .collect();
    drop(org);
    with_limits(Json(Value::Array(groups)).into_response(), window)
}

/// `GET /api/v1/groups/{id}/users[?limit=N&after=CURSOR]`.
pub(super) async fn group_users(
    State(shared): State<Arc<Shared>>,
    Path(group_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let window = match rate_limit(&shared) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let limit = match parse_limit(param("limit"), DEFAULT_MEMBERS_PAGE) {
        Ok(l) => l.min(MAX_MEMBERS_PAGE),
        Err(r) => return r,
    };
    let after = param("after").unwrap_or("").to_owned();
    let org = shared.lock();
    let Some((_, members)) = org.directory.groups.get(&group_id) else {
        drop(org);
        return okta_error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {group_id} (UserGroup)"),
        );
    };
    // Members after the cursor in id order: a member removed mid-paging moves nobody else.
    // (Every id sorts after "", the cursor of the first page.)
    let mut page: Vec<&String> = members
        .range::<String, _>((std::ops::Bound::Excluded(&after), std::ops::Bound::Unbounded))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let base = &shared.base_url;
    let users: Vec<Value> =
        page.iter().filter_map(|id| org.directory.users.get(*id)).map(|u| user_json(base, u)).collect();
    let last = page.last().map(|s| s.to_string());
    drop(org);
    let mut response = with_limits(Json(Value::Array(users)).into_response(), window);
    let self_url = format!("{base}/api/v1/groups/{group_id}/users?limit={limit}");
    set_header(&mut response, "link", &format!("<{self_url}>; rel=\"self\""));
    if let (true, Some(last)) = (more, last) {
        set_header(&mut response, "link", &format!("<{self_url}&after={last}>; rel=\"next\""));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "okta-groups-token";

    async fn get(url: &str, auth: bool) -> (u16, Value, Option<String>, axum::http::HeaderMap) {
        let mut request = reqwest::Client::new().get(url);
        if auth {
            request = request.header("Authorization", format!("SSWS {TOKEN}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let next = headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            v.strip_suffix("; rel=\"next\"").map(|l| l.trim_start_matches('<').trim_end_matches('>').to_owned())
        });
        (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(), next, headers)
    }

    #[tokio::test]
    async fn groups_are_found_by_name_prefix_and_members_paged_by_cursor() {
        let okta = OktaEmulator::start(TOKEN).await.unwrap();
        let group = okta.add_group("O365Guest");
        okta.add_group("O365Guest-Admins");
        okta.add_group("Other");
        let users: Vec<String> = (0..5).map(|i| okta.add_user(&format!("u{i}@x.example"), "U", "X")).collect();
        for u in &users {
            okta.add_member(&group, u);
        }
        let base = okta.base_url();

        let (status, body, _, _) = get(&format!("{base}/api/v1/groups?q=o365guest"), false).await;
        assert_eq!((status, body["errorCode"].as_str()), (401, Some("E0000011")));
        let (status, body, next, headers) = get(&format!("{base}/api/v1/groups?q=o365guest"), true).await;
        assert_eq!(status, 200);
        let names: Vec<&str> =
            body.as_array().unwrap().iter().map(|g| g["profile"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["O365Guest", "O365Guest-Admins"], "q matches the start of the name, any case");
        assert!(next.is_none(), "a query is not paged");
        assert!(headers.contains_key("x-rate-limit-remaining"));

        let mut url = format!("{base}/api/v1/groups/{group}/users?limit=2");
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (status, body, next, _) = get(&url, true).await;
            assert_eq!(status, 200);
            pages += 1;
            seen.extend(body.as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_owned()));
            assert!(body.as_array().unwrap().iter().all(|u| u["profile"]["login"].is_string()));
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        assert_eq!((pages, seen), (3, users.clone()));

        let (status, body, _, _) = get(&format!("{base}/api/v1/groups/00gnope/users"), true).await;
        assert_eq!((status, body["errorCode"].as_str()), (404, Some("E0000007")));
        let (status, _, _, _) = get(&format!("{base}/api/v1/groups?search=profile.name"), true).await;
        assert_eq!(status, 400);

        okta.throttle_groups(1, Duration::from_secs(1));
        let (status, body, _, headers) = get(&format!("{base}/api/v1/groups/{group}/users"), true).await;
        assert_eq!((status, body["errorCode"].as_str()), (429, Some("E0000047")));
        assert_eq!(headers.get("x-rate-limit-remaining").unwrap(), "0");
        assert_eq!(okta.group_pages(), 4, "group_pages counts the 200 answers only");
    }
}
