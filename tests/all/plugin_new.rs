//! `hookhost plugin new`: each scaffold builds, passes its own test, and runs as a plugin.
//!
//! The Rust crate is built outside this workspace (it has its own `[workspace]`), with
//! `CARGO_TARGET_DIR=target/scaffold` so its dependencies compile once per machine, and with
//! this workspace's `Cargo.lock` so it resolves the versions already downloaded. The Python
//! project's unit test runs with the system python3; its component is built only when the
//! componentize-py venv exists (`make dist` makes it), and not run here (see below). The
//! JavaScript project goes the whole way, from `plugin new` to an event done in `serve`.

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

/// The author's loop of docs/plugins.md, JavaScript section, step by step: `plugin new
/// --lang js`, `npm test` (the logic under plain node), the pinned toolchain, `npm run
/// build` (jco componentize), `plugin check` (compiles into the bundle folder's `.cache`),
/// `plugin run` (from that cache), then the bundle dropped into a running `serve` that
/// handles an Okta event with it, calling a real webhook through the `http.send` import.
///
/// The toolchain (~340 MB) comes from `make js-toolchain`'s `target/js-toolchain` when it
/// is there (`make test` makes it), else from `npm ci` in the scaffold as the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_scaffold_goes_from_plugin_new_to_an_event_done_in_serve() {
    use hookhost_tests::okta::{group_membership_event, timestamp, Membership};
    use hookhost_tests::webhooks::{WebhookKind, WebhookReceiver};

    use hookhost_tests::serve::settle_within;

    use crate::support::{free_port, wait_until, ServeProcess, ServeSetup};

    let patient = std::time::Duration::from_secs(900);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello-js");
    let out = scaffold("hello-js", "js", &dir);
    assert!(out.contains("app.js") && out.contains("package-lock.json") && out.contains("logic.test.js"), "{out}");

    let test = ok(Command::new("npm").arg("test").current_dir(&dir));
    assert!(test.contains("# pass 4") && test.contains("# fail 0"), "{test}");

    let shared = workspace().join("target/js-toolchain/node_modules");
    if shared.join(".bin/jco").exists() {
        std::os::unix::fs::symlink(&shared, dir.join("node_modules")).unwrap();
    } else {
        ok(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir));
    }
    ok(Command::new("npm").args(["run", "build"]).current_dir(&dir));
    let wasm = std::fs::read(dir.join("hello-js.wasm")).unwrap();
    assert_eq!(&wasm[..8], b"\0asm\x0d\0\x01\0", "not a WebAssembly component");

    // check compiles and fills the cache; run and a second check load from it.
    let manifest = dir.join("hello-js.toml");
    let check = ok(Command::new(hookhost_bin()).args(["plugin", "check"]).arg(&manifest));
    assert!(check.contains("implements hookhost:plugin/plugin@0.2.0") && check.contains(", compiled in"), "{check}");
    assert!(check.contains(&format!("cache:       {}", dir.join(".cache").display())), "{check}");
    let fixture = dir.join("fixtures/event.json");
    let run = ok(Command::new(hookhost_bin()).args(["plugin", "run"]).arg(&manifest).arg("--event").arg(&fixture));
    assert!(run.contains("plugin hello-js 0.1.0: done"), "{run}");
    assert!(run.contains("result: hello, jane@example.com: you joined O365Guest"), "{run}");
    assert!(run.contains("[Plugin] handling"), "{run}");
    let again = ok(Command::new(hookhost_bin()).args(["plugin", "check"]).arg(&manifest));
    assert!(again.contains("loaded from the artifact cache"), "{again}");

    // A serving host: the operator grants the webhook and sets notify_url; the artifact
    // cache is the one check filled (the same engine settings, so the same entries).
    let hook = WebhookReceiver::start(WebhookKind::Generic { secret: None }).await.unwrap();
    let host = tmp.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let port = free_port();
    let setup = ServeSetup {
        graph_guest: false,
        plugins_extra: format!("cache_dir = {:?}\n", dir.join(".cache")),
        extra: format!(
            "[plugins.hello-js]\nallowed_hosts = [{:?}]\n[plugins.hello-js.config]\nnotify_url = {:?}\n",
            hook.base_url(),
            hook.url()
        ),
        ..ServeSetup::default()
    };
    let setup = hookhost_tests::serve::write_config(&host, port, None, setup);
    let serve = ServeProcess::spawn(&host, port, setup, patient).await.unwrap_or_else(|e| panic!("{e:#}"));

    // make deploy: write beside, then rename.
    let plugins = host.join("plugins.d");
    for ext in ["wasm", "toml"] {
        std::fs::copy(dir.join(format!("hello-js.{ext}")), plugins.join(format!("hello-js.{ext}.tmp"))).unwrap();
    }
    for ext in ["wasm", "toml"] {
        std::fs::rename(plugins.join(format!("hello-js.{ext}.tmp")), plugins.join(format!("hello-js.{ext}"))).unwrap();
    }
    wait_until("hello-js in service", patient, async || serve.plugin("hello-js").await["state"] == "active").await;

    let event = group_membership_event(
        Membership::Add,
        "00u1js",
        "jane@example.com",
        "Jane Doe",
        "00g1js",
        "O365Guest",
        &timestamp(0),
    );
    assert_eq!(serve.post(vec![event.clone()]).await, Some(200));
    let views = settle_within(&serve.url, std::slice::from_ref(&event), patient).await;
    let delivery = &views[0]["deliveries"][0];
    assert_eq!(delivery["status"], "done", "{}\n{}", views[0], serve.run_log());
    let posts = hook.accepted();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let body = posts[0].json();
    assert_eq!(body["summary"], "hello, jane@example.com: you joined O365Guest", "{body}");
    assert_eq!(body["id"], event["uuid"], "{body}");

    // The history, from the command line: the attempt and its log lines.
    let uuid = event["uuid"].as_str().unwrap();
    let show = ok(Command::new(hookhost_bin()).args(["events", "show", uuid, "--config"]).arg(host.join("host.toml")));
    assert!(show.contains("plugin hello-js 0.1.0: done"), "{show}");
    assert!(show.contains("[plugin] handling") && show.contains("[plugin] posted to http://127.0.0.1"), "{show}");
    hook.shutdown().await;
}
