//! `[okta.oauth]` end to end: hookhost signs in to the Okta emulator as an API service app
//! (`private_key_jwt`, client credentials) instead of with an SSWS token. The backfill poller of
//! a real `serve` and the `hookhost reconcile` command get scoped access tokens, reuse them,
//! fetch a new one after a 401, and say which scope is missing when Okta refuses one.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookhost_tests::keys::{self, TestKey};
use hookhost_tests::okta::Membership;
use hookhost_tests::okta_emulator::ServiceApp;
use hookhost_tests::{GraphEmulator, OktaEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{self, hookhost_bin, membership, settle, ServeSetup};

const CLIENT: &str = "0oa1hookhostsvc";

/// Registers the service app with `granted` scopes and writes its private key beside the
/// config (0600, as an operator would).
fn service_app(okta: &OktaEmulator, dir: &Path, key: &TestKey, granted: &[&str]) {
    okta.register_service_app(ServiceApp {
        client_id: CLIENT.into(),
        key: key.public.clone(),
        kid: Some("hookhost-key-1".into()),
        scopes: granted.iter().map(|s| (*s).to_owned()).collect(),
    });
    let path = dir.join("okta-app.pem");
    std::fs::write(&path, &key.pem).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// `[okta]` lines with `[okta.oauth]` asking for `scopes`, then `more` (more `[okta.*]` tables).
fn oauth_lines(okta: &OktaEmulator, scopes: &[&str], more: &str) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "org_url = {:?}\n[okta.oauth]\nclient_id = {CLIENT:?}\nprivate_key = {{ file = \"okta-app.pem\" }}\n\
         key_id = \"hookhost-key-1\"\nscopes = [{}]\n{more}",
        okta.base_url(),
        scopes.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_signs_in_as_a_service_app_reuses_its_token_and_renews_it_after_a_401() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let okta = OktaEmulator::start("an-ssws-token-hookhost-does-not-have").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    service_app(&okta, dir.path(), &keys::rsa(), &["okta.logs.read"]);
    let port = support::free_port();
    let backfill = "[okta.backfill]\nenabled = true\nevery_secs = 1\nlookback_secs = 3600\n";
    let setup = ServeSetup { okta_extra: oauth_lines(&okta, &["okta.logs.read"], backfill), ..ServeSetup::default() };
    let setup = support::write_config_with(dir.path(), port, &graph, setup);
    let serve = support::start_with(dir.path(), port, setup).await;

    // Events only the System Log has (their hook deliveries were lost).
    let first = vec![membership(Membership::Add, 1, -30_000), membership(Membership::Add, 2, -29_000)];
    okta.append(&first);
    let views = tokio::time::timeout(Duration::from_secs(120), settle(&serve.url, &first)).await.expect("recovered");
    for v in &views {
        assert_eq!(v["source"], "system_log", "{v}");
        assert_eq!(v["deliveries"][0]["status"], "done", "{v}");
    }
    // Several polls, one token.
    support::wait_until("a few more polls", Duration::from_secs(60), async || {
        okta.requests_to("/api/v1/logs").len() >= 4
    })
    .await;
    let tokens = okta.token_requests();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!((tokens[0].status, tokens[0].client_id.as_deref()), (200, Some(CLIENT)));
    assert_eq!(tokens[0].scopes, ["okta.logs.read"]);
    assert!(okta.requests_to("/api/v1/logs").iter().all(|r| r.status == 200));

    // The token dies early (revoked, say): one 401, one new token, and polling goes on.
    okta.expire_oauth_tokens();
    let later = vec![membership(Membership::Add, 3, -1_000)];
    okta.append(&later);
    let views = tokio::time::timeout(Duration::from_secs(120), settle(&serve.url, &later)).await.expect("recovered");
    assert_eq!(views[0]["deliveries"][0]["status"], "done", "{}", views[0]);
    let tokens = okta.token_requests();
    assert_eq!(tokens.iter().map(|t| t.status).collect::<Vec<_>>(), [200, 200], "{tokens:?}");
    let refused = okta.requests_to("/api/v1/logs").iter().filter(|r| r.status == 401).count();
    assert_eq!(refused, 1);
    assert_eq!(support::guests(&graph), ["user1@e2e.example", "user2@e2e.example", "user3@e2e.example"]);

    // Neither the key nor a token is in the log.
    let logs = support::serve_logs(dir.path());
    let key_body: String = keys_body(&std::fs::read_to_string(dir.path().join("okta-app.pem")).unwrap());
    assert!(!logs.contains(&key_body[..40]), "the key's text is in the log");
    assert!(!logs.contains("eyJ"), "a JWT is in the log");
}

/// The base64 body of a PEM, joined.
fn keys_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// `hookhost reconcile --config dir/host.toml --plugin graph-guest --json`: success, stdout, stderr.
fn reconcile(dir: &Path) -> (bool, String, String) {
    let out = Command::new(hookhost_bin())
        .arg("reconcile")
        .arg("--config")
        .arg(dir.join("host.toml"))
        .args(["--plugin", "graph-guest", "--json"])
        .current_dir("/")
        .output()
        .expect("run hookhost reconcile");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reads_groups_with_an_ec_key_and_names_a_missing_scope() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let okta = OktaEmulator::start("an-ssws-token-hookhost-does-not-have").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = keys::ec_p256();
    service_app(&okta, dir.path(), &key, &["okta.logs.read", "okta.groups.read"]);
    let group = okta.add_group("O365Guest");
    for (login, first) in [("ann@partner.example", "Ann"), ("bob@partner.example", "Bob")] {
        let user = okta.add_user(login, first, "Test");
        okta.add_member(&group, &user);
    }
    let write = |scopes: &[&str]| {
        let setup = ServeSetup { okta_extra: oauth_lines(&okta, scopes, ""), ..ServeSetup::default() };
        support::write_config_with(dir.path(), support::free_port(), &graph, setup);
    };

    // Granted: the report sees both members (nothing synced yet: two adds).
    write(&["okta.groups.read"]);
    let d = dir.path().to_owned();
    let (ok, out, err) = tokio::task::spawn_blocking(move || reconcile(&d)).await.unwrap();
    assert!(ok, "{out}\n{err}");
    let plan: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(plan["okta_members"], 2, "{plan}");
    assert_eq!(plan["add"].as_array().unwrap().len(), 2, "{plan}");
    assert_eq!(okta.token_requests().last().map(|t| t.status), Some(200));

    // A token without the groups scope: Okta's 403 names it, and so does hookhost.
    write(&["okta.logs.read"]);
    let d = dir.path().to_owned();
    let (ok, out, err) = tokio::task::spawn_blocking(move || reconcile(&d)).await.unwrap();
    assert!(!ok, "{out}");
    assert!(err.contains("403") && err.contains("okta.groups.read") && err.contains("okta.oauth.scopes"), "{err}");

    // Asking for a scope the app was never granted: the token endpoint's invalid_scope.
    write(&["okta.groups.read", "okta.eventHooks.manage"]);
    let d = dir.path().to_owned();
    let (ok, _, err) = tokio::task::spawn_blocking(move || reconcile(&d)).await.unwrap();
    assert!(!ok);
    assert!(err.contains("invalid_scope") && err.contains("okta.eventHooks.manage"), "{err}");
    assert!(err.contains("Okta API Scopes"), "the fix is named: {err}");

    // A key the app does not have: invalid_client, and the hint to check the key.
    std::fs::write(dir.path().join("okta-app.pem"), keys::ec_p256().pem).unwrap();
    write(&["okta.groups.read"]);
    let d = dir.path().to_owned();
    let (ok, _, err) = tokio::task::spawn_blocking(move || reconcile(&d)).await.unwrap();
    assert!(!ok);
    assert!(err.contains("invalid_client") && err.contains("okta.oauth.private_key"), "{err}");
    assert!(!err.contains(&keys_body(&key.pem)[..40]), "no key text in errors");
}
