//! Fan-out through the real `hookhost serve`: one Okta event becomes one delivery per
//! subscribed plugin — a guest in the Graph emulator (graph-guest, Rust), a Slack message
//! (chat-notify, Rust) and a Splunk HEC record (siem-forward, Python) — each with its own
//! attempts and history; an event for another group reaches only the plugins subscribed to
//! it; and a plugin throttled for minutes holds up nobody else.
//!
//! The three plugins are the shipped bundles (`make dist`). The compiled-artifact cache is
//! shared by these tests (`target/test-artifact-cache`), so the Python component (18 MB,
//! seconds to compile) is compiled once per host build, not once per test.

use std::path::Path;
use std::time::{Duration, Instant};

use hookhost_tests::okta::{group_membership_event, timestamp, Membership};
use hookhost_tests::serve::{graph_guest_tables, install_dist, notify_tables};
use hookhost_tests::{GraphEmulator, TenantConfig, WebhookKind, WebhookReceiver};
use serde_json::Value;

use crate::support::{free_port, workspace, ServeProcess, ServeSetup};

const SECRET: &str = "Basic ZmFuOm91dA==";
const ADMIN: &str = "fan-out-admin";
const HEC_TOKEN: &str = "4a1c3e2f-0b6d-4e8a-9f10-2c3d4e5f6a7b";

/// The event's deliveries, by plugin name.
async fn deliveries_of(serve: &ServeProcess, event: &Value) -> Vec<(String, Value)> {
    let view = serve.get_json(&format!("/api/events/{}", event["uuid"].as_str().unwrap())).await;
    let mut ds: Vec<(String, Value)> = view["deliveries"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|d| (d["plugin"].as_str().unwrap_or_default().to_owned(), d.clone()))
        .collect();
    ds.sort_by(|a, b| a.0.cmp(&b.0));
    ds
}

