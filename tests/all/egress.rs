//! Egress control beyond the host list, through the runtime's `http` import with the hostile
//! test plugin: a granted *name* that resolves to an internal address is refused after DNS
//! (nothing connects), a granted IP literal is reached, redirects come back to the plugin
//! unfollowed, and the `Host` header cannot be pointed at another virtual host.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookhost::runtime::{Attempt, AttemptResult, LogSource, MemoryKv, Runtime};

use crate::support::{self, bundle, load, membership_event, override_toml, test_manifest};

/// Runs the hostile plugin in `mode` against `url`, granted `allowed` (origins).
async fn fetch(runtime: &Runtime, mode: &str, url: &str, allowed: &[String], extra_config: &str) -> Attempt {
    let b = bundle("hostile", "hostile", &test_manifest("hostile"));
    let hosts: Vec<String> = allowed.iter().map(|h| format!("{h:?}")).collect();
    let over = override_toml(&format!(
        "allowed_hosts = [{}]\n[config]\nmode = \"{mode}\"\nurl = \"{url}\"\n{extra_config}\n[limits]\ntimeout_ms = 5000\n",
        hosts.join(", ")
    ));
    let (_, plugin) = load(runtime, &b.manifest, Some(&over));
    runtime
        .run(&plugin, &membership_event(&format!("ev-{mode}"), "jane@example.com"), Arc::new(MemoryKv::default()))
        .await
}

/// A listener that never answers; [`no_connection`] tells whether anything connected.
fn silent_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn no_connection(l: &TcpListener) -> bool {
    std::thread::sleep(Duration::from_millis(50));
    matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// An HTTP origin on 127.0.0.1 answering every request with `status` and `location`;
/// counts requests.
async fn origin(status: u16, location: Option<String>) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let location = location.clone();
        async move {
            let mut r = axum::response::Response::new(axum::body::Body::from("moved"));
            *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
            if let Some(l) = location {
                r.headers_mut().insert("location", l.parse().unwrap());
            }
            r
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_resolving_to_loopback_is_refused_and_nothing_connects() {
    let rt = support::runtime();
    let (listener, port) = silent_listener();
    // `localhost` is granted by name, and resolves to 127.0.0.1 (and ::1): the grant does
    // not name that address, so the name must not lead there.
    let granted = format!("http://localhost:{port}");
    let a = fetch(&rt, "ungranted-origin", &format!("{granted}/latest/meta-data/"), std::slice::from_ref(&granted), "")
        .await;
    let AttemptResult::Permanent(msg) = &a.result else { panic!("expected a permanent failure, got {:?}", a.result) };
    assert!(msg.starts_with("denied:"), "{msg}");
    assert!(msg.contains(&granted) && msg.contains("loopback") && msg.contains("nothing was sent"), "{msg}");
    assert!(
        msg.contains(&format!("\"http://127.0.0.1:{port}\"")) || msg.contains(&format!("\"http://[::1]:{port}\"")),
        "{msg}"
    );
    assert!(no_connection(&listener), "the internal listener received a connection");
    assert!(a.log.iter().any(|l| l.source == LogSource::Host && l.message.contains("resolves to")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_address_granted_as_a_literal_is_reached() {
    let rt = support::runtime();
    let (addr, hits) = origin(200, None).await;
    let granted = format!("http://{addr}");
    let a = fetch(&rt, "huge-response", &format!("{granted}/ok"), std::slice::from_ref(&granted), "").await;
    assert_eq!(a.result, AttemptResult::Done { summary: "got 200 with 5 bytes".into() });
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The same address under another spelling of the literal is the same origin.
    let decimal = format!("http://2130706433:{}/ok", addr.port());
    let a = fetch(&rt, "huge-response", &decimal, &[granted], "").await;
    assert_eq!(a.result, AttemptResult::Done { summary: "got 200 with 5 bytes".into() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_other_internal_literals_need_their_own_grant() {
    let rt = support::runtime();
    let (listener, port) = silent_listener();
    // Granted the loopback listener's literal; asking for other spellings of it (loopback
    // under IPv6, IPv4-mapped, unspecified) is an ungranted origin. Cloud-metadata and
    // private-range addresses are covered by the address classifier's unit tests instead,
    // so that no test can ever send a packet off this machine, even through a regression.
    let granted = format!("http://127.0.0.1:{port}");
    for url in [
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
    ] {
        let a = fetch(&rt, "ungranted-origin", &url, std::slice::from_ref(&granted), "").await;
        let AttemptResult::Permanent(msg) = &a.result else {
            panic!("{url}: expected a permanent failure, got {:?}", a.result)
        };
        assert!(msg.starts_with("denied:") && msg.contains("allowed_hosts"), "{url}: {msg}");
    }
    assert!(no_connection(&listener), "an internal listener received a connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_comes_back_to_the_plugin_and_is_not_followed() {
    let rt = support::runtime();
    let (elsewhere, elsewhere_port) = silent_listener();
    let (addr, hits) = origin(302, Some(format!("http://127.0.0.1:{elsewhere_port}/internal"))).await;
    let granted = format!("http://{addr}");
    let a = fetch(&rt, "huge-response", &format!("{granted}/start"), std::slice::from_ref(&granted), "").await;
    // The plugin sees the 302 itself; the ungranted target was never contacted, and the
    // granted origin was asked exactly once.
    assert_eq!(a.result, AttemptResult::Done { summary: "got 302 with 5 bytes".into() });
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(no_connection(&elsewhere), "the redirect target received a connection");

    // A redirect to the same granted origin is not followed either.
    let (addr, hits) = origin(301, Some("/b".into())).await;
    let granted = format!("http://{addr}");
    let a = fetch(&rt, "huge-response", &format!("{granted}/a"), std::slice::from_ref(&granted), "").await;
    assert_eq!(a.result, AttemptResult::Done { summary: "got 301 with 5 bytes".into() });
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_cannot_be_overridden() {
    let rt = support::runtime();
    let (addr, hits) = origin(200, None).await;
    let granted = format!("http://{addr}");
    for host in ["metadata.google.internal", "127.0.0.1", &addr.to_string()] {
        let a = fetch(
            &rt,
            "host-header",
            &format!("{granted}/"),
            std::slice::from_ref(&granted),
            &format!("host_header = \"{host}\""),
        )
        .await;
        let AttemptResult::Permanent(msg) = &a.result else {
            panic!("expected a permanent failure, got {:?}", a.result)
        };
        assert!(
            msg.starts_with("invalid-request:") && msg.contains("\"Host\"") && msg.contains("set by the host"),
            "{msg}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a request with a plugin-set Host header left the host");
}
