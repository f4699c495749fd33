//! webhook-forward (the shipped JavaScript plugin) in a real `hookhost serve`: one templated
//! JSON POST per subscribed event to a real webhook on 127.0.0.1, with the secret header;
//! a 429 is retried no sooner than its Retry-After; an event type the operator did not
//! route gets no delivery; the secret appears in no log, history or error.
//!
//! Uses `dist/plugins/webhook-forward.{wasm,toml}` (`make dist`). Its compiled artifact is
//! kept in `target/test-artifact-cache`, so only the first run after a build compiles the
//! 12.6 MB component.

use std::time::Duration;

use hookhost_tests::okta::{group_membership_event, timestamp, user_lifecycle_event, Membership};
use hookhost_tests::serve::{install_dist, settle_within, write_config};
use hookhost_tests::webhooks::{WebhookKind, WebhookReceiver};

use crate::support::{free_port, workspace, ServeProcess, ServeSetup};

const SECRET: &str = "whsec-4f9a1c7e-never-logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_forward_posts_each_event_retries_429_after_retry_after_and_keeps_its_secret() {
    let patient = Duration::from_secs(900);
    let hook = WebhookReceiver::start(WebhookKind::Generic { secret: Some(("x-hook-secret".into(), SECRET.into())) })
        .await
        .unwrap();
    hook.throttle(1, "1");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let setup = ServeSetup {
        graph_guest: false,
        plugins_extra: format!("cache_dir = {:?}\n", workspace().join("target/test-artifact-cache")),
        extra: format!(
            r#"[plugins.webhook-forward]
allowed_hosts = [{base:?}]
event_types = ["group.user_membership.add"]
[plugins.webhook-forward.config]
url = {url:?}
secret_header = "x-hook-secret"
template = '{{"event":"${{id}}","type":"${{eventType}}","who":"${{user}}","group":"${{group}}","okta":${{raw}}}}'
[plugins.webhook-forward.secrets]
webhook_secret = {{ value = {SECRET:?} }}
"#,
            base = hook.base_url(),
            url = hook.url()
        ),
        ..ServeSetup::default()
    };
    let setup = write_config(dir, port, None, setup);
    install_dist(&dir.join("plugins.d"), "webhook-forward").unwrap_or_else(|e| panic!("{e:#}"));
    let serve = ServeProcess::spawn(dir, port, setup, patient).await.unwrap_or_else(|e| panic!("{e:#}"));
    let plugin = serve.plugin("webhook-forward").await;
    assert_eq!(plugin["state"], "active", "{plugin}\n{}", serve.run_log());

    let added = group_membership_event(
        Membership::Add,
        "00u1wf",
        "ana@example.com",
        "Ana \"Quoted\" Lima",
        "00g1wf",
        "Sales",
        &timestamp(0),
    );
    let deactivated =
        user_lifecycle_event("user.lifecycle.deactivate", "00u2wf", "bo@example.com", "Bo", &timestamp(1));
    assert_eq!(serve.post(vec![added.clone(), deactivated.clone()]).await, Some(200));

    let views = settle_within(&serve.url, std::slice::from_ref(&added), patient).await;
    let delivery = &views[0]["deliveries"][0];
    assert_eq!(delivery["status"], "done", "{}\n{}", views[0], serve.run_log());
    let attempts = serve.attempts(delivery["id"].as_str().unwrap()).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["result"], "retryable", "{attempts:?}");
    let first = attempts[0]["error"].as_str().unwrap();
    assert!(first.contains("answered 429") && first.contains("retry after 1000 ms"), "{first}");
    let started =
        |a: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(a["started_at"].as_str().unwrap()).unwrap();
    let gap = started(&attempts[1]) - started(&attempts[0]);
    assert!(gap >= chrono::Duration::milliseconds(1000), "retried after {gap}, before Retry-After: 1");
    assert_eq!(attempts[1]["result"], "done", "{attempts:?}");

    let posts = hook.accepted();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let uuid = added["uuid"].as_str().unwrap();
    assert_eq!(posts[0].header("idempotency-key"), Some(uuid));
    let body = posts[0].json();
    assert_eq!(body["event"], uuid, "{body}");
    assert_eq!(body["type"], "group.user_membership.add", "{body}");
    assert_eq!(body["who"], "ana@example.com", "{body}");
    assert_eq!(body["group"], "Sales", "{body}");
    assert_eq!(body["okta"]["uuid"], uuid, "the raw LogEvent: {body}");

    // Routed by the operator's event_types: the deactivation has no delivery.
    let view = hookhost_tests::serve::event_view(&serve.url, deactivated["uuid"].as_str().unwrap()).await;
    assert!(view["deliveries"].as_array().is_none_or(|d| d.is_empty()), "{view}");

    let history = format!("{attempts:?}{}", serve.get_json(&format!("/api/events/{uuid}")).await);
    assert!(!serve.logs().contains(SECRET) && !history.contains(SECRET), "the secret leaked");
    hook.shutdown().await;
}
