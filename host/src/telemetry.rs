//! Traces and logs an operator can ship: OpenTelemetry spans over OTLP/HTTP, and the log
//! subscriber (text or one JSON object a line) that `serve` and the other commands use.
//!
//! # One trace per event, across tasks, processes and restarts
//!
//! An event is stored by one request (or a System Log page) and run by a dispatcher task,
//! maybe on another host, maybe after a restart, maybe days later on a retry. Nothing is
//! carried from one to the other but the event's `uuid`, so the trace is *derived* from it:
//!
//! | id | value |
//! | --- | --- |
//! | trace id | the first 16 bytes of SHA-256(`"trace:" + uuid`) |
//! | ingest span id | the first 8 bytes of SHA-256(`"ingest:" + uuid`) |
//!
//! The ingest span (emitted once, when the event is stored for the first time: a duplicate
//! delivery stores nothing and emits nothing) is given exactly those ids, and every attempt
//! span names that span as its (remote) parent. So every attempt of every plugin, on any
//! host, lands in the event's one trace under its ingest span, with no store column and no
//! coordination. The SDK draws ids from its `IdGenerator` only (a `SpanBuilder`'s ids are
//! ignored), so [`EventIds`] hands out the derived ids for the one span being built on this
//! thread and random ids otherwise. A plugin's outbound requests are children of its
//! attempt and carry a W3C `traceparent` of that trace.
//!
//! # Configuration, and why env loses to the file
//!
//! `[telemetry] otlp_endpoint`, `otlp_protocol` and `service_name` in host.toml; when a key is
//! absent, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` and
//! `OTEL_SERVICE_NAME` fill it in (the SDK's own rule: explicit configuration overrides the
//! environment). Other `OTEL_*` variables the SDK reads still apply (`OTEL_EXPORTER_OTLP_HEADERS`
//! for a vendor's API key, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_RESOURCE_ATTRIBUTES`).
//!
//! # Off is free
//!
//! With no endpoint nothing is built: no exporter, no tracer; an attempt span is inert and
//! there is no HTTP span (one atomic load decides), no `traceparent` is sent. The exporter
//! sends through a reqwest client on the host's own tokio runtime, so telemetry adds no
//! second HTTP or TLS stack.
//!
//! # Spans from the SDK, logs from `tracing`
//!
//! Spans are built with the OpenTelemetry SDK directly; `tracing` is for log lines. An
//! attempt runs in its span's OpenTelemetry context (attached at each poll, like a task
//! local), which is where the `http` import finds the parent of a plugin's outbound calls;
//! the runtime knows no caller, only "the current context". The host's refusals of a
//! plugin's requests (an ungranted origin or secret, a spent budget) are events on the
//! attempt's span there too ([`refusal`]), as they are `warn` lines in the log. Bridging `tracing` spans
//! through tracing-opentelemetry cost ~1.5 µs an attempt and ~1 µs a request more (see
//! [`AttemptSpan`]), most of what an attempt of a small plugin costs.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use sha2::{Digest, Sha256};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, TelemetryConfig};

/// Whether spans are exported (set once, when `serve` starts with an endpoint).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether log lines are JSON, where the attempt span's fields (its trace id) are shown.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);
/// The tracer every span is built with: ingest, attempt and HTTP.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether telemetry is on in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OTLP encodings hookhost sends (`telemetry.otlp_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`, the OTLP default.
    Protobuf,
    /// `http/json`.
    Json,
}

impl Protocol {
    /// Reads `http/protobuf` or `http/json`.
    ///
    /// # Errors
    /// Anything else, gRPC included (the message says what to use instead).
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s.trim() {
            "http/protobuf" => Ok(Protocol::Protobuf),
            "http/json" => Ok(Protocol::Json),
            "grpc" => {
                Err("grpc is not supported: use \"http/protobuf\" and the collector's OTLP/HTTP port (4318)".into())
            }
            other => Err(format!("must be \"http/protobuf\" or \"http/json\", not {other:?}")),
        }
    }
}

/// Telemetry as resolved from host.toml and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where spans are POSTed: the endpoint with `/v1/traces` appended.
    pub traces_url: String,
    pub protocol: Protocol,
    pub service_name: String,
}

