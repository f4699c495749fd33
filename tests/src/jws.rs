//! Compact JWS (RFC 7515 §7.1) as the emulators' token endpoints read a client assertion:
//! three base64url parts, a header and claims that are JSON objects, and a signature over
//! `header.claims` as sent. One reader for the Entra and the Okta token endpoints, so both
//! refuse the same malformed assertions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// A compact JWS taken apart.
pub(crate) struct Compact<'a> {
    /// The protected header (a JSON object).
    pub header: Value,
    /// The payload (a JSON object).
    pub claims: Value,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// What was signed: the first two parts as sent, with the dot between them.
    pub signing_input: &'a str,
}

/// `token` taken apart, or none when it is not three base64url parts with JSON object
/// header and claims.
pub(crate) fn parse(token: &str) -> Option<Compact<'_>> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let (header, claims) = signing_input.split_once('.')?;
    let object =
        |part: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).ok()?).ok().filter(Value::is_object);
    Some(Compact {
        header: object(header)?,
        claims: object(claims)?,
        signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
        signing_input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_parts_with_object_header_and_claims_or_nothing() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let good = format!("{}.{}.{}", enc(r#"{"alg":"RS256"}"#), enc(r#"{"iss":"a"}"#), enc("sig"));
        let c = parse(&good).unwrap();
        assert_eq!((c.header["alg"].as_str(), c.claims["iss"].as_str()), (Some("RS256"), Some("a")));
        assert_eq!(c.signature, b"sig");
        assert_eq!(c.signing_input, &good[..good.rfind('.').unwrap()]);
        for bad in [
            "only-one-part".to_owned(),
            "not.a.jwt".to_owned(),
            format!("{}.{}", enc("{}"), enc("{}")),
            format!("{}.{}.{}.{}", enc("{}"), enc("{}"), enc("s"), enc("s")),
            format!("{}.{}.{}", enc("[]"), enc("{}"), enc("s")),
            format!("{}.{}.{}", enc("{}"), enc("\"text\""), enc("s")),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }
}
