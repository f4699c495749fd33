//! Signed bundles: with `[plugins] trusted_keys` set, a bundle is loaded only when both of
//! its files carry a minisign signature by one of those keys.
//!
//! Whoever can write the plugin directory can otherwise run code in the host's sandbox
//! with the grants the operator gave that plugin name (its secrets, its origins). With
//! signatures, that takes the signing key as well, which can live far from the servers.
//! The files are standard minisign detached signatures (`minisign -Sm FILE` writes them),
//! `<name>.wasm.minisig` and `<name>.toml.minisig`, checked with `minisign-verify` over the
//! exact bytes read, before anything is compiled, at start and at every reload.
//!
//! `hookhost plugin keygen` and `hookhost plugin sign` ([`keygen`], [`sign_bundle`]) use the
//! `minisign` crate, so the key files and signatures are the minisign tool's own format:
//! either side can sign for the other.

use std::path::{Path, PathBuf};

use minisign_verify::{PublicKey, Signature};

/// A signature file is a few hundred bytes (two comments, two base64 lines).
const MAX_SIGNATURE_BYTES: u64 = 8 << 10;

/// The keys whose signatures a bundle needs (`plugins.trusted_keys`).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    /// Parses minisign public keys as written in `trusted_keys` (the base64 line, `RWQ…`).
    ///
    /// # Errors
    /// An entry that is not a minisign public key; the message gives its index.
    pub fn parse(entries: &[String]) -> Result<TrustedKeys, String> {
        let keys = entries
            .iter()
            .enumerate()
            .map(|(i, k)| {
                PublicKey::from_base64(k.trim()).map_err(|_| {
                    format!("plugins.trusted_keys[{i}] is not a minisign public key (the base64 line of a .pub file, \"RWQ…\")")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedKeys { keys })
    }

    /// Whether signatures are required at all.
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks `<file>.minisig` against `bytes` (the content of `file` as read).
    ///
    /// # Errors
    /// The signature file is missing, unreadable, not a minisign signature, made by a key
    /// that is not trusted, or does not match `bytes`; the message names the signature
    /// file and says which.
    pub fn verify(&self, file: &Path, bytes: &[u8]) -> Result<(), String> {
        let sig_path = signature_path(file);
        let shown = sig_path.display();
        let text = match super::files::entry(&sig_path) {
            super::files::Entry::Absent => {
                return Err(format!(
                    "{shown} is missing: plugins.trusted_keys is set, so both files of a bundle need a minisign signature (hookhost plugin sign, or minisign -Sm)"
                ))
            }
            _ => super::files::read_small(&sig_path, MAX_SIGNATURE_BYTES)?,
        };
        let signature = Signature::decode(&text)
            .map_err(|_| format!("{shown} is not a minisign signature (expected the format minisign -Sm writes)"))?;
        let mut matched_key = false;
        for key in &self.keys {
            match key.verify(bytes, &signature, false) {
                Ok(()) => return Ok(()),
                Err(minisign_verify::Error::UnexpectedKeyId) => {}
                Err(minisign_verify::Error::UnexpectedAlgorithm) => {
                    return Err(format!(
                        "{shown} is a legacy (non-prehashed) minisign signature; sign again with a current minisign or hookhost plugin sign"
                    ))
                }
                Err(_) => matched_key = true,
            }
        }
        if matched_key {
            Err(format!(
                "{shown} does not match {}: the file was changed after signing, or the signature is for another file",
                file.display()
            ))
        } else {
            Err(format!("{shown} was made by a key that is not in plugins.trusted_keys"))
        }
    }
}

/// `<file>.minisig`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

/// Where `hookhost plugin keygen` writes a key pair in `dir`: the secret key and the
/// public key.
pub fn key_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("hookhost-signing.key"), dir.join("hookhost-signing.pub"))
}

