//! Host-side bindings generated from `wit/plugin.wit`.
//!
//! Every import is async (HTTP and KV do I/O) and none is trappable: a host import never
//! kills the guest; it answers with the WIT error type and the plugin decides.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

pub use self::hookhost::plugin::{config, http, kv, log, secrets, types};
pub use exports::hookhost::plugin::handler;
