//! The tenant's users and the invitation manager: `POST /v1.0/invitations` (DOMAIN §2.2, §2.8;
//! fixtures/graph/invitation-post.*), `GET /v1.0/users` (§2.4; fixtures/graph/user-list.…),
//! `GET|PATCH|DELETE /v1.0/users/{id | userPrincipalName}` (§2.5).
//!
//! Inviting an address creates a `Guest` (`creationType: Invitation`, `externalUserState:
//! PendingAcceptance`, UPN `local_domain#EXT#@tenant-domain`). Re-inviting an enabled guest's
//! address answers with that guest (§2.8, inference); a disabled guest's address is refused with
//! the "blocked from signing in" error (§2.5); an address a member already uses is refused as
//! a proxyAddresses conflict (§2.8). `sendInvitationMessage` defaults to false and is recorded.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::filter::Filter;
use super::{odata, GraphError, Shared, TenantConfig};
use crate::ids;

/// A directory user as the emulator stores it. Serialises with Graph's property names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Object id (GUID).
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Primary SMTP address; `None` for a guest whose address collided with a contact.
    pub mail: Option<String>,
    /// Alias, `local_domain#EXT#` for guests.
    pub mail_nickname: String,
    /// Other addresses; an invited guest's address is always here.
    pub other_mails: Vec<String>,
    /// `SMTP:address` entries.
    pub proxy_addresses: Vec<String>,
    /// `alias@tenant-domain` for members, `local_domain#EXT#@tenant-domain` for guests.
    pub user_principal_name: String,
    /// `Member` or `Guest`.
    pub user_type: String,
    /// False once disabled (`PATCH {"accountEnabled": false}`).
    pub account_enabled: bool,
    /// `Invitation` for invited guests, `None` for members.
    pub creation_type: Option<String>,
    /// `PendingAcceptance` or `Accepted` for guests, `None` for members.
    pub external_user_state: Option<String>,
    /// RFC 3339 creation time.
    pub created_date_time: String,
    /// Given name, settable by PATCH.
    pub given_name: Option<String>,
    /// Surname, settable by PATCH.
    pub surname: Option<String>,
    /// Job title, settable by PATCH.
    pub job_title: Option<String>,
    /// When the user was created through the API (`None`: seeded, visible at once).
    #[serde(skip)]
    created_at: Option<Instant>,
}

/// What to seed with [`super::GraphEmulator::seed_user`]. Start from [`NewUser::member`] or
/// [`NewUser::guest`] and adjust fields.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Display name.
    pub display_name: String,
    /// Primary address, or `None`.
    pub mail: Option<String>,
    /// Other addresses.
    pub other_mails: Vec<String>,
    /// `Member` or `Guest`.
    pub user_type: String,
    /// Whether the account can sign in.
    pub account_enabled: bool,
    /// UPN; derived from the first address and the tenant domain when `None`.
    pub user_principal_name: Option<String>,
}

impl NewUser {
    /// An enabled member whose mail is `mail`.
    pub fn member(mail: &str, display_name: &str) -> Self {
        Self {
            display_name: display_name.into(),
            mail: Some(mail.into()),
            other_mails: Vec::new(),
            user_type: "Member".into(),
            account_enabled: true,
            user_principal_name: None,
        }
    }

    /// An enabled guest for `mail`, as an accepted invitation leaves it.
    pub fn guest(mail: &str, display_name: &str) -> Self {
        Self { other_mails: vec![mail.into()], user_type: "Guest".into(), ..Self::member(mail, display_name) }
    }

    pub(super) fn into_user(self, cfg: &TenantConfig, created_at: Option<Instant>) -> User {
        let guest = self.user_type == "Guest";
        let address = self.mail.clone().or_else(|| self.other_mails.first().cloned()).unwrap_or_default();
        let upn = self.user_principal_name.unwrap_or_else(|| {
            if guest {
                guest_upn(&address, &cfg.domain)
            } else {
                let local = address.split('@').next().unwrap_or("user");
                format!("{local}@{}", cfg.domain)
            }
        });
        User {
            id: ids::uuid_v4(),
            display_name: self.display_name,
            mail_nickname: upn.split('@').next().unwrap_or_default().to_owned(),
            proxy_addresses: self.mail.iter().map(|m| format!("SMTP:{m}")).collect(),
            mail: self.mail,
            other_mails: self.other_mails,
            user_principal_name: upn,
            creation_type: guest.then(|| "Invitation".into()),
            external_user_state: guest.then(|| "Accepted".into()),
            user_type: self.user_type,
            account_enabled: self.account_enabled,
            created_date_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            given_name: None,
            surname: None,
            job_title: None,
            created_at,
        }
    }
}