impl Settings {
    /// `None` when telemetry is off (no endpoint in the file or in `env`).
    ///
    /// # Errors
    /// The endpoint is not an http(s) URL, or the protocol is not one hookhost speaks; the
    /// message names the key or variable.
    pub fn resolve(config: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, String> {
        let pick = |key: &Option<String>, var: &str, name: &str| {
            key.clone()
                .map(|v| (v, format!("telemetry.{name}")))
                .or_else(|| env(var).map(|v| (v, var.to_owned())))
                .filter(|(v, _)| !v.trim().is_empty())
        };
        let Some((endpoint, from)) = pick(&config.otlp_endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint") else {
            return Ok(None);
        };
        let url = url::Url::parse(endpoint.trim()).map_err(|e| {
            format!("{from} must be the collector's URL, e.g. \"http://127.0.0.1:4318\", not {endpoint:?}: {e}")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{from} must be an http or https URL, e.g. \"http://127.0.0.1:4318\""));
        }
        let protocol = match pick(&config.otlp_protocol, "OTEL_EXPORTER_OTLP_PROTOCOL", "otlp_protocol") {
            Some((p, from)) => Protocol::parse(&p).map_err(|m| format!("{from}: {m}"))?,
            None => Protocol::Protobuf,
        };
        let service_name = pick(&config.service_name, "OTEL_SERVICE_NAME", "service_name")
            .map(|(v, _)| v)
            .unwrap_or_else(|| "hookhost".into());
        let traces_url = format!("{}/v1/traces", url.as_str().trim_end_matches('/'));
        Ok(Some(Settings { traces_url, protocol, service_name }))
    }
}

/// The running exporter; [`Telemetry::shutdown`] sends what is still queued.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (waits up to 5 s), then stops the exporter. Call it
    /// from a thread that may block, while the tokio runtime given to [`init`] still runs.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "telemetry: the last spans could not be exported");
            }
        }
    }
}

/// The log filter: `HOOKHOST_LOG` (EnvFilter syntax), else `default`.
fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("HOOKHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The stderr log layer. Colours only on a terminal: in a log file or journal an escape
/// sequence is noise, and with none of ours there, any ESC would stand out. JSON is one
/// object a line, the event's fields at the top level and the current span's (an attempt's
/// plugin, delivery and trace id, when telemetry is on) under `span`.
fn log_layer(format: LogFormat, default: &str) -> BoxedLayer {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    JSON_LOGS.store(format == LogFormat::Json, Ordering::Relaxed);
    match format {
        LogFormat::Text => fmt.with_ansi(ansi).with_filter(log_filter(default)).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .with_filter(log_filter(default))
            .boxed(),
    }
}

/// Installs the log subscriber: every command's, `serve`'s through [`init`].
pub fn init_logs(format: LogFormat, default: &str) {
    let _ = tracing_subscriber::registry().with(log_layer(format, default)).try_init();
}

/// Installs the log subscriber and, when `config` or the environment names an endpoint, the
/// OTLP exporter; `runtime` is where the exporter's requests run.
///
/// # Errors
/// The telemetry settings are wrong, or the exporter cannot be built; nothing is installed.
pub fn init(
    config: &TelemetryConfig,
    format: LogFormat,
    default: &str,
    runtime: tokio::runtime::Handle,
) -> Result<Telemetry, String> {
    let Some(settings) = Settings::resolve(config, |v| std::env::var(v).ok())? else {
        init_logs(format, default);
        return Ok(Telemetry { provider: None });
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("telemetry: cannot build the exporter's HTTP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient { http, runtime })
        .with_endpoint(settings.traces_url.clone())
        .with_protocol(match settings.protocol {
            Protocol::Protobuf => opentelemetry_otlp::Protocol::HttpBinary,
            Protocol::Json => opentelemetry_otlp::Protocol::HttpJson,
        })
        .build()
        .map_err(|e| format!("telemetry: cannot build the OTLP exporter for {}: {e}", settings.traces_url))?;
    let provider = SdkTracerProvider::builder()
        .with_id_generator(EventIds::default())
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(settings.service_name.clone()).build())
        .with_batch_exporter(exporter)
        .build();
    let _ = TRACER.set(provider.tracer("hookhost"));
    // Spans do not go through the log subscriber, so the logs are installed as without
    // telemetry.
    init_logs(format, default);
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(
        endpoint = %settings.traces_url,
        protocol = ?settings.protocol,
        service = %settings.service_name,
        "telemetry: exporting traces over OTLP/HTTP"
    );
    Ok(Telemetry { provider: Some(provider) })
}

/// The first bytes of SHA-256(`label` + `uuid`).
fn derived<const N: usize>(label: &str, uuid: &str) -> [u8; N] {
    let digest = Sha256::new().chain_update(label).chain_update(uuid).finalize();
    let mut out = [0u8; N];
    out.copy_from_slice(&digest[..N]);
    out
}

/// The trace id of event `uuid` (see the module docs).
pub fn trace_id(uuid: &str) -> TraceId {
    TraceId::from_bytes(derived("trace:", uuid))
}

/// The trace id of event `uuid` as the 32 lower-case hex digits W3C and log lines use.
pub fn trace_id_hex(uuid: &str) -> String {
    format!("{:032x}", trace_id(uuid))
}

/// The span id of event `uuid`'s ingest span.
pub fn ingest_span_id(uuid: &str) -> SpanId {
    SpanId::from_bytes(derived("ingest:", uuid))
}

thread_local! {
    /// The ids the next span built on this thread gets, when set by [`record_ingest`].
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// The provider's id generator: the derived ids of an ingest span while [`record_ingest`]
/// builds it on this thread, random ids for every other span.
#[derive(Debug, Default)]
struct EventIds {
    random: RandomIdGenerator,
}

impl IdGenerator for EventIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS.with(Cell::get).map_or_else(|| self.random.new_trace_id(), |(t, _)| t)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS.with(Cell::get).map_or_else(|| self.random.new_span_id(), |(_, s)| s)
    }
}

/// Where stored events came from, for the ingest span.
#[derive(Debug, Clone, Copy)]
pub struct IngestOrigin<'a> {
    /// `hook`, `system_log` or `reconcile` (the store's source names).
    pub source: &'a str,
    /// Okta's id of the hook delivery, when it sent one.
    pub okta_delivery_id: Option<&'a str>,
    /// Events in the delivery or page, duplicates included.
    pub events: usize,
}

