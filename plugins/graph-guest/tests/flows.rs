//! graph-guest's flows against a scripted fake host: each test lists the exact requests it
//! expects, in order, with canned answers (from `tests/fixtures/graph` where one fits), and
//! checks the outcome, the plugin state and that no secret leaked into logs or messages.
// The fake host's helpers are test code: a panic there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use graph_guest::{
    handle, Algorithm, Clock, Config, Event, Failure, Http, HttpError, KeyInfo, Keys, Kv, Level, Log, Method, Outcome,
    Party, Request, Response, Secrets, SignError,
};

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/", $path))
    };
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
const CLIENT_SECRET: &str = "Qx8Q~s3cr3t+Value/With=Specials";
const OKTA_TOKEN: &str = "00Okta-api-token-value-xyz";
const GRAPH: &str = "https://graph.microsoft.com";
const NOW: u64 = 1_750_000_000_000;
/// `access_token` in fixtures/graph/token.success.200.json.
const FIXTURE_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik1uQ19WWmNBVGZNNXBP...";
/// `invitedUser.id` in fixtures/graph/invitation-post.response.201.json.
const INVITED_ID: &str = "cbb896f9-8306-49d0-b56b-b8e39cd28825";
const GUEST_ID: &str = "4c5a1b52-62f4-4b6d-9d55-0fd3d5f0c1aa";
const MEMBER_ID: &str = "9d1e0c77-1f1e-4a8e-8d8b-5b6a1e2f3c4d";
const OKTA_USER: &str = "00uptu0jj9V91p5QM0h7";

struct Step {
    method: Method,
    url: String,
    reply: Result<Response, HttpError>,
}

/// A host whose HTTP answers come from a script and whose other imports are in-memory.
struct FakeHost {
    script: VecDeque<Step>,
    sent: Vec<Request>,
    kv: BTreeMap<String, String>,
    kv_broken: bool,
    secrets: HashMap<String, String>,
    config: HashMap<String, String>,
    logs: Vec<(Level, String)>,
    now_ms: u64,
    /// Granted keys by name; signing answers `signed-by-host` after recording the request.
    keys: HashMap<String, KeyInfo>,
    signed: Vec<(String, Algorithm, Vec<u8>)>,
}

impl FakeHost {
    /// The manifest's config defaults and the three app-registration secrets.
    fn new() -> Self {
        let config = [
            ("graph_url", GRAPH),
            ("login_url", "https://login.microsoftonline.com"),
            ("graph_scope", "https://graph.microsoft.com/.default"),
            ("invite_redirect_url", "https://myapps.microsoft.com"),
            ("send_invitation_message", "false"),
            ("invited_user_type", "Guest"),
            ("on_remove", "delete"),
        ];
        let secrets = [("tenant_id", TENANT), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
        FakeHost {
            script: VecDeque::new(),
            sent: Vec::new(),
            kv: BTreeMap::new(),
            kv_broken: false,
            secrets: secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            logs: Vec::new(),
            now_ms: NOW,
            keys: HashMap::new(),
            signed: Vec::new(),
        }
    }

    fn expect(&mut self, method: Method, url: impl Into<String>, reply: Result<Response, HttpError>) -> &mut Self {
        self.script.push_back(Step { method, url: url.into(), reply });
        self
    }

    fn expect_token(&mut self) -> &mut Self {
        self.expect(Method::Post, token_url(), Ok(json(200, fixture!("graph/token.success.200.json"))))
    }

    /// Puts a live token in the cache the way the plugin itself would (a first event).
    fn with_cached_token(&mut self) -> &mut Self {
        let mut seed = FakeHost::new();
        seed.expect_token().expect(
            Method::Get,
            mail_url("seed@example.com"),
            Ok(json(200, &users(&[(GUEST_ID, "Guest", "seed@example.com")]))),
        );
        summary(run(&mut seed, &membership(graph_guest::MEMBERSHIP_ADD, "00useed", "seed@example.com")));
        self.kv.insert("token".into(), seed.kv["token"].clone());
        self
    }

    fn requests(&self, method: Method) -> Vec<&Request> {
        self.sent.iter().filter(|r| r.method == method).collect()
    }

    fn writes(&self) -> usize {
        self.sent
            .iter()
            .filter(|r| matches!(r.method, Method::Delete | Method::Patch) || r.url.ends_with("/invitations"))
            .count()
    }
}

impl Http for FakeHost {
    fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let Some(step) = self.script.pop_front() else {
            panic!("unexpected request {:?} {}", request.method, request.url);
        };
        assert_eq!((request.method, request.url.as_str()), (step.method, step.url.as_str()), "request out of script");
        self.sent.push(request);
        step.reply
    }
}

impl Kv for FakeHost {
    fn scan(&mut self, prefix: &str, after: Option<&str>) -> Result<Vec<(String, String)>, String> {
        let after = after.unwrap_or("");
        Ok(self
            .kv
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.as_str() > after)
            .take(1000)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        if self.kv_broken {
            return Err("database is locked".into());
        }
        Ok(self.kv.get(key).cloned())
    }
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if self.kv_broken {
            return Err("database is locked".into());
        }
        self.kv.insert(key.into(), value.into());
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<(), String> {
        if self.kv_broken {
            return Err("database is locked".into());
        }
        self.kv.remove(key);
        Ok(())
    }
}

impl Secrets for FakeHost {
    fn get(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }
}

