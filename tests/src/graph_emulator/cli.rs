//! The command line of the `graph-emulator` binary, kept in the library so it is compiled and
//! tested with it; the binary only parses, calls [`start`], prints the URL and waits for
//! [`stop_signal`].

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

use super::{GraphEmulator, TenantConfig};

/// `graph-emulator [--listen ADDR] [--tenant-id T] [--client-id C] [--client-secret S]
/// [--domain D] [--certificate FILE]... [--seed-member MAIL]... [--seed-guest MAIL]...`
#[derive(Debug, Parser)]
#[command(name = "graph-emulator", version, about = "Microsoft Graph and Entra ID token endpoint emulator")]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Directory (tenant) id accepted by the token endpoint [default: 00000000-0000-0000-0000-000000000001].
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// Application (client) id of the registered app [default: 11111111-1111-1111-1111-111111111111].
    #[arg(long)]
    pub client_id: Option<String>,
    /// Client secret of the registered app [default: emulator-secret].
    #[arg(long)]
    pub client_secret: Option<String>,
    /// Tenant domain used in user principal names [default: contoso.onmicrosoft.com].
    #[arg(long)]
    pub domain: Option<String>,
    /// Register the certificate(s) in this file on the app, for client assertions (repeatable):
    /// PEM (only its CERTIFICATE blocks are read; a private key beside them is ignored) or DER.
    #[arg(long = "certificate", value_name = "FILE")]
    pub certificates: Vec<std::path::PathBuf>,
    /// Add a member account with this mail (repeatable).
    #[arg(long = "seed-member", value_name = "MAIL")]
    pub seed_members: Vec<String>,
    /// Add an accepted guest account with this mail (repeatable).
    #[arg(long = "seed-guest", value_name = "MAIL")]
    pub seed_guests: Vec<String>,
}

/// Starts the emulator `args` describe, with its seeded users.
///
/// # Errors
/// When the listen address cannot be bound.
pub async fn start(args: Args) -> anyhow::Result<GraphEmulator> {
    let defaults = TenantConfig::default();
    let cfg = TenantConfig {
        tenant_id: args.tenant_id.unwrap_or(defaults.tenant_id),
        client_id: args.client_id.unwrap_or(defaults.client_id),
        client_secret: args.client_secret.unwrap_or(defaults.client_secret),
        domain: args.domain.unwrap_or(defaults.domain),
        token_ttl_secs: defaults.token_ttl_secs,
    };
    let emulator = GraphEmulator::start_on(args.listen, cfg).await?;
    for path in &args.certificates {
        let bytes = std::fs::read(path).with_context(|| format!("reading certificate file {}", path.display()))?;
        let ders = certificates_in(&bytes);
        if ders.is_empty() {
            anyhow::bail!("{} holds no certificate (PEM CERTIFICATE block or DER)", path.display());
        }
        for der in ders {
            emulator.register_certificate(&der).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    let name = |mail: &str| mail.split('@').next().unwrap_or(mail).to_owned();
    for mail in &args.seed_members {
        emulator.seed_member(mail, &name(mail));
    }
    for mail in &args.seed_guests {
        emulator.seed_guest(mail, &name(mail));
    }
    Ok(emulator)
}

/// The DER of each `CERTIFICATE` block of a PEM file, or the file itself when it is not PEM.
fn certificates_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let Ok(text) = std::str::from_utf8(bytes) else {
        return vec![bytes.to_vec()];
    };
    if !text.contains("-----BEGIN") {
        return vec![bytes.to_vec()];
    }
    text.split(BEGIN)
        .skip(1)
        .filter_map(|block| block.split(END).next())
        .filter_map(|body| {
            let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(body).ok()
        })
        .collect()
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn arguments_configure_the_tenant_and_seed_users() {
        let args = Args::try_parse_from([
            "graph-emulator",
            "--listen",
            "127.0.0.1:0",
            "--client-secret",
            "s3cret",
            "--seed-member",
            "m@contoso.com",
            "--seed-member",
            "n@contoso.com",
            "--seed-guest",
            "g@fabrikam.com",
        ])
        .unwrap();
        let emulator = start(args).await.unwrap();
        assert!(emulator.base_url().starts_with("http://127.0.0.1:"));
        assert_eq!(emulator.config().client_secret, "s3cret");
        assert_eq!(emulator.config().tenant_id, TenantConfig::default().tenant_id);
        let types: Vec<_> = emulator.users().iter().map(|u| u.user_type.clone()).collect();
        assert_eq!(types, ["Member", "Member", "Guest"]);
        emulator.shutdown().await;

        // A certificate file (key and certificate, as an operator keeps them) registers the
        // certificate; a file with none is refused.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app".into()]).unwrap().self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (pem, der, none) = (dir.path().join("app.pem"), dir.path().join("app.der"), dir.path().join("none.pem"));
        std::fs::write(&pem, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        std::fs::write(&der, cert.der()).unwrap();
        std::fs::write(&none, key.serialize_pem()).unwrap();
        assert_eq!(certificates_in(&std::fs::read(&pem).unwrap()), vec![cert.der().to_vec()]);
        let with = |file: &std::path::Path| {
            Args::try_parse_from(["graph-emulator", "--listen", "127.0.0.1:0", "--certificate", file.to_str().unwrap()])
                .unwrap()
        };
        for file in [&pem, &der] {
            start(with(file)).await.unwrap().shutdown().await;
        }
        let e = start(with(&none)).await.err().unwrap().to_string();
        assert!(e.contains("holds no certificate"), "{e}");

        let defaults = Args::try_parse_from(["graph-emulator"]).unwrap();
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:8081");
        assert!(Args::try_parse_from(["graph-emulator", "--listen", "nowhere"]).is_err());
    }
}
