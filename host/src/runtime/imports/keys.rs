//! The `keys` import: signing with private keys the host keeps.
//!
//! Grants: `info` and `sign` with the keys configured under `[plugins.<name>.keys]` (and
//! declared by the manifest), each parsed once when the plugin loads. The key itself never
//! crosses into the guest: a plugin gets signatures, the algorithms a key signs with and its
//! certificate's thumbprint, nothing from which the key can be rebuilt. Refuses: `sign` with
//! a name not granted (logged like every refusal, by name only), an algorithm that does not
//! fit the key, and messages over 64 KiB (a JWT's signing input is well under 2 KiB).
//! `info` of a name not granted is none without a refusal: a plugin that accepts one of
//! several credentials (a secret or a certificate) asks which one it was given.

use crate::private_key::{Alg, KeyError};
use crate::runtime::bindings::keys::{Algorithm, Host, KeyInfo, SignError};
use crate::runtime::state::AttemptState;

/// The largest message `sign` accepts.
const MAX_MESSAGE_BYTES: usize = 64 << 10;

impl From<Alg> for Algorithm {
    fn from(alg: Alg) -> Self {
        match alg {
            Alg::Rs256 => Algorithm::Rs256,
            Alg::Ps256 => Algorithm::Ps256,
            Alg::Es256 => Algorithm::Es256,
        }
    }
}

impl From<Algorithm> for Alg {
    fn from(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Rs256 => Alg::Rs256,
            Algorithm::Ps256 => Alg::Ps256,
            Algorithm::Es256 => Alg::Es256,
        }
    }
}

impl Host for AttemptState {
    async fn info(&mut self, name: String) -> Option<KeyInfo> {
        let key = self.plugin.grant.keys.get(&name)?;
        Some(KeyInfo {
            algorithms: key.algs().iter().copied().map(Algorithm::from).collect(),
            certificate_thumbprint: key.x5t_s256(),
        })
    }

    async fn sign(&mut self, name: String, algorithm: Algorithm, message: Vec<u8>) -> Result<Vec<u8>, SignError> {
        let plugin = self.plugin.name.clone();
        let Some(key) = self.plugin.grant.keys.get(&name).cloned() else {
            let why = format!(
                "key {name:?} is not granted to plugin {plugin}; set it under [plugins.{plugin}.keys] (and declare it in the manifest's keys) if intended"
            );
            self.refused("keys", why.clone());
            return Err(SignError::Denied(why));
        };
        if message.len() > MAX_MESSAGE_BYTES {
            let why = format!(
                "keys.sign takes messages of at most {MAX_MESSAGE_BYTES} bytes; sign a digest or a JWT's signing input"
            );
            self.refused("keys", why.clone());
            return Err(SignError::InvalidRequest(why));
        }
        // RSA signing takes a millisecond or more: keep it off the async workers.
        let alg = Alg::from(algorithm);
        let signed = tokio::task::spawn_blocking(move || key.sign(alg, &message)).await;
        match signed {
            Ok(Ok(signature)) => Ok(signature),
            Ok(Err(e @ KeyError::WrongAlg { .. })) => {
                let why = format!("key {name:?}: {e}");
                self.refused("keys", why.clone());
                Err(SignError::InvalidRequest(why))
            }
            Ok(Err(e)) => Err(SignError::Failed(format!("key {name:?}: {e}"))),
            Err(e) => Err(SignError::Failed(format!("key {name:?}: the signing task failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_maps_both_ways() {
        for alg in [Alg::Rs256, Alg::Ps256, Alg::Es256] {
            assert_eq!(Alg::from(Algorithm::from(alg)), alg);
        }
    }
}