impl Keys for FakeHost {
    fn key_info(&self, name: &str) -> Option<KeyInfo> {
        self.keys.get(name).cloned()
    }
    fn sign(&mut self, name: &str, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let info = self.keys.get(name).ok_or_else(|| SignError::Denied(format!("key {name:?} is not granted")))?;
        if !info.algorithms.contains(&algorithm) {
            return Err(SignError::InvalidRequest("wrong algorithm".into()));
        }
        self.signed.push((name.to_string(), algorithm, message.to_vec()));
        Ok(b"signed-by-host".to_vec())
    }
    fn jwt_id(&self) -> String {
        "6f1c6c3e-8f4b-4d5e-9a1b-2c3d4e5f6a7b".into()
    }
}

impl Config for FakeHost {
    fn get(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
}

impl Log for FakeHost {
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

impl Clock for FakeHost {
    fn now_unix_ms(&self) -> u64 {
        self.now_ms
    }
}

/// Runs `handle`, then checks the script was used up and no secret or token escaped.
fn run(host: &mut FakeHost, event: &Event) -> Result<Outcome, Failure> {
    let result = handle(host, event);
    assert!(
        host.script.is_empty(),
        "requests expected but not sent: {:?}",
        host.script.iter().map(|s| &s.url).collect::<Vec<_>>()
    );
    let text = match &result {
        Ok(o) => o.summary.clone(),
        Err(f) => f.message().to_string(),
    };
    let mut written: Vec<&str> = host.logs.iter().map(|(_, m)| m.as_str()).collect();
    written.push(&text);
    for line in written {
        for secret in [TENANT, CLIENT_ID, CLIENT_SECRET, OKTA_TOKEN, FIXTURE_TOKEN, "fresh-token-2"] {
            assert!(!line.contains(secret), "secret leaked into {line:?}");
        }
    }
    result
}

fn token_url() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
}

/// Only for plain addresses: `@` is the one character they have outside the unreserved set.
fn enc(addr: &str) -> String {
    addr.replace('@', "%40")
}

const SELECT: &str = "$select=id,userType,mail,otherMails,accountEnabled,userPrincipalName";

fn mail_url(addr: &str) -> String {
    format!("{GRAPH}/v1.0/users?$filter=mail%20eq%20%27{}%27&{SELECT}", enc(addr))
}

fn other_mails_url(addr: &str) -> String {
    format!("{GRAPH}/v1.0/users?$filter=otherMails%2Fany%28x%3Ax%20eq%20%27{}%27%29&{SELECT}", enc(addr))
}

fn user_url(id: &str) -> String {
    format!("{GRAPH}/v1.0/users/{id}?$select=id,userType,mail,userPrincipalName")
}

fn json(status: u16, body: &str) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn status(status: u16) -> Response {
    Response { status, headers: vec![], body: vec![] }
}

/// A `GET /users` list answer; each user is (id, userType, mail).
fn users(list: &[(&str, &str, &str)]) -> String {
    let value: Vec<serde_json::Value> = list
        .iter()
        .map(|(id, kind, mail)| {
            serde_json::json!({
                "id": id, "userType": kind, "mail": mail, "otherMails": [],
                "accountEnabled": true,
                "userPrincipalName": format!("{}#EXT#@contoso.onmicrosoft.com", mail.replace('@', "_")),
            })
        })
        .collect();
    serde_json::json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": value })
        .to_string()
}

fn user(id: &str, kind: &str, mail: &str) -> String {
    serde_json::json!({
        "id": id, "userType": kind, "mail": mail,
        "userPrincipalName": format!("{}#EXT#@contoso.onmicrosoft.com", mail.replace('@', "_")),
    })
    .to_string()
}

/// A membership event with the group target *first*: targets are picked by kind.
fn membership(event_type: &str, user_id: &str, login: &str) -> Event {
    Event {
        id: "d14117f9-5d8c-11ea-a9cb-1f2fbd3b03f7".into(),
        event_type: event_type.into(),
        published: "2020-03-03T20:23:17.573Z".into(),
        actor: None,
        targets: vec![
            Party {
                id: "00g8mo0l5wuTxmoIC0h7".into(),
                kind: "UserGroup".into(),
                alternate_id: Some("unknown".into()),
                display_name: Some("O365Guest".into()),
            },
            Party {
                id: user_id.into(),
                kind: "User".into(),
                alternate_id: Some(login.into()),
                display_name: Some("Jane Doe".into()),
            },
        ],
        raw: "{}".into(),
    }
}

/// An event built the way the host builds it, from a real LogEvent.
fn from_logevent(raw: &str) -> Event {
    let v: serde_json::Value = serde_json::from_str(raw).unwrap();
    let party = |p: &serde_json::Value| Party {
        id: p["id"].as_str().unwrap().into(),
        kind: p["type"].as_str().unwrap().into(),
        alternate_id: p["alternateId"].as_str().map(Into::into),
        display_name: p["displayName"].as_str().map(Into::into),
    };
    Event {
        id: v["uuid"].as_str().unwrap().into(),
        event_type: v["eventType"].as_str().unwrap().into(),
        published: v["published"].as_str().unwrap().into(),
        actor: Some(party(&v["actor"])),
        targets: v["target"].as_array().unwrap().iter().map(party).collect(),
        raw: raw.into(),
    }
}

fn add_event() -> Event {
    membership(graph_guest::MEMBERSHIP_ADD, OKTA_USER, "jane.doe@example.com")
}

fn remove_event() -> Event {
    membership(graph_guest::MEMBERSHIP_REMOVE, OKTA_USER, "jane.doe@example.com")
}

fn deactivate_event() -> Event {
    membership(graph_guest::USER_DEACTIVATE, OKTA_USER, "jane.doe@example.com")
}

fn permanent(result: Result<Outcome, Failure>) -> String {
    match result {
        Err(Failure::Permanent(m)) => m,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

fn summary(result: Result<Outcome, Failure>) -> String {
    match result {
        Ok(o) => o.summary,
        Err(f) => panic!("expected success, got {f}"),
    }
}

// ---- add ----

#[test]
fn add_invites_a_new_guest_and_records_it() {
    let mut host = FakeHost::new();
    host.expect_token()
        .expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(Method::Get, other_mails_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(
            Method::Post,
            format!("{GRAPH}/v1.0/invitations"),
            Ok(json(201, fixture!("graph/invitation-post.response.201.json"))),
        );
    let s = summary(run(&mut host, &add_event()));
    assert!(s.contains("invited jane.doe@example.com as Guest") && s.contains(INVITED_ID), "{s}");
    assert_eq!(host.kv.get(&format!("user:{OKTA_USER}")), Some(&format!("{INVITED_ID};{NOW}:0")));

    let token = &host.sent[0];
    assert_eq!(token.header("content-type"), Some("application/x-www-form-urlencoded"));
    let form = String::from_utf8(token.body.clone().unwrap()).unwrap();
    assert_eq!(
        form,
        format!(
            "client_id={CLIENT_ID}&client_secret=Qx8Q~s3cr3t%2BValue%2FWith%3DSpecials\
             &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&grant_type=client_credentials"
        )
    );
    for graph_call in &host.sent[1..] {
        assert_eq!(graph_call.header("authorization"), Some(format!("Bearer {FIXTURE_TOKEN}").as_str()));
    }
    let invite = host.requests(Method::Post)[1];
    assert_eq!(invite.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(invite.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "invitedUserEmailAddress": "jane.doe@example.com",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "sendInvitationMessage": false,
            "invitedUserType": "Guest",
            "invitedUserDisplayName": "Jane Doe",
        })
    );
}

#[test]
fn add_adopts_an_existing_guest_without_inviting() {
    let mut host = FakeHost::new();
    host.expect_token().expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
    );
    let s = summary(run(&mut host, &add_event()));
    assert!(s.starts_with("already present") && s.contains(GUEST_ID), "{s}");
    assert_eq!(host.kv.get(&format!("user:{OKTA_USER}")).map(String::as_str), Some(GUEST_ID));
    assert_eq!(host.writes(), 0);
}

#[test]
fn add_finds_a_guest_by_other_mails() {
    let mut host = FakeHost::new();
    let listed = serde_json::json!({"value": [{"id": GUEST_ID, "userType": "Guest", "mail": null,
        "otherMails": ["Jane.Doe@Example.com"], "userPrincipalName": "jane_x#EXT#@contoso.onmicrosoft.com"}]});
    host.expect_token().expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &users(&[])))).expect(
        Method::Get,
        other_mails_url("jane.doe@example.com"),
        Ok(json(200, &listed.to_string())),
    );
    summary(run(&mut host, &add_event()));
    assert_eq!(host.kv.get(&format!("user:{OKTA_USER}")).map(String::as_str), Some(GUEST_ID));
    assert_eq!(host.writes(), 0);
}

