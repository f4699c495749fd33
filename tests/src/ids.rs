//! Random identifiers in the shapes the emulated services hand out: GUIDs for Entra object,
//! invitation, request and trace ids, and opaque tokens.

/// A random (version 4) UUID in its lowercase hyphenated form.
pub(crate) fn uuid_v4() -> String {
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        *byte = fastrand::u8(..);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// `len` random ASCII letters and digits.
pub(crate) fn alphanumeric(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(len).collect()
}
