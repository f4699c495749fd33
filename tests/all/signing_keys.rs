//! The `keys` grant: a plugin signs with a key the host holds and can never take the key
//! away. The hostile test plugin, granted a key, asks every import for it (secrets, config,
//! `keys.info`, `keys.sign` with each algorithm and odd messages, another key's name) and
//! logs everything it got; none of that holds the key in any encoding, its signatures verify
//! with the certificate, and the refusals are logged like every other grant refusal.

use std::sync::Arc;

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hookhost::registry::{self, PluginBundle};
use hookhost::runtime::{AttemptResult, LogLevel, LogSource, MemoryKv};

use crate::support::{
    self, app_certificate, bundle, key_material, load, membership_event, override_toml, test_manifest, write_private,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_granted_a_key_gets_signatures_and_never_the_key() {
    let rt = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let cert = app_certificate(&rcgen::PKCS_RSA_SHA256);
    let pem_file = write_private(dir.path(), "signing.pem", &cert.pem);
    let b = bundle("hostile", "hostile", &test_manifest("hostile"));
    // The key's file path also set as a secret and a config value under the key's name:
    // neither import hands out anything of the key.
    let over = override_toml(&format!(
        "[keys]\nsigning_key = {{ file = {path:?} }}\n[secrets]\nsigning_key = {{ file = {path:?} }}\n\
         [config]\nmode = \"steal-key\"\n",
        path = pem_file.display().to_string()
    ));
    let (spec, plugin) = load(&rt, &b.manifest, Some(&over));
    assert_eq!(spec.grant.keys.keys().collect::<Vec<_>>(), ["signing_key"]);
    assert!(spec.grant.secrets.is_empty(), "a secret the manifest does not declare was granted");
    assert!(!format!("{:?}", spec.grant).contains(&cert.pem[40..80]), "the grant's Debug shows the key");

    let a = rt
        .run_for(
            &plugin,
            &membership_event("ev-steal", "jane@example.com"),
            Arc::new(MemoryKv::default()),
            Some("d-steal"),
        )
        .await;
    assert_eq!(a.result, AttemptResult::Done { summary: "asked 13 questions about signing_key".into() }, "{:?}", a.log);
    let answers: Vec<&str> =
        a.log.iter().filter(|l| l.source == LogSource::Plugin).map(|l| l.message.as_str()).collect();
    let everything = format!("{answers:?}{:?}{:?}", a.log, a.result);

    // Nothing it got holds the key, in any encoding.
    for needle in key_material(&cert.key_der, &cert.pem) {
        assert!(!everything.contains(&needle), "key material reached the plugin: {needle}");
    }
    // Positive control: the scan does find the certificate, whose thumbprint it was given...
    let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert.cert_der));
    assert!(everything.contains(&thumbprint), "keys.info gave no thumbprint: {answers:?}");
    // ...and signatures that verify with the certificate's public key, RS256 and PS256.
    let public = rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::from_pem(&cert.pem).unwrap());
    for (alg, verification) in
        [("Algorithm::Rs256", &RSA_PKCS1_2048_8192_SHA256), ("Algorithm::Ps256", &RSA_PSS_2048_8192_SHA256)]
    {
        let line = answers
            .iter()
            .find(|l| l.starts_with(&format!("keys.sign(signing_key, {alg}, 27 bytes) = signature ")))
            .unwrap_or_else(|| panic!("no {alg} signature: {answers:?}"));
        let signature = hex::decode(line.rsplit(' ').next().unwrap()).unwrap();
        UnparsedPublicKey::new(verification, &public).verify(b"-----BEGIN PRIVATE KEY-----", &signature).unwrap();
    }

    let answer = |prefix: &str| answers.iter().find(|l| l.starts_with(prefix)).copied().unwrap_or_default();
    assert_eq!(answer("secrets.get(signing_key)"), "secrets.get(signing_key) = None");
    assert_eq!(answer("config.get(signing_key)"), "config.get(signing_key) = None");
    assert!(answer("keys.sign(signing_key, Algorithm::Es256, 0 bytes)").contains("InvalidRequest"), "{answers:?}");
    assert!(answer("keys.sign(signing_key, Algorithm::Rs256, 70000 bytes)").contains("InvalidRequest"), "{answers:?}");
    assert!(answer("keys.sign(other_key)").contains("Denied"), "{answers:?}");

    // The refusals are in the attempt's log as the host's, by name, like other grant refusals.
    let refusals: Vec<&str> = a
        .log
        .iter()
        .filter(|l| l.source == LogSource::Host && l.level == LogLevel::Warn)
        .map(|l| l.message.as_str())
        .collect();
    assert!(refusals.iter().any(|m| m.contains("key \"other_key\" is not granted to plugin hostile")), "{refusals:?}");
    assert!(refusals.iter().any(|m| m.contains("secret \"signing_key\" is not granted")), "{refusals:?}");
    assert!(refusals.iter().any(|m| m.contains("ES256 cannot sign with this RSA key")), "{refusals:?}");
}

#[test]
fn a_configured_key_that_is_not_usable_refuses_the_plugin_without_quoting_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle("hostile", "hostile", &test_manifest("hostile"));
    let bundle = PluginBundle::load(&b.manifest).unwrap();
    let ec_p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap().serialize_pem();
    for (what, text) in [
        ("not PEM", "MARKER-hunter2-not-a-key\n".to_string()),
        ("P-384", format!("{ec_p384}# MARKER-hunter2\n")),
        ("broken", "-----BEGIN PRIVATE KEY-----\nTUFSS0VSLWh1bnRlcjI=\n-----END PRIVATE KEY-----\n".to_string()),
    ] {
        let file = write_private(dir.path(), "key.pem", &text);
        let over = override_toml(&format!("[keys]\nsigning_key = {{ file = {:?} }}\n", file.display().to_string()));
        let e = registry::effective(&bundle, Some(&over)).unwrap_err();
        assert!(
            e.contains("plugins.hostile.keys.signing_key") && e.contains(&file.display().to_string()),
            "{what}: {e}"
        );
        assert!(!e.contains("MARKER") && !e.contains("TUFSS0VS") && !e.contains("MII"), "{what}: {e}");
    }
    let missing = dir.path().join("missing.pem");
    let over = override_toml(&format!("[keys]\nsigning_key = {{ file = {:?} }}\n", missing.display().to_string()));
    let e = registry::effective(&bundle, Some(&over)).unwrap_err();
    assert!(e.contains("plugins.hostile.keys.signing_key") && e.contains("missing.pem"), "{e}");
    // A key the manifest does not declare is not granted.
    let cert = app_certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
    let file = write_private(dir.path(), "ok.pem", &cert.pem);
    let over = override_toml(&format!("[keys]\nundeclared = {{ file = {:?} }}\n", file.display().to_string()));
    assert!(registry::effective(&bundle, Some(&over)).unwrap().grant.keys.is_empty());
}