#[test]
fn add_leaves_an_existing_member_alone_and_unrecorded() {
    let mut host = FakeHost::new();
    host.expect_token().expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(MEMBER_ID, "Member", "jane.doe@example.com")]))),
    );
    let s = summary(run(&mut host, &add_event()));
    assert!(s.contains("already present") && s.contains("Member") && s.contains(MEMBER_ID), "{s}");
    assert!(!host.kv.contains_key(&format!("user:{OKTA_USER}")));
    assert_eq!(host.writes(), 0);
}

#[test]
fn add_ignores_listed_accounts_that_do_not_carry_the_address() {
    // A Graph stand-in that ignored $filter would list unrelated users: none may be adopted.
    let mut host = FakeHost::new();
    let unrelated = users(&[(GUEST_ID, "Guest", "someone.else@example.com")]);
    host.expect_token()
        .expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &unrelated)))
        .expect(Method::Get, other_mails_url("jane.doe@example.com"), Ok(json(200, &unrelated)))
        .expect(
            Method::Post,
            format!("{GRAPH}/v1.0/invitations"),
            Ok(json(201, fixture!("graph/invitation-post.response.201.json"))),
        );
    summary(run(&mut host, &add_event()));
    assert_eq!(host.kv.get(&format!("user:{OKTA_USER}")), Some(&format!("{INVITED_ID};{NOW}:0")));
}

#[test]
fn add_escapes_quotes_and_plus_in_the_filter() {
    let mut host = FakeHost::new();
    host.expect_token()
        .expect(
            Method::Get,
            format!("{GRAPH}/v1.0/users?$filter=mail%20eq%20%27o%27%27brien%2Btag%40example.com%27&{SELECT}"),
            Ok(json(200, &users(&[]))),
        )
        .expect(
            Method::Get,
            format!("{GRAPH}/v1.0/users?$filter=otherMails%2Fany%28x%3Ax%20eq%20%27o%27%27brien%2Btag%40example.com%27%29&{SELECT}"),
            Ok(json(200, &users(&[]))),
        )
        .expect(Method::Post, format!("{GRAPH}/v1.0/invitations"), Ok(json(201, fixture!("graph/invitation-post.response.201.json"))));
    summary(run(&mut host, &membership(graph_guest::MEMBERSHIP_ADD, OKTA_USER, "o'brien+tag@example.com")));
}

