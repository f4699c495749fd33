//! The Microsoft Graph calls graph-guest makes, and how their answers become outcomes.
//!
//! Every call carries the app token; a 401 swaps the token once per run and resends. Status
//! handling follows Graph's error guidance: 429/503/504 and other 5xx are passing (retry,
//! honouring `Retry-After`), 403 is a missing application permission (named in the message,
//! since that is the fix), other 4xx are permanent with Graph's own `error.code`/`message`.

use serde::Deserialize;

use crate::encoding::{odata_string, percent_encode, retry_after_ms};
use crate::event::Failure;
use crate::host::{Host, Level, Method, Request, Response};
use crate::run::{Run, REQUEST_TIMEOUT_MS};

/// Application permission needed to look users up.
pub(crate) const READ_PERMISSION: &str = "User.Read.All";
/// Application permission needed to invite.
pub(crate) const INVITE_PERMISSION: &str = "User.Invite.All";
/// Application permission needed to delete or disable a user.
pub(crate) const WRITE_PERMISSION: &str = "User.ReadWrite.All";

/// The user properties the plugin reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GraphUser {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) user_type: Option<String>,
    #[serde(default)]
    pub(crate) mail: Option<String>,
    #[serde(default)]
    pub(crate) other_mails: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) account_enabled: Option<bool>,
    #[serde(default)]
    pub(crate) user_principal_name: Option<String>,
}

impl GraphUser {
    /// Only an exact `Guest` counts: a missing or unexpected type is treated as not a guest.
    pub(crate) fn is_guest(&self) -> bool {
        self.user_type.as_deref() == Some("Guest")
    }

    /// `id (upn, mail)` for messages that must name the account unambiguously.
    pub(crate) fn describe(&self) -> String {
        let names: Vec<&str> = [self.user_principal_name.as_deref(), self.mail.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            self.id.clone()
        } else {
            format!("{} ({})", self.id, names.join(", "))
        }
    }

    pub(crate) fn user_type_name(&self) -> &str {
        self.user_type.as_deref().unwrap_or("unknown")
    }

    /// Whether `addr` really is this user's `mail` or one of its `otherMails` (Graph
    /// compares addresses case-insensitively, so this does too).
    fn has_address(&self, addr: &str) -> bool {
        self.mail.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(addr))
            || self.other_mails.iter().flatten().any(|m| m.eq_ignore_ascii_case(addr))
    }
}

#[derive(Deserialize)]
struct UserList {
    #[serde(default)]
    value: Vec<GraphUser>,
}