/// `alice@fabrikam.com` → `alice_fabrikam.com#EXT#@contoso.onmicrosoft.com` (DOMAIN §2.2).
fn guest_upn(address: &str, tenant_domain: &str) -> String {
    format!("{}#EXT#@{tenant_domain}", address.replace('@', "_"))
}

impl User {
    /// Whether the user has `address` as mail, other mail, proxy address or UPN (Entra compares
    /// addresses case-insensitively).
    pub fn has_address(&self, address: &str) -> bool {
        let same = |candidate: &str| candidate.eq_ignore_ascii_case(address);
        self.mail.as_deref().is_some_and(same)
            || self.other_mails.iter().any(|m| same(m))
            || self.proxy_addresses.iter().any(|p| p.split_once(':').is_some_and(|(_, a)| same(a)))
            || same(&self.user_principal_name)
    }

    /// Whether list queries see this user `now` under replication lag `lag`.
    fn listable(&self, now: Instant, lag: std::time::Duration) -> bool {
        self.created_at.is_none_or(|created| now.duration_since(created) >= lag)
    }

    /// The value of a property named as in [`PROPERTIES`]; ones the emulator does not model are
    /// null (or empty collections).
    fn property(&self, name: &str) -> Value {
        match name {
            "id" => json!(self.id),
            "displayName" => json!(self.display_name),
            "mail" => json!(self.mail),
            "mailNickname" => json!(self.mail_nickname),
            "otherMails" => json!(self.other_mails),
            "proxyAddresses" => json!(self.proxy_addresses),
            "userPrincipalName" => json!(self.user_principal_name),
            "userType" => json!(self.user_type),
            "accountEnabled" => json!(self.account_enabled),
            "creationType" => json!(self.creation_type),
            "externalUserState" => json!(self.external_user_state),
            "createdDateTime" => json!(self.created_date_time),
            "givenName" => json!(self.given_name),
            "surname" => json!(self.surname),
            "jobTitle" => json!(self.job_title),
            "businessPhones" | "imAddresses" | "identities" => json!([]),
            _ => Value::Null,
        }
    }

    /// Text value of a filterable string property (see `filter.rs`).
    pub(super) fn text(&self, name: &str) -> Option<&str> {
        match name {
            "id" => Some(&self.id),
            "displayName" => Some(&self.display_name),
            "mail" => self.mail.as_deref(),
            "mailNickname" => Some(&self.mail_nickname),
            "userPrincipalName" => Some(&self.user_principal_name),
            "userType" => Some(&self.user_type),
            "creationType" => self.creation_type.as_deref(),
            "externalUserState" => self.external_user_state.as_deref(),
            "givenName" => self.given_name.as_deref(),
            "surname" => self.surname.as_deref(),
            "jobTitle" => self.job_title.as_deref(),
            _ => None,
        }
    }

    /// Values of a filterable collection property (`otherMails`, `proxyAddresses`).
    pub(super) fn list(&self, name: &str) -> &[String] {
        match name {
            "otherMails" => &self.other_mails,
            "proxyAddresses" => &self.proxy_addresses,
            _ => &[],
        }
    }

    fn project(&self, select: &[&str]) -> Value {
        Value::Object(select.iter().map(|p| ((*p).to_owned(), self.property(p))).collect())
    }
}

/// One accepted invitation.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    /// The invitation's own id (not the user's).
    pub id: String,
    /// `invitedUser.id`: the guest created or re-invited.
    pub invited_user_id: String,
    /// `invitedUserEmailAddress` as sent.
    pub email: String,
    /// `inviteRedirectUrl`.
    pub redirect_url: String,
    /// `Guest` or `Member`.
    pub invited_user_type: String,
    /// Whether Entra would have emailed the invitee (`sendInvitationMessage`).
    pub message_sent: bool,
    /// False when the address already belonged to a guest, which was returned instead.
    pub created_user: bool,
}

/// Every user property `$select` accepts: Graph's default set first, then the ones returned only
/// on `$select`. Graph knows many more; these are the ones a guest-lifecycle client may ask for.
#[rustfmt::skip]
pub(super) const PROPERTIES: &[&str] = &[
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id", "accountEnabled",
    "ageGroup", "city", "companyName", "country", "createdDateTime", "creationType", "department",
    "employeeId", "externalUserState", "externalUserStateChangeDateTime", "identities",
    "imAddresses", "mailNickname", "onPremisesImmutableId", "onPremisesSyncEnabled", "otherMails",
    "proxyAddresses", "showInAddressList", "usageLocation", "userType",
];

