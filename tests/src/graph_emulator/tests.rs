//! The emulator against its documented behaviour, over real HTTP on 127.0.0.1.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::{HeaderMap, Method};
use serde_json::{json, Value};

use super::{Fault, GraphEmulator, NewUser, TenantConfig};
use crate::fixtures;

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn values(&self) -> &Vec<Value> {
        self.body["value"].as_array().unwrap()
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    Reply { status, headers, body }
}

impl Api {
    /// A client for `emulator` holding a fresh token. No idle-pool timer, so paused time only
    /// moves when a test or the emulator sleeps.
    async fn new(emulator: &GraphEmulator) -> Api {
        let http = reqwest::Client::builder().pool_idle_timeout(None).build().unwrap();
        let mut api = Api { http, base: emulator.base_url(), token: String::new() };
        api.token = api.refresh_token().await;
        api
    }

    async fn refresh_token(&self) -> String {
        let cfg = TenantConfig::default();
        let r = self
            .token_request(
                &cfg.tenant_id,
                &[
                    ("client_id", &cfg.client_id),
                    ("scope", "https://graph.microsoft.com/.default"),
                    ("client_secret", &cfg.client_secret),
                    ("grant_type", "client_credentials"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["access_token"].as_str().unwrap().to_owned()
    }

    async fn token_request(&self, tenant: &str, pairs: &[(&str, &str)]) -> Reply {
        let response = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .unwrap();
        reply(response).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Reply {
        reply(self.try_send(method, path, body, headers).await.unwrap()).await
    }

    async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !self.token.is_empty() {
            request = request.header("Authorization", format!("Bearer {}", self.token));
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(serde_json::to_vec(&body).unwrap());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    async fn list(&self, params: &[(&str, &str)]) -> Reply {
        self.get(&format!("/v1.0/users?{}", form(params))).await
    }

    async fn invite(&self, body: Value) -> Reply {
        self.send(Method::POST, "/v1.0/invitations", Some(body), &[]).await
    }

    async fn invite_address(&self, address: &str) -> Reply {
        self.invite(json!({ "invitedUserEmailAddress": address, "inviteRedirectUrl": "https://myapps.microsoft.com" }))
            .await
    }
}

async fn start() -> (GraphEmulator, Api) {
    let emulator = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let api = Api::new(&emulator).await;
    (emulator, api)
}

#[tokio::test]
async fn token_endpoint_answers_like_entra() {
    let (emulator, api) = start().await;
    let cfg = TenantConfig::default();
    let good = [
        ("client_id", cfg.client_id.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_secret", cfg.client_secret.as_str()),
        ("grant_type", "client_credentials"),
    ];
    let with = |name: &str, value: &'static str| {
        good.iter().map(|(k, v)| if *k == name { (*k, value) } else { (*k, *v) }).collect::<Vec<_>>()
    };
    let without = |name: &str| good.iter().filter(|(k, _)| *k != name).copied().collect::<Vec<_>>();

    let ok = api.token_request(&cfg.domain, &good).await;
    assert_eq!(ok.status, 200);
    assert!(keys(&ok.body).is_superset(&keys(&fixtures::load("graph/token.success.200.json"))));
    assert_eq!((ok.body["token_type"].as_str(), ok.body["expires_in"].as_u64()), (Some("Bearer"), Some(3599)));

    let error_keys = keys(&fixtures::load("graph/token.error.400.json"));
    let cases: Vec<(Reply, u16, &str, u64)> = vec![
        (api.token_request("contoso-unknown.onmicrosoft.com", &good).await, 400, "invalid_request", 90002),
        (api.token_request(&cfg.tenant_id, &without("grant_type")).await, 400, "invalid_request", 900144),
        (api.token_request(&cfg.tenant_id, &without("scope")).await, 400, "invalid_request", 900144),
        (
            api.token_request(&cfg.tenant_id, &with("client_id", "22222222-2222-2222-2222-222222222222")).await,
            400,
            "unauthorized_client",
            700016,
        ),
        (
            api.token_request(&cfg.tenant_id, &with("scope", "https://foo.microsoft.com/.default")).await,
            400,
            "invalid_scope",
            70011,
        ),
        (api.token_request(&cfg.tenant_id, &with("client_secret", "wrong")).await, 401, "invalid_client", 7000215),
        (api.token_request(&cfg.tenant_id, &without("client_secret")).await, 401, "invalid_client", 7000218),
    ];
    for (r, status, error, code) in &cases {
        assert_eq!((r.status, r.body["error"].as_str()), (*status, Some(*error)), "{}", r.body);
        assert_eq!(keys(&r.body), error_keys);
        assert_eq!(r.body["error_codes"], json!([code]));
        let description = r.body["error_description"].as_str().unwrap();
        assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
        assert!(description.contains(&format!("Trace ID: {}", r.body["trace_id"].as_str().unwrap())));
    }

    // A JSON body is not a form: Entra sees no grant_type.
    let json_body = api
        .http
        .post(format!("{}/{}/oauth2/v2.0/token", api.base, cfg.tenant_id))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({"grant_type": "client_credentials"})).unwrap())
        .send()
        .await
        .unwrap();
    let json_body = reply(json_body).await;
    assert_eq!((json_body.status, json_body.body["error_codes"][0].as_u64()), (400, Some(900144)));
    assert_eq!(emulator.token_requests(), 1 + 1 + cases.len() + 1);
    emulator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn graph_calls_need_an_issued_unexpired_bearer_token() {
    let cfg = TenantConfig { token_ttl_secs: 600, ..TenantConfig::default() };
    let emulator = GraphEmulator::start(cfg).await.unwrap();
    let mut api = Api::new(&emulator).await;
    assert_eq!(api.list(&[]).await.status, 200);

    let token = std::mem::take(&mut api.token);
    let missing = api.list(&[]).await;
    assert_eq!((missing.status, missing.code()), (401, "InvalidAuthenticationToken"));
    assert!(missing.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(missing.header("request-id"), missing.body["error"]["innerError"]["request-id"].as_str());
    api.token = "not-a-token".into();
    assert_eq!(api.list(&[]).await.status, 401);

    api.token = token;
    emulator.expire_tokens();
    let expired = api.list(&[]).await;
    assert_eq!(expired.status, 401);
    assert!(expired.message().contains("expired"), "{}", expired.body);

    api.token = api.refresh_token().await;
    assert_eq!(api.list(&[]).await.status, 200);
    tokio::time::advance(Duration::from_secs(601)).await;
    assert_eq!(api.list(&[]).await.status, 401);
    assert_eq!(emulator.token_requests(), 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn invitation_creates_a_pending_guest_with_an_ext_upn() {
    let (emulator, api) = start().await;
    let request = fixtures::load("graph/invitation-post.request.json");
    let created = api.invite(request).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(keys(&created.body), keys(&fixtures::load("graph/invitation-post.response.201.json")));
    assert_eq!(created.body["status"], "PendingAcceptance");
    assert_eq!(created.body["sendInvitationMessage"], false);
    assert_eq!(created.body["invitedUserType"], "Guest");
    let user_id = created.body["invitedUser"]["id"].as_str().unwrap().to_owned();
    assert_ne!(created.body["id"].as_str(), Some(user_id.as_str()));

    let users = emulator.users();
    assert_eq!(users.len(), 1);
    let guest = &users[0];
    assert_eq!(guest.id, user_id);
    assert_eq!(guest.user_type, "Guest");
    assert_eq!(guest.user_principal_name, "admin_fabrikam.com#EXT#@contoso.onmicrosoft.com");
    assert_eq!(guest.mail.as_deref(), Some("admin@fabrikam.com"));
    assert_eq!(guest.other_mails, vec!["admin@fabrikam.com".to_owned()]);
    assert_eq!(guest.creation_type.as_deref(), Some("Invitation"));
    assert_eq!(guest.external_user_state.as_deref(), Some("PendingAcceptance"));
    assert!(guest.account_enabled);
    assert!(!emulator.invitations()[0].message_sent);

    // Graph's default property set has no userType; $select brings it.
    let plain = api.get(&format!("/v1.0/users/{user_id}")).await;
    assert_eq!(plain.status, 200);
    assert!(plain.body.get("userType").is_none());
    assert_eq!(plain.body["userPrincipalName"], guest.user_principal_name);
    let by_upn = api
        .get("/v1.0/users/admin_fabrikam.com%23EXT%23@contoso.onmicrosoft.com?$select=id,userType,creationType")
        .await;
    assert_eq!(by_upn.status, 200, "{}", by_upn.body);
    assert_eq!((by_upn.body["id"].as_str(), by_upn.body["userType"].as_str()), (Some(user_id.as_str()), Some("Guest")));
    assert!(by_upn.body["@odata.context"].as_str().unwrap().ends_with("#users(id,userType,creationType)/$entity"));

    // Re-inviting the address (any case) answers with the same guest; a message is recorded.
    let again = api
        .invite(json!({
            "invitedUserEmailAddress": "Admin@Fabrikam.com", "inviteRedirectUrl": "https://myapp.contoso.com",
            "sendInvitationMessage": true,
        }))
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["invitedUser"]["id"].as_str(), Some(user_id.as_str()));
    assert_eq!(emulator.users().len(), 1);
    let invitations = emulator.invitations();
    assert_eq!((invitations[1].created_user, invitations[1].message_sent), (false, true));
    emulator.shutdown().await;
}

#[tokio::test]
async fn invitation_refuses_what_graph_refuses() {
    let (emulator, api) = start().await;
    let member = emulator.seed_member("employee@contoso.com", "Employee");
    emulator.seed_user(NewUser { account_enabled: false, ..NewUser::guest("blocked@fabrikam.com", "Blocked") });

    let no_redirect = api.invite(json!({ "invitedUserEmailAddress": "a@fabrikam.com" })).await;
    assert_eq!((no_redirect.status, no_redirect.code()), (400, "BadRequest"));
    assert!(no_redirect.message().contains("inviteRedirectUrl"));
    let no_address = api.invite(json!({ "inviteRedirectUrl": "https://myapps.microsoft.com" })).await;
    assert!(no_address.status == 400 && no_address.message().contains("invitedUserEmailAddress"));

    for bad in [
        "first+tag@fabrikam.com",
        ".dot@fabrikam.com",
        "dash-@fabrikam.com",
        "a b@fabrikam.com",
        "no-at-sign",
        "x@y@fabrikam.com",
    ] {
        assert_eq!(api.invite_address(bad).await.status, 400, "{bad}");
    }
    assert_eq!(api.invite_address("o'brien_jr.x-y@fabrikam.com").await.status, 201);

    let misspelt =
        api.invite(json!({ "invitedUserEmail": "a@fabrikam.com", "inviteRedirectUrl": "https://x.example" })).await;
    assert_eq!(misspelt.status, 400);
    assert!(misspelt.message().contains("'invitedUserEmail'"));
    let not_json = reply(
        api.http
            .post(format!("{}/v1.0/invitations", api.base))
            .header("Authorization", format!("Bearer {}", api.token))
            .body("invitedUserEmailAddress=a@fabrikam.com")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((not_json.status, not_json.code()), (400, "BadRequest"));

    let conflict = api.invite_address("EMPLOYEE@contoso.com").await;
    assert_eq!((conflict.status, conflict.code()), (400, "Request_BadRequest"));
    assert!(conflict.message().contains("proxyAddresses"));
    let blocked = api.invite_address("blocked@fabrikam.com").await;
    assert!(blocked.status == 400 && blocked.message().contains("blocked from signing in"));

    let users = emulator.users();
    assert_eq!(users.len(), 3, "only the o'brien guest was added");
    assert!(users.iter().any(|u| u.id == member && u.user_type == "Member"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn users_filter_supports_lookups_by_address() {
    let (emulator, api) = start().await;
    emulator.seed_member("m@contoso.com", "Member");
    let contact_guest = emulator.seed_user(NewUser {
        mail: None,
        other_mails: vec!["contact@fabrikam.com".into()],
        ..NewUser::guest("contact@fabrikam.com", "Contact")
    });
    let obrien =
        api.invite_address("o'brien@fabrikam.com").await.body["invitedUser"]["id"].as_str().unwrap().to_owned();
    let ids = |r: &Reply| r.values().iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();

    let by_mail = api.list(&[("$filter", "mail eq 'O''Brien@FABRIKAM.com'"), ("$select", "id,userType")]).await;
    assert_eq!(by_mail.status, 200, "{}", by_mail.body);
    assert_eq!(ids(&by_mail), vec![obrien.clone()]);
    assert_eq!(by_mail.values()[0], json!({ "id": obrien, "userType": "Guest" }));
    assert!(by_mail.body["@odata.context"].as_str().unwrap().ends_with("/v1.0/$metadata#users(id,userType)"));

    let by_other = api.list(&[("$filter", "otherMails/any(id:id eq 'contact@fabrikam.com')")]).await;
    assert_eq!(ids(&by_other), vec![contact_guest.clone()]);
    assert_eq!(api.list(&[("$filter", "mail eq 'contact@fabrikam.com'")]).await.values().len(), 0);
    let by_upn = api.list(&[("$filter", "userPrincipalName eq 'm@contoso.onmicrosoft.com'")]).await;
    assert_eq!(by_upn.values().len(), 1);
    let either = "mail eq 'contact@fabrikam.com' or otherMails/any(x:x eq 'contact@fabrikam.com') or mail eq 'o''brien@fabrikam.com'";
    assert_eq!(ids(&api.list(&[("$filter", either)]).await), vec![contact_guest, obrien]);
    assert_eq!(api.list(&[("$filter", either), ("$top", "1")]).await.values().len(), 1);

    // The fixture's user-list shape: @odata.context, value[] with the selected properties.
    let listed = api.list(&[("$select", "displayName,mail,mailNickname,userPrincipalName")]).await;
    let fixture = fixtures::load("graph/user-list.filter-startswith.response.json");
    assert_eq!(keys(&listed.values()[0]), keys(&fixture["value"][0]));

    let refusals = [
        (vec![("$select", "id,shoeSize")], "Request_BadRequest"),
        (vec![("$filter", "endsWith(mail,'@fabrikam.com')")], "Request_UnsupportedQuery"),
        (vec![("$filter", "mail ne 'x@y.com'")], "Request_UnsupportedQuery"),
        (vec![("$filter", "officeLocation eq 'x'")], "Request_UnsupportedQuery"),
        (vec![("$filter", "mail eq o'brien@fabrikam.com")], "BadRequest"),
        (vec![("$filter", "mail eq 'a' or")], "BadRequest"),
        (vec![("$filter", "shoeSize eq 'x'")], "Request_BadRequest"),
        (vec![("$filter", "mail eq 'a'"), ("$filter", "mail eq 'b'")], "BadRequest"),
        (vec![("$orderby", "displayName")], "Request_UnsupportedQuery"),
    ];
    for (params, code) in refusals {
        let r = api.list(&params).await;
        assert_eq!((r.status, r.code()), (400, code), "{params:?}: {}", r.body);
    }

    // Advanced queries run with ConsistencyLevel: eventual and $count=true.
    let path = format!("/v1.0/users?{}", form(&[("$filter", "endsWith(mail,'@fabrikam.com')"), ("$count", "true")]));
    let advanced = api.send(Method::GET, &path, None, &[("ConsistencyLevel", "eventual")]).await;
    assert_eq!(advanced.status, 200, "{}", advanced.body);
    assert_eq!(advanced.body["@odata.count"], 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn users_by_id_patch_delete_and_not_found() {
    let (emulator, api) = start().await;
    let guest = emulator.seed_guest("g@fabrikam.com", "Guest");

    let missing = api.get("/v1.0/users/68be84bf-a585-4776-80b3-30aa5207aa22").await;
    let fixture = fixtures::load("graph/graph-error.404.Request_ResourceNotFound.json");
    assert_eq!((missing.status, missing.code()), (404, "Request_ResourceNotFound"));
    assert_eq!(missing.message(), fixture["error"]["message"].as_str().unwrap());
    assert_eq!(keys(&missing.body["error"]), keys(&fixture["error"]));
    assert!(keys(&missing.body["error"]["innerError"]).is_superset(&keys(&fixture["error"]["innerError"])));
    assert_eq!(missing.header("content-type"), Some("application/json"));

    let path = format!("/v1.0/users/{guest}");
    let patched = api.send(Method::PATCH, &path, Some(json!({ "accountEnabled": false })), &[]).await;
    assert_eq!(patched.status, 204);
    assert!(!emulator.user(&guest).unwrap().account_enabled);
    let wrong_type = api.send(Method::PATCH, &path, Some(json!({ "accountEnabled": "no" })), &[]).await;
    assert_eq!((wrong_type.status, wrong_type.code()), (400, "BadRequest"));
    let unknown = api.send(Method::PATCH, &path, Some(json!({ "accountEnable": false })), &[]).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(api.send(Method::PUT, &path, Some(json!({})), &[]).await.status, 405);

    assert_eq!(api.send(Method::DELETE, &path, None, &[]).await.status, 204);
    assert_eq!(api.get(&path).await.status, 404);
    assert_eq!(api.send(Method::DELETE, &path, None, &[]).await.code(), "Request_ResourceNotFound");
    assert_eq!(api.send(Method::PATCH, &path, Some(json!({ "accountEnabled": true })), &[]).await.status, 404);
    assert!(emulator.users().is_empty());
    assert_eq!(emulator.deleted_users().len(), 1);
    assert_eq!(api.list(&[]).await.values().len(), 0);

    let segment = api.get("/v1.0/groupz").await;
    assert_eq!((segment.status, segment.code()), (400, "BadRequest"));
    assert_eq!(segment.message(), "Resource not found for the segment 'groupz'.");
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_apply_in_fifo_order_to_matching_graph_requests() {
    let (emulator, api) = start().await;
    // A request takes the first queued rule that matches it, so the scoped rule is first.
    emulator.inject_for(Some(Method::POST), "/v1.0/invitations", Fault::Forbidden { times: 1 });
    emulator.inject(Fault::Throttle { times: 2, retry_after: "2.128".into() });
    emulator.inject(Fault::Unavailable { times: 1, retry_after: Some("5".into()) });
    emulator.inject(Fault::GatewayTimeout { times: 1 });

    let throttled = api.list(&[]).await;
    assert_eq!((throttled.status, throttled.header("retry-after")), (429, Some("2.128")));
    let fixture = fixtures::load("graph/graph-error.429.json");
    assert_eq!(keys(&throttled.body["error"]), keys(&fixture["error"]));
    assert!(keys(&throttled.body["error"]["innerError"]).is_superset(&keys(&fixture["error"]["innerError"])));
    assert_eq!(throttled.code(), "TooManyRequests");

    // The token endpoint is never faulted.
    api.refresh_token().await;
    let forbidden = api.invite_address("x@fabrikam.com").await;
    assert_eq!((forbidden.status, forbidden.code()), (403, "Authorization_RequestDenied"));

    let second = api.list(&[]).await;
    assert_eq!(second.status, 429);
    let unavailable = api.list(&[]).await;
    assert_eq!((unavailable.status, unavailable.header("retry-after")), (503, Some("5")));
    assert_eq!(api.list(&[]).await.status, 504);
    assert_eq!(emulator.pending_faults(), 0);
    assert_eq!(api.list(&[]).await.status, 200);
    assert_eq!(api.invite_address("x@fabrikam.com").await.status, 201);

    let statuses: Vec<u16> = emulator.journal().iter().map(|e| e.status).collect();
    assert_eq!(statuses, vec![200, 429, 200, 403, 429, 503, 504, 200, 201]);
    let entry = &emulator.journal()[1];
    assert_eq!((entry.method.as_str(), entry.path.as_str()), ("GET", "/v1.0/users"));
    emulator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn latency_holds_and_reset_drops_without_answer() {
    let (emulator, api) = start().await;
    emulator.inject(Fault::Latency { times: 1, delay: Duration::from_secs(30) });
    let before = tokio::time::Instant::now();
    assert_eq!(api.list(&[]).await.status, 200);
    assert!(before.elapsed() >= Duration::from_secs(30));

    emulator.inject(Fault::ResetConnection { times: 1 });
    let dropped = api.try_send(Method::GET, "/v1.0/users", None, &[]).await;
    let failed = match dropped {
        Err(_) => true,
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(failed, "the request must fail without an answer");
    assert_eq!(emulator.journal().last().unwrap().status, 0);
    assert_eq!(api.list(&[]).await.status, 200);
    emulator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn replication_lag_hides_new_users_from_list_queries_only() {
    let (emulator, api) = start().await;
    emulator.seed_member("m@contoso.com", "Member");
    emulator.set_replication_lag(Duration::from_secs(600));
    let id = api.invite_address("late@fabrikam.com").await.body["invitedUser"]["id"].as_str().unwrap().to_owned();
    let query = [("$filter", "mail eq 'late@fabrikam.com'")];

    assert!(api.list(&query).await.values().is_empty());
    assert_eq!(api.list(&[]).await.values().len(), 1, "seeded users are replicated");
    assert_eq!(api.get(&format!("/v1.0/users/{id}")).await.status, 200);
    tokio::time::advance(Duration::from_secs(601)).await;
    assert_eq!(api.list(&query).await.values().len(), 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_expose_state_and_take_faults() {
    let (emulator, api) = start().await;
    emulator.seed_member("m@contoso.com", "Member");
    let admin = |path: &str| format!("{}/_emulator/{path}", emulator.base_url());
    let fault =
        json!({ "kind": "throttle", "times": 1, "retry_after": "1", "method": "get", "path_prefix": "/v1.0/users" });
    let posted = api
        .http
        .post(admin("faults"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&fault).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 204);
    assert_eq!(api.invite_address("i@fabrikam.com").await.status, 201, "POST is out of the fault's scope");
    assert_eq!(api.list(&[]).await.status, 429);

    let users = reply(api.http.get(admin("users")).send().await.unwrap()).await;
    let users = users.body.as_array().unwrap().clone();
    assert_eq!(users.len(), 2);
    assert_eq!(users[1]["userPrincipalName"], "i_fabrikam.com#EXT#@contoso.onmicrosoft.com");
    let journal = reply(api.http.get(admin("journal")).send().await.unwrap()).await;
    assert_eq!(journal.body.as_array().unwrap().len(), 3, "token, invitation, list: admin calls are not journaled");
    let bad = api.http.post(admin("faults")).body("{\"kind\":\"meteor\"}").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_freshly_invited_user_is_not_found_by_id_for_its_first_lagging_reads() {
    let (emulator, api) = start().await;
    emulator.set_by_id_lag(2);
    let id = api.invite_address("fresh@fabrikam.com").await.body["invitedUser"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1.0/users/{id}");
    let first = api.get(&path).await;
    assert_eq!((first.status, first.code()), (404, "Request_ResourceNotFound"));
    assert_eq!(api.get(&path).await.status, 404);
    assert_eq!(api.get(&path).await.status, 200, "the replica caught up");
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_write_quota_answers_429_with_retry_after_past_its_bucket() {
    let (emulator, api) = start().await;
    // One write a minute, two at once: the third write in a row is throttled.
    emulator.set_write_quota(1.0 / 60.0, 2);
    assert_eq!(api.list(&[]).await.status, 200, "reads are not counted");
    assert_eq!(api.invite_address("a@fabrikam.com").await.status, 201);
    assert_eq!(api.invite_address("b@fabrikam.com").await.status, 201);
    let throttled = api.invite_address("c@fabrikam.com").await;
    assert_eq!((throttled.status, throttled.code()), (429, "TooManyRequests"));
    let wait: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let fixture = fixtures::load("graph/graph-error.429.json");
    assert_eq!(keys(&throttled.body["error"]), keys(&fixture["error"]));
    assert_eq!(emulator.write_counts(), crate::graph_emulator::WriteCounts { accepted: 2, throttled: 1 });
    assert_eq!(emulator.users().len(), 2, "a throttled invitation creates nobody");
    emulator.shutdown().await;
}

#[tokio::test]
async fn listing_pages_through_next_links_with_top_at_most_999() {
    let (emulator, api) = start().await;
    for i in 0..2_100 {
        emulator.seed_guest(&format!("g{i:04}@fabrikam.com"), "Guest");
    }
    emulator.seed_member("m@contoso.com", "Member");
    // As graph-guest's reconcile asks: guests only, few properties, the largest page.
    let mut reply =
        api.list(&[("$filter", "userType eq 'Guest'"), ("$select", "id,userType,mail"), ("$top", "999")]).await;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        assert_eq!(reply.status, 200, "{}", reply.body);
        pages += 1;
        assert!(reply.values().len() <= 999);
        for u in reply.values() {
            assert_eq!(u["userType"], "Guest");
            assert_eq!(keys(u), ["id", "mail", "userType"].into_iter().map(String::from).collect());
            seen.push(u["id"].as_str().unwrap().to_owned());
        }
        match reply.body["@odata.nextLink"].as_str() {
            Some(next) => {
                let path = next.strip_prefix(&api.base).expect("the next link is on the same origin");
                assert!(path.contains("%24skiptoken=") || path.contains("$skiptoken="), "{next}");
                reply = api.get(path).await;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 2_100);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2_100, "no guest listed twice");

    // What Graph refuses: a page over 999, a page token it did not issue.
    let too_big = api.list(&[("$filter", "userType eq 'Guest'"), ("$top", "1000")]).await;
    assert_eq!((too_big.status, too_big.code()), (400, "Request_BadRequest"));
    let forged = api.list(&[("$skiptoken", "not-a-token")]).await;
    assert_eq!((forged.status, forged.code()), (400, "Request_BadRequest"));
    // A small listing has no next link.
    let small = api.list(&[("$filter", "userType eq 'Member'")]).await;
    assert!(small.body.get("@odata.nextLink").is_none());
}

/// A PS256 client assertion for `aud`, signed with `key`, naming `cert_der` by `x5t#S256`.
fn client_assertion(key: &aws_lc_rs::rsa::KeyPair, cert_der: &[u8], aud: &str, client_id: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let x5t = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": x5t});
    let claims = json!({"aud": aud, "iss": client_id, "sub": client_id, "jti": crate::ids::uuid_v4(), "nbf": now, "iat": now, "exp": now + 300});
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PSS_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn a_client_assertion_with_a_registered_certificate_gets_a_token_and_each_flaw_its_aadsts_code() {
    let (emulator, api) = start().await;
    let cfg = TenantConfig::default();
    let rcgen_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["graph-app".into()]).unwrap().self_signed(&rcgen_key).unwrap();
    let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(&rcgen_key.serialize_der()).unwrap();
    emulator.register_certificate(cert.der()).unwrap();
    let token_url = format!("{}/{}/oauth2/v2.0/token", api.base, cfg.tenant_id);
    let request = |assertion: String, assertion_type: &'static str| {
        vec![
            ("client_id".to_string(), cfg.client_id.clone()),
            ("scope".into(), "https://graph.microsoft.com/.default".into()),
            ("client_assertion_type".into(), assertion_type.to_string()),
            ("client_assertion".into(), assertion),
            ("grant_type".into(), "client_credentials".into()),
        ]
    };
    let send = |pairs: Vec<(String, String)>| {
        let api = &api;
        let tenant = cfg.tenant_id.clone();
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            api.token_request(&tenant, &pairs).await
        }
    };
    let bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

    let ok = send(request(client_assertion(&key, cert.der(), &token_url, &cfg.client_id), bearer)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let token = ok.body["access_token"].as_str().unwrap().to_owned();
    let users = api.http.get(format!("{}/v1.0/users", api.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(users.status().as_u16(), 200, "the token from an assertion works on Graph");

    let error_keys = keys(&fixtures::load("graph/token.error.400.json"));
    let wrong_aud =
        client_assertion(&key, cert.der(), "https://login.microsoftonline.com/x/oauth2/v2.0/token", &cfg.client_id);
    let wrong_client = client_assertion(&key, cert.der(), &token_url, "22222222-2222-2222-2222-222222222222");
    let mut with_secret = request(client_assertion(&key, cert.der(), &token_url, &cfg.client_id), bearer);
    with_secret.push(("client_secret".into(), cfg.client_secret.clone()));
    let cases: Vec<(Reply, u16, &str, u64)> = vec![
        (send(request(wrong_aud, bearer)).await, 401, "invalid_client", 700023),
        (send(request(wrong_client, bearer)).await, 401, "invalid_client", 700021),
        (send(request("a.b.c".into(), bearer)).await, 401, "invalid_client", 50027),
        (
            send(request(client_assertion(&key, cert.der(), &token_url, &cfg.client_id), "jwt")).await,
            400,
            "invalid_request",
            900144,
        ),
        (send(with_secret).await, 400, "invalid_request", 900144),
    ];
    for (r, status, error, code) in &cases {
        assert_eq!((r.status, r.body["error"].as_str()), (*status, Some(*error)), "{}", r.body);
        assert_eq!(keys(&r.body), error_keys);
        assert_eq!(r.body["error_codes"], json!([code]), "{}", r.body);
    }
    // The test knobs: Entra's clock ahead (expired), Entra known by another login URL.
    emulator.skew_assertion_clock(3600);
    let r = send(request(client_assertion(&key, cert.der(), &token_url, &cfg.client_id), bearer)).await;
    assert_eq!((r.status, r.body["error_codes"].clone()), (401, json!([700024])), "{}", r.body);
    emulator.skew_assertion_clock(0);
    emulator.set_audience_login_url("https://login.microsoftonline.com/");
    let r = send(request(client_assertion(&key, cert.der(), &token_url, &cfg.client_id), bearer)).await;
    assert_eq!(r.body["error_codes"], json!([700023]), "{}", r.body);
    let proxied = format!("https://login.microsoftonline.com/{}/oauth2/v2.0/token", cfg.tenant_id);
    let r = send(request(client_assertion(&key, cert.der(), &proxied, &cfg.client_id), bearer)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(emulator.register_certificate(b"not a certificate").is_err());
    emulator.shutdown().await;
}
