//! # hookhost-tests
//!
//! Test support for hookhost: emulators for the two services the graph-guest plugin talks to
//! (neither Microsoft Graph nor Okta is reachable from CI), builders for real-format Okta Event
//! Hook deliveries, and access to the shared fixtures. The library does not depend on the
//! `hookhost` crate, so it builds and runs on its own (the `graph-emulator` binary uses it for
//! demos); the end-to-end tests in `all/` link both.
//!
//! # Layout
//!
//! - [`graph_emulator`]: Microsoft Graph (`/v1.0/invitations`, `/v1.0/users`) and the Entra ID
//!   token endpoint, with a tenant directory, request journal, fault injection and replication lag.
//! - [`okta_emulator`]: an Okta org's System Log (paging, filter, rate limits, 429s), Groups
//!   API, Event Hooks management API (create, replace, activate, verify) and the OAuth token
//!   endpoint of API service apps (private_key_jwt, scopes per endpoint), recording every request.
//! - [`okta_users`]: the Okta Users API (`GET /api/v1/users/{id}`), for reading `profile.email`.
//! - [`okta`]: builders for Event Hook deliveries and their System Log events.
//! - [`webhooks`]: Slack and Teams incoming webhooks and a Splunk HTTP Event Collector, each
//!   recording what it received and able to throttle (for the chat-notify and siem-forward plugins).
//! - [`keys`]: throwaway private keys (PEM) made at test time, with the public halves the
//!   emulators register.
//! - [`otlp_receiver`]: an OpenTelemetry collector stand-in (`POST /v1/traces`, protobuf and
//!   JSON), recording the spans the host exports.
//! - [`fixtures`]: finding and loading the verbatim payloads in `tests/fixtures`.
//! - [`serve`]: the one harness that writes a `host.toml` and runs the real `hookhost serve`
//!   (used by the end-to-end tests, the benches and the demo).
//! - `server`, `ids`, `jws` (private): spawning/stopping the emulators' servers; random
//!   identifiers; reading a client assertion (compact JWS).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod fixtures;
pub mod graph_emulator;
pub mod keys;
pub mod okta;
pub mod okta_emulator;
pub mod okta_users;
pub mod otlp_receiver;
pub mod serve;
pub mod webhooks;

mod ids;
mod jws;
mod server;

pub use graph_emulator::{Fault, GraphEmulator, TenantConfig};
pub use okta_emulator::OktaEmulator;
pub use okta_users::OktaUsersEmulator;
pub use webhooks::{WebhookKind, WebhookReceiver};
