//! # hookhost
//!
//! Receives Okta Event Hook deliveries and runs each event through sandboxed WebAssembly
//! plugins (WASI 0.2 components implementing `wit/plugin.wit`).
//!
//! ## Layout
//!
//! Data flows one way, top to bottom; no module reaches back up.
//!
//! - [`okta`]: the Okta delivery envelope and LogEvent model (pure parsing).
//! - [`config`]: the host config file, strict, with paths resolved; [`secret`]: where
//!   secrets come from and how they stay out of logs.
//! - [`store`]: durable state (plugin KV; events, deliveries, attempts).
//! - [`registry`]: plugin bundles (`<name>.wasm` + `<name>.toml`) and their effective
//!   grants after operator overrides.
//! - [`runtime`]: the wasmtime engine, per-attempt limits and the host imports (`http`,
//!   `secrets`, `kv`, `config`, `log`), one module each.
//! - [`cli`]: the `hookhost` command.

pub mod cli;
pub mod config;
pub mod okta;
pub mod registry;
pub mod runtime;
pub mod secret;
pub mod store;
