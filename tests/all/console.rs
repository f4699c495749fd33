//! The operator console (`GET /`) in real headless Chromium, against the real `hookhost serve`
//! with graph-guest and the Graph emulator: sign in with the admin token, see the plugin,
//! find an event by the user's login, open its dead delivery, press Replay and watch it end
//! `done`; a display name carrying `<script>` shows as text and runs nothing; a refused
//! reload is marked on the plugin. The events view is saved as `target/console.png`.
//!
//! The browser is Debian's `chromium` driven through `chromedriver` (WebDriver, over plain
//! HTTP on 127.0.0.1) by fantoccini. Missing either binary fails the test with the package
//! names to install; it is never skipped. Waits poll the page with a generous deadline
//! (the page itself polls the API every 2 s), so a loaded machine is slower, not flaky.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hookhost_tests::okta::{group_membership_event, timestamp, Membership};
use hookhost_tests::{Fault, GraphEmulator, TenantConfig};
use serde_json::{json, Value};

use crate::support::{free_port, http_client, settle, start, workspace, write_config, ADMIN_TOKEN};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one thing may take to show up on the page.
const WAIT: Duration = Duration::from_secs(45);

/// A chromedriver process and one browser session. On success [`Browser::close`] ends the
/// session (Chromium quits); whatever happens, dropping it kills chromedriver's whole process
/// group, which the Chromium it started belongs to, so a failed test leaves no browser behind.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Browser {
        for (bin, what) in [(CHROMIUM, "Chromium"), (CHROMEDRIVER, "chromedriver")] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the console tests need {what}; install Debian's packages with \
                 `apt-get install -y chromium chromium-driver` (.ci/run does this)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Its own process group, shared by the browser it starts (see `Drop`).
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser { client: connect(port, profile.path()).await, driver, _profile: profile };
        browser.client.set_window_size(1440, 1000).await.expect("window size");
        browser.driver_alive();
        browser
    }

    fn driver_alive(&mut self) {
        if let Ok(Some(status)) = self.driver.try_wait() {
            panic!("chromedriver exited with {status}");
        }
    }

    /// Runs `script` (a function body that `return`s) until it returns something truthy;
    /// that value. Panics naming `what` after [`WAIT`].
    async fn wait_for(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let t = Instant::now();
        let mut last: Value;
        loop {
            match self.client.execute(script, args.clone()).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = v,
                Err(e) => last = json!(format!("script error: {e}")),
            }
            assert!(t.elapsed() < WAIT, "the console did not show {what} within {WAIT:?}; last: {last}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Clicks the first element matching `css`, finding it again if a re-draw replaced it.
    async fn click(&self, what: &str, css: &str) {
        let t = Instant::now();
        loop {
            let err = match self.client.find(Locator::Css(css)).await {
                Ok(e) => match e.click().await {
                    Ok(()) => return,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(t.elapsed() < WAIT, "could not click {what} ({css}) within {WAIT:?}: {err}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Replaces the value of the input at `css` with `text`, as typed.
    async fn type_into(&self, css: &str, text: &str) {
        let input = self.client.find(Locator::Css(css)).await.expect("input");
        input.clear().await.expect("clear");
        if !text.is_empty() {
            input.send_keys(text).await.expect("type");
        }
    }

    async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
        std::fs::write(path, png).expect("write screenshot");
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

async fn connect(port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-breakpad",
                "--window-size=1440,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let t = Instant::now();
    loop {
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return c,
            Err(e) => {
                // chromedriver takes a moment to listen; a session error after that is real.
                assert!(t.elapsed() < Duration::from_secs(30), "no WebDriver session from chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

fn screenshot_path() -> PathBuf {
    workspace().join("target/console.png")
}

/// A display name that would run script if the page rendered it as HTML.
const HOSTILE_NAME: &str = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> Mallory";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium_finds_an_event_and_replays_its_dead_delivery() {
    let started = Instant::now();
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, &graph);
    let serve = start(dir.path(), port).await;

    // Some history: three users invited, one of them with a hostile display name.
    let add = |id: &str, login: &str, name: &str, ms: i64| {
        group_membership_event(Membership::Add, id, login, name, "00gO365", "O365Guest", &timestamp(ms))
    };
    let ok = vec![
        add("00ualice", "alice@fabrikam.example", "Alice Adams", -90_000),
        add("00ubob", "bob@fabrikam.example", "Bob Brown", -80_000),
        add("00umallory", "mallory@fabrikam.example", HOSTILE_NAME, -70_000),
    ];
    assert_eq!(serve.post(ok.clone()).await, Some(200));
    settle(&serve.url, &ok).await;
    // Graph refuses Jane's lookup once with 403 (a missing permission): a permanent failure,
    // so her delivery ends dead. The fault is used up by then, as if the admin had granted it.
    graph.inject_for(None, "/v1.0/users", Fault::Forbidden { times: 1 });
    let jane = add("00ujane", "jane.doe@fabrikam.example", "Jane Doe", -60_000);
    assert_eq!(serve.post(vec![jane.clone()]).await, Some(200));
    let view = settle(&serve.url, std::slice::from_ref(&jane)).await.remove(0);
    let dead = view["deliveries"][0].clone();
    assert_eq!(dead["status"], "dead", "{view}");
    let dead_id = dead["id"].as_str().unwrap().to_string();
    assert_eq!(graph.pending_faults(), 0);

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{}/", serve.url)).await.unwrap();

    // Sign in: a wrong token is refused, the right one opens the console.
    browser.wait_for("the sign-in form", "return !document.getElementById('login').hidden", vec![]).await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("the sign-in button", "#login-button").await;
    browser
        .wait_for(
            "the refusal",
            "return document.getElementById('login-error').textContent.includes('refused')",
            vec![],
        )
        .await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("the sign-in button", "#login-button").await;

    // The plugin, with its version, state and grants.
    let row = browser
        .wait_for(
            "graph-guest in the plugin table",
            "const r = document.querySelector('#plugin-rows tr[data-plugin=\"graph-guest\"]'); return r && r.innerText",
            vec![],
        )
        .await;
    let row = row.as_str().unwrap();
    let login_shown = c.execute("return document.getElementById('login').offsetParent !== null", vec![]).await.unwrap();
    assert_eq!(login_shown, json!(false), "the sign-in form is still shown");
    assert!(row.contains("active") && row.contains(&graph.base_url()), "{row}");
    assert!(row.contains("group.user_membership.add") && row.contains("O365Guest"), "{row}");
    // The queue: graph-guest's dead delivery counted, attempts charted.
    browser
        .wait_for(
            "graph-guest's dead count",
            "const d = document.querySelector('.card[data-plugin=\"graph-guest\"] .n-dead'); return d && d.textContent === '1'",
            vec![],
        )
        .await;
    assert!(truthy(&c.execute("return document.querySelectorAll('#chart rect').length", vec![]).await.unwrap()));
    // The token is nowhere in the page.
    let html = c.source().await.unwrap();
    assert!(!html.contains(ADMIN_TOKEN), "the page shows the admin token");

    // Find Jane by part of her login, open the event and its dead delivery.
    browser.type_into("#q", "JANE.DOE").await;
    browser.click("Search", "#search button[type=submit]").await;
    browser
        .wait_for(
            "only Jane's event",
            "const rows = [...document.querySelectorAll('#event-rows tr.event')];
             return rows.length === 1 && rows[0].dataset.id === arguments[0]",
            vec![jane["uuid"].clone()],
        )
        .await;
    browser.click("Jane's event", "#event-rows tr.event").await;
    let css = format!("tr.delivery[data-id=\"{dead_id}\"]");
    browser
        .wait_for(
            "the dead delivery",
            "const r = document.querySelector(arguments[0]); return r && r.dataset.status === 'dead'",
            vec![json!(css)],
        )
        .await;
    browser.click("the dead delivery", &css).await;
    let attempts = browser
        .wait_for(
            "the delivery's attempts",
            "const a = document.querySelector('.attempts .attempt'); return a && a.innerText",
            vec![],
        )
        .await;
    let attempts = attempts.as_str().unwrap();
    assert!(attempts.contains("permanent") && attempts.contains("403"), "{attempts}");
    assert!(attempts.contains("v0.1.0"), "the plugin version is shown: {attempts}");

    // Back to every event, with Jane's delivery still open beside them: the screenshot.
    browser.type_into("#q", "").await;
    browser.click("Search", "#search button[type=submit]").await;
    browser
        .wait_for("all four events", "return document.querySelectorAll('#event-rows tr.event').length === 4", vec![])
        .await;
    // Tall enough to show the queue, the plugin and the events with the open delivery.
    browser.client.set_window_size(1440, 1350).await.expect("window size");
    browser.wait_for("the taller window", "return window.innerHeight > 1200", vec![]).await;
    c.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    browser.screenshot(&screenshot_path()).await;
    browser.client.set_window_size(1440, 1000).await.expect("window size");

    // Replay: the delivery goes back to the queue and ends done, and the page shows it.
    browser.click("Replay", &format!("button.replay[data-id=\"{dead_id}\"]")).await;
    browser
        .wait_for(
            "the replayed delivery done",
            "const r = document.querySelector(arguments[0]); return r && r.dataset.status === 'done'",
            vec![json!(css)],
        )
        .await;
    let view = crate::support::event_view(&serve.url, jane["uuid"].as_str().unwrap()).await;
    assert_eq!(view["deliveries"][0]["status"], "done", "{view}");
    assert!(graph.users().iter().any(|u| u.mail.as_deref() == Some("jane.doe@fabrikam.example")));

    // The hostile display name is text: shown literally, nothing ran, no element was made.
    browser.type_into("#q", "mallory").await;
    browser.click("Search", "#search button[type=submit]").await;
    let shown = browser
        .wait_for(
            "Mallory's display name",
            "const rows = document.querySelectorAll('#event-rows tr.event');
             const n = rows.length === 1 && rows[0].querySelector('.display-name');
             return n && n.textContent",
            vec![],
        )
        .await;
    assert_eq!(shown.as_str(), Some(HOSTILE_NAME));
    let ran = c
        .execute(
            "return [window.__pwned === undefined, document.querySelectorAll('#event-rows script, #event-rows img').length]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(ran, json!([true, 0]), "the display name was rendered as HTML");

    // A refused reload: the running version stays, and its row says the reload failed.
    let manifest = dir.path().join("plugins.d/graph-guest.toml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("bogus = 1\n{good}")).unwrap();
    let r = serve.admin(reqwest::Method::POST, "/api/plugins/reload").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let row = browser
        .wait_for(
            "the reload-failed mark",
            "const r = document.querySelector('#plugin-rows tr[data-plugin=\"graph-guest\"]');
             return r && r.querySelector('.reload-failed') && r.innerText",
            vec![],
        )
        .await;
    let row = row.as_str().unwrap();
    assert!(row.contains("active") && row.contains("bogus"), "{row}");

    // Signing out forgets the token.
    browser.click("Sign out", "#sign-out").await;
    let kept = c.execute("return sessionStorage.length", vec![]).await.unwrap();
    assert_eq!(kept, json!(0));
    browser.close().await;
    eprintln!("console browser test took {:?}", started.elapsed());
}

/// What the page and the console's endpoints answer without a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_is_a_locked_down_shell_and_its_data_needs_the_token() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, &graph);
    let serve = start(dir.path(), port).await;
    let http = http_client();

    for (path, kind) in [("/", "text/html"), ("/console.js", "text/javascript"), ("/console.css", "text/css")] {
        let r = http.get(format!("{}{path}", serve.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
    }
    let page = http.get(format!("{}/", serve.url)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("/console.js") && !page.contains("<script>"), "no inline script");
    // A bearer header on the page changes nothing.
    let r = http.get(format!("{}/", serve.url)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);

    for path in ["/api/events", "/api/queue"] {
        let r = http.get(format!("{}{path}", serve.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http.get(format!("{}{path}", serve.url)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }

    let e = group_membership_event(
        Membership::Add,
        "00uq",
        "quinn@fabrikam.example",
        "Quinn Q",
        "00gO365",
        "O365Guest",
        &timestamp(-1_000),
    );
    assert_eq!(serve.post(vec![e.clone()]).await, Some(200));
    settle(&serve.url, std::slice::from_ref(&e)).await;
    let page = serve.get_json("/api/events?q=QUINN&group=o365&status=done&event_type=membership.add").await;
    assert_eq!(page["next"], Value::Null, "{page}");
    let found = &page["events"][0];
    assert_eq!(found["id"], e["uuid"]);
    assert_eq!(found["user"], json!({"id": "00uq", "login": "quinn@fabrikam.example", "display_name": "Quinn Q"}));
    assert_eq!(found["groups"], json!(["O365Guest"]));
    assert_eq!(found["statuses"], json!({"done": 1}));
    assert!(found["published"].as_str().unwrap().ends_with('Z') && found["received_at"].is_string());
    assert_eq!(serve.get_json("/api/events?q=nobody").await["events"], json!([]));
    let (code, body) = serve.get_text("/api/events?status=lost").await;
    assert_eq!(code, 400, "{body}");

    let queue = serve.get_json("/api/queue").await;
    let gg = &queue["plugins"][0];
    assert_eq!(
        (gg["plugin"].as_str(), gg["done"].as_u64(), gg["pending"].as_u64()),
        (Some("graph-guest"), Some(1), Some(0))
    );
    assert_eq!(gg["oldest_pending_age_secs"], Value::Null);
    let minutes = queue["attempts_per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    assert_eq!(minutes.iter().map(|m| m["attempts"].as_u64().unwrap()).sum::<u64>(), 1);
}

/// The guard's banner: held deliveries are announced above the queue, and its Discard
/// button discards them through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_announces_held_deliveries_and_its_discard_button_discards_them() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = crate::support::ServeSetup {
        extra: "[plugins.graph-guest.guard]\nevent_types = [\"group.user_membership.remove\"]\n\
                max_per_window = 1\nwindow_secs = 3600\n"
            .into(),
        ..crate::support::ServeSetup::default()
    };
    crate::support::write_config_with(dir.path(), port, &graph, setup.clone());
    let serve = crate::support::start_with(dir.path(), port, setup).await;
    let adds: Vec<Value> =
        (1..=3).map(|n| crate::support::membership(Membership::Add, n, -90_000 + n as i64)).collect();
    assert_eq!(serve.post(adds.clone()).await, Some(200));
    settle(&serve.url, &adds).await;
    let removes: Vec<Value> =
        (1..=3).map(|n| crate::support::membership(Membership::Remove, n, -60_000 + n as i64)).collect();
    assert_eq!(serve.post(removes).await, Some(200));

    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/", serve.url)).await.unwrap();
    browser.wait_for("the sign-in form", "return !document.getElementById('login').hidden", vec![]).await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("the sign-in button", "#login-button").await;
    let text = browser
        .wait_for(
            "the held banner",
            "const b = document.querySelector('.held-banner[data-plugin=\"graph-guest\"] .held-text');
             return b && b.textContent.startsWith('2 ') && b.textContent",
            vec![],
        )
        .await;
    assert_eq!(text.as_str(), Some("2 deliveries held for graph-guest by its guard"));
    browser.click("Discard", ".held-banner[data-plugin=\"graph-guest\"] button.held-discard").await;
    browser.wait_for("the banner gone", "return document.querySelectorAll('.held-banner').length === 0", vec![]).await;
    assert_eq!(serve.deliveries("discarded").await.len(), 2);
    assert!(serve.deliveries("held").await.is_empty());
    browser.close().await;
}