/// One page of a Graph collection.
#[derive(Deserialize)]
struct UserPage {
    #[serde(default)]
    value: Vec<GraphUser>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Invitation {
    invited_user: Option<InvitedUser>,
}

#[derive(Deserialize)]
struct InvitedUser {
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Whether `id` can go into a Graph URL path as is. Entra object ids are GUIDs; anything with
/// a `/`, `.` or `%` could address a different resource than the one checked.
pub(crate) fn is_object_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What a non-success Graph answer means for the run. `action` says what was attempted
/// ("inviting a@b.c"), `permission` what a 403 lacks.
pub(crate) fn graph_failure(action: &str, permission: &str, response: &Response) -> Failure {
    let status = response.status;
    let detail = error_detail(response);
    let retry_after = response.header("retry-after").and_then(retry_after_ms);
    match status {
        429 | 503 | 504 => Failure::Retryable {
            message: format!("Graph is throttling or unavailable while {action}: {detail}"),
            retry_after_ms: retry_after,
        },
        403 => Failure::Permanent(format!(
            "Graph denied {action}: {detail}; grant the application permission {permission} \
             to the app registration and admin-consent it"
        )),
        400..=499 => Failure::Permanent(format!("Graph refused {action}: {detail}")),
        500..=599 => Failure::Retryable {
            message: format!("Graph failed while {action}: {detail}"),
            retry_after_ms: retry_after,
        },
        _ => Failure::Permanent(format!(
            "Graph answered {action} unexpectedly: {detail}; check graph_url under \
             [plugins.graph-guest.config]"
        )),
    }
}

/// `HTTP 400 Request_BadRequest: message`, or a bit of the body when it is not Graph's shape.
fn error_detail(response: &Response) -> String {
    let status = response.status;
    match serde_json::from_slice::<ErrorEnvelope>(&response.body) {
        Ok(ErrorEnvelope { error }) => format!("HTTP {status} {}: {}", error.code, error.message),
        Err(_) if response.body.is_empty() => format!("HTTP {status}"),
        Err(_) => {
            let text = String::from_utf8_lossy(&response.body);
            let snippet: String = text.chars().take(200).collect();
            format!("HTTP {status}: {}", snippet.trim())
        }
    }
}

impl<H: Host> Run<'_, H> {
    /// Sends one Graph call with the app token. A 401 replaces the token and resends once;
    /// a second 401 in the same run is permanent (the token is fine, the app is not).
    fn graph(
        &mut self,
        what: &str,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, Failure> {
        let url = format!("{}{}", self.settings.graph_url, path_and_query);
        self.graph_url_call(what, method, &url, body)
    }

    /// As `graph`, for an absolute URL under `graph_url` (an `@odata.nextLink`).
    fn graph_url_call(
        &mut self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, Failure> {
        let token = self.access_token()?;
        let response = self.send(what, graph_request(method, url, &token, body.clone()))?;
        if response.status != 401 {
            return Ok(response);
        }
        if self.token_refreshed {
            return Err(unauthorized(what, &response));
        }
        self.log(Level::Info, "Graph refused the app token (401); getting a new one");
        let token = self.refresh_token()?;
        let response = self.send(what, graph_request(method, url, &token, body))?;
        if response.status == 401 {
            return Err(unauthorized(what, &response));
        }
        Ok(response)
    }

    /// Every account whose `mail`, else whose `otherMails`, is `addr`. Two plain `eq`
    /// queries rather than one `or`, which Graph may send down the advanced-query path.
    pub(crate) fn find_by_mail(&mut self, addr: &str) -> Result<Vec<GraphUser>, Failure> {
        let literal = odata_string(addr);
        for filter in [format!("mail eq {literal}"), format!("otherMails/any(x:x eq {literal})")] {
            let path = format!(
                "/v1.0/users?$filter={}&$select=id,userType,mail,otherMails,accountEnabled,userPrincipalName",
                percent_encode(&filter)
            );
            let action = format!("looking up accounts with mail {addr}");
            let response = self.graph("Graph user lookup", Method::Get, &path, None)?;
            if response.status != 200 {
                return Err(graph_failure(&action, READ_PERMISSION, &response));
            }
            let list: UserList = serde_json::from_slice(&response.body)
                .map_err(|e| Failure::Permanent(format!("Graph answered {action} with an unreadable list: {e}")))?;
            // Never trust the filter alone: an account is only acted on if it really carries
            // the address (a proxy or emulator that ignored $filter would list everyone).
            let total = list.value.len();
            let matching: Vec<GraphUser> = list.value.into_iter().filter(|u| u.has_address(addr)).collect();
            if matching.len() < total {
                self.log(
                    Level::Warn,
                    &format!(
                        "Graph listed {} account(s) without mail {addr} for `{filter}`; ignored",
                        total - matching.len()
                    ),
                );
            }
            if !matching.is_empty() {
                return Ok(matching);
            }
        }
        Ok(Vec::new())
    }

    /// The object ids (lower case) of every guest in the tenant: one paged listing,
    /// `$top=999` (Graph's maximum for users), following `@odata.nextLink` to the end.
    /// Accounts Graph lists that are not exactly `Guest` are left out (never trust the
    /// filter alone).
    pub(crate) fn list_guest_ids(&mut self) -> Result<std::collections::HashSet<String>, Failure> {
        let filter = percent_encode("userType eq 'Guest'");
        let mut url = format!(
            "{}/v1.0/users?$filter={filter}&$select=id,userType,mail,userPrincipalName&$top=999",
            self.settings.graph_url
        );
        let mut ids = std::collections::HashSet::new();
        let action = "listing the tenant's guests";
        for page in 1.. {
            let response = self.graph_url_call("Graph guest listing", Method::Get, &url, None)?;
            if response.status != 200 {
                return Err(graph_failure(action, READ_PERMISSION, &response));
            }
            let list: UserPage = serde_json::from_slice(&response.body).map_err(|e| {
                Failure::Permanent(format!("Graph answered {action} (page {page}) with an unreadable list: {e}"))
            })?;
            ids.extend(list.value.iter().filter(|u| u.is_guest()).map(|u| u.id.to_ascii_lowercase()));
            match list.next_link {
                None => return Ok(ids),
                Some(next) if next.starts_with(&format!("{}/", self.settings.graph_url)) => url = next,
                Some(next) => {
                    return Err(Failure::Permanent(format!(
                        "Graph's @odata.nextLink while {action} leaves graph_url ({}): {next}; check graph_url \
                         under [plugins.graph-guest.config]",
                        self.settings.graph_url
                    )))
                }
            }
        }
        Ok(ids)
    }

    /// The account with object id `id`, or `None` when Graph says it does not exist.
    pub(crate) fn get_user(&mut self, id: &str) -> Result<Option<GraphUser>, Failure> {
        let path = format!("/v1.0/users/{}?$select=id,userType,mail,userPrincipalName", percent_encode(id));
        let response = self.graph("Graph user read", Method::Get, &path, None)?;
        match response.status {
            200 => serde_json::from_slice(&response.body)
                .map(Some)
                .map_err(|e| Failure::Permanent(format!("Graph answered reading account {id} unreadably: {e}"))),
            404 => Ok(None),
            _ => Err(graph_failure(&format!("reading account {id}"), READ_PERMISSION, &response)),
        }
    }

    /// Invites `addr`; returns the new (or existing) user's object id.
    pub(crate) fn invite(&mut self, addr: &str, display_name: Option<&str>) -> Result<String, Failure> {
        let s = &self.settings;
        let mut body = serde_json::json!({
            "invitedUserEmailAddress": addr,
            "inviteRedirectUrl": s.invite_redirect_url,
            "sendInvitationMessage": s.send_invitation_message,
            "invitedUserType": s.invited_user_type,
        });
        if let (Some(name), Some(map)) = (display_name.filter(|n| !n.is_empty()), body.as_object_mut()) {
            map.insert("invitedUserDisplayName".into(), name.into());
        }
        let action = format!("inviting {addr}");
        let response =
            self.graph("Graph invitation", Method::Post, "/v1.0/invitations", Some(body.to_string().into_bytes()))?;
        if !matches!(response.status, 200 | 201) {
            return Err(graph_failure(&action, INVITE_PERMISSION, &response));
        }
        let id = serde_json::from_slice::<Invitation>(&response.body)
            .ok()
            .and_then(|i| i.invited_user)
            .map(|u| u.id)
            .unwrap_or_default();
        if !is_object_id(&id) {
            // The invitation went through; a rerun finds the guest by mail and adopts it.
            return Err(Failure::retryable(format!(
                "Graph accepted {action} but returned no usable invitedUser.id ({id:?})"
            )));
        }
        Ok(id)
    }

    /// Deletes (soft, restorable 30 days) user `id`; `false` when it was already gone.
    pub(crate) fn delete_user(&mut self, id: &str) -> Result<bool, Failure> {
        let path = format!("/v1.0/users/{}", percent_encode(id));
        let response = self.graph("Graph user delete", Method::Delete, &path, None)?;
        write_result(&format!("deleting account {id}"), &response)
    }

    /// Blocks sign-in for user `id`; `false` when it was already gone.
    pub(crate) fn disable_user(&mut self, id: &str) -> Result<bool, Failure> {
        let path = format!("/v1.0/users/{}", percent_encode(id));
        let body = br#"{"accountEnabled":false}"#.to_vec();
        let response = self.graph("Graph user disable", Method::Patch, &path, Some(body))?;
        write_result(&format!("disabling account {id}"), &response)
    }
}

/// A write's answer: done, already gone (404 is success for a removal), or a failure.
fn write_result(action: &str, response: &Response) -> Result<bool, Failure> {
    match response.status {
        200..=299 => Ok(true),
        404 => Ok(false),
        _ => Err(graph_failure(action, WRITE_PERMISSION, response)),
    }
}

fn graph_request(method: Method, url: &str, token: &str, body: Option<Vec<u8>>) -> Request {
    let mut headers = vec![
        ("authorization".to_string(), format!("Bearer {token}")),
        ("accept".to_string(), "application/json".to_string()),
    ];
    if body.is_some() {
        headers.push(("content-type".to_string(), "application/json".to_string()));
    }
    Request { method, url: url.to_string(), headers, body, timeout_ms: Some(REQUEST_TIMEOUT_MS) }
}

fn unauthorized(what: &str, response: &Response) -> Failure {
    Failure::Permanent(format!(
        "{what}: Graph refused a freshly issued app token ({}); check that the app registration \
         in tenant_id has admin-consented Graph application permissions and that graph_scope \
         is https://graph.microsoft.com/.default",
        error_detail(response)
    ))
}