/// Writes a new minisign key pair into `dir` (`hookhost-signing.key`, mode `0600`, not
/// password-protected, so CI can sign; and `hookhost-signing.pub`). Refuses to overwrite.
/// Returns the two paths and the public key line for `trusted_keys`.
///
/// # Errors
/// A key file already exists, or a file cannot be written.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf, String), String> {
    let (sk_path, pk_path) = key_paths(dir);
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            return Err(format!("{} exists; move it away or choose another --dir", p.display()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pair = minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| format!("generating a key pair: {e}"))?;
    let sk_box = pair
        .sk
        .to_box(Some("hookhost plugin signing key (unencrypted; keep it off the servers)"))
        .map_err(|e| format!("encoding the secret key: {e}"))?;
    let pk_box = pair.pk.to_box().map_err(|e| format!("encoding the public key: {e}"))?;
    let public = pair.pk.to_base64();
    write_new(&sk_path, sk_box.into_string().as_bytes(), 0o600)?;
    write_new(&pk_path, pk_box.into_string().as_bytes(), 0o644)?;
    Ok((sk_path, pk_path, public))
}

/// Signs a bundle's `.wasm` and `.toml` (given the `.toml`), writing both `.minisig` files
/// beside them. Returns their paths.
///
/// # Errors
/// The key cannot be read (an encrypted key asks for its password on the terminal), or a
/// file cannot be read or written.
pub fn sign_bundle(key: &Path, manifest: &Path) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(key).map_err(|e| format!("{}: cannot read the key: {e}", key.display()))?;
    let sk_box = minisign::SecretKeyBox::from_string(&text)
        .map_err(|_| format!("{}: not a minisign secret key", key.display()))?;
    let sk = match minisign::SecretKey::from_unencrypted_box(sk_box.clone()) {
        Ok(sk) => sk,
        Err(_) => minisign::SecretKey::from_box(sk_box, None).map_err(|e| format!("{}: {e}", key.display()))?,
    };
    let wasm = manifest.with_extension("wasm");
    let mut written = Vec::new();
    for file in [&wasm, &manifest.to_path_buf()] {
        let bytes = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let trusted = format!("timestamp:{}\tfile:{name}", chrono::Utc::now().timestamp());
        let sig = minisign::sign(
            None,
            &sk,
            std::io::Cursor::new(bytes),
            Some(&trusted),
            Some("signature from hookhost plugin sign"),
        )
        .map_err(|e| format!("signing {}: {e}", file.display()))?;
        let out = signature_path(file);
        std::fs::write(&out, sig.into_string()).map_err(|e| format!("{}: cannot write: {e}", out.display()))?;
        written.push(out);
    }
    Ok(written)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path).map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_by_our_keygen_verifies_and_tampering_or_other_keys_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk, public) = keygen(dir.path()).unwrap();
        assert!(keygen(dir.path()).is_err(), "keygen must not overwrite");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(std::fs::read_to_string(&pk).unwrap().contains(&public));
        let toml = dir.path().join("p.toml");
        std::fs::write(&toml, "name = \"p\"\n").unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"\0asm").unwrap();
        sign_bundle(&sk, &toml).unwrap();
        let keys = TrustedKeys::parse(&[public]).unwrap();
        assert!(keys.verify(&toml, b"name = \"p\"\n").is_ok());
        let e = keys.verify(&toml, b"name = \"q\"\n").unwrap_err();
        assert!(e.contains("p.toml.minisig") && e.contains("does not match"), "{e}");

        let other = tempfile::tempdir().unwrap();
        let (_, _, other_public) = keygen(other.path()).unwrap();
        let e = TrustedKeys::parse(&[other_public]).unwrap().verify(&toml, b"name = \"p\"\n").unwrap_err();
        assert!(e.contains("not in plugins.trusted_keys"), "{e}");
        let e = keys.verify(&dir.path().join("none.toml"), b"").unwrap_err();
        assert!(e.contains("none.toml.minisig is missing"), "{e}");
        assert!(TrustedKeys::parse(&["RWQnotakey".into()]).unwrap_err().contains("trusted_keys[0]"));
    }
}
