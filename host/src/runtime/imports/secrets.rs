//! The `secrets` import.
//!
//! Grants: the values of secrets the operator configured under
//! `[plugins.<name>.secrets]` (and the manifest declares). Refuses: every other name,
//! answered as "none" exactly like an unset secret, so a plugin cannot probe for names;
//! the refusal is noted in the attempt's log by name only. Values never reach a log line
//! or an error message.

use crate::runtime::bindings::secrets::Host;
use crate::runtime::state::AttemptState;

impl Host for AttemptState {
    async fn get(&mut self, name: String) -> Option<String> {
        match self.plugin.grant.secrets.get(&name) {
            Some(secret) => Some(secret.expose().to_owned()),
            None => {
                self.refused(
                    "secrets",
                    format!(
                        "secret {name:?} is not granted to plugin {}; set it under [plugins.{}.secrets] if intended",
                        self.plugin.name, self.plugin.name
                    ),
                );
                None
            }
        }
    }
}
