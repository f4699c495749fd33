//! Client assertions at the token endpoint: an app's certificate credentials (Microsoft identity
//! platform, "certificate credentials"; RFC 7523 `private_key_jwt`), checked the way Entra ID
//! checks them.
//!
//! An app registration holds the certificates uploaded to it ([`Certificate`], from the DER an
//! operator uploads). A token request with `client_assertion_type =
//! urn:ietf:params:oauth:client-assertion-type:jwt-bearer` carries a JWT whose header names one
//! of them by `x5t#S256` (or the older SHA-1 `x5t`) and whose signature must verify with that
//! certificate's public key, RS256 or PS256 (Entra ID refuses EC keys and ES256). Its claims:
//! `iss` = `sub` = the client id, `aud` = the token endpoint, `nbf` ≤ now < `exp`, a `jti`.
//! Each refusal is the AADSTS code Entra answers (Microsoft's troubleshooting tables for
//! certificate and assertion credentials): 700027 for a key not registered or a signature that
//! does not verify, 700021 for `iss`/`sub` other than the client id, 700023 for a wrong audience,
//! 700024 for an assertion outside its time range, 5002738 for an unsupported algorithm, 50027
//! for a JWT that cannot be read.

use aws_lc_rs::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use webpki::aws_lc_rs::{RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256_LEGACY_KEY};
use webpki::EndEntityCert;

/// `client_assertion_type` of a JWT assertion.
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

const DOCS: &str = "Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .";

/// A certificate uploaded to the app registration (a key credential).
#[derive(Clone, Debug)]
pub struct Certificate {
    /// `x5t#S256`: base64url SHA-256 of the DER.
    x5t_s256: String,
    /// `x5t`: base64url SHA-1 of the DER.
    x5t: String,
    /// Upper-case hex SHA-1, the thumbprint Entra shows.
    thumbprint: String,
    /// The certificate as uploaded.
    der: Vec<u8>,
}

impl Certificate {
    /// Reads an uploaded certificate's DER, as the Entra admin center does.
    ///
    /// # Errors
    /// The DER is not an X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<Certificate, String> {
        EndEntityCert::try_from(&CertificateDer::from(der)).map_err(|_| "not an X.509 certificate (DER)")?;
        let sha1 = digest(&SHA1_FOR_LEGACY_USE_ONLY, der);
        Ok(Certificate {
            x5t_s256: URL_SAFE_NO_PAD.encode(digest(&SHA256, der)),
            x5t: URL_SAFE_NO_PAD.encode(sha1),
            thumbprint: hex::encode_upper(sha1.as_ref()),
            der: der.to_vec(),
        })
    }
}

/// What a valid assertion must say.
pub(super) struct Expected<'a> {
    /// The `client_id` of the request (already known to be the registered app).
    pub client_id: &'a str,
    /// The audiences Entra takes as itself: its token endpoint URL.
    pub audiences: &'a [String],
    /// Now, in Unix seconds, on the emulator's assertion clock.
    pub now_s: i64,
}

/// An assertion Entra refuses: the AADSTS code and the description after it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: u32,
    pub description: String,
}

fn refusal(code: u32, description: String) -> Refusal {
    Refusal { code, description }
}

/// Checks `assertion` against the registered `certificates` and `expected`.
pub(super) fn verify(assertion: &str, certificates: &[Certificate], expected: &Expected<'_>) -> Result<(), Refusal> {
    let malformed = || refusal(50027, "JWT token is invalid or is malformed.".into());
    let Some(jws) = crate::jws::parse(assertion) else { return Err(malformed()) };
    let (header, claims, signature) = (&jws.header, &jws.claims, &jws.signature);

    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let verification = match alg {
        "RS256" => RSA_PKCS1_2048_8192_SHA256,
        "PS256" => RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        other => {
            return Err(refusal(
                5002738,
                format!("Invalid JWT token. '{other}' is not a supported signature algorithm."),
            ))
        }
    };
    let s256 = header.get("x5t#S256").and_then(Value::as_str);
    let sha1 = header.get("x5t").and_then(Value::as_str);
    let Some(certificate) =
        certificates.iter().find(|c| Some(c.x5t_s256.as_str()) == s256 || Some(c.x5t.as_str()) == sha1)
    else {
        let used =
            s256.or(sha1).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()).map(hex::encode_upper).unwrap_or_default();
        return Err(refusal(700027, format!(
            "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{used}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'. {DOCS}]",
            expected.client_id
        )));
    };
    let der = CertificateDer::from(certificate.der.as_slice());
    let verified = EndEntityCert::try_from(&der)
        .is_ok_and(|cert| cert.verify_signature(verification, jws.signing_input.as_bytes(), signature).is_ok());
    if !verified {
        return Err(refusal(700027, format!(
            "Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{}', Found key 'Start=…, End=…'] {DOCS}",
            certificate.thumbprint
        )));
    }

    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if claim("iss") != Some(expected.client_id) || claim("sub") != Some(expected.client_id) {
        return Err(refusal(
            700021,
            format!("Client assertion application identifier doesn't match 'client_id' parameter. {DOCS}"),
        ));
    }
    if !claim("aud").is_some_and(|aud| expected.audiences.iter().any(|a| a == aud)) {
        return Err(refusal(700023, format!("Client assertion audience claim does not match Realm issuer. {DOCS}")));
    }
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let (nbf, exp) = (time("nbf").unwrap_or(i64::MIN), time("exp"));
    if exp.is_none_or(|exp| expected.now_s >= exp) || expected.now_s < nbf {
        return Err(refusal(700024, format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. {DOCS}",
            rfc3339(expected.now_s),
            time("nbf").map_or_else(|| "-".to_string(), rfc3339),
            exp.map_or_else(|| "-".to_string(), rfc3339)
        )));
    }
    if claim("jti").is_none_or(str::is_empty) {
        return Err(refusal(
            50027,
            "JWT token is invalid or is malformed: the client assertion has no 'jti' claim.".into(),
        ));
    }
    Ok(())
}