/// What Graph returns for a user without `$select`.
#[rustfmt::skip]
const DEFAULT_SELECT: &[&str] = &[
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
];

/// The canonical spelling of a user property (Graph matches property names case-insensitively).
pub(super) fn canonical_property(name: &str) -> Option<&'static str> {
    PROPERTIES.iter().copied().find(|p| p.eq_ignore_ascii_case(name))
}

fn unknown_property(name: &str) -> GraphError {
    GraphError::request_bad_request(format!(
        "Could not find a property named '{name}' on type 'Microsoft.DirectoryServices.User'."
    ))
}

/// OData system query options, without `$`, lowercased.
#[rustfmt::skip]
const SYSTEM_OPTIONS: &[&str] = &[
    "filter", "select", "top", "count", "orderby", "search", "expand", "skip", "skiptoken",
    "format",
];

/// Parses the system query options of a request, refusing unknown and repeated ones and ones
/// `allowed` does not list.
fn query_options(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, GraphError> {
    let mut options = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let name = key.strip_prefix('$').unwrap_or(&key).to_ascii_lowercase();
        if !SYSTEM_OPTIONS.contains(&name.as_str()) {
            if key.starts_with('$') {
                return Err(GraphError::bad_request(format!("The query parameter '{key}' is not supported.")));
            }
            continue;
        }
        if !allowed.contains(&name.as_str()) {
            return Err(GraphError::unsupported_query(format!(
                "Query option '${name}' is not supported by graph-emulator on this resource."
            )));
        }
        if options.insert(name.clone(), value.into_owned()).is_some() {
            return Err(GraphError::bad_request(format!(
                "Query option '${name}' was specified more than once, but it must be specified at most once."
            )));
        }
    }
    Ok(options)
}

fn parse_select(value: Option<&String>) -> Result<Vec<&'static str>, GraphError> {
    let Some(value) = value else {
        return Ok(DEFAULT_SELECT.to_vec());
    };
    let mut select = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let canonical = canonical_property(name).ok_or_else(|| unknown_property(name))?;
        if !select.contains(&canonical) {
            select.push(canonical);
        }
    }
    Ok(if select.is_empty() { DEFAULT_SELECT.to_vec() } else { select })
}

/// `…/$metadata#users` or `…/$metadata#users(id,mail)`.
fn context(base_url: &str, select: &[&str]) -> String {
    if select == DEFAULT_SELECT {
        format!("{base_url}/v1.0/$metadata#users")
    } else {
        format!("{base_url}/v1.0/$metadata#users({})", select.join(","))
    }
}

fn find_user(users: &[User], key: &str) -> Option<usize> {
    users.iter().position(|u| u.id.eq_ignore_ascii_case(key) || u.user_principal_name.eq_ignore_ascii_case(key))
}

pub(super) async fn list_users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, GraphError> {
    let options = query_options(query.as_deref(), &["filter", "select", "top", "count", "skiptoken"])?;
    let eventual = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
    let count = match options.get("count").map(|c| c.to_ascii_lowercase()) {
        None => false,
        Some(c) if c == "true" => true,
        Some(c) if c == "false" => false,
        Some(c) => return Err(GraphError::bad_request(format!("Invalid value '{c}' for query option '$count'."))),
    };
    if count && !eventual {
        return Err(GraphError::request_bad_request("$count is not currently supported."));
    }
    let filter = options.get("filter").map(|f| Filter::parse(f)).transpose()?;
    if let Some(reason) = filter.as_ref().and_then(Filter::advanced_requirement) {
        if !(eventual && count) {
            return Err(GraphError::unsupported_query(reason));
        }
    }
    let select = parse_select(options.get("select"))?;
    let top = match options.get("top") {
        None => 100,
        Some(top) => match top.parse::<usize>() {
            Ok(n) if (1..=999).contains(&n) => n,
            _ => {
                return Err(GraphError::request_bad_request(format!(
                    "Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."
                )))
            }
        },
    };

    let start = match options.get("skiptoken") {
        None => 0,
        Some(token) => skip_offset(token).ok_or_else(|| {
            GraphError::request_bad_request(format!(
                "The specified page token value is invalid or has expired: '{token}'. Follow @odata.nextLink as given."
            ))
        })?,
    };

    let now = Instant::now();
    let tenant = shared.lock();
    let matching: Vec<&User> = tenant
        .users
        .iter()
        .filter(|u| u.listable(now, tenant.replication_lag))
        .filter(|u| filter.as_ref().is_none_or(|f| f.matches(u)))
        .collect();
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(&shared.base_url, &select)));
    if count {
        body.insert("@odata.count".into(), json!(matching.len()));
    }
    body.insert("value".into(), matching.iter().skip(start).take(top).map(|u| u.project(&select)).collect());
    // More left: Graph's `@odata.nextLink`, the same query with an opaque `$skiptoken`.
    if start + top < matching.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
            if !key.eq_ignore_ascii_case("$skiptoken") {
                next.append_pair(&key, &value);
            }
        }
        next.append_pair("$skiptoken", &skip_token(start + top));
        body.insert("@odata.nextLink".into(), json!(format!("{}/v1.0/users?{}", shared.base_url, next.finish())));
    }
    Ok(odata(StatusCode::OK, &Value::Object(body)))
}