#[test]
fn add_sends_the_configured_invitation_options() {
    let mut host = FakeHost::new();
    host.config.insert("send_invitation_message".into(), "true".into());
    host.config.insert("invite_redirect_url".into(), "https://portal.example.com/?tenant=x".into());
    host.expect_token()
        .expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(Method::Get, other_mails_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(
            Method::Post,
            format!("{GRAPH}/v1.0/invitations"),
            Ok(json(201, fixture!("graph/invitation-post.response.201.json"))),
        );
    summary(run(&mut host, &add_event()));
    let body: serde_json::Value =
        serde_json::from_slice(host.requests(Method::Post)[1].body.as_deref().unwrap()).unwrap();
    assert_eq!(body["sendInvitationMessage"], true);
    assert_eq!(body["inviteRedirectUrl"], "https://portal.example.com/?tenant=x");
}

#[test]
fn add_reads_profile_email_from_okta_when_okta_url_is_set() {
    let mut host = FakeHost::new();
    host.config.insert("okta_url".into(), "https://acme.okta.com/".into());
    host.secrets.insert("okta_api_token".into(), OKTA_TOKEN.into());
    let okta_user = serde_json::json!({"id": OKTA_USER, "profile": {"login": "jdoe", "email": "jane.doe@example.com"}});
    host.expect(
        Method::Get,
        format!("https://acme.okta.com/api/v1/users/{OKTA_USER}"),
        Ok(json(200, &okta_user.to_string())),
    )
    .expect_token()
    .expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
    );
    summary(run(&mut host, &membership(graph_guest::MEMBERSHIP_ADD, OKTA_USER, "jdoe")));
    let okta = &host.sent[0];
    assert_eq!(okta.header("authorization"), Some(format!("SSWS {OKTA_TOKEN}").as_str()));
    assert_eq!(okta.header("accept"), Some("application/json"));
}

#[test]
fn okta_lookup_failures_are_classified() {
    let okta_host = || {
        let mut host = FakeHost::new();
        host.config.insert("okta_url".into(), "https://acme.okta.com".into());
        host.secrets.insert("okta_api_token".into(), OKTA_TOKEN.into());
        host
    };
    let url = format!("https://acme.okta.com/api/v1/users/{OKTA_USER}");

    let mut host = okta_host();
    host.expect(Method::Get, url.clone(), Ok(json(404, r#"{"errorCode":"E0000007"}"#)));
    assert!(permanent(run(&mut host, &add_event())).contains("Okta has no user"));

    let mut host = okta_host();
    let mut throttled = status(429);
    throttled.headers.push(("x-rate-limit-reset".into(), ((NOW / 1000) + 30).to_string()));
    host.expect(Method::Get, url.clone(), Ok(throttled));
    assert!(matches!(run(&mut host, &add_event()), Err(Failure::Retryable { retry_after_ms: Some(30_000), .. })));

    let mut host = okta_host();
    host.expect(Method::Get, url, Ok(status(502)));
    assert!(matches!(run(&mut host, &add_event()), Err(Failure::Retryable { .. })));

    let mut host = okta_host();
    host.secrets.remove("okta_api_token");
    assert!(permanent(run(&mut host, &add_event())).contains("okta_api_token"));
    assert!(host.sent.is_empty());
}

#[test]
fn a_login_that_is_not_an_address_is_permanent_and_suggests_okta_url() {
    let mut host = FakeHost::new();
    let m = permanent(run(&mut host, &membership(graph_guest::MEMBERSHIP_ADD, OKTA_USER, "jdoe")));
    assert!(m.contains("okta_url"), "{m}");
    assert!(host.sent.is_empty());
}

// ---- remove ----

#[test]
fn remove_deletes_the_mapped_guest_and_drops_the_mapping() {
    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
    host.expect_token()
        .expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "jane.doe@example.com"))))
        .expect(Method::Delete, format!("{GRAPH}/v1.0/users/{GUEST_ID}"), Ok(status(204)));
    let s = summary(run(&mut host, &remove_event()));
    assert!(s.starts_with("deleted guest") && s.contains(GUEST_ID), "{s}");
    assert!(!host.kv.contains_key(&format!("user:{OKTA_USER}")));
}

#[test]
fn remove_from_a_real_okta_logevent_finds_the_guest_by_mail() {
    let event = from_logevent(fixture!("okta/demisto-content_logevent_group.user_membership.remove.json"));
    let mut host = FakeHost::new();
    host.expect_token()
        .expect(Method::Get, mail_url("test@this.com"), Ok(json(200, &users(&[(GUEST_ID, "Guest", "test@this.com")]))))
        .expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "test@this.com"))))
        .expect(Method::Delete, format!("{GRAPH}/v1.0/users/{GUEST_ID}"), Ok(status(204)));
    let s = summary(run(&mut host, &event));
    assert!(s.contains("deleted guest") && s.contains("00uptu0jj9V91p5QM0h7"), "{s}");
}

#[test]
fn remove_refuses_a_member_found_by_mail_and_changes_nothing() {
    let mut host = FakeHost::new();
    host.expect_token()
        .expect(
            Method::Get,
            mail_url("jane.doe@example.com"),
            Ok(json(200, &users(&[(MEMBER_ID, "Member", "jane.doe@example.com")]))),
        )
        .expect(Method::Get, user_url(MEMBER_ID), Ok(json(200, &user(MEMBER_ID, "Member", "jane.doe@example.com"))));
    let m = permanent(run(&mut host, &remove_event()));
    assert!(
        m.contains(MEMBER_ID) && m.contains("jane.doe") && m.contains("not Guest") && m.contains("nothing was changed"),
        "{m}"
    );
    assert_eq!(host.writes(), 0);
}

#[test]
fn remove_refuses_a_mapped_account_that_is_now_a_member() {
    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), MEMBER_ID.into());
    host.expect_token().expect(
        Method::Get,
        user_url(MEMBER_ID),
        Ok(json(200, &user(MEMBER_ID, "Member", "jane.doe@example.com"))),
    );
    let m = permanent(run(&mut host, &remove_event()));
    assert!(m.contains("nothing was changed"), "{m}");
    assert_eq!(host.writes(), 0);
}

