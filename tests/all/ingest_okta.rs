//! The Okta endpoint through `app().oneshot`: auth, verification, caps, both envelope shapes,
//! de-duplication, and that nothing is stored unless the answer is 200.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hookhost::api::ApiState;
use hookhost::ingest::IngestState;
use hookhost::metrics::Metrics;
use hookhost::registry::{self, PluginBundle, PluginSet};
use hookhost::secret::Secret;
use hookhost::store::{SqliteStore, Status, Store};
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{self, bundle, test_manifest};

const SECRET: &str = "Basic aG9va2hvc3Q6dGVzdA==";
const ADMIN: &str = "admin-token-xyz";

struct App {
    router: axum::Router,
    store: Arc<dyn Store>,
    woken: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    _bundle: support::TempBundle,
}

fn app_with(max_body: usize) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("h.db")).unwrap());
    let runtime = support::runtime();
    let plugins = Arc::new(PluginSet::default());
    // echo subscribes to membership events (any group).
    let b = bundle("echo", "echo", &test_manifest("echo"));
    plugins.insert(registry::activate(&runtime, &PluginBundle::load(&b.manifest).unwrap(), None).unwrap());
    let metrics = Arc::new(Metrics::default());
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        w.fetch_add(1, Ordering::SeqCst);
    });
    let router = hookhost::server::app(
        IngestState {
            store: store.clone(),
            plugins: plugins.clone(),
            auth_header: axum::http::HeaderName::from_static("authorization"),
            auth_secret: Secret::new(SECRET.into()),
            max_body_bytes: max_body,
            read_timeout: std::time::Duration::from_secs(10),
            metrics: metrics.clone(),
            on_stored: wake.clone(),
        },
        "/hooks/okta",
        ApiState {
            store: store.clone(),
            plugins,
            metrics,
            admin_token: Some(Secret::new(ADMIN.into())),
            host_id: "test-host".into(),
            on_replay: wake,
            registry: None,
            reconcile: None,
        },
    );
    App { router, store, woken, _dir: dir, _bundle: b }
}

fn app() -> App {
    app_with(1 << 20)
}

async fn send(app: &App, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post(body: impl Into<Body>, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/hooks/okta").header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("Authorization", a);
    }
    b.body(body.into()).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(support::workspace().join("tests/fixtures/okta").join(name)).unwrap()
}

fn membership_delivery(uuid: &str, login: &str) -> Vec<u8> {
    let mut ev = hookhost_tests::okta::group_membership_event(
        hookhost_tests::okta::Membership::Add,
        "00u1",
        login,
        "Jane",
        "00g1",
        "O365Guest",
        &hookhost_tests::okta::timestamp(0),
    );
    ev["uuid"] = Value::String(uuid.into());
    serde_json::to_vec(&hookhost_tests::okta::delivery(vec![ev])).unwrap()
}

fn stored(app: &App) -> usize {
    app.store.deliveries(None, 1000, None).unwrap().0.len()
}

#[tokio::test]
async fn verification_echoes_the_challenge_without_auth() {
    let app = app();
    let req =
        Request::get("/hooks/okta").header("x-okta-verification-challenge", "abc-123").body(Body::empty()).unwrap();
    let (status, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"verification": "abc-123"}));
}

