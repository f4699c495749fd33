//! Secrets stay secret through a full run of the real `hookhost serve` process: with
//! distinctive values for the Okta auth secret, the admin token and graph-guest's client
//! secret, a run with throttling, an expired token, a permanent failure, a replay, refused
//! requests and debug logging leaves none of them — nor any access token the Graph emulator
//! issued — in the service log, any `/api/*` answer, `/metrics`, the console, the Okta
//! endpoint's answers, the attempt records or the SQLite files. (graph-guest caches its
//! access token in its own KV namespace by design; that is the one place a token may be.)
//! And a secret file other users can read gets a warning at start. With graph-guest signing in
//! by certificate, the private key is nowhere either, in any encoding, not even in the
//! plugins' own KV.
//!
//! Figures for RELIABILITY.md are printed on a line starting `RELIABILITY secrets_scan`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hookhost_tests::okta::Membership;
use hookhost_tests::{Fault, GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{
    app_certificate, free_port, http_client, key_material, membership, post_as, serve_logs, start_with,
    write_config_with, write_private, ServeSetup,
};

const OKTA: &str = "Basic b2t0YS1zZWNyZXQtUTdmOXgyTHdaaw==";
const ADMIN: &str = "admin-token-Vb83nXq1Pp";
const CLIENT_SECRET: &str = "client-secret-Hj4mR8tYs2~wX";

/// Where a needle was found, or `None`.
fn find<'a>(haystacks: &'a [(String, Vec<u8>)], needle: &str) -> Option<&'a str> {
    haystacks
        .iter()
        .find(|(_, h)| h.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(name, _)| name.as_str())
}

/// Every row of every table but the plugins' own KV, as text.
fn store_rows(db: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| *t != "plugin_kv") {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let cols = stmt.column_count();
        let mut text = Vec::new();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for c in 0..cols {
                match row.get_ref(c).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        text.extend_from_slice(b)
                    }
                    other => text.extend_from_slice(format!("{other:?}").as_bytes()),
                }
                text.push(b'\t');
            }
            text.push(b'\n');
        }
        out.push((format!("store table {t}"), text));
    }
    out
}

