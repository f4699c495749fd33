//! The `kv` import: durable key-value state private to each plugin.
//!
//! Grants: get/set/delete within the plugin's own namespace (the plugin name), kept across
//! attempts, restarts and versions. Refuses: other plugins' keys (the namespace is applied
//! by the host, not chosen by the guest), keys over 512 bytes and values over 64 KiB.
//! The backend is the store's (SQLite or PostgreSQL); tests and `plugin run` without a
//! config use [`MemoryKv`].

use std::collections::HashMap;
use std::sync::Mutex;

use super::bindings::kv::Host;
use super::state::AttemptState;

const MAX_KEY_BYTES: usize = 512;
const MAX_VALUE_BYTES: usize = 64 << 10;

/// Where plugin KV lives. Implemented by the store; errors are messages for the plugin.
pub trait KvBackend: Send + Sync {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, String>;
    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String>;
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String>;
}

/// A process-local KV, lost at exit.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<(String, String), String>>,
}

impl MemoryKv {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<(String, String), String>>, String> {
        self.map.lock().map_err(|_| "kv store lock poisoned".to_string())
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, String> {
        Ok(self.lock()?.get(&(plugin.to_owned(), key.to_owned())).cloned())
    }
    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String> {
        self.lock()?
            .insert((plugin.to_owned(), key.to_owned()), value.to_owned());
        Ok(())
    }
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        self.lock()?.remove(&(plugin.to_owned(), key.to_owned()));
        Ok(())
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("kv keys must be 1 to {MAX_KEY_BYTES} bytes long"));
    }
    Ok(())
}

impl Host for AttemptState {
    async fn get(&mut self, key: String) -> Result<Option<String>, String> {
        check_key(&key)?;
        self.kv.get(&self.plugin.name, &key)
    }

    async fn set(&mut self, key: String, value: String) -> Result<(), String> {
        check_key(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("kv values must be at most {MAX_VALUE_BYTES} bytes"));
        }
        self.kv.set(&self.plugin.name, &key, &value)
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        check_key(&key)?;
        self.kv.delete(&self.plugin.name, &key)
    }
}
