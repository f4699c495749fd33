//! Reading files out of the plugin directory without trusting what kind of file they are.
//!
//! Whoever can write to the plugin directory (a deploy job, say) should not thereby be able
//! to make the host read anything else: a `y.toml` that is a symbolic link to
//! `/etc/hookhost/secret` would otherwise be read with the host's privileges, and its text
//! could come back in a parse error; a FIFO would block a reload forever. So an entry is
//! looked at with `symlink_metadata` (never following a link) and only a regular file
//! counts; the open itself uses `O_NOFOLLOW | O_NONBLOCK` and checks the opened file again,
//! so swapping in a link between the look and the open gains nothing.
//!
//! Sizes are checked before reading: a `.wasm` over `plugins.max_wasm_bytes` is refused
//! from its metadata, and reads are bounded (`take(limit + 1)`) in case it grows meanwhile.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Default of `plugins.max_wasm_bytes`: 64 MiB, far above any plugin shipped (a Python
/// one, interpreter included, is ~40 MiB).
pub const DEFAULT_MAX_WASM_BYTES: u64 = 64 << 20;

/// A manifest is a few hundred bytes; anything past 1 MiB is not one.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What is at a path of the plugin directory, seen without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Absent,
    /// A regular file of this many bytes.
    File(u64),
    /// Anything else: what it is, in words.
    Other(&'static str),
}

impl Entry {
    pub fn is_file(self) -> bool {
        matches!(self, Entry::File(_))
    }
}

/// Looks at `path` without following it.
pub fn entry(path: &Path) -> Entry {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entry::Absent,
        Err(_) => Entry::Other("an entry that cannot be examined"),
        Ok(meta) => {
            let t = meta.file_type();
            if t.is_file() {
                Entry::File(meta.len())
            } else {
                Entry::Other(kind_of(&t))
            }
        }
    }
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens a regular file for reading, refusing links and anything that is not a regular file.
fn open_regular(path: &Path) -> Result<File, String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No following a link that appeared since we looked; no blocking on a FIFO.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| match e.raw_os_error() {
        #[cfg(unix)]
        Some(libc::ELOOP) => {
            format!("{}: is a symbolic link; hookhost does not follow links in the plugin directory", path.display())
        }
        _ => format!("{}: cannot read: {e}", path.display()),
    })?;
    let meta = file.metadata().map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: is {}, not a regular file", path.display(), kind_of(&meta.file_type())));
    }
    Ok(file)
}

/// Reads at most `limit` bytes of a regular file; `Err(Some(size))` past the limit.
fn read_bounded(file: File, limit: u64, path: &Path) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Io(format!("{}: cannot read: {e}", path.display())))?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

enum ReadError {
    Io(String),
    /// At least this many bytes.
    TooLarge(u64),
}

/// Reads a bundle's `.wasm`: a regular file of at most `max_bytes`, refused from its size
/// before any byte of it is read.
///
/// # Errors
/// Not a regular file, unreadable, or larger than `max_bytes`; the message names the file,
/// the size, the limit and the `plugins.max_wasm_bytes` key.
pub fn read_wasm(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let too_large = |size: String| {
        format!(
            "{}: the component is {size} bytes, larger than plugins.max_wasm_bytes ({max_bytes} bytes); it was not read. Raise [plugins] max_wasm_bytes if a component this big is intended",
            path.display()
        )
    };
    let file = open_regular(path)?;
    let len = file.metadata().map_err(|e| format!("{}: cannot read: {e}", path.display()))?.len();
    if len > max_bytes {
        return Err(too_large(len.to_string()));
    }
    match read_bounded(file, max_bytes, path) {
        Ok(b) => Ok(b),
        Err(ReadError::Io(m)) => Err(m),
        Err(ReadError::TooLarge(n)) => Err(too_large(format!("at least {n}"))),
    }
}

/// Reads a small regular UTF-8 file (a signature) of at most `limit` bytes.
///
/// # Errors
/// Not a regular file, unreadable, too large or not UTF-8; the message names the file.
pub fn read_small(path: &Path, limit: u64) -> Result<String, String> {
    let file = open_regular(path)?;
    let bytes = match read_bounded(file, limit, path) {
        Ok(b) => b,
        Err(ReadError::Io(m)) => return Err(m),
        Err(ReadError::TooLarge(_)) => return Err(format!("{}: larger than {limit} bytes", path.display())),
    };
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

/// Reads a manifest: a regular UTF-8 file of at most [`MAX_MANIFEST_BYTES`].
///
/// # Errors
/// Not a regular file, unreadable, too large or not UTF-8; the message names the file and
/// never quotes it.
pub fn read_manifest(path: &Path) -> Result<String, String> {
    let file = open_regular(path)?;
    let bytes = match read_bounded(file, MAX_MANIFEST_BYTES, path) {
        Ok(b) => b,
        Err(ReadError::Io(m)) => return Err(m),
        Err(ReadError::TooLarge(_)) => {
            return Err(format!("{}: larger than {MAX_MANIFEST_BYTES} bytes; not a manifest", path.display()))
        }
    };
    String::from_utf8(bytes).map_err(|e| {
        format!("{}: not UTF-8 text (byte {} is not valid UTF-8)", path.display(), e.utf8_error().valid_up_to())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn links_and_fifos_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "TOPSECRET = 1\n").unwrap();
        let link = dir.path().join("y.toml");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert_eq!(entry(&link), Entry::Other("a symbolic link"));
        let e = read_manifest(&link).unwrap_err();
        assert!(e.contains("symbolic link") && !e.contains("TOPSECRET"), "{e}");
        let fifo = dir.path().join("f.toml");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        assert_eq!(entry(&fifo), Entry::Other("a FIFO"));
        // Returns at once (O_NONBLOCK) instead of waiting for a writer.
        let e = read_manifest(&fifo).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        assert_eq!(entry(&dir.path().join("none")), Entry::Absent);
        assert_eq!(entry(&secret), Entry::File(14));
    }

    #[test]
    fn a_wasm_over_the_limit_is_refused_from_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.wasm");
        // Sparse: 1 GiB that costs nothing, refused without reading it.
        std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
        let e = read_wasm(&big, DEFAULT_MAX_WASM_BYTES).unwrap_err();
        assert!(e.contains("1073741824") && e.contains("67108864") && e.contains("plugins.max_wasm_bytes"), "{e}");
        let small = dir.path().join("small.wasm");
        std::fs::write(&small, [0u8; 10]).unwrap();
        assert_eq!(read_wasm(&small, 10).unwrap().len(), 10);
        assert!(read_wasm(&small, 9).is_err());
    }
}
