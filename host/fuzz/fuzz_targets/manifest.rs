//! A plugin bundle's manifest (`<name>.toml`, dropped in by whoever deploys plugins) and an
//! `allowed_hosts` entry. Any text: a manifest or a message; never a panic.
#![no_main]

use hookhost::registry::Manifest;
use hookhost::runtime::Origin;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Manifest::parse(text) {
        assert!(!e.is_empty());
    }
    if let Err(e) = Origin::parse_grant(text) {
        assert!(!e.is_empty());
    }
});
