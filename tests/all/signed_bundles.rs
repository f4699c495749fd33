//! Signed bundles through the real `hookhost serve` with `[plugins] trusted_keys`: an
//! unsigned, a tampered, an untrusted-key and a downgraded bundle are refused with the old
//! version serving and `last_error` naming the file and why; a correctly signed newer one
//! goes live. Signatures cross both ways with Debian's `minisign` tool: one it makes is
//! accepted by hookhost, one `hookhost plugin sign` makes passes `minisign -V`.

use std::path::{Path, PathBuf};
use std::process::Command;

use hookhost_tests::{GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{
    free_port, hookhost_bin, start_with, test_manifest, wasm, write_config_with, ServeProcess, ServeSetup,
};

/// Debian's minisign tool; the test fails (never skips) without it.
fn minisign() -> Command {
    let found = Command::new("sh").args(["-c", "command -v minisign"]).output().map(|o| o.status.success());
    assert!(
        found.unwrap_or(false),
        "the minisign tool is missing: install it with `apt-get install -y minisign` (scripts/setup test does)"
    );
    Command::new("minisign")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The base64 key line of a minisign `.pub` file.
fn public_key(pub_file: &Path) -> String {
    std::fs::read_to_string(pub_file).unwrap().lines().nth(1).unwrap().trim().to_owned()
}

/// Writes echo as `name` at `version` into `dir` (no signatures).
fn write_bundle(dir: &Path, version: &str) -> PathBuf {
    std::fs::copy(wasm("echo"), dir.join("echo.wasm")).unwrap();
    let manifest = test_manifest("echo").replace("version = \"1.0.0\"", &format!("version = \"{version}\""));
    let toml = dir.join("echo.toml");
    std::fs::write(&toml, manifest).unwrap();
    for sig in ["echo.wasm.minisig", "echo.toml.minisig"] {
        let _ = std::fs::remove_file(dir.join(sig));
    }
    toml
}

fn hookhost_sign(key: &Path, toml: &Path) {
    run(Command::new(hookhost_bin()).args(["plugin", "sign", "--key"]).arg(key).arg(toml));
}

async fn reload_and_status(serve: &ServeProcess) -> Value {
    let r = serve.admin(reqwest::Method::POST, "/api/plugins/reload").send().await.unwrap();
    assert!(r.status().is_success(), "reload: {}", r.status());
    let all = serve.get_json("/api/plugins").await;
    all["plugins"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == "echo").cloned()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_bundles_signed_by_a_trusted_key_go_live() {
    let keys = tempfile::tempdir().unwrap();
    // Our key, from `hookhost plugin keygen`.
    let out = run(Command::new(hookhost_bin()).args(["plugin", "keygen", "--dir"]).arg(keys.path()));
    assert!(out.contains("trusted_keys"), "{out}");
    let our_key = keys.path().join("hookhost-signing.key");
    let our_pub = keys.path().join("hookhost-signing.pub");
    // A key of Debian's minisign tool (-W: no password), trusted too, and one not trusted.
    let deb_key = keys.path().join("deb.key");
    let deb_pub = keys.path().join("deb.pub");
    run(minisign().args(["-G", "-W", "-p"]).arg(&deb_pub).arg("-s").arg(&deb_key));
    let stranger_key = keys.path().join("stranger.key");
    run(minisign().args(["-G", "-W", "-p"]).arg(keys.path().join("stranger.pub")).arg("-s").arg(&stranger_key));

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    let toml = write_bundle(&plugins, "1.0.0");
    hookhost_sign(&our_key, &toml);
    // hookhost's signatures are minisign's: the tool verifies them.
    for file in ["echo.wasm", "echo.toml"] {
        run(minisign().args(["-V", "-q", "-m"]).arg(plugins.join(file)).arg("-P").arg(public_key(&our_pub)));
    }

    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let port = free_port();
    let setup = ServeSetup {
        graph_guest: false,
        plugins_extra: format!(
            "watch = false\ntrusted_keys = [{:?}, {:?}]\n",
            public_key(&our_pub),
            public_key(&deb_pub)
        ),
        ..Default::default()
    };
    write_config_with(dir.path(), port, &graph, setup.clone());
    let serve = start_with(dir.path(), port, setup).await;
    let status = reload_and_status(&serve).await;
    assert_eq!((status["state"].as_str(), status["version"].as_str()), (Some("active"), Some("1.0.0")), "{status}");

    // Refused, each with 1.0.0 still serving and last_error naming the file and the reason.
    let cases: Vec<(&str, Box<dyn Fn(&Path)>, &str, &str)> = vec![
        ("unsigned", Box::new(|_: &Path| {}), "echo.wasm.minisig", "is missing"),
        (
            "tampered after signing",
            Box::new(|t: &Path| {
                hookhost_sign(&our_key, t);
                let mut text = std::fs::read_to_string(t).unwrap();
                text.push_str("# changed after signing\n");
                std::fs::write(t, text).unwrap();
            }),
            "echo.toml.minisig",
            "does not match",
        ),
        (
            "signed by an untrusted key",
            Box::new(|t: &Path| {
                for f in [t.with_extension("wasm"), t.to_path_buf()] {
                    run(minisign().args(["-S", "-s"]).arg(&stranger_key).arg("-m").arg(&f));
                }
            }),
            "echo.wasm.minisig",
            "not in plugins.trusted_keys",
        ),
        (
            "only the wasm signed",
            Box::new(|t: &Path| {
                hookhost_sign(&our_key, t);
                std::fs::remove_file(t.with_extension("toml.minisig")).unwrap();
            }),
            "echo.toml.minisig",
            "is missing",
        ),
    ];
    for (what, prepare, file, reason) in &cases {
        let t = write_bundle(&plugins, "1.1.0");
        prepare(&t);
        let status = reload_and_status(&serve).await;
        let e = status["last_error"].as_str().unwrap_or_default();
        assert_eq!(status["version"], "1.0.0", "{what}: the old version must keep serving: {status}");
        assert_eq!(status["state"], "active", "{what}: {status}");
        assert!(
            e.contains(file) && e.contains(reason),
            "{what}: last_error {e:?} should name {file} and say {reason:?}"
        );
    }

    // Signed by Debian's tool with a trusted key: goes live.
    let t = write_bundle(&plugins, "1.2.0");
    for f in [t.with_extension("wasm"), t.clone()] {
        run(minisign().args(["-S", "-s"]).arg(&deb_key).arg("-m").arg(&f));
    }
    let status = reload_and_status(&serve).await;
    assert_eq!((status["version"].as_str(), status["last_error"].as_str()), (Some("1.2.0"), None), "{status}");

    // A correctly signed older version is a downgrade: refused.
    let t = write_bundle(&plugins, "1.0.5");
    hookhost_sign(&our_key, &t);
    let status = reload_and_status(&serve).await;
    let e = status["last_error"].as_str().unwrap_or_default();
    assert_eq!(status["version"], "1.2.0", "{status}");
    assert!(e.contains("lower than the active version 1.2.0") && e.contains("allow_downgrade"), "{e}");

    // And a correctly signed newer one by hookhost goes live.
    let t = write_bundle(&plugins, "1.3.0");
    hookhost_sign(&our_key, &t);
    let status = reload_and_status(&serve).await;
    assert_eq!((status["version"].as_str(), status["last_error"].as_str()), (Some("1.3.0"), None), "{status}");
}

/// `[plugins.<name>] allow_downgrade = true` lets an older signed version in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_goes_live_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    write_bundle(&plugins, "2.0.0");
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let port = free_port();
    let setup = ServeSetup {
        graph_guest: false,
        plugins_extra: "watch = false\n".into(),
        extra: "[plugins.echo]\nallow_downgrade = true\n".into(),
        ..Default::default()
    };
    write_config_with(dir.path(), port, &graph, setup.clone());
    let serve = start_with(dir.path(), port, setup).await;
    assert_eq!(reload_and_status(&serve).await["version"], "2.0.0");
    write_bundle(&plugins, "1.0.0");
    let status = reload_and_status(&serve).await;
    assert_eq!((status["version"].as_str(), status["last_error"].as_str()), (Some("1.0.0"), None), "{status}");
}