/// Emits the ingest span of each event in `new_events` (stored for the first time just now;
/// the work took from `started` to now). Does nothing when telemetry is off.
pub fn record_ingest(origin: IngestOrigin<'_>, new_events: &[String], started: SystemTime) {
    let Some(tracer) = TRACER.get().filter(|_| enabled()) else {
        return;
    };
    let ended = SystemTime::now();
    for uuid in new_events {
        let mut attributes = vec![
            KeyValue::new("okta.event.uuid", uuid.clone()),
            KeyValue::new("hookhost.event.source", origin.source.to_owned()),
            KeyValue::new("okta.delivery.events", origin.events as i64),
        ];
        if let Some(id) = origin.okta_delivery_id {
            attributes.push(KeyValue::new("okta.delivery.id", id.to_owned()));
        }
        let builder = tracer
            .span_builder("ingest")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes(attributes);
        NEXT_IDS.with(|n| n.set(Some((trace_id(uuid), ingest_span_id(uuid)))));
        let mut span = builder.start_with_context(tracer, &opentelemetry::Context::new());
        NEXT_IDS.with(|n| n.set(None));
        opentelemetry::trace::Span::end_with_timestamp(&mut span, ended);
    }
}

/// The span of one attempt of `plugin` (`version`) on delivery `delivery_id` of event
/// `uuid`, a child of the event's ingest span; inert when telemetry is off. Run the attempt
/// in its [`context`](AttemptSpan::context) (and its [`log_span`](AttemptSpan::log_span)),
/// then call [`finished`](AttemptSpan::finished).
pub fn attempt_span(plugin: &str, version: &str, delivery_id: &str, uuid: &str) -> AttemptSpan {
    let Some(tracer) = TRACER.get().filter(|_| enabled()) else {
        return AttemptSpan::none();
    };
    let trace = trace_id(uuid);
    let ingest = SpanContext::new(trace, ingest_span_id(uuid), TraceFlags::SAMPLED, true, TraceState::default());
    let parent = opentelemetry::Context::new().with_remote_span_context(ingest);
    let attributes = vec![
        KeyValue::new("hookhost.plugin", plugin.to_owned()),
        KeyValue::new("hookhost.plugin.version", version.to_owned()),
        KeyValue::new("hookhost.delivery.id", delivery_id.to_owned()),
        KeyValue::new("okta.event.uuid", uuid.to_owned()),
    ];
    let span = tracer
        .span_builder(format!("attempt {plugin}"))
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    // JSON log lines inside the attempt carry its trace id (text lines name plugin and
    // delivery themselves, and a span's fields would be formatted for every attempt).
    let log = if JSON_LOGS.load(Ordering::Relaxed) {
        tracing::info_span!(
            target: "hookhost::attempt",
            "attempt",
            plugin,
            delivery = delivery_id,
            trace_id = %format_args!("{trace:032x}"),
        )
    } else {
        tracing::Span::none()
    };
    AttemptSpan { cx: Some(parent.with_span(span)), log }
}

