//! graph-guest, compiled to a component, run by hookhost's runtime against the Graph emulator.

use std::sync::Arc;
use std::time::Duration;

use hookhost::okta::Event;
use hookhost::runtime::{AttemptResult, KvBackend, LoadedPlugin, Runtime};
use hookhost::store::SqliteStore;
use hookhost_tests::okta::{self as okta_events, Membership};
use hookhost_tests::{Fault, GraphEmulator, OktaUsersEmulator, TenantConfig};

use crate::support::{self, bundle, load, override_toml, workspace};

struct Setup {
    graph: GraphEmulator,
    runtime: Arc<Runtime>,
    plugin: LoadedPlugin,
    kv: Arc<dyn KvBackend>,
    _bundle: support::TempBundle,
}

fn manifest() -> String {
    std::fs::read_to_string(workspace().join("plugins/graph-guest/graph-guest.toml")).unwrap()
}

/// The operator override pointing graph-guest at the emulator; `extra_config` adds
/// `[config]` lines, `secret` replaces the client secret.
fn operator(graph: &GraphEmulator, extra_config: &str, secret: &str, extra_hosts: &[String]) -> String {
    let base = graph.base_url();
    let cfg = graph.config();
    let mut hosts = vec![format!("\"{base}\"")];
    hosts.extend(extra_hosts.iter().map(|h| format!("\"{h}\"")));
    format!(
        r#"allowed_hosts = [{hosts}]
[config]
graph_url = "{base}"
login_url = "{base}"
{extra_config}
[secrets]
tenant_id = {{ value = "{tenant}" }}
client_id = {{ value = "{client}" }}
client_secret = {{ value = "{secret}" }}
okta_api_token = {{ value = "okta-token-123" }}
"#,
        hosts = hosts.join(", "),
        tenant = cfg.tenant_id,
        client = cfg.client_id,
    )
}

async fn setup_with(extra_config: &str, secret: Option<&str>, extra_hosts: &[String]) -> Setup {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let secret = secret.map(str::to_owned).unwrap_or_else(|| graph.config().client_secret.clone());
    let b = bundle("graph-guest", "graph-guest", &manifest());
    let runtime = support::runtime();
    let over = override_toml(&operator(&graph, extra_config, &secret, extra_hosts));
    let (_, plugin) = load(&runtime, &b.manifest, Some(&over));
    Setup { graph, runtime, plugin, kv: Arc::new(SqliteStore::in_memory().unwrap()), _bundle: b }
}

async fn setup() -> Setup {
    setup_with("", None, &[]).await
}

fn membership(kind: Membership, user_id: &str, login: &str) -> Event {
    let v = okta_events::group_membership_event(
        kind,
        user_id,
        login,
        "Jane Doe",
        "00gO365",
        "O365Guest",
        &okta_events::timestamp(0),
    );
    Event::from_value(&v).unwrap()
}

fn lifecycle(event_type: &str, user_id: &str, login: &str) -> Event {
    let v = okta_events::user_lifecycle_event(event_type, user_id, login, "Jane Doe", &okta_events::timestamp(0));
    Event::from_value(&v).unwrap()
}

impl Setup {
    async fn run(&self, event: &Event) -> AttemptResult {
        let a = self.runtime.run(&self.plugin, event, self.kv.clone()).await;
        a.result
    }

    fn writes(&self) -> Vec<(String, String)> {
        self.graph
            .journal()
            .into_iter()
            .filter(|j| matches!(j.method.as_str(), "DELETE" | "PATCH"))
            .map(|j| (j.method, j.path))
            .collect()
    }

    fn invitations_posted(&self) -> usize {
        self.graph.journal().iter().filter(|j| j.method == "POST" && j.path == "/v1.0/invitations").count()
    }

    fn guests(&self) -> Vec<String> {
        self.graph.users().into_iter().filter(|u| u.user_type == "Guest").filter_map(|u| u.mail).collect()
    }
}