/// [`super::GraphEmulator::set_by_id_lag`]: a 404 while the user's lag lasts (one read
/// used up per call).
fn not_replicated_yet(tenant: &mut super::Tenant, index: usize, key: &str) -> Result<(), GraphError> {
    let id = tenant.users[index].id.clone();
    match tenant.lagging.get_mut(&id) {
        Some(left) if *left > 0 => {
            *left -= 1;
            Err(GraphError::not_found(key))
        }
        _ => Ok(()),
    }
}

/// An opaque-looking page token for the listing position `offset` (Graph's are base64 blobs).
fn skip_token(offset: usize) -> String {
    format!("RFNwdAoAAQAAA{offset:08x}")
}

fn skip_offset(token: &str) -> Option<usize> {
    let hex = token.strip_prefix("RFNwdAoAAQAAA")?;
    if hex.len() != 8 {
        return None;
    }
    usize::from_str_radix(hex, 16).ok()
}

pub(super) async fn get_user(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, GraphError> {
    let options = query_options(query.as_deref(), &["select"])?;
    let select = parse_select(options.get("select"))?;
    let mut tenant = shared.lock();
    let index = find_user(&tenant.users, &key).ok_or_else(|| GraphError::not_found(&key))?;
    not_replicated_yet(&mut tenant, index, &key)?;
    let mut body = json!({ "@odata.context": format!("{}/$entity", context(&shared.base_url, &select)) });
    if let (Value::Object(body), Value::Object(user)) = (&mut body, tenant.users[index].project(&select)) {
        body.extend(user);
    }
    Ok(odata(StatusCode::OK, &body))
}

pub(super) async fn patch_user(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, GraphError> {
    let changes = json_object(&headers, &body)?;
    let mut tenant = shared.lock();
    let index = find_user(&tenant.users, &key).ok_or_else(|| GraphError::not_found(&key))?;
    not_replicated_yet(&mut tenant, index, &key)?;
    let mut user = tenant.users[index].clone();
    for (name, value) in &changes {
        match name.as_str() {
            "accountEnabled" => user.account_enabled = boolean(value)?,
            "displayName" => match value.as_str() {
                Some(v) if !v.trim().is_empty() => user.display_name = v.to_owned(),
                _ => {
                    return Err(GraphError::request_bad_request(
                        "Invalid value specified for property 'displayName' of resource 'User'.",
                    ))
                }
            },
            "givenName" => user.given_name = optional_text(value)?,
            "surname" => user.surname = optional_text(value)?,
            "jobTitle" => user.job_title = optional_text(value)?,
            "mail" => user.mail = optional_text(value)?,
            "otherMails" => user.other_mails = text_list(value)?,
            "userType" => match value.as_str() {
                Some(v @ ("Member" | "Guest")) => user.user_type = v.to_owned(),
                _ => {
                    return Err(GraphError::request_bad_request(
                        "Invalid value specified for property 'userType' of resource 'User'.",
                    ))
                }
            },
            "id" | "createdDateTime" | "creationType" | "externalUserState" | "proxyAddresses" | "mailNickname" => {
                return Err(GraphError::request_bad_request(format!(
                    "Property '{name}' is read-only and cannot be set."
                )))
            }
            annotation if annotation.contains('@') => {}
            other if canonical_property(other).is_some() => {
                return Err(GraphError::request_bad_request(format!(
                    "graph-emulator does not emulate setting '{other}'."
                )))
            }
            other => return Err(no_such_json_property(other, "user")),
        }
    }
    tenant.users[index] = user;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_user(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> Result<StatusCode, GraphError> {
    let mut tenant = shared.lock();
    let index = find_user(&tenant.users, &key).ok_or_else(|| GraphError::not_found(&key))?;
    not_replicated_yet(&mut tenant, index, &key)?;
    let user = tenant.users.remove(index);
    tenant.deleted.push(user);
    Ok(StatusCode::NO_CONTENT)
}

/// Properties of `microsoft.graph.invitation` (fixtures/graph/invitation.v1.0-Prod.csdl.excerpt.xml).
#[rustfmt::skip]
const INVITATION_PROPERTIES: &[&str] = &[
    "id", "invitedUserDisplayName", "invitedUserEmailAddress", "invitedUserMessageInfo",
    "invitedUserType", "inviteRedeemUrl", "inviteRedirectUrl", "resetRedemption",
    "sendInvitationMessage", "status", "invitedUser", "invitedUserSponsors",
];

pub(super) async fn invite(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GraphError> {
    let request = json_object(&headers, &body)?;
    if let Some(unknown) = request.keys().find(|k| !k.contains('@') && !INVITATION_PROPERTIES.contains(&k.as_str())) {
        return Err(no_such_json_property(unknown, "invitation"));
    }
    let text = |name: &str| request.get(name).map(optional_text).transpose().map(Option::flatten);
    let email = text("invitedUserEmailAddress")?.filter(|e| !e.is_empty());
    let redirect = text("inviteRedirectUrl")?.filter(|r| !r.is_empty());
    let Some(email) = email else {
        return Err(required("invitedUserEmailAddress"));
    };
    let Some(redirect) = redirect else {
        return Err(required("inviteRedirectUrl"));
    };
    let display_name = text("invitedUserDisplayName")?;
    let user_type = match text("invitedUserType")?.as_deref() {
        None | Some("Guest") => "Guest",
        Some("Member") => "Member",
        Some(other) => {
            let message = format!("Invalid value '{other}' for property 'invitedUserType'.");
            return Err(GraphError::bad_request(message));
        }
    };
    let flag = |name: &str| request.get(name).filter(|v| !v.is_null()).map(boolean).transpose();
    let send_message = flag("sendInvitationMessage")?.unwrap_or(false);
    let reset_redemption = flag("resetRedemption")?.unwrap_or(false);
    let message_info = match request.get("invitedUserMessageInfo") {
        None | Some(Value::Null) => json!({
            "messageLanguage": null, "customizedMessageBody": null,
            "ccRecipients": [{ "emailAddress": { "name": null, "address": null } }],
        }),
        Some(info @ Value::Object(_)) => info.clone(),
        Some(other) => {
            return Err(GraphError::bad_request(format!(
                "Cannot convert the literal '{other}' to the expected type 'microsoft.graph.invitedUserMessageInfo'."
            )))
        }
    };
    if !valid_invite_address(&email) {
        return Err(GraphError::bad_request("The Primary SMTP Address is an invalid value."));
    }
    if !is_absolute_url(&redirect) {
        return Err(GraphError::bad_request("The value of 'inviteRedirectUrl' is not a valid absolute URI."));
    }
    let reset_target = match request.get("invitedUser") {
        Some(Value::Object(user)) => user.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };

    let cfg = &shared.cfg;
    let mut tenant = shared.lock();
    let existing = if reset_redemption {
        let Some(target) = reset_target else {
            return Err(GraphError::request_bad_request(
                "The invitedUser id is required when resetRedemption is true.",
            ));
        };
        let index = find_user(&tenant.users, &target).ok_or_else(|| GraphError::not_found(&target))?;
        if !tenant.users[index].has_address(&email) {
            return Err(GraphError::request_bad_request(
                "The email you're using to invite this user doesn't match any emails on the user object.",
            ));
        }
        tenant.users[index].external_user_state = Some("PendingAcceptance".into());
        Some(tenant.users[index].id.clone())
    } else {
        match tenant.users.iter().find(|u| u.has_address(&email)) {
            Some(u) if u.user_type != "Guest" => {
                let message = "Another object with the same value for property proxyAddresses already exists.";
                return Err(GraphError::request_bad_request(message).with_details(json!([
                    { "code": "ObjectConflict", "message": message, "target": "proxyAddresses" }
                ])));
            }
            Some(u) if !u.account_enabled => {
                return Err(GraphError::request_bad_request(format!(
                    "The invited user already exists in the directory as object ID: {}, but the account is blocked from signing in.",
                    u.id
                )));
            }
            Some(u) => Some(u.id.clone()),
            None => None,
        }
    };
    let created_user = existing.is_none();
    let user_id = match existing {
        Some(id) => id,
        None => {
            let local = email.split('@').next().unwrap_or_default();
            let mut user = NewUser {
                display_name: display_name.clone().unwrap_or_else(|| local.to_owned()),
                mail: Some(email.clone()),
                other_mails: vec![email.clone()],
                user_type: user_type.into(),
                account_enabled: true,
                user_principal_name: Some(guest_upn(&email, &cfg.domain)),
            }
            .into_user(cfg, Some(Instant::now()));
            user.creation_type = Some("Invitation".into());
            user.external_user_state = Some("PendingAcceptance".into());
            let id = user.id.clone();
            tenant.users.push(user);
            let lag = tenant.by_id_lag_reads;
            if lag > 0 {
                tenant.lagging.insert(id.clone(), lag);
            }
            id
        }
    };
    let invitation_id = ids::uuid_v4();
    tenant.invitations.push(Invitation {
        id: invitation_id.clone(),
        invited_user_id: user_id.clone(),
        email: email.clone(),
        redirect_url: redirect.clone(),
        invited_user_type: user_type.into(),
        message_sent: send_message,
        created_user,
    });
    drop(tenant);

    let redeem = format!(
        "https://login.microsoftonline.com/redeem?rd=https%3a%2f%2finvitations.microsoft.com%2fredeem%2f%3ftenant%3d{}%26user%3d{invitation_id}%26ticket%3d{}%26ver%3d2.0",
        cfg.tenant_id,
        ids::alphanumeric(40),
    );
    let response = json!({
        "@odata.context": format!("{}/v1.0/$metadata#invitations/$entity", shared.base_url),
        "id": invitation_id,
        "inviteRedeemUrl": redeem,
        "invitedUserDisplayName": display_name,
        "invitedUserType": user_type,
        "invitedUserEmailAddress": email,
        "sendInvitationMessage": send_message,
        "resetRedemption": reset_redemption,
        "inviteRedirectUrl": redirect,
        "status": "PendingAcceptance",
        "invitedUserMessageInfo": message_info,
        "invitedUser": { "id": user_id },
    });
    Ok(odata(StatusCode::CREATED, &response))
}

/// DOMAIN §2.2: these characters are refused anywhere in the address; `.` and `-` may not start
/// or end the local part or the domain; `_` and `'` are fine.
fn valid_invite_address(address: &str) -> bool {
    const FORBIDDEN: &str = "~!#$%^&*()+=[]{}\\/|;:\"<>?,";
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let edge_ok = |part: &str| {
        !part.is_empty() && !part.starts_with(['.', '-']) && !part.ends_with(['.', '-']) && !part.contains("..")
    };
    !address.chars().any(|c| FORBIDDEN.contains(c) || c.is_whitespace() || c.is_control())
        && !domain.contains('@')
        && edge_ok(local)
        && edge_ok(domain)
        && domain.contains('.')
}

fn is_absolute_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|u| u.has_host())
}

/// The JSON object body of a POST or PATCH, or Graph's 400 for anything else.
fn json_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, GraphError> {
    let unreadable = || {
        GraphError::bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    };
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Err(unreadable());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(unreadable()),
    }
}

fn required(property: &str) -> GraphError {
    GraphError::bad_request(format!("Required property '{property}' is missing or empty."))
}

fn no_such_json_property(name: &str, type_name: &str) -> GraphError {
    GraphError::bad_request(format!(
        "The property '{name}' does not exist on type 'microsoft.graph.{type_name}'. Make sure to only use property names that are defined by the type or mark the type as open type."
    ))
}

fn cannot_convert(value: &Value, edm: &str) -> GraphError {
    GraphError::bad_request(format!("Cannot convert the literal '{value}' to the expected type '{edm}'."))
}

fn boolean(value: &Value) -> Result<bool, GraphError> {
    value.as_bool().ok_or_else(|| cannot_convert(value, "Edm.Boolean"))
}

fn optional_text(value: &Value) -> Result<Option<String>, GraphError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(cannot_convert(other, "Edm.String")),
    }
}

fn text_list(value: &Value) -> Result<Vec<String>, GraphError> {
    let items = value.as_array().ok_or_else(|| cannot_convert(value, "Collection(Edm.String)"))?;
    items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| cannot_convert(v, "Edm.String"))).collect()
}