/// One attempt's span ([`attempt_span`]). Built with the SDK directly, not as a `tracing`
/// span through the tracing-opentelemetry bridge: the bridge's bookkeeping (a registry slot,
/// the layers' callbacks at every poll, one allocation per field in its visitor) measured
/// about 1.5 µs per attempt, 14 % of a no-op attempt (`make bench BENCH=runtime`).
pub struct AttemptSpan {
    /// The context to run the attempt in: the span, under the ingest span. `None` when off.
    cx: Option<opentelemetry::Context>,
    /// With JSON logs, the `tracing` span log lines inside the attempt are shown in.
    log: tracing::Span,
}

impl AttemptSpan {
    /// The span of an attempt that is not traced, what [`attempt_span`] answers when
    /// telemetry is off.
    pub fn none() -> AttemptSpan {
        AttemptSpan { cx: None, log: tracing::Span::none() }
    }

    /// The context the attempt runs in (with `opentelemetry::context::FutureExt::with_context`),
    /// where [`http_span`] finds its parent; `None` when telemetry is off.
    pub fn context(&self) -> Option<&opentelemetry::Context> {
        self.cx.as_ref()
    }

    /// The span to instrument the attempt with, for its log lines ([`tracing::Span::none`]
    /// but with telemetry on and JSON logs).
    pub fn log_span(&self) -> &tracing::Span {
        &self.log
    }

    /// Records how the attempt ended (`hookhost.attempt.result`, the [`AttemptResult`] kind;
    /// an error status unless done) and ends the span. An attempt span dropped without this
    /// (the claim was lost) ends without a result.
    ///
    /// [`AttemptResult`]: crate::attempt::AttemptResult
    pub fn finished(self, result: &crate::attempt::AttemptResult) {
        let Some(cx) = self.cx else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("hookhost.attempt.result", result.kind()));
        if !matches!(result, crate::attempt::AttemptResult::Done { .. }) {
            span.set_status(opentelemetry::trace::Status::error(""));
        }
        span.end();
    }
}

/// Marks on the current attempt's span that the host refused one of the plugin's requests
/// (`import`, e.g. `http`, and the refusal as the attempt's log has it), as an event named
/// `hookhost.refusal`; nothing when telemetry is off or no attempt span is current.
pub fn refusal(import: &'static str, message: &str) {
    if TRACER.get().is_none() || !enabled() {
        return;
    }
    let cx = opentelemetry::Context::current();
    if !cx.has_active_span() {
        return;
    }
    cx.span().add_event(
        "hookhost.refusal",
        vec![KeyValue::new("hookhost.import", import), KeyValue::new("message", message.to_owned())],
    );
}

