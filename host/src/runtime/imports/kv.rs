//! The `kv` import: durable key-value state private to each plugin.
//!
//! Grants: get/set/delete/scan within the plugin's own namespace (the plugin name), kept across
//! attempts, restarts and versions. Refuses: other plugins' keys (the namespace is applied
//! by the host, not chosen by the guest), keys over 512 bytes and values over 64 KiB.
//! The backend is the store's (SQLite or PostgreSQL); tests and `plugin run` without a
//! config use [`MemoryKv`](crate::kv::MemoryKv).

use crate::kv::KvBackend;
use crate::runtime::bindings::kv::Host;
use crate::runtime::state::AttemptState;

const MAX_KEY_BYTES: usize = 512;
const MAX_VALUE_BYTES: usize = 64 << 10;
/// Entries per `scan` call (the WIT promises 1000).
const SCAN_LIMIT: usize = 1000;

impl AttemptState {
    /// Keys are 1 to 512 bytes; a refusal is logged like the host's other refusals.
    fn check_key(&mut self, key: &str) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            let why = format!("kv keys must be 1 to {MAX_KEY_BYTES} bytes long");
            self.refused("kv", why.clone());
            return Err(why);
        }
        Ok(())
    }

    /// Runs a backend call, on a blocking thread when the backend does I/O. (Returns a
    /// future that owns what it needs: the attempt state is not `Sync`.)
    fn kv_call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn KvBackend, &str) -> Result<T, String> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, String>> + Send + 'static {
        let (kv, plugin) = (self.kv.clone(), self.plugin.clone());
        async move {
            if !kv.blocks() {
                return call(kv.as_ref(), &plugin.name);
            }
            tokio::task::spawn_blocking(move || call(kv.as_ref(), &plugin.name))
                .await
                .unwrap_or_else(|e| Err(format!("kv call failed: {e}")))
        }
    }
}

impl Host for AttemptState {
    async fn get(&mut self, key: String) -> Result<Option<String>, String> {
        self.check_key(&key)?;
        self.kv_call(move |kv, plugin| kv.get(plugin, &key)).await
    }

    async fn set(&mut self, key: String, value: String) -> Result<(), String> {
        self.check_key(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            let why = format!("kv values must be at most {MAX_VALUE_BYTES} bytes");
            self.refused("kv", why.clone());
            return Err(why);
        }
        self.kv_call(move |kv, plugin| kv.set(plugin, &key, &value)).await
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        self.check_key(&key)?;
        self.kv_call(move |kv, plugin| kv.delete(plugin, &key)).await
    }

    async fn scan(&mut self, prefix: String, after: Option<String>) -> Result<Vec<(String, String)>, String> {
        if prefix.len() > MAX_KEY_BYTES {
            let why = format!("kv scan prefixes must be at most {MAX_KEY_BYTES} bytes long");
            self.refused("kv", why.clone());
            return Err(why);
        }
        let after = after.unwrap_or_default();
        self.kv_call(move |kv, plugin| kv.scan(plugin, &prefix, &after, SCAN_LIMIT)).await
    }
}
