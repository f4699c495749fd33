//! Plugin key-value state, as the store keeps it: the backend trait the store implements and
//! an in-process map for tests and `plugin run`. A leaf: the runtime's `kv` import uses it,
//! the store implements it, neither knows the other.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where plugin KV lives. Implemented by the store; errors are messages for the plugin.
pub trait KvBackend: Send + Sync {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, String>;
    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String>;
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String>;
    /// Up to `limit` entries whose key starts with `prefix` and sorts (bytewise) after
    /// `after`, in ascending key order.
    fn scan(&self, plugin: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<(String, String)>, String>;

    /// Whether calls block on I/O (a database), so the runtime moves them to a blocking
    /// thread instead of holding up an async worker. Only an in-process map answers false.
    fn blocks(&self) -> bool {
        true
    }
}

/// A process-local KV, lost at exit.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<KvMap>,
}

/// (plugin, key) → value.
type KvMap = HashMap<(String, String), String>;

impl MemoryKv {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, KvMap>, String> {
        self.map.lock().map_err(|_| "kv store lock poisoned".to_string())
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<String>, String> {
        Ok(self.lock()?.get(&(plugin.to_owned(), key.to_owned())).cloned())
    }
    fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String> {
        self.lock()?.insert((plugin.to_owned(), key.to_owned()), value.to_owned());
        Ok(())
    }
    fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        self.lock()?.remove(&(plugin.to_owned(), key.to_owned()));
        Ok(())
    }
    fn scan(&self, plugin: &str, prefix: &str, after: &str, limit: usize) -> Result<Vec<(String, String)>, String> {
        let map = self.lock()?;
        let mut found: Vec<(String, String)> = map
            .iter()
            .filter(|((p, k), _)| p == plugin && k.starts_with(prefix) && k.as_str() > after)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        found.sort();
        found.truncate(limit);
        Ok(found)
    }
    fn blocks(&self) -> bool {
        false
    }
}

/// The rows a `key > after AND key >= prefix ORDER BY key` query returned, cut where keys
/// stop starting with `prefix` (they form one contiguous range in byte order).
pub fn with_prefix(rows: Vec<(String, String)>, prefix: &str) -> Vec<(String, String)> {
    rows.into_iter().take_while(|(k, _)| k.starts_with(prefix)).collect()
}
