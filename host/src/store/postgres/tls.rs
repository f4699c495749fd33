//! TLS to PostgreSQL with rustls: managed databases (Azure Database for PostgreSQL, RDS,
//! Cloud SQL) require it. `sslmode` keeps libpq's meaning, which the synchronous client
//! does not parse beyond `disable|prefer|require`, so it is read here and taken out of the
//! URL before the client sees it:
//!
//! - `disable`: plain TCP.
//! - `prefer` (the default, as in libpq): TLS when the server offers it, unverified.
//! - `require`: TLS or no connection; the certificate is not checked (encryption only).
//! - `verify-ca`: TLS, and the certificate must chain to a trusted CA.
//! - `verify-full`: as `verify-ca`, and it must name the host connected to.
//!
//! Trusted CAs are `store.ca_file` (PEM) when given, else the system's roots.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::store::StoreError;

/// How much TLS a connection needs (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "store.url has sslmode={other:?}; use disable, prefer, require, verify-ca or verify-full"
                ))
            }
        })
    }

    /// What the client itself is told: it knows only whether TLS is off, optional or needed.
    pub fn client_mode(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
        }
    }
}

/// Takes `sslmode` out of a `postgres://` URL: the URL the client parses, and the mode.
///
/// # Errors
/// An unknown `sslmode`, or a URL that is not one.
pub fn split_sslmode(url: &str) -> Result<(String, SslMode), String> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL the url crate reads (e.g. key=value form): leave it to the client.
        return Ok((url.to_owned(), SslMode::Prefer));
    };
    let mut mode = SslMode::Prefer;
    let mut kept = Vec::new();
    for (k, v) in parsed.query_pairs() {
        if k == "sslmode" {
            mode = SslMode::parse(&v)?;
        } else {
            kept.push((k.into_owned(), v.into_owned()));
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), mode))
}

/// The rustls configuration for `mode` (`None` for `disable`).
///
/// # Errors
/// `ca_file` cannot be read or holds no certificate, or no system root could be loaded.
pub fn client_config(mode: SslMode, ca_file: Option<&Path>) -> Result<Option<ClientConfig>, StoreError> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("TLS set-up failed: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(EncryptOnly(provider)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider)
                .build()
                .map_err(|e| StoreError::Unavailable(format!("TLS set-up failed: {e}")))?;
            if mode == SslMode::VerifyCa {
                Arc::new(AnyName(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(Some(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()))
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| {
                StoreError::Unavailable(format!("store.ca_file {}: cannot read it as PEM: {e}", path.display()))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                let cert = cert.map_err(|e| unreadable(&e))?;
                roots.add(cert).map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "store.ca_file {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(StoreError::Unavailable(
                    "no system CA certificates found for sslmode=verify-*: set store.ca_file to the server's CA (PEM)"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// `prefer`/`require`: any certificate is accepted (no authentication, as in libpq), but the
/// handshake's signatures are still checked, so the session is encrypted to whoever holds
/// the certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must be trusted; the name in the certificate is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A sentence naming why a TLS connection failed and what fixes it, if the failure was the
/// certificate check; `None` for anything else.
pub fn explain(e: &postgres::Error, host: &str) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(why)) = tls {
            return Some(match why {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    "the server's certificate is not signed by a CA hookhost trusts: \
                     set store.ca_file to the CA that issued it (PEM)"
                        .to_string()
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate does not name the host {host:?}: connect by a name it holds, \
                     or use sslmode=verify-ca to check only the CA"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".to_string()
                }
                other => format!("the server's certificate was refused: {other:?}"),
            });
        }
        if c.to_string().contains("server does not support TLS") {
            return Some(
                "the server does not offer TLS but store.url asks for it (sslmode=require or verify-*): \
                 enable ssl on the server or use sslmode=disable on a trusted network"
                    .into(),
            );
        }
        cause = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url_and_other_parameters_stay() {
        let (url, mode) = split_sslmode("postgres://u@db:5432/x?sslmode=verify-full&connect_timeout=3").unwrap();
        assert_eq!((url.as_str(), mode), ("postgres://u@db:5432/x?connect_timeout=3", SslMode::VerifyFull));
        let (url, mode) = split_sslmode("postgresql://u@db/x?sslmode=require").unwrap();
        assert_eq!((url.as_str(), mode), ("postgresql://u@db/x", SslMode::Require));
        assert_eq!(split_sslmode("postgres://u@db/x").unwrap().1, SslMode::Prefer);
        let e = split_sslmode("postgres://u@db/x?sslmode=allow-ish").unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let Err(e) = client_config(SslMode::VerifyFull, Some(&f)) else { panic!("accepted") };
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        assert!(!e.to_string().contains("not a certificate"), "never quotes the file: {e}");
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
    }
}
