//! Traces and logs of the real `hookhost serve`: one event through graph-guest is one trace
//! (ingest → attempt → each Graph call) at an in-process OTLP receiver, in both encodings;
//! Graph saw the trace in `traceparent` and the attempt history keeps Graph's request ids;
//! with telemetry off nothing carries a trace; `log_format = "json"` is one object a line.
//! Events the System Log poller recovers and repairs reconcile stores are traced the same way.

use std::time::Duration;

use hookhost_tests::okta::Membership;
use hookhost_tests::otlp_receiver::{Encoding, OtlpReceiver, ReceivedSpan};
use hookhost_tests::{GraphEmulator, TenantConfig};
use serde_json::Value;

use crate::support::{
    free_port, install_test_plugin, membership, settle, start_with, wait_until, write_config_with, ServeProcess,
    ServeSetup,
};

/// Spans leave the host's batch every 20 ms here instead of every 5 s.
fn fast_batches() -> Vec<(String, String)> {
    vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "20".into())]
}

struct Run {
    /// Kept running until the trace has arrived (dropping it kills the process).
    _serve: ServeProcess,
    _dir: tempfile::TempDir,
    graph: GraphEmulator,
    receiver: OtlpReceiver,
    uuid: String,
    okta_delivery_id: String,
    delivery_id: String,
    history: String,
}

/// Starts serve with `setup`, posts one membership event, waits for it to be done.
async fn one_event(receiver: OtlpReceiver, setup: ServeSetup) -> Run {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = write_config_with(dir.path(), port, &graph, setup);
    let serve = start_with(dir.path(), port, setup).await;
    let event = membership(Membership::Add, 1, -1_000);
    let uuid = event["uuid"].as_str().unwrap().to_owned();
    let delivery = hookhost_tests::okta::delivery(vec![event.clone()]);
    let okta_delivery_id = delivery["eventId"].as_str().unwrap().to_owned();
    let answer = hookhost_tests::serve::http_client()
        .post(format!("{}/hooks/okta", serve.url))
        .header("authorization", &serve.setup.okta_secret)
        .header("content-type", "application/json")
        .body(delivery.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let views = settle(&serve.url, &[event]).await;
    let d = &views[0]["deliveries"][0];
    assert_eq!(d["status"], "done", "{}", views[0]);
    let delivery_id = d["id"].as_str().unwrap().to_owned();
    let history = serde_json::to_string(&serve.attempts(&delivery_id).await).unwrap();
    Run { _serve: serve, _dir: dir, graph, receiver, uuid, okta_delivery_id, delivery_id, history }
}

/// Waits until the receiver holds the event's whole trace: the ingest span, the attempt span
/// and one HTTP span per request Graph saw. Returns (ingest, attempt, http spans).
async fn whole_trace(run: &Run) -> (ReceivedSpan, ReceivedSpan, Vec<ReceivedSpan>) {
    let trace_id = hookhost::telemetry::trace_id_hex(&run.uuid);
    let calls = run.graph.journal().len();
    assert!(calls >= 2, "graph-guest made {calls} calls");
    let of_trace = || run.receiver.spans().into_iter().filter(|s| s.trace_id == trace_id).collect::<Vec<_>>();
    wait_until("the event's trace at the OTLP receiver", Duration::from_secs(60), async || {
        let spans = of_trace();
        spans.iter().any(|s| s.name == "ingest")
            && spans.iter().any(|s| s.name == "attempt graph-guest")
            && spans.iter().filter(|s| s.attr("http.request.method").is_some()).count() >= calls
    })
    .await;
    let spans = of_trace();
    let one = |name: &str| {
        let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
        found[0].clone()
    };
    let (ingest, attempt) = (one("ingest"), one("attempt graph-guest"));
    let http: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.attr("http.request.method").is_some()).collect();
    (ingest, attempt, http)
}

