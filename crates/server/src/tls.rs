//! TLS: rustls on aws-lc-rs, TLS 1.2 and 1.3 only, ECDHE with AEAD suites only.

use crate::TlsFiles;
use axum_server::tls_rustls::RustlsConfig;
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The cipher suites we offer: TLS 1.3's three, and TLS 1.2's ECDHE + AEAD ones.
fn suites() -> Vec<rustls::SupportedCipherSuite> {
    use provider::cipher_suite::*;
    vec![
        TLS13_AES_256_GCM_SHA384,
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// Builds the server's TLS configuration from PEM files. Errors name the file, never
/// its content.
pub fn rustls_config(files: &TlsFiles) -> Result<RustlsConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|_| {
            format!(
                "cannot read certificates from {}",
                files.cert_path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", files.cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_path).map_err(|_| {
        format!(
            "cannot read a private key from {}",
            files.key_path.display()
        )
    })?;
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites(),
        ..provider::default_provider()
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|_| {
            "the certificate and private key do not match or are unsupported".to_owned()
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our order of `suites()`, not the client's, picks the suite: a client that lists a
    // weaker suite first still gets the strongest both support.
    config.ignore_client_order = true;
    Ok(RustlsConfig::from_config(Arc::new(config)))
}
