//! The `hookhost` binary starts and describes itself. (Its presence here also makes
//! `cargo test --workspace` build the real binary with the test build's features, which the
//! end-to-end tests in `tests/` run, so CI compiles wasmtime once rather than twice.)

use std::process::Command;

#[test]
fn version_and_help_name_the_commands() {
    let bin = env!("CARGO_BIN_EXE_hookhost");
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hookhost "));
    let out = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "plugin", "events", "replay"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn serve_without_an_okta_secret_says_which_key_to_set() {
    let dir = std::env::temp_dir().join(format!("hookhost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("host.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookhost")).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("okta.auth_secret is required"), "{err}");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\ntypo = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookhost")).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("typo") && err.contains("host.toml"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
