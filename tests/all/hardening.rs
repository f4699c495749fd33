//! The findings of an outside security test against `hookhost serve`, one test each (or a
//! few sharing one process), all through the real binary on 127.0.0.1:
//!
//! - the plugin directory: links, FIFOs and oversized components are refused without being
//!   read, and no error quotes a manifest or the config file;
//! - connection limits: header and idle timeouts, a cap on open connections;
//! - file modes of the SQLite store and the artifact cache, whatever the umask;
//! - log injection through event fields;
//! - the host's refusals of a plugin's requests logged with plugin and delivery.
//!
//! Every wait is for a state, with a generous deadline; the one fixed window is the
//! connection cap's "not served while the others are held" observation.

use std::path::Path;
use std::time::{Duration, Instant};

use hookhost_tests::okta::Membership;
use hookhost_tests::{GraphEmulator, TenantConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    free_port, hookhost_bin, install_test_plugin, membership, start_with, wasm, write_config_with, ServeProcess,
    ServeSetup,
};

/// A setup without graph-guest (nothing here needs it, and it saves a compile).
fn bare(setup: ServeSetup) -> ServeSetup {
    ServeSetup { graph_guest: false, ..setup }
}

async fn serve_with(dir: &Path, setup: ServeSetup) -> ServeProcess {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let port = free_port();
    write_config_with(dir, port, &graph, setup.clone());
    start_with(dir, port, setup).await
}

/// Finding 1 and 5: a symlinked manifest (pointing at a secret), a FIFO, a malformed
/// manifest holding a secret and a component over `plugins.max_wasm_bytes` are refused,
/// each naming its file; a good bundle beside them serves; no secret text appears in the
/// API or the log.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_directory_is_read_without_following_links_or_quoting_files() {
    const LINKED: &str = "LINKED-SECRET-5b1f-never-shown";
    const IN_MANIFEST: &str = "MANIFEST-SECRET-77c2-never-shown";
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();

    // A secret file outside the plugin directory, written as if it were a manifest.
    let secret_file = dir.path().join("secret.toml");
    std::fs::write(&secret_file, format!("name = \"y\"\nversion = \"{LINKED}\"\nevent_types = [\"{LINKED}\"]\n"))
        .unwrap();
    std::fs::copy(wasm("echo"), plugins.join("y.wasm")).unwrap();
    std::os::unix::fs::symlink(&secret_file, plugins.join("y.toml")).unwrap();
    // A FIFO as a manifest: reading it would block a reload forever.
    std::fs::copy(wasm("echo"), plugins.join("f.wasm")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(plugins.join("f.toml")).status().unwrap().success());
    // A malformed manifest whose broken line holds a secret.
    std::fs::copy(wasm("echo"), plugins.join("z.wasm")).unwrap();
    std::fs::write(
        plugins.join("z.toml"),
        format!("name = \"z\"\nversion = \"1.0.0\"\nevent_types = [\"a\"]\napi_token = \"{IN_MANIFEST}\nx = 1\n"),
    )
    .unwrap();
    // One with a secret in a value of the wrong type.
    std::fs::copy(wasm("echo"), plugins.join("v.wasm")).unwrap();
    std::fs::write(
        plugins.join("v.toml"),
        format!("name = \"v\"\nversion = \"1.0.0\"\nevent_types = [\"a\"]\n[limits]\nmemory_mb = \"{IN_MANIFEST}\"\n"),
    )
    .unwrap();
    // A component over the configured size cap.
    install_test_plugin(&plugins, "big", None);
    let big_len = std::fs::metadata(plugins.join("big.wasm")).unwrap().len();
    assert!(big_len > 4096);

    let serve = serve_with(
        dir.path(),
        bare(ServeSetup { plugins_extra: "max_wasm_bytes = 4096\n".into(), ..Default::default() }),
    )
    .await;
    let api = serve.get_text("/api/plugins").await.1;

    let y = serve.plugin("y").await;
    let e = y["last_error"].as_str().unwrap_or_default();
    assert_eq!(y["state"], "failed", "{y}");
    assert!(e.contains("y.toml") && e.contains("symbolic link") && e.contains("not a regular file"), "{e}");
    let f = serve.plugin("f").await;
    let e = f["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("f.toml") && e.contains("FIFO"), "{f}");
    for name in ["z", "v"] {
        let s = serve.plugin(name).await;
        let e = s["last_error"].as_str().unwrap_or_default();
        assert_eq!(s["state"], "failed", "{s}");
        assert!(e.contains(&format!("{name}.toml")) && e.contains("line "), "{name}: {e}");
    }
    let big = serve.plugin("big").await;
    let e = big["last_error"].as_str().unwrap_or_default();
    assert_eq!(big["state"], "failed", "{big}");
    assert!(
        e.contains("big.wasm")
            && e.contains(&big_len.to_string())
            && e.contains("4096")
            && e.contains("plugins.max_wasm_bytes"),
        "{e}"
    );

    let logs = serve.logs();
    assert!(logs.contains("not a regular file"), "no warning about the link: {logs}");
    for secret in [LINKED, IN_MANIFEST, "secret-never"] {
        assert!(!api.contains(secret), "{secret} in /api/plugins: {api}");
        assert!(!logs.to_lowercase().contains(&secret.to_lowercase()), "{secret} in the log: {logs}");
    }
}