fn rfc3339(unix_s: i64) -> String {
    chrono::DateTime::from_timestamp(unix_s, 0)
        .map_or_else(|| unix_s.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
    use aws_lc_rs::signature::RSA_PSS_SHA256;
    use serde_json::json;

    const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
    const AUD: &str = "http://127.0.0.1:1/tenant/oauth2/v2.0/token";
    const NOW: i64 = 1_750_000_000;

    /// An RSA key and a self-signed certificate of it (made now, never stored).
    fn rsa_certificate() -> (RsaKeyPair, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["graph-app".into()]).unwrap().self_signed(&key).unwrap();
        let pair = RsaKeyPair::from_pkcs8(&key.serialize_der()).unwrap();
        (pair, cert.der().to_vec())
    }

    fn assertion(key: &RsaKeyPair, header: &Value, claims: &Value) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; key.public_modulus_len()];
        let padding = if header["alg"] == "RS256" { &aws_lc_rs::signature::RSA_PKCS1_SHA256 } else { &RSA_PSS_SHA256 };
        key.sign(padding, &SystemRandom::new(), input.as_bytes(), &mut signature).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn claims() -> Value {
        json!({"aud": AUD, "iss": CLIENT, "sub": CLIENT, "jti": "j-1", "nbf": NOW - 1, "iat": NOW - 1, "exp": NOW + 299})
    }

    fn check(assertion: &str, registered: &[Certificate]) -> Result<(), Refusal> {
        let audiences = [AUD.to_string()];
        verify(assertion, registered, &Expected { client_id: CLIENT, audiences: &audiences, now_s: NOW })
    }

    fn code(result: Result<(), Refusal>) -> u32 {
        result.unwrap_err().code
    }

    #[test]
    fn a_well_formed_assertion_verifies_with_either_thumbprint_and_rsa_algorithm() {
        let (key, der) = rsa_certificate();
        let cert = Certificate::from_der(&der).unwrap();
        for header in [
            json!({"alg": "PS256", "typ": "JWT", "x5t#S256": cert.x5t_s256}),
            json!({"alg": "RS256", "typ": "JWT", "x5t": cert.x5t}),
        ] {
            check(&assertion(&key, &header, &claims()), std::slice::from_ref(&cert)).unwrap();
        }
    }

    #[test]
    fn each_thing_entra_checks_has_its_code() {
        let (key, der) = rsa_certificate();
        let cert = Certificate::from_der(&der).unwrap();
        let registered = std::slice::from_ref(&cert);
        let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": cert.x5t_s256});
        let with = |name: &str, value: Value| {
            let mut c = claims();
            c[name] = value;
            assertion(&key, &header, &c)
        };

        // Tampered: the claims changed after signing.
        let good = assertion(&key, &header, &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let mut forged = claims();
        forged["exp"] = json!(NOW + 86_400);
        let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged.to_string()), parts[2]);
        let refusal = check(&tampered, registered).unwrap_err();
        assert_eq!(refusal.code, 700027);
        assert!(refusal.description.contains("failed signature validation"), "{}", refusal.description);

        // Signed by another key than the certificate's.
        let (other, _) = rsa_certificate();
        assert_eq!(code(check(&assertion(&other, &header, &claims()), registered)), 700027);
        // A certificate the app does not have.
        let refusal = check(&good, &[]).unwrap_err();
        assert_eq!(refusal.code, 700027);
        assert!(refusal.description.contains("not registered on application"), "{}", refusal.description);

        assert_eq!(code(check(&with("iss", json!("someone-else")), registered)), 700021);
        assert_eq!(code(check(&with("sub", json!("someone-else")), registered)), 700021);
        assert_eq!(
            code(check(&with("aud", json!("https://login.microsoftonline.com/x/oauth2/v2.0/token")), registered)),
            700023
        );
        assert_eq!(code(check(&with("exp", json!(NOW)), registered)), 700024);
        assert_eq!(code(check(&with("exp", json!(NOW - 600)), registered)), 700024);
        assert_eq!(code(check(&with("nbf", json!(NOW + 60)), registered)), 700024);
        assert_eq!(code(check(&with("jti", json!("")), registered)), 50027);
        let mut es = header.clone();
        es["alg"] = json!("ES256");
        assert_eq!(code(check(&assertion(&key, &es, &claims()), registered)), 5002738);
        assert_eq!(code(check("not.a.jwt", registered)), 50027);
        assert_eq!(code(check("only-one-part", registered)), 50027);
    }

    #[test]
    fn only_an_x509_certificate_is_taken() {
        let (_, der) = rsa_certificate();
        assert!(Certificate::from_der(&der).is_ok());
        assert!(Certificate::from_der(b"not a certificate").is_err());
        assert!(Certificate::from_der(&der[..der.len() / 2]).is_err());
    }
}
