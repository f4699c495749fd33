//! The WASI 0.2 component: binds the library's host traits to the hookhost WIT imports and
//! exports `handler.handle` and `reconcile.managed-accounts` (world `reconciler` of
//! `hookhost:plugin@0.2.0`). Field-by-field copies only; all behaviour lives in the library.

use crate::host::{
    Algorithm, Clock, Config, Http, HttpError, KeyInfo, Keys, Kv, Level, Log, Method, Request, Response, Secrets,
    SignError,
};
use crate::{Event, Failure, Party};

wit_bindgen::generate!({
    world: "reconciler",
    path: "../../wit",
});

use exports::hookhost::plugin::handler::Guest;
use exports::hookhost::plugin::reconcile::{Guest as ReconcileGuest, ManagedAccount};
use hookhost::plugin::{config, http, keys, kv, log, secrets, types};

/// The imports, as a value the library can borrow. Zero-sized: the imports are free functions.
struct WitHost;

impl Http for WitHost {
    fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let request = http::Request {
            method: match request.method {
                Method::Get => http::Method::Get,
                Method::Head => http::Method::Head,
                Method::Post => http::Method::Post,
                Method::Put => http::Method::Put,
                Method::Patch => http::Method::Patch,
                Method::Delete => http::Method::Delete,
            },
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
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
}

impl Kv for WitHost {
    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        kv::get(key)
    }
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        kv::set(key, value)
    }
    fn delete(&mut self, key: &str) -> Result<(), String> {
        kv::delete(key)
    }
    fn scan(&mut self, prefix: &str, after: Option<&str>) -> Result<Vec<(String, String)>, String> {
        kv::scan(prefix, after)
    }
}

impl Secrets for WitHost {
    fn get(&self, name: &str) -> Option<String> {
        secrets::get(name)
    }
}

impl Keys for WitHost {
    fn key_info(&self, name: &str) -> Option<KeyInfo> {
        keys::info(name).map(|info| KeyInfo {
            algorithms: info
                .algorithms
                .into_iter()
                .map(|a| match a {
                    keys::Algorithm::Rs256 => Algorithm::Rs256,
                    keys::Algorithm::Ps256 => Algorithm::Ps256,
                    keys::Algorithm::Es256 => Algorithm::Es256,
                })
                .collect(),
            certificate_thumbprint: info.certificate_thumbprint,
        })
    }

    fn sign(&mut self, name: &str, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let algorithm = match algorithm {
            Algorithm::Rs256 => keys::Algorithm::Rs256,
            Algorithm::Ps256 => keys::Algorithm::Ps256,
            Algorithm::Es256 => keys::Algorithm::Es256,
        };
        keys::sign(name, algorithm, message).map_err(|e| match e {
            keys::SignError::Denied(m) => SignError::Denied(m),
            keys::SignError::InvalidRequest(m) => SignError::InvalidRequest(m),
            keys::SignError::Failed(m) => SignError::Failed(m),
        })
    }
}

impl Config for WitHost {
    fn get(&self, key: &str) -> Option<String> {
        config::get(key)
    }
}

impl Log for WitHost {
    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }
}

/// The system clock: WASI 0.2 grants wall-clock time to every component.
impl Clock for WitHost {}

struct Component;

impl Guest for Component {
    fn handle(event: types::Event) -> Result<types::Outcome, types::Failure> {
        let party = |p: types::Party| Party {
            id: p.id,
            kind: p.kind,
            alternate_id: p.alternate_id,
            display_name: p.display_name,
        };
        let event = Event {
            id: event.id,
            event_type: event.event_type,
            published: event.published,
            actor: event.actor.map(party),
            targets: event.targets.into_iter().map(party).collect(),
            raw: event.raw,
        };
        match crate::handle(&mut WitHost, &event) {
            Ok(outcome) => Ok(types::Outcome { summary: outcome.summary }),
            Err(Failure::Retryable { message, retry_after_ms }) => {
                Err(types::Failure::Retryable(types::RetryableFailure { message, retry_after_ms }))
            }
            Err(Failure::Permanent(message)) => Err(types::Failure::Permanent(message)),
        }
    }
}

impl ReconcileGuest for Component {
    fn managed_accounts() -> Result<Vec<ManagedAccount>, types::Failure> {
        match crate::managed_accounts(&mut WitHost) {
            Ok(accounts) => Ok(accounts
                .into_iter()
                .map(|a| ManagedAccount {
                    okta_user_id: a.okta_user_id,
                    login: a.login,
                    target_id: a.target_id,
                    present: a.present,
                })
                .collect()),
            Err(Failure::Retryable { message, retry_after_ms }) => {
                Err(types::Failure::Retryable(types::RetryableFailure { message, retry_after_ms }))
            }
            Err(Failure::Permanent(message)) => Err(types::Failure::Permanent(message)),
        }
    }
}

export!(Component);