/// Finding 1, the config file: `serve --config` with a bad file fails naming the file,
/// the line and the kind of problem, never its text.
#[tokio::test]
async fn a_bad_config_file_is_refused_without_quoting_it() {
    const SECRET: &str = "CONFIG-SECRET-e55a-never-shown";
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        format!("[okta]\nauth_secret = {{ value = \"{SECRET}\"\n"),
        format!("[okta]\nauth_secret = \"{SECRET}\"\n"),
        format!("[okta]\nmax_body_bytes = \"{SECRET}\"\n"),
        format!("[server]\nlisten = \"{SECRET}\"\n"),
        format!("[okta]\npath = \"{SECRET}\"\n"),
        format!("[store]\nurl = \"mysql://u:{SECRET}@h/db\"\n"),
        format!("{SECRET}\n"),
        format!("[plugins.p]\nallowed_hosts = \"{SECRET}\"\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(hookhost_bin()).args(["serve", "--config"]).arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(stderr.contains(&format!("bad-{i}.toml")), "{text:?}: {stderr}");
        assert!(!stderr.contains(SECRET) && !stderr.contains("never-shown"), "{text:?} quoted: {stderr}");
    }
    let out = std::process::Command::new(hookhost_bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("bad-0.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "the place is named: {stderr}");
}

/// Reads until the server closes the connection; `Some(elapsed)` if it did within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = within.checked_sub(t.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Finding 2: a client that sends nothing, or half a request line, is disconnected after
/// `server.header_timeout_secs`; an idle keep-alive connection after
/// `server.idle_timeout_secs` when that is shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_by_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_with(
        dir.path(),
        bare(ServeSetup { server_extra: "header_timeout_secs = 1\n".into(), ..Default::default() }),
    )
    .await;
    let addr = serve.url.trim_start_matches("http://").to_string();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"POST /hooks/okta HT").await.unwrap();
    let mut headers_only_partly = TcpStream::connect(&addr).await.unwrap();
    headers_only_partly.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
    let deadline = Duration::from_secs(20);
    let (a, b, c) = tokio::join!(
        closed_within(&mut silent, deadline),
        closed_within(&mut half, deadline),
        closed_within(&mut headers_only_partly, deadline)
    );
    assert!(a.is_some() && b.is_some() && c.is_some(), "still open after {deadline:?}: {a:?} {b:?} {c:?}");
    // Still serving.
    let r = reqwest::get(format!("{}/healthz", serve.url)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    println!("RELIABILITY hardening: header_timeout=1s closed silent={a:?} half_line={b:?} half_headers={c:?}");

    // The idle timeout, shorter than the header timeout here: a keep-alive connection that
    // got its answer and then goes quiet is closed.
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_with(
        dir.path(),
        bare(ServeSetup {
            server_extra: "header_timeout_secs = 600\nidle_timeout_secs = 1\n".into(),
            ..Default::default()
        }),
    )
    .await;
    let mut kept = TcpStream::connect(serve.url.trim_start_matches("http://")).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(deadline, kept.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    let idle = closed_within(&mut kept, deadline).await;
    assert!(idle.is_some(), "an idle keep-alive connection stayed open past {deadline:?}");
}

/// Sends `GET /healthz` on a keep-alive connection and waits for the answer's head.
async fn healthz_on(stream: &mut TcpStream, within: Duration) -> Option<String> {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    loop {
        let left = within.checked_sub(t.elapsed())?;
        let n = tokio::time::timeout(left, stream.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.contains("\r\n\r\n") {
            return Some(text);
        }
    }
}

/// Finding 2: with `server.max_connections = 3`, three held keep-alive connections are
/// served and a fourth is not, until one of the three closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_until_one_closes() {
    const CAP: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_with(
        dir.path(),
        bare(ServeSetup { server_extra: format!("max_connections = {CAP}\n"), ..Default::default() }),
    )
    .await;
    let addr = serve.url.trim_start_matches("http://").to_string();
    let generous = Duration::from_secs(20);
    let mut held = Vec::new();
    for i in 0..CAP {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let answer = healthz_on(&mut s, generous).await;
        assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")), "held connection {i} was not served");
        held.push(s);
    }
    // Connections past the cap: the kernel accepts them, hookhost does not serve them.
    let mut extra = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        extra.push(s);
    }
    let mut buf = [0u8; 64];
    for s in &mut extra {
        let r = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
        assert!(r.is_err(), "a connection past server.max_connections was answered: {r:?}");
    }
    // Each held connection that closes lets exactly one waiting connection in.
    drop(held.pop());
    let first = extra.remove(0);
    let mut first = first;
    let mut got = Vec::new();
    let t = Instant::now();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(generous.saturating_sub(t.elapsed()), first.read(&mut buf))
            .await
            .expect("the waiting connection was served once a slot freed")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let mut answered = 0;
    for s in &mut extra {
        if tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await.is_ok() {
            answered += 1;
        }
    }
    assert_eq!(answered, 0, "more connections than the cap were served");
    println!("RELIABILITY hardening: max_connections={CAP} held={CAP} waiting=3 served_past_cap=0");
}

