//! Serving components built against the frozen `hookhost:plugin@0.1.0` (`wit/0.1.0/`).
//!
//! The 0.1.0 imports are the 0.2.0 ones minus `kv.scan`, with the same meaning; bindgen
//! gives each version its own Rust types, so each 0.1.0 import here converts its arguments,
//! calls the one 0.2.0 implementation, and converts the answer back. The grants, limits and
//! refusals are therefore exactly those of 0.2.0. The event and the handler's answer are
//! converted the same way around `handle`.

use super::bindings::{types, v0_1, v0_2};
use super::state::AttemptState;

use v0_1::hookhost::plugin as old;
use v0_2::hookhost::plugin as new;

impl old::types::Host for AttemptState {}

impl old::http::Host for AttemptState {
    async fn send(&mut self, req: old::http::Request) -> Result<old::http::Response, old::http::HttpError> {
        use new::http::Method as N;
        use old::http::Method as O;
        let req = new::http::Request {
            method: match req.method {
                O::Get => N::Get,
                O::Head => N::Head,
                O::Post => N::Post,
                O::Put => N::Put,
                O::Patch => N::Patch,
                O::Delete => N::Delete,
            },
            url: req.url,
            headers: req.headers,
            body: req.body,
            timeout_ms: req.timeout_ms,
        };
        use new::http::HttpError as NE;
        use old::http::HttpError as OE;
        match new::http::Host::send(self, req).await {
            Ok(r) => Ok(old::http::Response { status: r.status, headers: r.headers, body: r.body }),
            Err(e) => Err(match e {
                NE::Denied(m) => OE::Denied(m),
                NE::InvalidRequest(m) => OE::InvalidRequest(m),
                NE::BudgetExhausted(m) => OE::BudgetExhausted(m),
                NE::Timeout(m) => OE::Timeout(m),
                NE::Connect(m) => OE::Connect(m),
                NE::ResponseTooLarge(m) => OE::ResponseTooLarge(m),
            }),
        }
    }
}

impl old::secrets::Host for AttemptState {
    async fn get(&mut self, name: String) -> Option<String> {
        new::secrets::Host::get(self, name).await
    }
}

impl old::kv::Host for AttemptState {
    async fn get(&mut self, key: String) -> Result<Option<String>, String> {
        new::kv::Host::get(self, key).await
    }
    async fn set(&mut self, key: String, value: String) -> Result<(), String> {
        new::kv::Host::set(self, key, value).await
    }
    async fn delete(&mut self, key: String) -> Result<(), String> {
        new::kv::Host::delete(self, key).await
    }
}

impl old::config::Host for AttemptState {
    async fn get(&mut self, key: String) -> Option<String> {
        new::config::Host::get(self, key).await
    }
}

impl old::log::Host for AttemptState {
    async fn log(&mut self, level: old::log::Level, message: String) {
        use new::log::Level as N;
        use old::log::Level as O;
        let level = match level {
            O::Trace => N::Trace,
            O::Debug => N::Debug,
            O::Info => N::Info,
            O::Warn => N::Warn,
            O::Error => N::Error,
        };
        new::log::Host::log(self, level, message).await
    }
}

/// The 0.2.0 event as 0.1.0 (same fields).
pub(super) fn event(e: &types::Event) -> old::types::Event {
    let party = |p: &types::Party| old::types::Party {
        id: p.id.clone(),
        kind: p.kind.clone(),
        alternate_id: p.alternate_id.clone(),
        display_name: p.display_name.clone(),
    };
    old::types::Event {
        id: e.id.clone(),
        event_type: e.event_type.clone(),
        published: e.published.clone(),
        actor: e.actor.as_ref().map(party),
        targets: e.targets.iter().map(party).collect(),
        raw: e.raw.clone(),
    }
}

/// A 0.1.0 outcome as 0.2.0.
pub(super) fn outcome(o: old::types::Outcome) -> types::Outcome {
    types::Outcome { summary: o.summary }
}

/// A 0.1.0 failure as 0.2.0.
pub(super) fn failure(f: old::types::Failure) -> types::Failure {
    match f {
        old::types::Failure::Retryable(r) => {
            types::Failure::Retryable(types::RetryableFailure { message: r.message, retry_after_ms: r.retry_after_ms })
        }
        old::types::Failure::Permanent(m) => types::Failure::Permanent(m),
    }
}
