//! The host configuration parser (`host.toml`). Any text: a config or an error naming the
//! file; never a panic.
#![no_main]

use std::path::Path;

use hookhost::config::HostConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = HostConfig::parse(text, Path::new("/fuzz/host.toml"), Path::new("/fuzz")) {
        assert!(e.to_string().starts_with("/fuzz/host.toml: "));
    }
});