fn assert_done(r: &AttemptResult) {
    assert!(matches!(r, AttemptResult::Done { .. }), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_invites_a_guest_and_remove_deletes_it() {
    let s = setup().await;
    assert_done(&s.run(&membership(Membership::Add, "00u1", "jane@example.net")).await);
    assert_eq!(s.guests(), vec!["jane@example.net".to_string()]);
    let guest = s.graph.users().into_iter().find(|u| u.user_type == "Guest").unwrap();
    assert!(guest.user_principal_name.contains("#EXT#"));

    // A duplicate of the same add changes nothing.
    assert_done(&s.run(&membership(Membership::Add, "00u1", "jane@example.net")).await);
    assert_eq!(s.invitations_posted(), 1);

    assert_done(&s.run(&membership(Membership::Remove, "00u1", "jane@example.net")).await);
    assert!(s.guests().is_empty());
    assert_eq!(s.writes(), vec![("DELETE".to_string(), format!("/v1.0/users/{}", guest.id))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_guest_is_adopted_without_an_invitation() {
    let s = setup().await;
    let id = s.graph.seed_guest("sam@partner.example", "Sam");
    assert_done(&s.run(&membership(Membership::Add, "00u2", "sam@partner.example")).await);
    assert_eq!(s.invitations_posted(), 0);
    // Adopted: deactivation (which acts only on mapped accounts) removes it.
    assert_done(&s.run(&lifecycle("user.lifecycle.deactivate", "00u2", "sam@partner.example")).await);
    assert_eq!(s.writes(), vec![("DELETE".to_string(), format!("/v1.0/users/{id}"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_account_is_never_deleted_or_disabled() {
    let s = setup().await;
    s.graph.seed_member("boss@contoso.com", "The Boss");
    // Add: success, no invitation, not mapped.
    assert_done(&s.run(&membership(Membership::Add, "00u3", "boss@contoso.com")).await);
    assert_eq!(s.invitations_posted(), 0);
    // Remove: the only account with that mail is a Member → permanent, nothing changed.
    let r = s.run(&membership(Membership::Remove, "00u3", "boss@contoso.com")).await;
    let AttemptResult::Permanent(msg) = &r else { panic!("{r:?}") };
    assert!(msg.contains("nothing was changed") || msg.contains("not changed"), "{msg}");
    // Deactivate: unmapped → success with nothing changed.
    assert_done(&s.run(&lifecycle("user.lifecycle.deactivate", "00u3", "boss@contoso.com")).await);
    assert!(s.writes().is_empty(), "a write reached the tenant: {:?}", s.writes());
    assert_eq!(s.graph.users().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_unknown_user_is_a_no_op() {
    let s = setup().await;
    assert_done(&s.run(&membership(Membership::Remove, "00u4", "nobody@example.net")).await);
    assert!(s.writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_mode_patches_account_enabled() {
    let s = setup_with("on_remove = \"disable\"", None, &[]).await;
    assert_done(&s.run(&membership(Membership::Add, "00u5", "dana@example.net")).await);
    assert_done(&s.run(&membership(Membership::Remove, "00u5", "dana@example.net")).await);
    let writes = s.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].0, "PATCH");
    let guest = s.graph.users().into_iter().find(|u| u.user_type == "Guest").unwrap();
    assert!(!guest.account_enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_initiated_removes_a_mapped_guest() {
    let s = setup().await;
    assert_done(&s.run(&membership(Membership::Add, "00u6", "eve@example.net")).await);
    assert_done(&s.run(&lifecycle("user.lifecycle.delete.initiated", "00u6", "eve@example.net")).await);
    assert!(s.guests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retryable_with_graphs_retry_after() {
    let s = setup().await;
    s.graph.inject(Fault::Throttle { times: 1, retry_after: "2.128".into() });
    let r = s.run(&membership(Membership::Add, "00u7", "tom@example.net")).await;
    assert_eq!(
        r,
        match &r {
            AttemptResult::Retryable { message, .. } =>
                AttemptResult::Retryable { message: message.clone(), retry_after: Some(Duration::from_millis(2128)) },
            other => panic!("{other:?}"),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_permanent_and_names_the_permission() {
    let s = setup().await;
    s.graph.inject(Fault::Forbidden { times: 5 });
    let r = s.run(&membership(Membership::Add, "00u8", "ann@example.net")).await;
    let AttemptResult::Permanent(msg) = &r else { panic!("{r:?}") };
    assert!(msg.contains("User.Read.All") || msg.contains("User.Invite.All"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_client_secret_is_permanent_with_the_aadsts_code() {
    let s = setup_with("", Some("wrong-secret"), &[]).await;
    let r = s.run(&membership(Membership::Add, "00u9", "bob@example.net")).await;
    let AttemptResult::Permanent(msg) = &r else { panic!("{r:?}") };
    assert!(msg.contains("AADSTS7000215"), "{msg}");
    assert!(!msg.contains("wrong-secret"), "the secret leaked into the error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_many_events_and_expiry_refreshes_it() {
    let s = setup().await;
    for i in 0..5 {
        assert_done(&s.run(&membership(Membership::Add, &format!("00ua{i}"), &format!("u{i}@example.net"))).await);
    }
    assert_eq!(s.graph.token_requests(), 1);
    s.graph.expire_tokens();
    assert_done(&s.run(&membership(Membership::Add, "00ub", "late@example.net")).await);
    assert_eq!(s.graph.token_requests(), 2);
    assert_eq!(s.guests().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_is_not_an_email_is_resolved_through_okta() {
    let okta = OktaUsersEmulator::start("okta-token-123").await.unwrap();
    okta.add_user("00uc", "jdoe", "jane.doe@example.net");
    let okta_url = okta.base_url();
    let s = setup_with(&format!("okta_url = \"{okta_url}\""), None, std::slice::from_ref(&okta_url)).await;
    assert_done(&s.run(&membership(Membership::Add, "00uc", "jdoe")).await);
    assert_eq!(s.guests(), vec!["jane.doe@example.net".to_string()]);
    assert_eq!(okta.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_moments_after_the_invitation_outlasts_entras_replication_lag() {
    let s = setup().await;
    // Entra's replicas answer 404 for a new account's first two calls by id.
    s.graph.set_by_id_lag(2);
    assert_done(&s.run(&membership(Membership::Add, "00u9", "lag@example.net")).await);
    let guest = s.graph.users().into_iter().find(|u| u.user_type == "Guest").unwrap();
    let remove = membership(Membership::Remove, "00u9", "lag@example.net");
    for n in 1..=2 {
        match s.run(&remove).await {
            AttemptResult::Retryable { message, retry_after } => {
                assert!(message.contains("replicated") && message.contains(&format!("try {n} of 3")), "{message}");
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            other => panic!("try {n}: {other:?}"),
        }
        assert_eq!(s.guests(), vec!["lag@example.net".to_string()], "nothing removed while Graph lags");
    }
    // The replica caught up: the third run deletes the guest.
    assert_done(&s.run(&remove).await);
    assert!(s.guests().is_empty());
    assert_eq!(s.writes(), vec![("DELETE".to_string(), format!("/v1.0/users/{}", guest.id))]);
}