#[test]
fn remove_refuses_an_account_without_a_user_type() {
    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
    host.expect_token().expect(
        Method::Get,
        user_url(GUEST_ID),
        Ok(json(200, &serde_json::json!({"id": GUEST_ID}).to_string())),
    );
    assert!(permanent(run(&mut host, &remove_event())).contains("nothing was changed"));
    assert_eq!(host.writes(), 0);
}

#[test]
fn remove_refuses_when_graph_answers_for_another_account() {
    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
    host.expect_token().expect(
        Method::Get,
        user_url(GUEST_ID),
        Ok(json(200, &user(MEMBER_ID, "Guest", "x@example.com"))),
    );
    assert!(permanent(run(&mut host, &remove_event())).contains("nothing was changed"));
    assert_eq!(host.writes(), 0);
}

#[test]
fn remove_refuses_a_mapping_that_is_not_an_object_id() {
    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), "../me".into());
    assert!(permanent(run(&mut host, &remove_event())).contains("nothing was changed"));
    assert!(host.sent.is_empty());
}

#[test]
fn remove_refuses_to_pick_among_several_accounts() {
    let mut host = FakeHost::new();
    host.expect_token().expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(
            200,
            &users(&[(GUEST_ID, "Guest", "jane.doe@example.com"), (MEMBER_ID, "Member", "jane.doe@example.com")]),
        )),
    );
    assert!(permanent(run(&mut host, &remove_event())).contains("nothing was changed"));
    assert_eq!(host.writes(), 0);
}

#[test]
fn remove_in_disable_mode_patches_account_enabled() {
    let mut host = FakeHost::new();
    host.config.insert("on_remove".into(), "disable".into());
    host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
    host.expect_token()
        .expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "jane.doe@example.com"))))
        .expect(Method::Patch, format!("{GRAPH}/v1.0/users/{GUEST_ID}"), Ok(status(204)));
    let s = summary(run(&mut host, &remove_event()));
    assert!(s.starts_with("disabled guest"), "{s}");
    let patch = host.requests(Method::Patch)[0];
    assert_eq!(patch.body.as_deref(), Some(&br#"{"accountEnabled":false}"#[..]));
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert!(host.requests(Method::Delete).is_empty());
}

#[test]
fn remove_treats_404_as_already_gone() {
    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
    host.expect_token().expect(
        Method::Get,
        user_url(GUEST_ID),
        Ok(json(404, fixture!("graph/graph-error.404.Request_ResourceNotFound.json"))),
    );
    assert!(summary(run(&mut host, &remove_event())).contains("already gone"));
    assert!(!host.kv.contains_key(&format!("user:{OKTA_USER}")));
    assert_eq!(host.writes(), 0);

    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
    host.expect_token()
        .expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "jane.doe@example.com"))))
        .expect(
            Method::Delete,
            format!("{GRAPH}/v1.0/users/{GUEST_ID}"),
            Ok(json(404, fixture!("graph/graph-error.404.Request_ResourceNotFound.json"))),
        );
    assert!(summary(run(&mut host, &remove_event())).contains("already gone"));
    assert!(!host.kv.contains_key(&format!("user:{OKTA_USER}")));
}

#[test]
fn remove_with_no_account_does_nothing() {
    let mut host = FakeHost::new();
    host.expect_token().expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &users(&[])))).expect(
        Method::Get,
        other_mails_url("jane.doe@example.com"),
        Ok(json(200, &users(&[]))),
    );
    assert_eq!(summary(run(&mut host, &remove_event())), "no guest for jane.doe@example.com; nothing to do");
    assert_eq!(host.writes(), 0);
}

// ---- offboarding ----

#[test]
fn deactivate_of_an_unmapped_user_touches_nothing() {
    // The same-mail guest exists in Graph, but offboarding never acts on a mail match.
    let event = from_logevent(fixture!("okta/okta-docs_logevent_user.lifecycle.deactivate.json"));
    let mut host = FakeHost::new();
    let s = summary(run(&mut host, &event));
    assert!(s.contains("nothing changed") && s.contains("00u3m90rxKjGQ0G6L1d6"), "{s}");
    assert!(host.sent.is_empty());
}

#[test]
fn deactivate_and_delete_remove_the_mapped_guest() {
    for event_type in [graph_guest::USER_DEACTIVATE, graph_guest::USER_DELETE_INITIATED] {
        let mut host = FakeHost::new();
        host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
        host.expect_token()
            .expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "jane.doe@example.com"))))
            .expect(Method::Delete, format!("{GRAPH}/v1.0/users/{GUEST_ID}"), Ok(status(204)));
        summary(run(&mut host, &membership(event_type, OKTA_USER, "jane.doe@example.com")));
        assert!(!host.kv.contains_key(&format!("user:{OKTA_USER}")));
    }
}

#[test]
fn other_event_types_are_ignored_without_reading_settings() {
    let raw = fixture!("okta/okta-docs_event-hook-delivery_user.session.start_2023.json");
    let v: serde_json::Value = serde_json::from_str(raw).unwrap();
    let event = from_logevent(&v["data"]["events"][0].to_string());
    let mut host = FakeHost::new();
    host.secrets.clear();
    assert_eq!(summary(run(&mut host, &event)), "ignored user.session.start");
    assert!(host.sent.is_empty());
}

// ---- Graph errors ----

