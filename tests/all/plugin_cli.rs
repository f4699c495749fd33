//! `hookhost plugin check` and `hookhost plugin run`, as a plugin author uses them.

use std::process::Command;

use crate::support::{bundle, hookhost_bin, test_manifest, workspace};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(hookhost_bin()).args(args).output().expect("run hookhost");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_good_bundle_and_prints_what_it_asks_for() {
    let b = bundle("hostile", "hostile", &test_manifest("hostile"));
    let (ok, out, err) = run(&["plugin", "check", b.manifest.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: hostile 1.0.0 implements hookhost:plugin/plugin@0.2.0"), "{out}");
    assert!(out.contains("event_types: group.user_membership.add"), "{out}");
    assert!(out.contains("memory 16 MiB, timeout 500 ms, max_http_requests 4"), "{out}");
    assert!(out.contains("keys:        signing_key (not granted)"), "{out}");
}

#[test]
fn check_rejects_a_component_of_another_world_saying_what_is_missing() {
    let b = bundle("wrong-world", "wrong", &test_manifest("echo").replace("\"echo\"", "\"wrong\""));
    let (ok, out, err) = run(&["plugin", "check", b.manifest.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(err.contains("is not a hookhost plugin"), "{err}");
    assert!(err.contains("hookhost:plugin/handler@0.2.0"), "{err}");
    assert!(err.contains("hookhost:plugin/handler@0.1.0"), "{err}");
}

#[test]
fn check_rejects_a_core_module_and_a_bad_manifest() {
    let b = bundle("echo", "echo", &test_manifest("echo"));
    // A core module (not a component): the 8-byte header of an empty module.
    std::fs::write(b.dir.path().join("echo.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = run(&["plugin", "check", b.manifest.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("core wasm module, not a component"), "{err}");

    std::fs::write(&b.manifest, test_manifest("echo") + "colour = \"blue\"\n").unwrap();
    let (ok, _, err) = run(&["plugin", "check", b.manifest.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("colour") && err.contains("echo.toml"), "{err}");
}

#[test]
fn run_accepts_a_full_delivery_and_reports_each_event() {
    let b = bundle("echo", "echo", &test_manifest("echo"));
    let fixture = workspace().join("tests/fixtures/okta/okta-docs_event-hook-delivery_user.session.start_2023.json");
    let (ok, out, err) = run(&["plugin", "run", b.manifest.to_str().unwrap(), "--event", fixture.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("event f1d0b993-cc19-11ed-a688-db22c99ef6c4 user.session.start"), "{out}");
    assert!(out.contains("result: user.session.start for nobody"), "{out}");
}

#[test]
fn run_exits_non_zero_when_the_plugin_fails() {
    let b = bundle("hostile", "hostile", &test_manifest("hostile").replace("mode = \"ok\"", "mode = \"panic\""));
    let fixture = workspace().join("tests/fixtures/okta/demisto-content_logevent_group.user_membership.remove.json");
    let (ok, out, _) = run(&["plugin", "run", b.manifest.to_str().unwrap(), "--event", fixture.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("trapped") && out.contains("panicked on purpose"), "{out}");
}
