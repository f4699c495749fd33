//! The WASI 0.2 component: binds [`crate::Host`] to the hookhost WIT imports and exports
//! `handler.handle`. Field-by-field copies only; all behaviour lives in the library.

use crate::{Event, Failure, Host, HttpError, Level, Party, Post, Response};

wit_bindgen::generate!({
    world: "plugin",
    path: "../../wit",
});

use exports::hookhost::plugin::handler::Guest;
use hookhost::plugin::{config, http, log, secrets, types};

/// The imports, as a value the library can borrow.
struct WitHost;

impl Host for WitHost {
    fn post(&mut self, request: Post) -> Result<Response, HttpError> {
        let request = http::Request {
            method: http::Method::Post,
            url: request.url,
            headers: request.headers,
            body: Some(request.body),
            timeout_ms: None,
        };
        match http::send(&request) {
            Ok(r) => Ok(Response { status: r.status, headers: r.headers, body: r.body }),
            Err(e) => Err(match e {
                http::HttpError::Denied(m) => HttpError::Denied(m),
                http::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
                http::HttpError::BudgetExhausted(m) => HttpError::BudgetExhausted(m),
                http::HttpError::Timeout(m) => HttpError::Timeout(m),
                http::HttpError::Connect(m) => HttpError::Connect(m),
                http::HttpError::ResponseTooLarge(m) => HttpError::ResponseTooLarge(m),
            }),
        }
    }

    fn secret(&self, name: &str) -> Option<String> {
        secrets::get(name)
    }

    fn config(&self, key: &str) -> Option<String> {
        config::get(key)
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
        };
        log::log(level, message);
    }
}

struct Component;

impl Guest for Component {
    fn handle(event: types::Event) -> Result<types::Outcome, types::Failure> {
        let event = Event {
            id: event.id,
            event_type: event.event_type,
            targets: event
                .targets
                .into_iter()
                .map(|p| Party { id: p.id, kind: p.kind, alternate_id: p.alternate_id, display_name: p.display_name })
                .collect(),
        };
        match crate::handle(&mut WitHost, &event) {
            Ok(summary) => Ok(types::Outcome { summary }),
            Err(Failure::Retryable { message, retry_after_ms }) => {
                Err(types::Failure::Retryable(types::RetryableFailure { message, retry_after_ms }))
            }
            Err(Failure::Permanent(message)) => Err(types::Failure::Permanent(message)),
        }
    }
}

export!(Component);