#[test]
fn throttling_is_retryable_after_graphs_retry_after() {
    let mut host = FakeHost::new();
    let mut throttled = json(429, fixture!("graph/graph-error.429.json"));
    throttled.headers.push(("retry-after".into(), "2.128".into()));
    host.expect_token().expect(Method::Get, mail_url("jane.doe@example.com"), Ok(throttled));
    match run(&mut host, &add_event()) {
        Err(Failure::Retryable { message, retry_after_ms }) => {
            assert_eq!(retry_after_ms, Some(2128));
            assert!(message.contains("TooManyRequests"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn outages_and_network_errors_are_retryable() {
    for reply in [
        Ok(status(503)),
        Ok(status(504)),
        Ok(status(500)),
        Err(HttpError::Timeout("no answer in 10 s".into())),
        Err(HttpError::Connect("connection refused".into())),
    ] {
        let mut host = FakeHost::new();
        host.expect_token().expect(Method::Get, mail_url("jane.doe@example.com"), reply);
        assert!(matches!(run(&mut host, &add_event()), Err(Failure::Retryable { retry_after_ms: None, .. })));
    }
}

#[test]
fn forbidden_names_the_missing_permission() {
    let forbidden = r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation."}}"#;
    let mut host = FakeHost::new();
    host.expect_token()
        .expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(Method::Get, other_mails_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(Method::Post, format!("{GRAPH}/v1.0/invitations"), Ok(json(403, forbidden)));
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("User.Invite.All") && m.contains("Authorization_RequestDenied"), "{m}");

    let mut host = FakeHost::new();
    host.expect_token().expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(403, forbidden)));
    assert!(permanent(run(&mut host, &add_event())).contains("User.Read.All"));

    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), GUEST_ID.into());
    host.expect_token()
        .expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "jane.doe@example.com"))))
        .expect(Method::Delete, format!("{GRAPH}/v1.0/users/{GUEST_ID}"), Ok(json(403, forbidden)));
    assert!(permanent(run(&mut host, &remove_event())).contains("User.ReadWrite.All"));
    assert!(host.kv.contains_key(&format!("user:{OKTA_USER}")), "mapping kept until the guest is gone");
}

#[test]
fn other_client_errors_carry_graphs_code_and_message() {
    let mut host = FakeHost::new();
    host.expect_token()
        .expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(Method::Get, other_mails_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(
            Method::Post,
            format!("{GRAPH}/v1.0/invitations"),
            Ok(json(400, fixture!("graph/graph-error.example.json"))),
        );
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("HTTP 400 invalidRange: Uploaded fragment overlaps with existing data."), "{m}");
}

#[test]
fn a_denied_origin_is_permanent_with_the_hosts_message() {
    let mut host = FakeHost::new();
    let denied =
        "https://login.microsoftonline.com is not in allowed_hosts; add it to [plugins.graph-guest] allowed_hosts";
    host.expect(Method::Post, token_url(), Err(HttpError::Denied(denied.into())));
    assert!(permanent(run(&mut host, &add_event())).contains(denied));
}

// ---- token ----

#[test]
fn token_refusal_is_permanent_with_the_aadsts_code() {
    let mut host = FakeHost::new();
    let refused = format!(
        r#"{{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[7000215]}}"#
    );
    host.expect(Method::Post, token_url(), Ok(json(401, &refused)));
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("AADSTS7000215") && m.contains("[plugins.graph-guest.secrets] client_secret"), "{m}");
    assert!(m.contains("[redacted]"), "the echoed client id is scrubbed: {m}");

    let mut host = FakeHost::new();
    host.expect(Method::Post, token_url(), Ok(json(400, fixture!("graph/token.error.400.json"))));
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("AADSTS70011") && m.contains("graph_scope"), "{m}");
}

#[test]
fn token_endpoint_outages_are_retryable() {
    let mut host = FakeHost::new();
    let mut busy = status(503);
    busy.headers.push(("retry-after".into(), "5".into()));
    host.expect(Method::Post, token_url(), Ok(busy));
    assert!(matches!(run(&mut host, &add_event()), Err(Failure::Retryable { retry_after_ms: Some(5000), .. })));
}

#[test]
fn the_token_is_cached_across_events() {
    let mut host = FakeHost::new();
    host.expect_token().expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
    );
    summary(run(&mut host, &add_event()));
    host.now_ms += 30 * 60 * 1000;
    host.expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "jane.doe@example.com"))))
        .expect(Method::Delete, format!("{GRAPH}/v1.0/users/{GUEST_ID}"), Ok(status(204)));
    summary(run(&mut host, &remove_event()));
    assert_eq!(host.sent.iter().filter(|r| r.url == token_url()).count(), 1);
    let cached: serde_json::Value = serde_json::from_str(&host.kv["token"]).unwrap();
    // 3599 s less the 5 min margin.
    assert_eq!(cached["expires_at_unix_ms"], NOW + 3_299_000);
}

#[test]
fn an_expired_cached_token_is_replaced() {
    let mut host = FakeHost::new();
    host.with_cached_token();
    host.now_ms += 3_300_000;
    host.expect(
        Method::Post,
        token_url(),
        Ok(json(200, r#"{"token_type":"Bearer","expires_in":3599,"access_token":"fresh-token-2"}"#)),
    )
    .expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
    );
    summary(run(&mut host, &add_event()));
    assert_eq!(host.sent[1].header("authorization"), Some("Bearer fresh-token-2"));
    assert!(host.kv["token"].contains("fresh-token-2"));
}

#[test]
fn a_token_cached_for_other_credentials_is_not_used() {
    let mut host = FakeHost::new();
    host.with_cached_token();
    host.secrets.insert("client_id".into(), "0f7e7b4d-0000-4000-8000-000000000001".into());
    host.expect_token().expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
    );
    summary(run(&mut host, &add_event()));
    assert_eq!(host.sent[0].url, token_url());
}

