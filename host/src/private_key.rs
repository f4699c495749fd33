//! Private keys that stay in the host: hookhost's own Okta service-app key (`[okta.oauth]`)
//! and the keys an operator grants a plugin to sign with (`[plugins.<n>.keys]`).
//!
//! A [`SigningKey`] is read once from PEM (PKCS#8, PKCS#1 RSA or SEC1 EC, optionally followed
//! by the certificate an identity provider registered) and can only sign: nothing here hands
//! out the key's bytes, and its `Debug` shows the kind of key, never the key. The algorithms
//! are the three JWT client assertions use: RS256 and PS256 for RSA, ES256 for P-256 (the JWS
//! `r || s` form, not DER). Signing is aws-lc-rs, the provider rustls already uses.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A JWS signing algorithm hookhost offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, salt of 32 bytes).
    Ps256,
    /// ECDSA on P-256 with SHA-256, the 64-byte `r || s` form of JWS.
    Es256,
}

impl Alg {
    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// What kind of key a PEM held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "EC P-256",
        }
    }
}

/// Why a key cannot be read or used. Never contains key material nor the file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no private key found: expected a PEM block BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY"
    )]
    NoKey,
    #[error("the private key is not an RSA (2048 bits or more) or EC P-256 key, the kinds RS256, PS256 and ES256 use")]
    Unsupported,
    #[error("the certificate after the key is not valid PEM")]
    BadCertificate,
    #[error("{alg} cannot sign with this {kind} key (use {use_instead})")]
    WrongAlg { alg: &'static str, kind: &'static str, use_instead: &'static str },
    #[error("the signature could not be made")]
    SignFailed,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key that can sign and never be read back.
pub struct SigningKey {
    pair: Pair,
    /// The DER of the first certificate in the PEM, when there was one.
    certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, certificate: {})", self.kind().name(), self.certificate.is_some())
    }
}