/// Finding 3: under umask 000 the SQLite database and its -wal/-shm come out 0600 and the
/// artifact cache 0700.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_files_and_the_artifact_cache_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    install_test_plugin(&plugins, "echo", None);
    let serve = serve_with(dir.path(), bare(ServeSetup { umask: Some(0o000), ..Default::default() })).await;
    // A write, so the WAL exists and has content.
    let e = membership(Membership::Add, 31, -1_000);
    assert_eq!(serve.post(vec![e]).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let db = dir.path().join("state/hookhost.db");
    for f in ["hookhost.db", "hookhost.db-wal", "hookhost.db-shm"] {
        let p = db.with_file_name(f);
        assert!(p.exists(), "{} missing", p.display());
        assert_eq!(mode(&p), 0o600, "{f} is {:o}", mode(&p));
    }
    let cache = plugins.join(".cache");
    assert_eq!(mode(&cache), 0o700, "cache is {:o}", mode(&cache));
    for entry in std::fs::read_dir(&cache).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            assert_eq!(mode(&p), 0o700, "{} is {:o}", p.display(), mode(&p));
        }
    }
}

/// Finding 4 and 7: an event whose uuid, login and envelope id carry a newline with a
/// forged log line, NUL and an ANSI escape cannot put any of them raw into serve's log;
/// and a plugin probing an ungranted origin gets a warn line naming it and the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_fields_cannot_forge_log_lines_and_refusals_are_logged() {
    const FORGED: &str = "2030-01-01T00:00:00.000000Z  INFO hookhost: FORGED-LINE";
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    install_test_plugin(&plugins, "echo", None);
    let extra = install_test_plugin(&plugins, "prober", Some("ungranted-origin"));
    let serve = serve_with(dir.path(), bare(ServeSetup { extra, ..Default::default() })).await;

    let mut event = membership(Membership::Add, 77, -1_000);
    let nasty = format!("evil\n{FORGED} uuid\u{0}\x1b[31mred\r\n");
    event["uuid"] = json!(nasty);
    event["target"][0]["alternateId"] = json!(format!("jane@x.example\n{FORGED} login\x1b[2J"));
    let mut body = hookhost_tests::okta::delivery(vec![event]);
    body["eventId"] = json!(format!("env\n{FORGED} envelope\x1b[0m"));
    let r = crate::support::http_client()
        .post(format!("{}/hooks/okta", serve.url))
        .header("authorization", &serve.setup.okta_secret)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    serve.settle_all(Duration::from_secs(60)).await;

    // Both deliveries ran; the prober's is dead (the origin was refused).
    let dead = serve.deliveries("dead").await;
    let probe = dead.iter().find(|d| d["plugin"] == "prober").unwrap_or_else(|| panic!("{dead:?}"));
    let delivery_id = probe["id"].as_str().unwrap().to_owned();
    let done = serve.deliveries("done").await;
    assert!(done.iter().any(|d| d["plugin"] == "echo"), "{done:?}");

    // The log is written as the run goes; wait for the attempt's line, then read it all.
    let t = Instant::now();
    let logs = loop {
        let logs = serve.logs();
        if logs.contains("delivery attempt finished") && logs.matches("delivery attempt finished").count() >= 2 {
            break logs;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no attempt lines: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!logs.contains('\x1b'), "a raw ESC reached the log: {logs:?}");
    assert!(!logs.contains('\0'), "a raw NUL reached the log");
    assert!(!logs.contains('\r'), "a raw CR reached the log");
    for line in logs.lines() {
        assert!(!line.starts_with("2030-01-01"), "a forged line: {line:?}");
    }
    // The event values are in the log, escaped.
    assert!(logs.contains("evil\\n2030-01-01"), "the uuid should be logged escaped: {logs}");

    // Finding 7: the refusal, at warn, naming the plugin and the delivery.
    let refusal = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains("refused a plugin's request") && l.contains("prober"))
        .unwrap_or_else(|| panic!("no warn line for the refused origin: {logs}"));
    assert!(refusal.contains(&delivery_id), "the warn line should name delivery {delivery_id}: {refusal}");
    assert!(refusal.contains("http://127.0.0.1:9"), "{refusal}");
}