#[test]
fn a_401_refreshes_the_token_once_and_resends() {
    let mut host = FakeHost::new();
    host.with_cached_token();
    let unauthorized =
        r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}"#;
    host.expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(401, unauthorized)))
        .expect(
            Method::Post,
            token_url(),
            Ok(json(200, r#"{"token_type":"Bearer","expires_in":3599,"access_token":"fresh-token-2"}"#)),
        )
        .expect(
            Method::Get,
            mail_url("jane.doe@example.com"),
            Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
        );
    summary(run(&mut host, &add_event()));
    assert_eq!(host.sent[2].header("authorization"), Some("Bearer fresh-token-2"));
    assert!(host.kv["token"].contains("fresh-token-2"));
}

#[test]
fn a_second_401_is_permanent() {
    let mut host = FakeHost::new();
    host.with_cached_token();
    let unauthorized =
        r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token validation failure."}}"#;
    host.expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(401, unauthorized)))
        .expect(
            Method::Post,
            token_url(),
            Ok(json(200, r#"{"token_type":"Bearer","expires_in":3599,"access_token":"fresh-token-2"}"#)),
        )
        .expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(401, unauthorized)));
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("InvalidAuthenticationToken"), "{m}");
}

// ---- settings and state ----

#[test]
fn a_missing_secret_is_permanent_and_says_where_to_set_it() {
    let mut host = FakeHost::new();
    host.secrets.remove("client_secret");
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("client_secret") && m.contains("[plugins.graph-guest.secrets]"), "{m}");
    assert!(host.sent.is_empty());
}

/// An RSA certificate credential granted as key `client_certificate`, and no client secret.
fn with_certificate(host: &mut FakeHost) {
    host.secrets.remove("client_secret");
    host.keys.insert(
        "client_certificate".into(),
        KeyInfo {
            algorithms: vec![Algorithm::Rs256, Algorithm::Ps256],
            certificate_thumbprint: Some("x5t-S256".into()),
        },
    );
}

fn b64url_json(part: &str) -> serde_json::Value {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in part.bytes() {
        bits = bits << 6 | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn a_granted_certificate_signs_in_with_a_client_assertion_the_host_signs() {
    let mut host = FakeHost::new();
    with_certificate(&mut host);
    host.expect_token().expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
    );
    summary(run(&mut host, &add_event()));

    let form = String::from_utf8(host.sent[0].body.clone().unwrap()).unwrap();
    let fields: HashMap<&str, &str> = form.split('&').filter_map(|p| p.split_once('=')).collect();
    assert_eq!(fields["client_assertion_type"], "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer");
    assert_eq!(fields["client_id"], CLIENT_ID);
    assert_eq!(fields["grant_type"], "client_credentials");
    assert!(!fields.contains_key("client_secret"), "{form}");
    let parts: Vec<&str> = fields["client_assertion"].split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(b64url_json(parts[0]), serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": "x5t-S256"}));
    let now_s = NOW / 1000;
    assert_eq!(
        b64url_json(parts[1]),
        serde_json::json!({
            "aud": token_url(), "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": "6f1c6c3e-8f4b-4d5e-9a1b-2c3d4e5f6a7b",
            "nbf": now_s, "iat": now_s, "exp": now_s + 300,
        })
    );
    // The host signed exactly the header and claims, with PS256, and the signature follows them.
    assert_eq!(host.signed.len(), 1);
    let (name, alg, message) = &host.signed[0];
    assert_eq!((name.as_str(), *alg), ("client_certificate", Algorithm::Ps256));
    assert_eq!(message, format!("{}.{}", parts[0], parts[1]).as_bytes());
    assert_eq!(parts[2], "c2lnbmVkLWJ5LWhvc3Q");
}

#[test]
fn a_certificate_entra_cannot_use_is_permanent_before_any_request() {
    let mut host = FakeHost::new();
    with_certificate(&mut host);
    host.keys.get_mut("client_certificate").unwrap().algorithms = vec![Algorithm::Es256];
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("not an RSA key") && m.contains("[plugins.graph-guest.keys]"), "{m}");

    let mut host = FakeHost::new();
    with_certificate(&mut host);
    host.keys.get_mut("client_certificate").unwrap().certificate_thumbprint = None;
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("has no certificate") && m.contains("PEM"), "{m}");
    assert!(host.sent.is_empty() && host.signed.is_empty());
}

#[test]
fn neither_certificate_nor_secret_names_both_options() {
    let mut host = FakeHost::new();
    host.secrets.remove("client_secret");
    let m = permanent(run(&mut host, &add_event()));
    assert!(m.contains("[plugins.graph-guest.keys]") && m.contains("client_certificate"), "{m}");
    assert!(m.contains("[plugins.graph-guest.secrets]") && m.contains("client_secret"), "{m}");
    assert!(host.sent.is_empty());
}

#[test]
fn a_rejected_assertion_names_the_aadsts_code_and_what_to_check() {
    for (code, text, hint) in [
        (700027, "Client assertion failed signature validation.", "uploaded to the app registration"),
        (700024, "Client assertion is not within its valid time range.", "clock"),
        (700023, "Client assertion audience claim does not match Realm issuer.", "login_url"),
    ] {
        let mut host = FakeHost::new();
        with_certificate(&mut host);
        let body = serde_json::json!({
            "error": "invalid_client",
            "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: t\r\nCorrelation ID: c"),
            "error_codes": [code],
        });
        host.expect(Method::Post, token_url(), Ok(json(401, &body.to_string())));
        let m = permanent(run(&mut host, &add_event()));
        assert!(m.contains(&format!("AADSTS{code}")) && m.contains(hint), "{m}");
    }
}

