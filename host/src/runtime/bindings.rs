//! Host-side bindings generated from the WIT contract, one module per version served.
//!
//! - [`v0_2`]: `wit/plugin.wit` (`hookhost:plugin@0.2.0`), world `reconciler`: the imports
//!   the host implements (`http`, `secrets`, `kv`, `config`, `log`, `keys`) and the two exports.
//!   A 0.2.0 component may export only `handler` (world `plugin`); which exports it has is
//!   found at load time from its export indices, not from the world's `Pre`.
//! - [`v0_1`]: the frozen `wit/0.1.0/plugin.wit`, world `plugin`. Its imports are served by
//!   delegating to the 0.2.0 implementations (`super::v0_1`).
//!
//! Every import is async (HTTP and KV do I/O) and none is trappable: a host import never
//! kills the guest; it answers with the WIT error type and the plugin decides.

/// `hookhost:plugin@0.2.0`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "reconciler",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

/// `hookhost:plugin@0.1.0` (frozen).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit/0.1.0",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use v0_2::exports::hookhost::plugin::{handler, reconcile};
pub use v0_2::hookhost::plugin::{config, http, keys, kv, log, secrets, types};