/// The plugins whose KV holds `needle`.
fn kv_owners(db: &std::path::Path, needle: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt =
        conn.prepare("SELECT plugin FROM plugin_kv WHERE instr(value, ?1) > 0 OR instr(key, ?1) > 0").unwrap();
    stmt.query_map([needle], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_logs_answers_metrics_attempts_or_the_store() {
    let graph = GraphEmulator::start(TenantConfig {
        client_secret: CLIENT_SECRET.into(),
        token_ttl_secs: 3599,
        ..TenantConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup {
        okta_secret: OKTA.into(),
        admin_token: ADMIN.into(),
        log_filter: Some("debug".into()),
        ..ServeSetup::default()
    };
    write_config_with(dir.path(), port, &graph, setup.clone());
    let serve = start_with(dir.path(), port, setup).await;
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    let client = http_client();

    // Refused requests carrying near-misses of the secrets.
    for (what, auth) in [("okta near miss", format!("{OKTA}x")), ("okta prefix", OKTA[..20].to_string())] {
        let r = client
            .post(format!("{}/hooks/okta", serve.url))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        seen.push((format!("okta endpoint answer ({what})"), r.bytes().await.unwrap().to_vec()));
    }
    let r = client.get(format!("{}/api/plugins", serve.url)).bearer_auth(format!("{ADMIN}x")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    seen.push(("api answer (wrong admin token)".into(), r.bytes().await.unwrap().to_vec()));
    let r = client
        .post(format!("{}/hooks/okta", serve.url))
        .header("authorization", OKTA)
        .header("content-type", "application/json")
        .body("{\"data\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    seen.push(("okta endpoint answer (bad body)".into(), r.bytes().await.unwrap().to_vec()));

    // A run with the failure paths: throttling, an expired token (401, refresh), a
    // permanent 403 (dead, then replayed), a remove.
    let mut events = Vec::new();
    graph.inject(Fault::Throttle { times: 1, retry_after: "0.2".into() });
    for n in 0..3 {
        events.push(membership(Membership::Add, 5000 + n, -60_000 + i64::from(n)));
    }
    assert_eq!(post_as(&serve.url, OKTA, events.clone()).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    graph.expire_tokens();
    let add4 = membership(Membership::Add, 5003, -50_000);
    assert_eq!(post_as(&serve.url, OKTA, vec![add4.clone()]).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    graph.inject(Fault::Forbidden { times: 1 });
    let add5 = membership(Membership::Add, 5004, -40_000);
    assert_eq!(post_as(&serve.url, OKTA, vec![add5.clone()]).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    let dead = serve.deliveries("dead").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let r = serve
        .admin(reqwest::Method::POST, &format!("/api/deliveries/{}/replay", dead[0]["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    seen.push(("replay answer".into(), r.bytes().await.unwrap().to_vec()));
    let remove = membership(Membership::Remove, 5000, -30_000);
    assert_eq!(post_as(&serve.url, OKTA, vec![remove.clone()]).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    events.extend([add4, add5, remove]);
    let tokens = graph.issued_tokens();
    assert!(tokens.len() >= 2, "the expired token was replaced: {tokens:?}");

    // Everything an operator can see.
    let r = serve.admin(reqwest::Method::POST, "/api/plugins/reload").send().await.unwrap();
    seen.push(("reload answer".into(), r.bytes().await.unwrap().to_vec()));
    let mut api_answers = 0;
    let mut attempt_records = 0;
    for path in ["/api/plugins", "/metrics", "/", "/healthz", "/api/deliveries?limit=1000"]
        .into_iter()
        .map(String::from)
        .chain(["pending", "running", "retrying", "done", "dead"].map(|s| format!("/api/deliveries?status={s}")))
        .chain(events.iter().map(|e| format!("/api/events/{}", e["uuid"].as_str().unwrap())))
    {
        let (status, body) = serve.get_text(&path).await;
        // The operator console (`GET /`) is scanned when this build serves it.
        assert!(status < 400 || (path == "/" && status == 404), "{path}: {status}");
        seen.push((format!("GET {path}"), body.into_bytes()));
        api_answers += 1;
    }
    let all: Value = serve.get_json("/api/deliveries?limit=1000").await;
    for d in all["deliveries"].as_array().unwrap() {
        let path = format!("/api/deliveries/{}/attempts", d["id"].as_str().unwrap());
        let (_, body) = serve.get_text(&path).await;
        attempt_records += serde_json::from_str::<Value>(&body).unwrap()["attempts"].as_array().unwrap().len();
        seen.push((format!("GET {path}"), body.into_bytes()));
        api_answers += 1;
    }
    // The attempt logs did record the failure paths (so the scan looked at real content).
    let history = seen.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect::<String>();
    assert!(
        history.contains("TooManyRequests") && history.contains("Authorization_RequestDenied"),
        "attempt logs lack the failures"
    );

    let logs = serve_logs(dir.path());
    assert!(logs.contains("DEBUG") || logs.contains("debug"), "debug logging was on");
    seen.push(("serve log (stderr, debug)".into(), logs.into_bytes()));
    let db = dir.path().join("state/hookhost.db");
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("state/hookhost.db{suffix}"));
        if let Ok(bytes) = std::fs::read(&p) {
            seen.push((format!("store file hookhost.db{suffix} (raw bytes)"), bytes));
        }
    }
    let raw_files = seen.len();

    // The configured secrets: nowhere, not even in the store's raw bytes.
    let secrets = [("okta.auth_secret", OKTA), ("admin.token", ADMIN), ("client_secret", CLIENT_SECRET)];
    for (name, value) in secrets {
        let core = value.trim_start_matches("Basic ");
        assert_eq!(find(&seen, core), None, "{name} leaked");
    }
    // Access tokens: nowhere an operator looks; in the store only in graph-guest's KV.
    let rows = store_rows(&db);
    for t in &tokens {
        let scanned: Vec<(String, Vec<u8>)> =
            seen.iter().filter(|(n, _)| !n.starts_with("store file")).cloned().chain(rows.iter().cloned()).collect();
        assert_eq!(find(&scanned, t), None, "an access token leaked");
        assert!(kv_owners(&db, t).iter().all(|p| p == "graph-guest"));
    }
    // Positive control: the scan does find a token where one is meant to be (graph-guest's
    // token cache), both through SQL and in the store files' raw bytes.
    let cached: Vec<&String> = tokens.iter().filter(|t| !kv_owners(&db, t).is_empty()).collect();
    assert!(!cached.is_empty(), "no issued token is in graph-guest's token cache");
    assert!(cached.iter().any(|t| find(&seen, t).is_some_and(|w| w.starts_with("store file"))));
    let bytes: usize = seen.iter().map(|(_, b)| b.len()).sum();
    println!(
        "RELIABILITY secrets_scan: secret_values=3 access_tokens={} places_scanned={} (api_answers={api_answers} attempt_records={attempt_records} \
         service_log metrics console okta_answers store_files store_tables={}) bytes_scanned={bytes} found=0",
        tokens.len(),
        raw_files + rows.len(),
        rows.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_others_can_read_gets_a_warning() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let okta_file = dir.path().join("okta.secret");
    let admin_file = dir.path().join("admin.token");
    std::fs::write(&okta_file, format!("{OKTA}\n")).unwrap();
    std::fs::write(&admin_file, format!("{ADMIN}\n")).unwrap();
    std::fs::set_permissions(&okta_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&admin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let setup = ServeSetup {
        okta_secret: OKTA.into(),
        okta_secret_source: Some("{ file = \"okta.secret\" }".into()),
        admin_token: ADMIN.into(),
        graph_guest: false,
        ..ServeSetup::default()
    };
    write_config_with(dir.path(), port, &graph, setup.clone());
    let host_toml = std::fs::read_to_string(dir.path().join("host.toml")).unwrap();
    std::fs::write(
        dir.path().join("host.toml"),
        host_toml.replace(&format!("token = {{ value = {ADMIN:?} }}"), "token = { file = \"admin.token\" }"),
    )
    .unwrap();
    let serve = start_with(dir.path(), port, setup).await;
    // The file secrets work (trailing newline stripped)...
    assert_eq!(post_as(&serve.url, OKTA, vec![]).await, Some(200));
    assert_eq!(serve.get_text("/api/plugins").await.0, 200);
    // ...and the world-readable one, only it, is reported without its value.
    let logs = serve.logs();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("readable by group or others")).collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("okta.secret") && warnings[0].contains("chmod 600"), "{}", warnings[0]);
    assert!(!logs.contains("b2t0YS1zZWNyZXQ") && !logs.contains(ADMIN), "a secret value reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_private_key_material_appears_anywhere_when_graph_guest_signs_in_by_certificate() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cert = app_certificate(&rcgen::PKCS_RSA_SHA256);
    graph.register_certificate(&cert.cert_der).unwrap();
    let pem_file = write_private(dir.path(), "graph-app.pem", &cert.pem);
    let setup = ServeSetup {
        admin_token: ADMIN.into(),
        log_filter: Some("debug".into()),
        graph_guest_certificate: Some(pem_file),
        ..ServeSetup::default()
    };
    write_config_with(dir.path(), port, &graph, setup.clone());
    let serve = start_with(dir.path(), port, setup.clone()).await;

    // Invitations signed in by certificate, an expired token refreshed, and a refused
    // (expired) assertion that ends a delivery dead.
    let mut events = Vec::new();
    for n in 0..2 {
        events.push(membership(Membership::Add, 6000 + n, -60_000 + i64::from(n)));
    }
    assert_eq!(serve.post(events.clone()).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    graph.expire_tokens();
    graph.skew_assertion_clock(3600);
    let refused = membership(Membership::Add, 6002, -50_000);
    assert_eq!(serve.post(vec![refused.clone()]).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    graph.skew_assertion_clock(0);
    let after = membership(Membership::Add, 6003, -40_000);
    assert_eq!(serve.post(vec![after.clone()]).await, Some(200));
    serve.settle_all(Duration::from_secs(30)).await;
    events.extend([refused, after]);
    assert_eq!(serve.deliveries("dead").await.len(), 1);
    assert_eq!(serve.deliveries("done").await.len(), 3);

    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    let all: Value = serve.get_json("/api/deliveries?limit=1000").await;
    let attempt_paths = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("/api/deliveries/{}/attempts", d["id"].as_str().unwrap()));
    for path in ["/api/plugins", "/metrics", "/", "/healthz", "/api/queue", "/api/deliveries?limit=1000"]
        .into_iter()
        .map(String::from)
        .chain(events.iter().map(|e| format!("/api/events/{}", e["uuid"].as_str().unwrap())))
        .chain(attempt_paths)
    {
        let (_, body) = serve.get_text(&path).await;
        seen.push((format!("GET {path}"), body.into_bytes()));
    }
    seen.push(("serve log (stderr, debug)".into(), serve_logs(dir.path()).into_bytes()));
    let db = dir.path().join("state/hookhost.db");
    seen.extend(store_rows(&db));
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(format!("state/hookhost.db{suffix}"))) {
            seen.push((format!("store file hookhost.db{suffix} (raw bytes)"), bytes));
        }
    }

    // Real content was scanned: the refusal's code, the granted key's name, the cached token.
    let text = seen.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect::<String>();
    assert!(text.contains("AADSTS700024") && text.contains("client_certificate"), "the scan saw no credential at work");
    assert!(graph.issued_tokens().iter().any(|t| find(&seen, t).is_some_and(|w| w.starts_with("store file"))));
    // The key itself: nowhere, in no encoding, not even in raw store bytes.
    let needles = key_material(&cert.key_der, &cert.pem);
    for needle in &needles {
        assert_eq!(find(&seen, needle), None, "private key material leaked");
    }
    println!(
        "RELIABILITY secrets_scan: certificate credential: key_encodings={} places_scanned={} found=0",
        needles.len(),
        seen.len()
    );
}