#[test]
fn bad_config_values_name_the_key_and_the_choices() {
    for (key, value, expected) in [
        ("on_remove", "purge", "\"delete\" or \"disable\""),
        ("send_invitation_message", "yes", "true or false"),
        ("invited_user_type", "guest", "\"Guest\" or \"Member\""),
        ("graph_url", "graph.microsoft.com", "absolute http(s) URL"),
        ("graph_url", "https://graph.microsoft.com/v1.0", "without a version path"),
    ] {
        let mut host = FakeHost::new();
        host.config.insert(key.into(), value.into());
        let m = permanent(run(&mut host, &add_event()));
        assert!(m.contains(key) && m.contains(expected), "{m}");
    }
    let mut host = FakeHost::new();
    host.secrets.insert("tenant_id".into(), "contoso/../evil".into());
    assert!(permanent(run(&mut host, &add_event())).contains("tenant_id"));
}

#[test]
fn kv_failures_are_retryable() {
    let mut host = FakeHost::new();
    host.kv_broken = true;
    assert!(matches!(run(&mut host, &deactivate_event()), Err(Failure::Retryable { .. })));
}

#[test]
fn events_without_exactly_one_user_target_are_permanent() {
    let mut event = add_event();
    event.targets.retain(|t| t.kind != "User");
    let mut host = FakeHost::new();
    assert!(permanent(run(&mut host, &event)).contains("no User target"));

    let mut event = add_event();
    let extra = event.targets[1].clone();
    event.targets.push(extra);
    assert!(permanent(run(&mut host, &event)).contains("several User targets"));
    assert!(host.sent.is_empty());
}

#[test]
fn debug_logs_name_requests_but_never_tokens() {
    let mut host = FakeHost::new();
    host.expect_token().expect(
        Method::Get,
        mail_url("jane.doe@example.com"),
        Ok(json(200, &users(&[(GUEST_ID, "Guest", "jane.doe@example.com")]))),
    );
    summary(run(&mut host, &add_event()));
    let debug: Vec<&str> = host.logs.iter().filter(|(l, _)| *l == Level::Debug).map(|(_, m)| m.as_str()).collect();
    assert!(
        debug
            .iter()
            .any(|l| l.starts_with("POST https://login.microsoftonline.com/[redacted]/oauth2/v2.0/token -> 200")),
        "{debug:?}"
    );
    assert!(
        debug.iter().any(|l| l.starts_with("GET https://graph.microsoft.com/v1.0/users?") && l.ends_with("-> 200")),
        "{debug:?}"
    );
    assert!(host.logs.iter().any(|(l, m)| *l == Level::Info && m.starts_with("already present")));
}

#[test]
fn a_404_moments_after_the_invitation_is_replication_lag_retried_a_few_times() {
    let not_found = || Ok(json(404, fixture!("graph/graph-error.404.Request_ResourceNotFound.json")));
    let mut host = FakeHost::new();
    // The add records when it invited the guest.
    host.expect_token()
        .expect(Method::Get, mail_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(Method::Get, other_mails_url("jane.doe@example.com"), Ok(json(200, &users(&[]))))
        .expect(
            Method::Post,
            format!("{GRAPH}/v1.0/invitations"),
            Ok(json(201, fixture!("graph/invitation-post.response.201.json"))),
        );
    summary(run(&mut host, &add_event()));
    assert_eq!(host.kv.get(&format!("user:{OKTA_USER}")), Some(&format!("{INVITED_ID};{NOW}:0")));

    // The removal right after: Entra's replica does not know the account yet.
    for n in 1..=3 {
        host.now_ms = NOW + 1_000 * n;
        host.expect(Method::Get, user_url(INVITED_ID), not_found());
        match run(&mut host, &remove_event()) {
            Err(Failure::Retryable { message, retry_after_ms }) => {
                assert!(message.contains("not") && message.contains("replicated"), "{message}");
                assert!(message.contains(&format!("try {n} of 3")), "{message}");
                assert_eq!(retry_after_ms, Some(2_000));
            }
            other => panic!("try {n}: {other:?}"),
        }
        assert_eq!(host.kv.get(&format!("user:{OKTA_USER}")), Some(&format!("{INVITED_ID};{NOW}:{n}")));
    }
    // Bounded: after three tries a 404 means gone.
    host.expect(Method::Get, user_url(INVITED_ID), not_found());
    assert!(summary(run(&mut host, &remove_event())).contains("already gone"));
    assert!(!host.kv.contains_key(&format!("user:{OKTA_USER}")));

    // A DELETE's 404 on a freshly invited account is lag too; an old invitation's is not.
    let mut host = FakeHost::new();
    host.kv.insert(format!("user:{OKTA_USER}"), format!("{GUEST_ID};{}:0", NOW - 1_000));
    host.expect_token()
        .expect(Method::Get, user_url(GUEST_ID), Ok(json(200, &user(GUEST_ID, "Guest", "jane.doe@example.com"))))
        .expect(Method::Delete, format!("{GRAPH}/v1.0/users/{GUEST_ID}"), not_found());
    assert!(matches!(run(&mut host, &remove_event()), Err(Failure::Retryable { .. })));
    host.kv.insert(format!("user:{OKTA_USER}"), format!("{GUEST_ID};{}:0", NOW - 3_600_000));
    host.expect(Method::Get, user_url(GUEST_ID), not_found());
    assert!(summary(run(&mut host, &remove_event())).contains("already gone"));
    assert!(!host.kv.contains_key(&format!("user:{OKTA_USER}")));
}
