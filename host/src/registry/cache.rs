//! The compiled-artifact cache: precompiled plugin components on disk, so a restart (or a
//! swap back to a version seen before) deserializes in milliseconds instead of compiling for
//! hundreds of them.
//!
//! Layout: `<cache_dir>/<engine>/<wasm sha256>.cwasm`, where `<engine>` is a sha256 of
//! [`Engine::precompile_compatibility_hash`] (wasmtime's version, target, compiler flags and
//! the codegen-relevant config such as epoch interruption). A cache written by another
//! wasmtime version or engine configuration is therefore never even opened: its directory
//! has another name. Nothing is ever pruned; deleting the directory is always safe.
//!
//! Why deserializing is sound here. `Component::deserialize` is `unsafe` because it trusts
//! the bytes to be genuine wasmtime output: loading crafted bytes is loading native code. So
//! the host treats the cache as its own private state:
//!
//! - only the host writes it: the directory is created `0700`, and a directory that others
//!   can write to is refused (the cache is then off, and the host only compiles);
//! - every entry is written whole or not at all (temp file in the same directory, then
//!   rename), and carries the sha256 of its artifact, checked before use, so a torn or
//!   corrupted file is discarded rather than mapped as code;
//! - wasmtime itself checks the artifact's header, version and configuration and refuses a
//!   mismatch with an error (never undefined behaviour) — a second line behind the key.
//!
//! Any problem with an entry means "compile instead"; the cache can make the host faster,
//! never make a plugin fail.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

use crate::runtime::Runtime;

/// Leads every entry, so a stray file is never taken for one.
const MAGIC: &[u8; 8] = b"HHCWASM1";
const HEADER: usize = MAGIC.len() + 32;

/// Precompiled components by wasm sha256, for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    /// `<cache_dir>/<engine key>`: the only folder this cache reads or writes.
    dir: PathBuf,
}

/// Feeds `Hash` output into sha256, so the engine key is stable across processes and Rust
/// versions (std's `DefaultHasher` promises neither).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Unused: the key is the full digest, read in `engine_key`.
        0
    }
}

/// Hex sha256 of the engine's precompile compatibility hash.
pub fn engine_key(engine: &Engine) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(h.0.finalize())
}

impl ArtifactCache {
    /// Opens (creating it `0700` if needed) the cache under `root` for `engine`.
    ///
    /// # Errors
    /// The folder cannot be created, is not a folder, or can be written by other users; the
    /// message names it and the fix. The caller runs without a cache then.
    pub fn open(root: &Path, engine: &Engine) -> Result<ArtifactCache, String> {
        create_private_dir(root)?;
        let dir = root.join(engine_key(engine));
        create_private_dir(&dir)?;
        Ok(ArtifactCache { dir })
    }

