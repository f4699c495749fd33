//! The Okta Event Hook body parser, as the ingest endpoint calls it on every POST, and the
//! delivery-or-single-event form `hookhost plugin run --event` reads. Any bytes: a delivery
//! whose events are well-formed, or an error message; never a panic.
#![no_main]

use hookhost::okta::Delivery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Delivery::parse(data) {
        Ok(d) => {
            for e in &d.events {
                assert!(!e.uuid.trim().is_empty() && !e.event_type.trim().is_empty());
                // The raw text is the event object, re-serialised.
                assert!(e.raw.starts_with('{') && e.raw.ends_with('}'));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let _ = Delivery::parse_delivery_or_event(data);
});