/// The span of one outbound call a plugin makes, a child of the current OpenTelemetry
/// context's span (its attempt's, see [`AttemptSpan::context`]); `None` when telemetry is
/// off or no span is current (a call outside a traced attempt, e.g. `plugin run`, has no
/// trace to join and sends no `traceparent`).
pub fn http_span(method: &'static str, host: &str, port: Option<u16>) -> Option<HttpSpan> {
    let tracer = TRACER.get().filter(|_| enabled())?;
    let parent = opentelemetry::Context::current();
    if !parent.has_active_span() {
        return None;
    }
    let mut attributes = Vec::with_capacity(3);
    attributes.push(KeyValue::new("http.request.method", method));
    attributes.push(KeyValue::new("server.address", host.to_owned()));
    if let Some(port) = port {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    let span = tracer
        .span_builder(method)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    Some(HttpSpan { span })
}

/// An outbound call's span ([`http_span`]); it ends when dropped.
pub struct HttpSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl HttpSpan {
    /// The W3C `traceparent` value naming this span (version 00).
    pub fn traceparent(&self) -> String {
        let sc = opentelemetry::trace::Span::span_context(&self.span);
        format!("00-{:032x}-{:016x}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
    }

    /// The answer's status; a 5xx marks the span as an error.
    pub fn answered(&mut self, status: u16) {
        use opentelemetry::trace::Span as _;
        self.span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            self.span.set_status(opentelemetry::trace::Status::error(""));
        }
    }

    /// A response header worth keeping (Graph's request ids), as
    /// `http.response.header.<name>`.
    pub fn header(&mut self, name: &'static str, value: &str) {
        use opentelemetry::trace::Span as _;
        self.span.set_attribute(KeyValue::new(format!("http.response.header.{name}"), value.to_owned()));
    }

    /// No answer came (refused, timed out, failed to connect).
    pub fn failed(&mut self) {
        use opentelemetry::trace::Span as _;
        self.span.set_status(opentelemetry::trace::Status::error(""));
    }
}

/// The exporter's HTTP client: the host's reqwest (rustls), its requests run on the host's
/// tokio runtime. The SDK's batch thread drives `send_bytes` with a plain executor, where
/// reqwest cannot run, so the request is spawned onto `runtime` and only its answer awaited.
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'a>>;

impl HttpClient for ExportClient {
    fn send_bytes<'a, 'b>(&'a self, request: Request<Bytes>) -> SendFuture<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        let http = self.http.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let answer =
                http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await?;
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok::<_, HttpError>(response)
        });
        Box::pin(async move { task.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn off_without_an_endpoint_and_the_file_wins_over_the_environment() {
        assert_eq!(Settings::resolve(&TelemetryConfig::default(), env(&[])), Ok(None));
        let from_env = Settings::resolve(
            &TelemetryConfig::default(),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_SERVICE_NAME", "hooks-eu"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(from_env.traces_url, "http://collector:4318/v1/traces");
        assert_eq!((from_env.protocol, from_env.service_name.as_str()), (Protocol::Json, "hooks-eu"));
        let file = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            otlp_protocol: Some("http/protobuf".into()),
            service_name: None,
        };
        let both = Settings::resolve(
            &file,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(both.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!((both.protocol, both.service_name.as_str()), (Protocol::Protobuf, "hookhost"));
    }

    #[test]
    fn a_bad_endpoint_or_protocol_names_where_it_came_from() {
        let e =
            Settings::resolve(&TelemetryConfig::default(), env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]))
                .unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        let grpc = TelemetryConfig {
            otlp_endpoint: Some("http://c:4317".into()),
            otlp_protocol: Some("grpc".into()),
            service_name: None,
        };
        let e = Settings::resolve(&grpc, env(&[])).unwrap_err();
        assert!(e.contains("telemetry.otlp_protocol") && e.contains("4318"), "{e}");
    }

    #[test]
    fn ids_are_derived_from_the_event_uuid() {
        let uuid = "a9b7c0f0-5f3c-11ef-9c3b-0d5e8f7a1b2c";
        assert_eq!(trace_id(uuid), trace_id(uuid));
        assert_ne!(trace_id(uuid), trace_id("another"));
        assert_eq!(trace_id_hex(uuid).len(), 32);
        let digest = Sha256::digest(format!("trace:{uuid}"));
        assert_eq!(trace_id_hex(uuid), hex::encode(&digest[..16]));
        assert_eq!(
            format!("{:016x}", ingest_span_id(uuid)),
            hex::encode(&Sha256::digest(format!("ingest:{uuid}"))[..8])
        );
    }

    #[test]
    fn the_sdk_gives_the_ingest_span_the_derived_ids() {
        let provider = SdkTracerProvider::builder().with_id_generator(EventIds::default()).build();
        let tracer = provider.tracer("test");
        let uuid = "evt-1";
        NEXT_IDS.with(|n| n.set(Some((trace_id(uuid), ingest_span_id(uuid)))));
        let span = tracer.span_builder("ingest").start_with_context(&tracer, &opentelemetry::Context::new());
        NEXT_IDS.with(|n| n.set(None));
        let sc = opentelemetry::trace::Span::span_context(&span).clone();
        assert_eq!((sc.trace_id(), sc.span_id()), (trace_id(uuid), ingest_span_id(uuid)));
        assert!(sc.is_sampled());
        let other = tracer.start("other");
        assert_ne!(opentelemetry::trace::Span::span_context(&other).trace_id(), trace_id(uuid));
    }
}