/// What both encodings must show of the trace.
async fn assert_one_trace(run: &Run) {
    let (ingest, attempt, http) = whole_trace(run).await;
    let uuid = run.uuid.as_str();

    // The ingest span: the root, with the ids derived from the event.
    assert_eq!(ingest.parent_span_id, "", "{ingest:#?}");
    assert_eq!(ingest.span_id, format!("{:016x}", hookhost::telemetry::ingest_span_id(uuid)));
    assert_eq!(ingest.attr("okta.event.uuid"), Some(uuid));
    assert_eq!(ingest.attr("okta.delivery.id"), Some(run.okta_delivery_id.as_str()));
    assert_eq!(ingest.attr("okta.delivery.events"), Some("1"));
    assert_eq!(ingest.attr("hookhost.event.source"), Some("hook"));

    // The attempt, under it.
    assert_eq!(attempt.parent_span_id, ingest.span_id, "{attempt:#?}");
    assert_eq!(attempt.attr("hookhost.plugin"), Some("graph-guest"));
    assert_eq!(attempt.attr("hookhost.plugin.version"), Some("0.1.0"));
    assert_eq!(attempt.attr("hookhost.delivery.id"), Some(run.delivery_id.as_str()));
    assert_eq!(attempt.attr("okta.event.uuid"), Some(uuid));
    assert_eq!(attempt.attr("hookhost.attempt.result"), Some("done"));

    // Each Graph call, under the attempt, named in the traceparent Graph received, with
    // Graph's ids on the span and in the attempt history.
    let journal = run.graph.journal();
    assert_eq!(http.len(), journal.len(), "one HTTP span per request: {http:#?}\n{journal:#?}");
    for entry in &journal {
        let traceparent = entry.traceparent.as_deref().unwrap_or_else(|| panic!("no traceparent: {entry:?}"));
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!((parts.len(), parts[0], parts[1], parts[3]), (4, "00", ingest.trace_id.as_str(), "01"), "{entry:?}");
        let span =
            http.iter().find(|s| s.span_id == parts[2]).unwrap_or_else(|| panic!("no span {}: {http:#?}", parts[2]));
        assert_eq!(span.parent_span_id, attempt.span_id, "{span:#?}");
        assert_eq!(span.kind, 3, "a client span: {span:#?}");
        assert_eq!(span.attr("http.request.method"), Some(entry.method.as_str()));
        assert_eq!(span.attr("server.address"), Some("127.0.0.1"));
        assert_eq!(span.attr("http.response.status_code"), Some(entry.status.to_string().as_str()));
        assert_eq!(span.attr("http.response.header.request-id"), Some(entry.request_id.as_str()));
        assert!(span.attr("http.response.header.client-request-id").is_some(), "{span:#?}");
        assert!(run.history.contains(&format!("request-id {}", entry.request_id)), "{}", run.history);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_from_ingest_to_graph_over_otlp_json() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let setup = ServeSetup {
        extra: format!("[telemetry]\notlp_endpoint = {:?}\notlp_protocol = \"http/json\"\n", receiver.endpoint()),
        env: fast_batches(),
        ..ServeSetup::default()
    };
    let run = one_event(receiver, setup).await;
    assert_one_trace(&run).await;
    let requests = run.receiver.requests();
    assert!(requests.iter().all(|e| *e == Encoding::Json), "{requests:?}");
    assert_eq!(run.receiver.bad_requests(), 0);
    assert!(run.receiver.spans().iter().all(|s| s.service_name == "hookhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otel_environment_variables_turn_on_protobuf_export() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut env = fast_batches();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()));
    env.push(("OTEL_SERVICE_NAME".into(), "hookhost-eu".into()));
    let run = one_event(receiver, ServeSetup { env, ..ServeSetup::default() }).await;
    assert_one_trace(&run).await;
    let requests = run.receiver.requests();
    assert!(requests.iter().all(|e| *e == Encoding::Protobuf), "{requests:?}");
    assert_eq!(run.receiver.bad_requests(), 0);
    assert!(run.receiver.spans().iter().all(|s| s.service_name == "hookhost-eu"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_telemetry_off_no_request_carries_a_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let run = one_event(receiver, ServeSetup::default()).await;
    let journal = run.graph.journal();
    assert!(journal.len() >= 2);
    assert!(journal.iter().all(|e| e.traceparent.is_none()), "{journal:#?}");
    // Graph's ids are kept in the attempt history all the same.
    assert!(run.history.contains(&format!("request-id {}", journal[0].request_id)), "{}", run.history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_trace_delivery_and_plugin() {
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup { server_extra: "log_format = \"json\"\n".into(), ..ServeSetup::default() };
    let setup = write_config_with(dir.path(), port, &graph, setup);
    let serve = start_with(dir.path(), port, setup).await;
    let event = membership(Membership::Add, 1, -1_000);
    assert_eq!(serve.post(vec![event.clone()]).await, Some(200));
    let views = settle(&serve.url, std::slice::from_ref(&event)).await;
    let delivery_id = views[0]["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let uuid = event["uuid"].as_str().unwrap();

    let finished = async || {
        serve
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "delivery attempt finished" && v["delivery"] == delivery_id.as_str())
    };
    wait_until("the attempt's log line", Duration::from_secs(30), async || finished().await.is_some()).await;
    let line = finished().await.unwrap();
    assert_eq!(line["plugin"], "graph-guest", "{line}");
    assert_eq!(line["trace_id"], hookhost::telemetry::trace_id_hex(uuid).as_str(), "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    let logs = serve.logs();
    assert!(!logs.contains('\u{1b}'), "no colour codes in a file:\n{logs}");
    for l in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.is_object() && v["timestamp"].is_string() && v["message"].is_string(), "{l}");
    }
}

/// Waits for the trace of an event that hookhost stored itself (no Okta delivery): its ingest
/// span, rooted at the id derived from `uuid`, says `source` and carries no delivery id, and
/// the graph-guest attempt that handled it lands under it.
async fn assert_hostless_trace(receiver: &OtlpReceiver, uuid: &str, source: &str) {
    let trace_id = hookhost::telemetry::trace_id_hex(uuid);
    let of_trace = || receiver.spans().into_iter().filter(|s| s.trace_id == trace_id).collect::<Vec<_>>();
    wait_until(&format!("the {source} event's trace at the OTLP receiver"), Duration::from_secs(60), async || {
        let spans = of_trace();
        spans.iter().any(|s| s.name == "ingest") && spans.iter().any(|s| s.name == "attempt graph-guest")
    })
    .await;
    let spans = of_trace();
    let ingest = spans.iter().find(|s| s.name == "ingest").unwrap();
    assert_eq!(ingest.span_id, format!("{:016x}", hookhost::telemetry::ingest_span_id(uuid)));
    assert_eq!(ingest.attr("hookhost.event.source"), Some(source), "{ingest:#?}");
    assert_eq!(ingest.attr("okta.delivery.id"), None, "{ingest:#?}");
    assert_eq!(ingest.attr("okta.event.uuid"), Some(uuid));
    let attempt = spans.iter().find(|s| s.name == "attempt graph-guest").unwrap();
    assert_eq!(attempt.parent_span_id, ingest.span_id, "{attempt:#?}");
    assert_eq!(attempt.attr("hookhost.attempt.result"), Some("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_recovered_from_the_system_log_is_one_trace_too() {
    // Okta logged the event while no hook delivered it; the poller stores it, so the ingest
    // span is the System Log's: no Okta delivery id, source `system_log`. The attempt still
    // lands under it, in the trace derived from the event's uuid.
    let receiver = OtlpReceiver::start().await.unwrap();
    let okta = hookhost_tests::OktaEmulator::start("okta-api-token-telemetry").await.unwrap();
    let event = membership(Membership::Add, 7, -30_000);
    okta.append(std::slice::from_ref(&event));
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup {
        okta_extra: format!(
            "org_url = {:?}\napi_token = {{ value = \"okta-api-token-telemetry\" }}\n[okta.backfill]\nenabled = true\nevery_secs = 1\nlookback_secs = 3600\n",
            okta.base_url()
        ),
        extra: format!("[telemetry]\notlp_endpoint = {:?}\n", receiver.endpoint()),
        env: fast_batches(),
        ..ServeSetup::default()
    };
    let setup = write_config_with(dir.path(), port, &graph, setup);
    let serve = start_with(dir.path(), port, setup).await;
    let views = settle(&serve.url, std::slice::from_ref(&event)).await;
    assert_eq!(views[0]["source"], "system_log", "{}", views[0]);
    assert_eq!(views[0]["deliveries"][0]["status"], "done", "{}", views[0]);

    assert_hostless_trace(&receiver, event["uuid"].as_str().unwrap(), "system_log").await;
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_stored_by_reconcile_is_one_trace_too() {
    // A group member graph-guest never heard of: reconcile stores the repair as an event of
    // its own, so its ingest span says source `reconcile` and carries no Okta delivery id,
    // and the attempt that invites the guest lands under it.
    const TOKEN: &str = "okta-api-token-telemetry-reconcile";
    let receiver = OtlpReceiver::start().await.unwrap();
    let okta = hookhost_tests::OktaEmulator::start(TOKEN).await.unwrap();
    let group = okta.add_group("O365Guest");
    let user = okta.add_user("rey@partner.example", "Rey", "Test");
    okta.add_member(&group, &user);
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = ServeSetup {
        okta_extra: format!("org_url = {:?}\napi_token = {{ value = {TOKEN:?} }}\n", okta.base_url()),
        extra: format!("[telemetry]\notlp_endpoint = {:?}\n", receiver.endpoint()),
        env: fast_batches(),
        ..ServeSetup::default()
    };
    let setup = write_config_with(dir.path(), port, &graph, setup);
    let serve = start_with(dir.path(), port, setup).await;

    let answer = serve
        .admin(reqwest::Method::POST, "/api/plugins/graph-guest/reconcile")
        .header("content-type", "application/json")
        .body(serde_json::json!({"apply": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let plan: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(plan["applied"], true, "{plan}");
    assert_eq!(plan["add"].as_array().map(Vec::len), Some(1), "{plan}");
    serve.settle_all(Duration::from_secs(120)).await;
    let list = serve.get_json("/api/events?source=reconcile&limit=50").await;
    let events = list["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{list}");
    let uuid = events[0]["id"].as_str().unwrap().to_owned();
    let view = hookhost_tests::serve::event_view(&serve.url, &uuid).await;
    assert_eq!(view["deliveries"][0]["status"], "done", "{view}");
    assert!(graph.users().iter().any(|u| u.mail.as_deref() == Some("rey@partner.example")), "the guest was invited");

    assert_hostless_trace(&receiver, &uuid, "reconcile").await;
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_refusals_are_events_on_the_attempt_span() {
    // A plugin asks for an origin it was not granted: besides the warn line and the attempt's
    // log, the refusal is an event on its attempt's span, naming the import and the origin.
    let receiver = OtlpReceiver::start().await.unwrap();
    let graph = GraphEmulator::start(TenantConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    let operator = install_test_plugin(&plugins, "prober", Some("ungranted-origin"));
    let port = free_port();
    let setup = ServeSetup {
        graph_guest: false,
        extra: format!("{operator}[telemetry]\notlp_endpoint = {:?}\n", receiver.endpoint()),
        env: fast_batches(),
        ..ServeSetup::default()
    };
    let setup = write_config_with(dir.path(), port, &graph, setup);
    let serve = start_with(dir.path(), port, setup).await;
    let event = membership(Membership::Add, 9, -1_000);
    assert_eq!(serve.post(vec![event.clone()]).await, Some(200));
    let views = settle(&serve.url, std::slice::from_ref(&event)).await;
    assert_eq!(views[0]["deliveries"][0]["status"], "dead", "the origin was refused: {}", views[0]);

    let trace_id = hookhost::telemetry::trace_id_hex(event["uuid"].as_str().unwrap());
    let attempt = || receiver.spans().into_iter().find(|s| s.trace_id == trace_id && s.name == "attempt prober");
    wait_until("the prober's attempt span at the OTLP receiver", Duration::from_secs(60), async || attempt().is_some())
        .await;
    let attempt = attempt().unwrap();
    let refusals = attempt.events_named("hookhost.refusal");
    assert_eq!(refusals.len(), 1, "{attempt:#?}");
    assert_eq!(refusals[0].get("hookhost.import").map(String::as_str), Some("http"), "{attempt:#?}");
    let message = refusals[0].get("message").map(String::as_str).unwrap_or_default();
    assert!(message.contains("http://127.0.0.1:9") && message.contains("allowed_hosts"), "{message}");
    drop(serve);
}