#[tokio::test]
async fn wrong_or_missing_auth_is_401_and_stores_nothing() {
    let app = app();
    for auth in [None, Some("Basic wrong"), Some("basic aG9va2hvc3Q6dGVzdA==")] {
        let (status, body) = send(&app, post(membership_delivery("u-1", "a@x.example"), auth)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(body["error"].as_str().unwrap().contains("authorization header"), "{body}");
    }
    assert_eq!(stored(&app), 0);
    assert!(app.store.event("u-1").unwrap().is_none());
}

#[tokio::test]
async fn both_fixture_envelopes_parse_and_unsubscribed_events_get_no_delivery() {
    let app = app();
    for f in [
        "okta-docs_event-hook-delivery_user.session.start_2019.json",
        "okta-docs_event-hook-delivery_user.session.start_2023.json",
    ] {
        let (status, body) = send(&app, post(fixture(f), Some(SECRET))).await;
        assert_eq!(status, StatusCode::OK, "{f}: {body}");
    }
    let e = app.store.event("f1d0b993-cc19-11ed-a688-db22c99ef6c4").unwrap().unwrap();
    assert_eq!(e.okta_delivery_id.as_deref(), Some("85b60edb-4263-4e13-993b-818e26201052"));
    // echo subscribes to user.session.start: one delivery.
    assert_eq!(e.deliveries.len(), 1);
    assert_eq!(e.deliveries[0].status, Status::Pending);
}

#[tokio::test]
async fn the_same_event_in_two_deliveries_is_stored_once() {
    let app = app();
    for _ in 0..3 {
        let (status, _) = send(&app, post(membership_delivery("dup-1", "a@x.example"), Some(SECRET))).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(stored(&app), 1);
    assert_eq!(app.woken.load(Ordering::SeqCst), 1, "only new deliveries wake the dispatcher");
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_problem_and_store_nothing() {
    let app = app();
    let cases: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (br#"{"eventId":"x"}"#, "data.events"),
        (br#"{"data":{"events":{}}}"#, "must be an array"),
        (br#"{"data":{"events":[{"eventType":"a","published":"2026-01-01T00:00:00Z"}]}}"#, "uuid"),
        (br#"{"data":{"events":[{"uuid":"u","eventType":"a","published":"yesterday"}]}}"#, "published"),
        (br#"{"data":{"events":[{"uuid":"u","eventType":7,"published":"2026-01-01T00:00:00Z"}]}}"#, "eventType"),
    ];
    for (body, needle) in cases {
        let (status, resp) = send(&app, post(body.to_vec(), Some(SECRET))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        let msg = resp["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg} should mention {needle}");
    }
    assert_eq!(stored(&app), 0);
}

#[tokio::test]
async fn oversized_and_non_json_bodies_are_refused() {
    let app = app_with(512);
    let big = membership_delivery("big-1", &format!("{}@x.example", "a".repeat(600)));
    let (status, _) = send(&app, post(big, Some(SECRET))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::post("/hooks/okta")
        .header("content-type", "text/plain")
        .header("Authorization", SECRET)
        .body(Body::from("hello"))
        .unwrap();
    let (status, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(stored(&app), 0);
}

/// Only `application/json` (any case, with parameters) is JSON; a look-alike type, another
/// type or none gets 415, and nothing is stored.
#[tokio::test]
async fn only_the_exact_json_media_type_is_accepted() {
    let app = app();
    let with_type = |uuid: &str, ct: Option<&str>| {
        let mut b = Request::post("/hooks/okta").header("Authorization", SECRET);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(membership_delivery(uuid, "jane@example.com"))).unwrap()
    };
    for (i, ct) in [
        Some("application/jsonx"),
        Some("application/json-patch+json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("text/json"),
        Some(""),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let (status, resp) = send(&app, with_type(&format!("ct-refused-{i}"), ct)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {resp}");
        assert!(resp["error"].as_str().unwrap_or_default().contains("application/json"), "{ct:?}: {resp}");
    }
    assert_eq!(stored(&app), 0);
    for (i, ct) in
        ["application/json", "Application/JSON", "application/json; charset=utf-8", "application/json;charset=UTF-8"]
            .into_iter()
            .enumerate()
    {
        let (status, resp) = send(&app, with_type(&format!("ct-ok-{i}"), Some(ct))).await;
        assert_eq!(status, StatusCode::OK, "{ct}: {resp}");
    }
    assert_eq!(stored(&app), 4);
}

/// A body in which some object names a key twice is refused with 400 naming the key;
/// serde_json alone would silently keep the last value.
#[tokio::test]
async fn a_duplicate_key_anywhere_is_refused_and_nothing_is_stored() {
    let app = app();
    let good = String::from_utf8(membership_delivery("dup-1", "jane@example.com")).unwrap();
    let cases = [
        // The event's identity given twice: which one would be de-duplicated on?
        (good.replacen("\"uuid\":\"dup-1\"", "\"uuid\":\"dup-1\",\"uuid\":\"dup-2\"", 1), "uuid"),
        // Deep inside a target.
        (
            good.replacen(
                "\"displayName\":\"O365Guest\"",
                "\"displayName\":\"O365Guest\",\"displayName\":\"Admins\"",
                1,
            ),
            "displayName",
        ),
        // At the top level (the envelope already has an eventId).
        (format!("{{\"eventId\":\"a\",{}", &good[1..]), "eventId"),
    ];
    for (body, key) in cases {
        assert!(serde_json::from_str::<Value>(&body).is_ok(), "the case must be valid JSON: {body}");
        let (status, resp) = send(&app, post(body.clone(), Some(SECRET))).await;
        let msg = resp["error"].as_str().unwrap_or_default();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert!(msg.contains("duplicate key") && msg.contains(&format!("{key:?}")), "{msg} should name {key}");
    }
    assert_eq!(stored(&app), 0);
}

#[tokio::test]
async fn admin_api_needs_the_token_and_answers_in_the_contract_shapes() {
    let app = app();
    send(&app, post(membership_delivery("api-1", "a@x.example"), Some(SECRET))).await;
    let get = |path: &str, token: Option<&str>| {
        let mut b = Request::get(path);
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    let (status, _) = send(&app, get("/api/plugins", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&app, get("/api/plugins", Some("nope"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&app, get("/healthz", None)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = send(&app, get("/api/plugins", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::OK);
    let p = &body["plugins"][0];
    assert_eq!(p["name"], "echo");
    assert_eq!(p["state"], "active");
    assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    for key in ["version", "loaded_at", "event_types", "groups", "allowed_hosts", "last_error"] {
        assert!(p.get(key).is_some(), "missing {key} in {p}");
    }

    let (status, ev) = send(&app, get("/api/events/api-1", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::OK);
    for key in ["id", "event_type", "published", "received_at", "okta_delivery_id", "deliveries"] {
        assert!(ev.get(key).is_some(), "missing {key} in {ev}");
    }
    let d = &ev["deliveries"][0];
    for key in ["id", "plugin", "plugin_version", "status", "attempts", "next_attempt_at", "last_error"] {
        assert!(d.get(key).is_some(), "missing {key} in {d}");
    }
    assert_eq!(d["status"], "pending");
    let (status, _) = send(&app, get("/api/events/nope", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A pending delivery cannot be replayed; an unknown one is 404.
    let id = d["id"].as_str().unwrap();
    let replay = |id: &str| {
        Request::post(format!("/api/deliveries/{id}/replay"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&app, replay(id)).await.0, StatusCode::CONFLICT);
    assert_eq!(send(&app, replay("d_nope")).await.0, StatusCode::NOT_FOUND);

    let (status, list) = send(&app, get("/api/deliveries?status=dead", Some(ADMIN))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, serde_json::json!({"deliveries": [], "next": null}));

    let resp = app.router.clone().oneshot(get("/metrics", Some(ADMIN))).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("hookhost_ingest_requests_total{host=\"test-host\",code=\"200\"} 1"), "{text}");
    assert!(text.contains("hookhost_queue_depth{host=\"test-host\",plugin=\"echo\"} 1"), "{text}");
}
