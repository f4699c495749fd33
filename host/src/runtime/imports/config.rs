//! The `config` import: the plugin's effective configuration.
//!
//! Grants: read access to its own `[config]` defaults overlaid by the operator's
//! `[plugins.<name>.config]`. Refuses: nothing else exists to read (no host environment).

use crate::runtime::bindings::config::Host;
use crate::runtime::state::AttemptState;

impl Host for AttemptState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.plugin.grant.config.get(&key).cloned()
    }
}
