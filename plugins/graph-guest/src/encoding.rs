//! The few encodings the plugin writes by hand rather than pulling a URL crate into the
//! component: percent-encoding, form bodies, OData string literals and `Retry-After`.
//!
//! Everything outside RFC 3986's unreserved set is escaped. That is stricter than needed in
//! places (e.g. `@` in a query), but a strict encoder is never wrong, and it is what keeps a
//! `+` in an address from turning into a space or a `'` from ending an OData literal early.

/// Percent-encodes every byte of `s` outside `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// An `application/x-www-form-urlencoded` body from name/value pairs.
pub(crate) fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}

/// Base64url without padding (RFC 4648 §5), as JWS uses for each part of a JWT.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

/// An OData string literal: `'…'` with each single quote doubled (OData ABNF `SQUOTE-in-string`).
pub(crate) fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Milliseconds from a `Retry-After` value in seconds, fractions allowed (Graph sends e.g.
/// `2.128`). Fractions beyond milliseconds round up, so the host never retries too soon.
/// An HTTP-date or anything else unreadable gives `None`, leaving the host's own backoff.
pub(crate) fn retry_after_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let seconds: u64 = if whole.is_empty() {
        0
    } else {
        // More than u64 seconds is "a very long time", not garbage.
        whole.parse().unwrap_or(u64::MAX / 1000)
    };
    let mut millis = 0u64;
    for (i, b) in fraction.bytes().enumerate() {
        let digit = u64::from(b - b'0');
        match i {
            0 => millis += digit * 100,
            1 => millis += digit * 10,
            2 => millis += digit,
            _ if digit > 0 => {
                millis += 1;
                break;
            }
            _ => {}
        }
    }
    Some(seconds.saturating_mul(1000).saturating_add(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encodes_everything_but_unreserved() {
        assert_eq!(percent_encode("a-Z_0.9~"), "a-Z_0.9~");
        assert_eq!(percent_encode("mail eq 'o''b+x@y.com'"), "mail%20eq%20%27o%27%27b%2Bx%40y.com%27");
        assert_eq!(percent_encode("é/&="), "%C3%A9%2F%26%3D");
    }

    #[test]
    fn form_body_matches_the_documented_token_request() {
        // fixtures/graph/token.client_credentials.request.form.txt, without its line breaks.
        let body = form_encode(&[
            ("client_id", "535fb089-9ff3-47b6-9bfb-4f1264799865"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_secret", "sampleCredentials"),
            ("grant_type", "client_credentials"),
        ]);
        assert_eq!(
            body,
            "client_id=535fb089-9ff3-47b6-9bfb-4f1264799865\
             &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default\
             &client_secret=sampleCredentials&grant_type=client_credentials"
        );
        assert_eq!(form_encode(&[("s", "a+b &c=d")]), "s=a%2Bb%20%26c%3Dd");
    }

    #[test]
    fn base64url_is_rfc_4648_section_5_without_padding() {
        // RFC 4648 §10's vectors, padding dropped; then the two characters §5 changes.
        for (input, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
        assert_eq!(base64url(br#"{"alg":"PS256","typ":"JWT"}"#), "eyJhbGciOiJQUzI1NiIsInR5cCI6IkpXVCJ9");
    }

    #[test]
    fn odata_literal_doubles_quotes() {
        assert_eq!(odata_string("o'brien@x.com"), "'o''brien@x.com'");
        assert_eq!(odata_string("''"), "''''''");
    }

    #[test]
    fn retry_after_reads_fractional_seconds() {
        assert_eq!(retry_after_ms("2.128"), Some(2128));
        assert_eq!(retry_after_ms("10"), Some(10_000));
        assert_eq!(retry_after_ms(" 0.5 "), Some(500));
        assert_eq!(retry_after_ms("1.0001"), Some(1001));
        assert_eq!(retry_after_ms("1.0000"), Some(1000));
        assert_eq!(retry_after_ms(".25"), Some(250));
        assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_ms(""), None);
        assert_eq!(retry_after_ms("-1"), None);
        assert_eq!(retry_after_ms("99999999999999999999999"), Some(u64::MAX / 1000 * 1000));
    }
}
