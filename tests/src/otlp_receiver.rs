//! An in-process OpenTelemetry collector stand-in: `POST /v1/traces` over OTLP/HTTP, in both
//! encodings a collector accepts (`application/x-protobuf` and `application/json`), so the
//! telemetry tests see exactly the spans the host exported without a collector installed.
//!
//! Both encodings are reduced to one [`ReceivedSpan`] shape (ids as lower-case hex, attribute
//! values as text), so a test asserts the same thing whichever protocol the host spoke, and
//! [`OtlpReceiver::requests`] says which one it was. Anything else is refused (415/400), as a
//! collector would, and counted as a bad request so a test can assert there was none.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::server::ServerHandle;

/// One exported span, whichever encoding carried it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// 16 lower-case hex digits; empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's `SpanKind` number (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Attribute values as text (`"42"` for an int, `"true"` for a bool).
    pub attributes: BTreeMap<String, String>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The span's events, in order: name and attributes (values as text).
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

impl ReceivedSpan {
    /// The attribute `key`, if the span has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The attributes of each event named `name`, in order.
    pub fn events_named(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
        self.events.iter().filter(|(n, _)| n == name).map(|(_, attrs)| attrs).collect()
    }
}

/// The encoding of one export request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

#[derive(Default)]
struct Inner {
    spans: Vec<ReceivedSpan>,
    requests: Vec<Encoding>,
    bad_requests: usize,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running receiver on `127.0.0.1`.
pub struct OtlpReceiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: ServerHandle,
}

impl OtlpReceiver {
    /// Starts one at a free port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let listener =
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.context("binding the OTLP receiver")?;
        let addr = listener.local_addr().context("reading the OTLP receiver's address")?;
        let shared = Arc::new(Shared::default());
        let app = Router::new().route("/v1/traces", post(receive)).with_state(shared.clone());
        let server = ServerHandle::spawn(addr, |stop| {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .into_future()
        });
        Ok(OtlpReceiver { shared, addr, server })
    }

    /// The base URL to configure as the OTLP endpoint (`/v1/traces` is appended by the host).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.lock().spans.clone()
    }

    /// The encoding of each export request received so far.
    pub fn requests(&self) -> Vec<Encoding> {
        self.shared.lock().requests.clone()
    }

    /// Requests refused (wrong content type, undecodable body).
    pub fn bad_requests(&self) -> usize {
        self.shared.lock().bad_requests
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let decoded = match media.as_str() {
        "application/x-protobuf" => from_protobuf(&body).map(|s| (Encoding::Protobuf, s)),
        "application/json" => from_json(&body).map(|s| (Encoding::Json, s)),
        _ => {
            shared.lock().bad_requests += 1;
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported content type {media:?}")).into_response();
        }
    };
    let mut inner = shared.lock();
    match decoded {
        Ok((encoding, spans)) => {
            inner.requests.push(encoding);
            inner.spans.extend(spans);
            match encoding {
                Encoding::Protobuf => ([(header::CONTENT_TYPE, "application/x-protobuf")], Vec::new()).into_response(),
                Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
            }
        }
        Err(e) => {
            inner.bad_requests += 1;
            (StatusCode::BAD_REQUEST, format!("{e:#}")).into_response()
        }
    }
}

fn text_of(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text_of(kv.value.as_ref()))).collect()
}

fn from_protobuf(body: &[u8]) -> anyhow::Result<Vec<ReceivedSpan>> {
    let request = ExportTraceServiceRequest::decode(body).context("not an OTLP ExportTraceServiceRequest")?;
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service_name = resource.get("service.name").cloned().unwrap_or_default();
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            out.push(ReceivedSpan {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name.clone(),
                kind: span.kind,
                attributes: attributes(&span.attributes),
                service_name: service_name.clone(),
                events: span.events.iter().map(|e| (e.name.clone(), attributes(&e.attributes))).collect(),
            });
        }
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// OTLP/JSON: ids as hex strings, 64-bit ints as strings or numbers, enums as numbers.
fn from_json(body: &[u8]) -> anyhow::Result<Vec<ReceivedSpan>> {
    let request: Value = serde_json::from_slice(body).context("not JSON")?;
    let json_attributes = |v: &Value| -> BTreeMap<String, String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                let key = kv.get("key")?.as_str()?.to_owned();
                let value = kv.get("value")?.as_object()?.values().next()?;
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((key, text))
            })
            .collect()
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    let mut out = Vec::new();
    for rs in request.get("resourceSpans").and_then(Value::as_array).context("no resourceSpans")? {
        let resource = rs.pointer("/resource/attributes").map(json_attributes).unwrap_or_default();
        let service_name = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.get("scopeSpans").and_then(Value::as_array).into_iter().flatten() {
            for span in ss.get("spans").and_then(Value::as_array).into_iter().flatten() {
                out.push(ReceivedSpan {
                    trace_id: text(span, "traceId"),
                    span_id: text(span, "spanId"),
                    parent_span_id: text(span, "parentSpanId"),
                    name: span.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    kind: span.get("kind").and_then(Value::as_i64).unwrap_or_default() as i32,
                    attributes: span.get("attributes").map(json_attributes).unwrap_or_default(),
                    service_name: service_name.clone(),
                    events: span
                        .get("events")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            let name = e.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                            (name, e.get("attributes").map(json_attributes).unwrap_or_default())
                        })
                        .collect(),
                });
            }
        }
    }
    Ok(out)
}