/// Polls until `done(deliveries of each event)` holds, for at most `within`.
async fn wait_for(
    serve: &ServeProcess,
    events: &[Value],
    within: Duration,
    what: &str,
    done: impl Fn(&[(String, Value)]) -> bool,
) {
    let t = Instant::now();
    loop {
        let mut all = Vec::new();
        for e in events {
            all.push(deliveries_of(serve, e).await);
        }
        if all.iter().all(|ds| done(ds)) {
            return;
        }
        assert!(t.elapsed() < within, "{what} did not happen within {within:?}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct World {
    graph: GraphEmulator,
    slack: WebhookReceiver,
    hec: WebhookReceiver,
}

async fn world() -> World {
    World {
        graph: GraphEmulator::start(TenantConfig::default()).await.unwrap(),
        slack: WebhookReceiver::start(WebhookKind::Slack).await.unwrap(),
        hec: WebhookReceiver::start(WebhookKind::SplunkHec { token: HEC_TOKEN.into() }).await.unwrap(),
    }
}

/// A service with graph-guest, chat-notify and siem-forward pointed at `w`; `chat` adds
/// lines to the operator's `[plugins.chat-notify]` table.
async fn start(dir: &Path, w: &World, chat: &str) -> ServeProcess {
    let plugins = dir.join("plugins.d");
    for name in ["graph-guest", "chat-notify", "siem-forward"] {
        install_dist(&plugins, name).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let port = free_port();
    let cache = workspace().join("target/test-artifact-cache");
    let setup = ServeSetup {
        okta_secret: SECRET.into(),
        admin_token: ADMIN.into(),
        graph_guest: false,
        plugins_extra: format!("cache_dir = {:?}\n", cache.display().to_string()),
        extra: format!("{}{}", graph_guest_tables(&w.graph), notify_tables(&w.slack, &w.hec, HEC_TOKEN, chat)),
        ..ServeSetup::default()
    };
    setup.write(dir, port, None).unwrap();
    // One start at a time: the first (on a cold cache) compiles the Python component, and
    // the next starts from the artifact cache instead of compiling it again alongside.
    static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = STARTING.lock().await;
    // Bundles load before the listener opens; a cold cache compiles the Python component.
    ServeProcess::spawn(dir, port, setup, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e:#}"))
}

fn added(user: &str, login: &str, name: &str, group_id: &str, group: &str, offset_ms: i64) -> Value {
    group_membership_event(Membership::Add, user, login, name, group_id, group, &timestamp(offset_ms))
}

fn plugin_names(ds: &[(String, Value)]) -> Vec<&str> {
    ds.iter().map(|(p, _)| p.as_str()).collect()
}

fn all_done(ds: &[(String, Value)]) -> bool {
    !ds.is_empty() && ds.iter().all(|(_, d)| d["status"] == "done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_fans_out_to_a_guest_a_chat_message_and_an_audit_record() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = start(dir.path(), &w, "").await;

    let jane = added("00ujane", "jane@example.net", "Jane Doe", "00gO365", "O365Guest", -2_000);
    let bob = added("00ubob", "bob@example.net", "Bob Brown", "00gENG", "Engineering", -1_000);
    assert_eq!(serve.post(vec![jane.clone(), bob.clone()]).await, Some(200));
    wait_for(&serve, &[jane.clone(), bob.clone()], Duration::from_secs(60), "all deliveries done", all_done).await;

    // One delivery per subscribed plugin, each its own row with its own history.
    let ds = deliveries_of(&serve, &jane).await;
    assert_eq!(plugin_names(&ds), ["chat-notify", "graph-guest", "siem-forward"], "{ds:?}");
    let mut components = std::collections::BTreeSet::new();
    for (plugin, d) in &ds {
        assert_eq!(d["attempts"], 1, "{plugin}: {d}");
        let history = serve.get_json(&format!("/api/deliveries/{}/attempts", d["id"].as_str().unwrap())).await;
        let attempts = history["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{plugin}: {history}");
        assert_eq!(attempts[0]["delivery_id"], d["id"], "{plugin}: {history}");
        assert_eq!(attempts[0]["result"], "done", "{plugin}: {history}");
        components.insert(attempts[0]["plugin_sha256"].as_str().unwrap().to_owned());
    }
    assert_eq!(components.len(), 3, "each delivery ran its own plugin");

    // graph-guest: the guest.
    let guests: Vec<String> =
        w.graph.users().into_iter().filter(|u| u.user_type == "Guest").filter_map(|u| u.mail).collect();
    assert_eq!(guests, ["jane@example.net"]);

    // chat-notify: one Slack message, for jane only (it subscribes to O365Guest).
    assert_eq!(w.slack.messages(), ["Guest access granted: Jane Doe <jane@example.net> joined O365Guest"]);
    let slack_post = &w.slack.accepted()[0];
    assert_eq!(slack_post.header("content-type"), Some("application/json"));

    // siem-forward: one HEC record per event, any group, in HEC's envelope with the token.
    let records: Vec<Value> = w
        .hec
        .accepted()
        .iter()
        .map(|p| {
            assert_eq!(p.path, "/services/collector/event");
            assert_eq!(p.header("authorization"), Some(format!("Splunk {HEC_TOKEN}").as_str()));
            p.json()
        })
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let jane_record = records.iter().find(|r| r["event"]["uuid"] == jane["uuid"]).expect("jane's record");
    assert_eq!(jane_record["sourcetype"], "okta:hookhost");
    assert_eq!(jane_record["index"], "okta");
    assert!(jane_record["time"].as_f64().is_some(), "{jane_record}");
    assert_eq!(jane_record["event"]["eventType"], "group.user_membership.add");
    assert_eq!(jane_record["event"]["targets"][0]["alternateId"], "jane@example.net");
    assert_eq!(jane_record["event"]["targets"][1]["displayName"], "O365Guest");

    // bob's Engineering event reached only the plugin subscribed to every group.
    let ds = deliveries_of(&serve, &bob).await;
    assert_eq!(plugin_names(&ds), ["siem-forward"], "{ds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_throttled_for_minutes_does_not_delay_the_others() {
    let w = world().await;
    // Slack answers every post 429 with Retry-After: 300 (five minutes).
    w.slack.throttle(usize::MAX, "300");
    let dir = tempfile::tempdir().unwrap();
    // The operator routes chat-notify by group id instead of the manifest's display name.
    let serve = start(dir.path(), &w, "groups = [\"00gO365\"]").await;

    let plugins = serve.get_json("/api/plugins").await;
    let chat = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "chat-notify").unwrap().clone();
    assert_eq!(chat["groups"], serde_json::json!(["00gO365"]), "{chat}");
    assert_eq!(chat["event_types"], serde_json::json!(["group.user_membership.add", "group.user_membership.remove"]));
    assert_eq!(chat["supersede"], false);

    let events: Vec<Value> = (0..3)
        .map(|n| {
            added(
                &format!("00uthr{n}"),
                &format!("user{n}@example.net"),
                &format!("User {n}"),
                "00gO365",
                "O365Guest",
                -3_000 + n,
            )
        })
        .collect();
    assert_eq!(serve.post(events.clone()).await, Some(200));

    // graph-guest and siem-forward finish while every chat-notify delivery waits its five minutes.
    wait_for(
        &serve,
        &events,
        Duration::from_secs(60),
        "graph-guest and siem-forward done, chat-notify retrying",
        |ds| {
            ds.len() == 3
                && ds.iter().all(|(p, d)| match p.as_str() {
                    "chat-notify" => d["status"] == "retrying",
                    _ => d["status"] == "done",
                })
        },
    )
    .await;
    let now = chrono::Utc::now();
    for e in &events {
        let ds = deliveries_of(&serve, e).await;
        let (_, chat) = ds.iter().find(|(p, _)| p == "chat-notify").unwrap();
        assert_eq!(chat["attempts"], 1, "{chat}");
        let next: chrono::DateTime<chrono::Utc> = chat["next_attempt_at"].as_str().unwrap().parse().unwrap();
        assert!(next - now > chrono::TimeDelta::seconds(250), "Retry-After: 300 not honoured: {chat}");
        assert!(chat["last_error"].as_str().unwrap().contains("429"), "{chat}");
    }
    assert_eq!(w.graph.users().into_iter().filter(|u| u.user_type == "Guest").count(), 3);
    assert_eq!(w.hec.accepted().len(), 3);
    assert_eq!(w.slack.accepted().len(), 0);
    // The first 429 pauses chat-notify's calls to Slack for its Retry-After: the host answers
    // later calls itself, unsent, so Slack sees one post, or up to three if the others left
    // before the first 429 came back; never a second round.
    let posts = w.slack.posts().len();
    assert!((1..=3).contains(&posts), "{posts} posts: each throttled delivery at most once, none again early");
}
