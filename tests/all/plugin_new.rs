//! `hookhost plugin new`: each scaffold builds, passes its own test, and runs as a plugin.
//!
//! The Rust crate is built outside this workspace (it has its own `[workspace]`), with
//! `CARGO_TARGET_DIR=target/scaffold` so its dependencies compile once per machine, and with
//! this workspace's `Cargo.lock` so it resolves the versions already downloaded. The Python
//! project's unit test runs with the system python3; its component is built only when the
//! componentize-py venv exists (`make dist` makes it), and not run here (see below).

use std::path::Path;
use std::process::Command;

use crate::support::{hookhost_bin, workspace};

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn scaffold(name: &str, lang: &str, dir: &Path) -> String {
    ok(Command::new(hookhost_bin()).args(["plugin", "new", name, "--lang", lang, "--dir"]).arg(dir))
}

/// `hookhost plugin check` then `plugin run` on the fixture; returns run's output.
fn check_and_run(manifest: &Path) -> String {
    let out = ok(Command::new(hookhost_bin()).args(["plugin", "check"]).arg(manifest));
    assert!(out.contains("implements hookhost:plugin/plugin@0.2.0"), "{out}");
    assert!(out.contains("routes:") && out.contains("group.user_membership.add"), "{out}");
    let fixture = manifest.parent().unwrap().join("fixtures/event.json");
    ok(Command::new(hookhost_bin()).args(["plugin", "run"]).arg(manifest).arg("--event").arg(fixture))
}

#[test]
fn the_rust_scaffold_builds_passes_its_test_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello-guest");
    let out = scaffold("hello-guest", "rust", &dir);
    assert!(out.contains("hello-guest.toml") && out.contains("src/lib.rs"), "{out}");
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = workspace().join("target/scaffold");
    let test = ok(Command::new(&cargo).args(["test", "--release"]).current_dir(&dir).env("CARGO_TARGET_DIR", &target));
    assert!(test.contains("test result: ok. 2 passed"), "{test}");
    ok(Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target));
    std::fs::copy(target.join("wasm32-wasip2/release/hello_guest.wasm"), dir.join("hello-guest.wasm")).unwrap();

    let run = check_and_run(&dir.join("hello-guest.toml"));
    assert!(run.contains("plugin hello-guest 0.1.0: done"), "{run}");
    assert!(run.contains("hello, jane@example.com: you joined O365Guest"), "{run}");
}

#[test]
fn the_python_scaffold_passes_its_test_and_builds_with_componentize_py() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello-py");
    let out = scaffold("hello-py", "python", &dir);
    assert!(out.contains("app.py") && out.contains("test_logic.py"), "{out}");
    let test = ok(Command::new("python3").args(["-B", "-m", "unittest", "-v"]).current_dir(&dir));
    assert!(test.contains("Ran 2 tests") && test.contains("OK"), "{test}");

    let componentize = workspace().join("target/py-venv/bin/componentize-py");
    if !componentize.exists() {
        eprintln!("skipping the component build: {} is missing (make dist installs it)", componentize.display());
        return;
    }
    ok(Command::new(componentize)
        .args(["--wit-path", "wit", "--world", "plugin", "componentize", "app", "-o", "hello-py.wasm"])
        .current_dir(&dir));
    // A component (layer 1), not a core module. Running it (`plugin run`) would compile the
    // 18 MB component once more, seconds of every core that the other tests need; the
    // shipped Python plugin, built the same way, runs end to end in `fan_out`.
    let wasm = std::fs::read(dir.join("hello-py.wasm")).unwrap();
    assert_eq!(&wasm[..8], b"\0asm\x0d\0\x01\0", "not a WebAssembly component");
}

#[test]
fn plugin_new_refuses_a_bad_name_and_an_occupied_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(hookhost_bin())
        .args(["plugin", "new", "Not Valid", "--dir"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plugin name"), "{out:?}");
    std::fs::write(tmp.path().join("keep"), "").unwrap();
    let out = Command::new(hookhost_bin()).args(["plugin", "new", "fine", "--dir"]).arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"), "{out:?}");
}
