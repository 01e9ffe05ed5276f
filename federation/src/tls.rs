//! TLS configuration for federation, on rustls with the **ring** provider (never aws-lc-rs).
//!
//! - [`server_config`]: the federation listener's `rustls::ServerConfig` from PEM files (serve it
//!   with tokio-rustls or `axum_server::tls_rustls::RustlsConfig::from_config`).
//! - [`client_config`]: the outbound `rustls::ClientConfig`: the webpki (Mozilla) roots plus an
//!   optional PEM CA bundle (`ca_file`, for a company's private CA). Certificates of IP-literal
//!   destinations are checked against their IP SAN and no SNI is sent (rustls does both when the
//!   server name is an IP address).
//!
//! Every config is built with an explicit ring provider, so nothing depends on the process-level
//! default; [`install_default_provider`] is there for other rustls users in the process.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default rustls provider (a no-op when one is installed).
/// Call once at start-up before anything builds a rustls config without an explicit provider.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate of a PEM file (a chain, leaf first, or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no CERTIFICATE found"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_err(path, format!("no private key: {e}")))
}

/// The federation listener's config: certificate chain and key from PEM files, no client
/// certificates, ALPN `h2` and `http/1.1` (what axum-server / hyper-util's auto builder serve;
/// set `alpn_protocols` to `[b"http/1.1"]` if the listener speaks HTTP/1.1 only).
pub fn server_config(cert_chain_pem: &Path, key_pem: &Path) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(cert_chain_pem)?;
    let key = load_private_key(key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The webpki roots plus every certificate of `ca_file`.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| file_err(path, format!("unusable CA certificate: {e}")))?;
        }
    }
    Ok(roots)
}

/// The outbound config: [`root_store`], no client certificate, no ALPN (the federation client
/// sets `http/1.1`).
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = root_store(ca_file)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A throwaway CA and a leaf for `names` (DNS names or IP literals), as PEM strings:
    /// (ca_cert, leaf_chain, leaf_key).
    pub(crate) fn test_pki(names: &[&str]) -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Ganglion test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
        (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
    }

    pub(crate) fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ganglion-fed-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write temp");
        path
    }

    #[test]
    fn builds_server_and_client_configs() {
        let (ca, chain, key) = test_pki(&["localhost", "127.0.0.1"]);
        let ca_path = write_temp("cfg-ca.pem", &ca);
        let chain_path = write_temp("cfg-chain.pem", &chain);
        let key_path = write_temp("cfg-key.pem", &key);
        let server = server_config(&chain_path, &key_path).expect("server config");
        assert_eq!(server.alpn_protocols.len(), 2);
        let with_ca = root_store(Some(&ca_path)).expect("roots");
        let without = root_store(None).expect("roots");
        assert_eq!(with_ca.len(), without.len() + 1);
        client_config(Some(&ca_path)).expect("client config");
    }

    #[test]
    fn bad_files_are_errors() {
        let garbage = write_temp("garbage.pem", "not a certificate");
        assert!(load_certs(&garbage).is_err());
        assert!(load_private_key(&garbage).is_err());
        assert!(client_config(Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}
