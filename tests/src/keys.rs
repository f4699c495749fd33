//! Throwaway private keys made at test time (never committed), as PEM files an operator would
//! point hookhost at, with the public half an emulator registers to verify signatures.
//!
//! Generation failing is a broken test machine, not a case to handle: these panic.
#![allow(clippy::expect_used)]

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::okta_emulator::PublicKey;

/// A private key as PEM and its public key.
pub struct TestKey {
    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8).
    pub pem: String,
    pub public: PublicKey,
    pkcs8: Vec<u8>,
}

impl TestKey {
    /// A compact JWS over `claims` with `header` (which must name `alg`: RS256 for an RSA key,
    /// ES256 for P-256), signed with this key: what a client's assertion looks like, for
    /// tests that drive an emulator's token endpoint directly.
    ///
    /// # Panics
    /// When the key cannot sign.
    pub fn jwt(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let rng = SystemRandom::new();
        let signature = match self.public {
            PublicKey::Rsa(_) => {
                let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(&self.pkcs8).expect("RSA key");
                let mut sig = vec![0; key.public_modulus_len()];
                key.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).expect("RS256");
                sig
            }
            PublicKey::EcP256(_) => {
                let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8).expect("EC key");
                key.sign(&rng, input.as_bytes()).expect("ES256").as_ref().to_vec()
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// PEM armour around `der`, 64 base64 characters per line.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A new RSA 2048 key.
///
/// # Panics
/// When aws-lc-rs cannot generate a key.
pub fn rsa() -> TestKey {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation");
    let der = AsDer::<Pkcs8V1Der>::as_der(&key).expect("PKCS#8 of the RSA key");
    TestKey {
        pem: pem("PRIVATE KEY", der.as_ref()),
        public: PublicKey::Rsa(key.public_key().as_ref().to_vec()),
        pkcs8: der.as_ref().to_vec(),
    }
}

/// A new EC P-256 key.
///
/// # Panics
/// When aws-lc-rs cannot generate a key.
pub fn ec_p256() -> TestKey {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .expect("EC key generation");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref()).expect("EC key");
    TestKey {
        pem: pem("PRIVATE KEY", der.as_ref()),
        public: PublicKey::EcP256(key.public_key().as_ref().to_vec()),
        pkcs8: der.as_ref().to_vec(),
    }
}