    /// Where the artifact of the wasm with this sha256 lives.
    pub fn path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir.join(format!("{wasm_sha256}.cwasm"))
    }

    /// The cached component for this wasm, if a sound entry exists. A damaged entry is
    /// deleted (and logged) so the next compile replaces it.
    pub fn get(&self, runtime: &Runtime, wasm_sha256: &str) -> Option<Component> {
        let path = self.path(wasm_sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a cached artifact; compiling instead");
                return None;
            }
        };
        let artifact = match verify(&bytes) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!(path = %path.display(), "discarding a damaged cached artifact ({why}); compiling instead");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        // SAFETY: `artifact` was produced by `Runtime::serialize` of this host (see `put`):
        // it sits in a folder only the host can write, under this engine's compatibility
        // key, and its sha256 matched the one written with it. wasmtime additionally
        // refuses artifacts of another version or configuration with an error.
        match unsafe { runtime.deserialize(artifact) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "wasmtime refused a cached artifact; compiling instead");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component` (compiled from the wasm with this sha256): written beside, then
    /// renamed into place, so readers see the whole entry or none.
    ///
    /// # Errors
    /// Serialization or the write failed; the message names the file.
    pub fn put(&self, runtime: &Runtime, wasm_sha256: &str, component: &Component) -> Result<(), String> {
        let artifact = runtime.serialize(component).map_err(|e| e.to_string())?;
        let path = self.path(wasm_sha256);
        let tmp = self.dir.join(format!(".{wasm_sha256}.{}-{}.tmp", std::process::id(), fastrand::u64(..)));
        let write = || -> std::io::Result<()> {
            let mut f = private_file(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(&artifact))?;
            f.write_all(&artifact)?;
            f.flush()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: cannot write the compiled artifact: {e}", path.display())
        })
    }
}

/// The artifact inside a cache entry, if the entry is whole and genuine.
fn verify(bytes: &[u8]) -> Result<&[u8], &'static str> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a hookhost cache entry");
    }
    let (digest, artifact) = bytes[MAGIC.len()..].split_at(32);
    if Sha256::digest(artifact).as_slice() != digest {
        return Err("checksum mismatch: torn or corrupted");
    }
    if Engine::detect_precompiled(artifact) != Some(Precompiled::Component) {
        return Err("not a precompiled component");
    }
    Ok(artifact)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => {
            return Err(format!(
                "{}: cannot create the compiled-artifact cache: {e}; create it (mode 700, owned by the hookhost user) or set [plugins] cache_dir",
                dir.display()
            ))
        }
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "{}: the compiled-artifact cache must be a folder; set [plugins] cache_dir to one",
            dir.display()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{}: the compiled-artifact cache is writable by other users, so its contents cannot be trusted as code; run `chmod 700 {}` (only hookhost may write there)",
            dir.display(),
            dir.display()
        ));
    }
    // Created 0700 above, but the umask may have taken bits, and a folder made by an
    // older version or by hand may be readable by others: the cache is hookhost's alone.
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            format!("{}: cannot make the compiled-artifact cache private (mode 700): {e}", dir.display())
        })?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!("{}: cannot create the compiled-artifact cache: {e}; set [plugins] cache_dir", dir.display())
    })
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::EngineOptions;

    fn echo_wasm() -> Vec<u8> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let p = target.join("wasm32-wasip2/release/echo.wasm");
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; run `make plugins` first", p.display()))
    }

    #[test]
    fn round_trip_and_damage_is_discarded() {
        let runtime = Runtime::new(&EngineOptions::default()).unwrap();
        let root = tempfile_dir();
        let cache = ArtifactCache::open(&root, runtime.engine()).unwrap();
        assert!(cache.get(&runtime, "ab").is_none());
        let component = runtime.compile(&echo_wasm()).unwrap();
        cache.put(&runtime, "ab", &component).unwrap();
        assert!(cache.get(&runtime, "ab").is_some());
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(&cache.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // A flipped byte in the artifact: refused before wasmtime sees it, and deleted.
        let path = cache.path("ab");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.get(&runtime, "ab").is_none());
        assert!(!path.exists());
        // A truncated entry too.
        cache.put(&runtime, "ab", &component).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(cache.get(&runtime, "ab").is_none());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn another_engine_configuration_uses_another_folder() {
        let a = Runtime::new(&EngineOptions::default()).unwrap();
        let key = engine_key(a.engine());
        assert_eq!(key, engine_key(a.engine()), "the key is stable");
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // No epoch interruption: codegen differs, so artifacts must not be shared (G11).
        let other = Engine::new(&config).unwrap();
        assert_ne!(key, engine_key(&other));
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let runtime = Runtime::new(&EngineOptions::default()).unwrap();
        let root = tempfile_dir();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ArtifactCache::open(&root, runtime.engine()).unwrap_err();
        assert!(e.contains("chmod 700"), "{e}");
        std::fs::remove_dir_all(&root).ok();
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("hookhost-cache-{}-{}", std::process::id(), fastrand::u64(..)))
    }
}
