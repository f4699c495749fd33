//! graph-guest signs in to Entra ID with a certificate credential through the real `hookhost
//! serve`: the operator grants the key (`[plugins.graph-guest.keys] client_certificate`), the
//! plugin writes the client assertion, the host signs it, and the Graph emulator checks it as
//! Entra does. Each kind of assertion Entra refuses ends the delivery with Entra's AADSTS code
//! in its error.

use std::path::Path;

use hookhost_tests::okta::Membership;
use hookhost_tests::{GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{
    app_certificate, free_port, guests, membership, settle, start_with, write_config_with, write_private,
    AppCertificate, ServeProcess, ServeSetup,
};

/// A host whose graph-guest holds the certificate credential in `pem_file` and no client secret.
async fn serve_with_certificate(dir: &Path, graph: &GraphEmulator, pem_file: &Path) -> ServeProcess {
    let port = free_port();
    let setup = ServeSetup { graph_guest_certificate: Some(pem_file.to_path_buf()), ..ServeSetup::default() };
    write_config_with(dir, port, graph, setup.clone());
    let host_toml = std::fs::read_to_string(dir.join("host.toml")).unwrap();
    assert!(!host_toml.contains("client_secret"), "{host_toml}");
    start_with(dir, port, setup).await
}

/// Posts an add of user `n` and waits for its delivery to end: (status, last_error).
async fn add(serve: &ServeProcess, n: u32) -> (String, String) {
    let event = membership(Membership::Add, n, 0);
    assert_eq!(serve.post(vec![event.clone()]).await, Some(200));
    let views = settle(&serve.url, &[event]).await;
    let d: &Value = &views[0]["deliveries"][0];
    (d["status"].as_str().unwrap_or_default().to_owned(), d["last_error"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_guest_invites_with_a_certificate_and_each_refused_assertion_names_its_code() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let AppCertificate { pem, cert_der, .. } = app_certificate(&rcgen::PKCS_RSA_SHA256);
    let pem_file = write_private(dir.path(), "graph-app.pem", &pem);
    let serve = serve_with_certificate(dir.path(), &graph, &pem_file).await;
    let plugin = serve.wait_plugin("graph-guest", "active", |p| p["state"] == "active").await;
    assert_eq!(plugin["keys"], serde_json::json!(["client_certificate"]), "{plugin}");

    // The certificate is not uploaded to the app registration yet.
    let (status, error) = add(&serve, 1).await;
    assert_eq!(status, "dead");
    assert!(error.contains("AADSTS700027") && error.contains("not registered on application"), "{error}");

    graph.register_certificate(&cert_der).unwrap();
    // The host's clock an hour behind Entra's: the assertion has expired when it arrives.
    graph.skew_assertion_clock(3600);
    let (status, error) = add(&serve, 2).await;
    assert_eq!(status, "dead");
    assert!(error.contains("AADSTS700024") && error.contains("clock"), "{error}");
    graph.skew_assertion_clock(0);

    // Entra knows itself by another login URL than the one graph-guest is configured with.
    graph.set_audience_login_url("https://login.microsoftonline.com");
    let (status, error) = add(&serve, 3).await;
    assert_eq!(status, "dead");
    assert!(error.contains("AADSTS700023") && error.contains("login_url"), "{error}");
    graph.set_audience_login_url(&graph.base_url());

    // Registered, on time, for the right audience: the invitation goes through.
    let (status, error) = add(&serve, 4).await;
    assert_eq!((status.as_str(), error.as_str()), ("done", ""));
    assert_eq!(guests(&graph), vec!["user4@e2e.example".to_string()]);
    assert_eq!(graph.token_requests(), 4);
    // The token is cached: the next add signs nothing and asks for no token.
    let (status, _) = add(&serve, 5).await;
    assert_eq!(status, "done");
    assert_eq!(graph.token_requests(), 4);
    assert_eq!(guests(&graph).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_the_certificates_fails_signature_validation() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The registered certificate, but after another key: what a signature made with a key
    // other than the certificate's (or a tampered assertion) looks like to Entra.
    let registered = app_certificate(&rcgen::PKCS_RSA_SHA256);
    let other = app_certificate(&rcgen::PKCS_RSA_SHA256);
    graph.register_certificate(&registered.cert_der).unwrap();
    let other_key = other.pem.split("-----BEGIN CERTIFICATE-----").next().unwrap();
    let registered_cert = &registered.pem[registered.pem.find("-----BEGIN CERTIFICATE-----").unwrap()..];
    let pem_file = write_private(dir.path(), "graph-app.pem", &format!("{other_key}{registered_cert}"));
    let serve = serve_with_certificate(dir.path(), &graph, &pem_file).await;

    let (status, error) = add(&serve, 1).await;
    assert_eq!(status, "dead");
    assert!(error.contains("AADSTS700027") && error.contains("failed signature validation"), "{error}");
    assert!(error.contains("uploaded to the app registration"), "{error}");
    assert!(guests(&graph).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec_certificate_is_refused_before_asking_entra_which_accepts_only_rsa() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = app_certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
    graph.register_certificate(&cert.cert_der).unwrap();
    let pem_file = write_private(dir.path(), "graph-app.pem", &cert.pem);
    let serve = serve_with_certificate(dir.path(), &graph, &pem_file).await;

    let (status, error) = add(&serve, 1).await;
    assert_eq!(status, "dead");
    assert!(error.contains("not an RSA key") && error.contains("[plugins.graph-guest.keys]"), "{error}");
    assert_eq!(graph.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_key_file_refuses_the_plugin_naming_the_file_not_its_text() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem_file = write_private(
        dir.path(),
        "graph-app.pem",
        "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LU1BUktFUi0xMjM0\n-----END PRIVATE KEY-----\n",
    );
    let serve = serve_with_certificate(dir.path(), &graph, &pem_file).await;
    let plugin = serve.wait_plugin("graph-guest", "failed", |p| p["state"] == "failed").await;
    let error = plugin["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("plugins.graph-guest.keys.client_certificate"), "{error}");
    assert!(error.contains(&pem_file.display().to_string()), "{error}");
    assert!(!error.contains("bm90LWEta2V5") && !serve.logs().contains("bm90LWEta2V5"), "the key file's text leaked");
    // The host stays up, serving without the plugin.
    assert_eq!(serve.get_text("/healthz").await.0, 200);
}
