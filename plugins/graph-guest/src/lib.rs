//! graph-guest: invites the members of an Okta group as Microsoft Entra ID guests through
//! Microsoft Graph, and removes (or disables) those guests when they leave the group or are
//! offboarded.
//!
//! The logic is a plain Rust library generic over small host traits, so it builds natively
//! for fast tests and benchmarks; only `src/component.rs` (wasm32 only) binds those traits
//! to the hookhost WIT imports (`wit/plugin.wit`) and exports `handler.handle`.
//!
//! # Layout
//!
//! - [`host`]: the traits the plugin needs from its runner (`Http`, `Kv`, `Secrets`, `Keys`,
//!   `Config`, `Log`, `Clock`, bundled as [`Host`]) and the plain HTTP types.
//! - [`event`]: the event in ([`Event`]) and the result out ([`Outcome`], [`Failure`]).
//! - [`settings`]: secrets and config, checked once per run.
//! - `handler`: event type → flow ([`handle`]); the add, remove and offboard flows.
//! - `graph`: the Graph calls and what their statuses mean; `token`: the cached app token,
//!   got with the client secret or a client assertion the host signs;
//!   `okta`: the optional `profile.email` lookup; `run`: per-run state, secret scrubbing;
//!   `encoding`: percent/form encoding, OData literals, `Retry-After`.
//!
//! # State (plugin KV)
//!
//! - [`TOKEN_KEY`] (`token`): the cached app token.
//! - [`USER_KEY_PREFIX`]`<okta user id>` (`user:00u…`): the Entra object id of the guest this
//!   plugin invited or adopted for that Okta user. Only ever a Guest; dropped once removed.
//!   An invited guest's entry also says when it was invited (`<id>;<unix ms>:<lag retries>`,
//!   see `handler::INVITED_MARK`): a 404 moments later is Entra's replication lag.
//! - [`LOGIN_KEY_PREFIX`]`<okta user id>` (`login:00u…`): the Okta login recorded with that
//!   mapping (since 0.2.0; older mappings have none), for reconcile's report.
//!
//! # Reconcile
//!
//! [`managed_accounts`] (WIT `reconcile.managed-accounts`, world `reconciler` of
//! `hookhost:plugin@0.2.0`) lists the mapping and, from one paged listing of the tenant's
//! guests, whether each account still exists.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod encoding;
pub mod event;
mod graph;
mod handler;
pub mod host;
mod okta;
mod reconcile;
mod run;
pub mod settings;
mod token;

#[cfg(target_arch = "wasm32")]
mod component;

pub use event::{Event, Failure, Outcome, Party};
pub use handler::{handle, MEMBERSHIP_ADD, MEMBERSHIP_REMOVE, USER_DEACTIVATE, USER_DELETE_INITIATED, USER_KEY_PREFIX};
pub use host::{
    Algorithm, Clock, Config, Host, Http, HttpError, KeyInfo, Keys, Kv, Level, Log, Method, Request, Response, Secrets,
    SignError,
};
pub use reconcile::{managed_accounts, ManagedAccount, LOGIN_KEY_PREFIX};
pub use token::TOKEN_KEY;