impl SigningKey {
    /// The first private key in `pem`, and the first certificate when there is one.
    ///
    /// # Errors
    /// No private key, a key of another kind (Ed25519, P-384, a small RSA key), or a broken
    /// certificate block.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoKey)?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(d) => RsaKeyPair::from_pkcs8(d.secret_pkcs8_der())
                .map(Pair::Rsa)
                .or_else(|_| {
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, d.secret_pkcs8_der()).map(Pair::Ec)
                })
                .map_err(|_| KeyError::Unsupported)?,
            PrivateKeyDer::Pkcs1(d) => {
                RsaKeyPair::from_der(d.secret_pkcs1_der()).map(Pair::Rsa).map_err(|_| KeyError::Unsupported)?
            }
            PrivateKeyDer::Sec1(d) => {
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, d.secret_sec1_der())
                    .map(Pair::Ec)
                    .map_err(|_| KeyError::Unsupported)?
            }
            _ => return Err(KeyError::Unsupported),
        };
        let certificate = match CertificateDer::pem_slice_iter(pem).next() {
            None => None,
            Some(Ok(cert)) => Some(cert.as_ref().to_vec()),
            Some(Err(_)) => return Err(KeyError::BadCertificate),
        };
        Ok(SigningKey { pair, certificate })
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        match self.pair {
            Pair::Rsa(_) => KeyKind::Rsa,
            Pair::Ec(_) => KeyKind::EcP256,
        }
    }

    /// The algorithms this key signs with.
    pub fn algs(&self) -> &'static [Alg] {
        match self.pair {
            Pair::Rsa(_) => &[Alg::Rs256, Alg::Ps256],
            Pair::Ec(_) => &[Alg::Es256],
        }
    }

    /// The signature of `message` with `alg`.
    ///
    /// # Errors
    /// `alg` does not fit the key (ES256 with RSA, RS256 with EC).
    pub fn sign(&self, alg: Alg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match (&self.pair, alg) {
            (Pair::Rsa(key), Alg::Rs256 | Alg::Ps256) => {
                let padding = if alg == Alg::Rs256 { &RSA_PKCS1_SHA256 } else { &RSA_PSS_SHA256 };
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(padding, &rng, message, &mut signature).map_err(|_| KeyError::SignFailed)?;
                Ok(signature)
            }
            (Pair::Ec(key), Alg::Es256) => {
                key.sign(&rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| KeyError::SignFailed)
            }
            (Pair::Rsa(_), _) => {
                Err(KeyError::WrongAlg { alg: alg.name(), kind: "RSA", use_instead: "RS256 or PS256" })
            }
            (Pair::Ec(_), _) => Err(KeyError::WrongAlg { alg: alg.name(), kind: "EC P-256", use_instead: "ES256" }),
        }
    }

    /// The certificate's SHA-256 thumbprint, base64url without padding: the JWS `x5t#S256`
    /// header Entra ID matches against the app's registered certificates. None without a
    /// certificate in the PEM.
    pub fn x5t_s256(&self) -> Option<String> {
        self.certificate.as_ref().map(|der| URL_SAFE_NO_PAD.encode(Sha256::digest(der)))
    }

    /// A compact JWS: `{"alg", "typ":"JWT"}` plus `header_extra`, over `claims`.
    ///
    /// # Errors
    /// `alg` does not fit the key.
    pub fn jwt(&self, alg: Alg, header_extra: &Map<String, Value>, claims: &Value) -> Result<String, KeyError> {
        let mut header = Map::new();
        header.insert("alg".into(), Value::String(alg.name().into()));
        header.insert("typ".into(), Value::String("JWT".into()));
        header.extend(header_extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(alg, signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::signature::{
        KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    };

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<String> = body.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    fn rsa_pem() -> (String, Vec<u8>) {
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = AsDer::<Pkcs8V1Der>::as_der(&key).unwrap();
        (pem("PRIVATE KEY", der.as_ref()), key.public_key().as_ref().to_vec())
    }

    fn ec_pem() -> (String, Vec<u8>) {
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref()).unwrap();
        (pem("PRIVATE KEY", der.as_ref()), key.public_key().as_ref().to_vec())
    }

    #[test]
    fn rsa_signs_rs256_and_ps256_that_verify_and_refuses_es256() {
        let (pem, public) = rsa_pem();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.kind(), KeyKind::Rsa);
        for (alg, verify) in [(Alg::Rs256, &RSA_PKCS1_2048_8192_SHA256), (Alg::Ps256, &RSA_PSS_2048_8192_SHA256)] {
            let sig = key.sign(alg, b"header.claims").unwrap();
            UnparsedPublicKey::new(verify, &public).verify(b"header.claims", &sig).unwrap();
            assert!(UnparsedPublicKey::new(verify, &public).verify(b"header.claimz", &sig).is_err());
        }
        let err = key.sign(Alg::Es256, b"m").unwrap_err();
        assert_eq!(err.to_string(), "ES256 cannot sign with this RSA key (use RS256 or PS256)");
    }

    #[test]
    fn ec_signs_es256_in_the_64_byte_jws_form() {
        let (pem, public) = ec_pem();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.kind(), KeyKind::EcP256);
        let sig = key.sign(Alg::Es256, b"m").unwrap();
        assert_eq!(sig.len(), 64);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public).verify(b"m", &sig).unwrap();
        assert!(key.sign(Alg::Rs256, b"m").is_err());
    }

    #[test]
    fn a_jwt_carries_the_header_the_claims_and_a_valid_signature() {
        let (pem, public) = ec_pem();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        let mut extra = Map::new();
        extra.insert("kid".into(), Value::String("k1".into()));
        let jwt = key.jwt(Alg::Es256, &extra, &serde_json::json!({"iss": "app"})).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}));
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public).verify(input.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn the_thumbprint_is_the_sha256_of_the_certificate_der() {
        let (key_pem, _) = ec_pem();
        let cert = b"not parsed, only hashed".to_vec();
        let both = format!("{key_pem}{}", pem("CERTIFICATE", &cert));
        let key = SigningKey::from_pem(both.as_bytes()).unwrap();
        assert_eq!(key.x5t_s256(), Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&cert))));
        assert_eq!(SigningKey::from_pem(key_pem.as_bytes()).unwrap().x5t_s256(), None);
    }

    #[test]
    fn what_is_not_a_usable_key_is_named_without_its_text() {
        assert_eq!(SigningKey::from_pem(b"hunter2").unwrap_err(), KeyError::NoKey);
        let not_a_key = pem("PRIVATE KEY", b"secret-looking bytes");
        let err = SigningKey::from_pem(not_a_key.as_bytes()).unwrap_err();
        assert_eq!(err, KeyError::Unsupported);
        assert!(!format!("{err}").contains("secret"));
        let (pem, _) = rsa_pem();
        assert!(!format!("{:?}", SigningKey::from_pem(pem.as_bytes()).unwrap()).contains("MII"));
    }
}
