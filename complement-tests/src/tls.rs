//! A throwaway certificate authority for federation tests.
//!
//! Every test process makes one CA ([`TestCa::shared`]) in memory with rcgen; each federating
//! node (Ganglion, Synapse, or the in-test fake server) gets a leaf certificate whose subject
//! alternative name is its loopback IP (e.g. `127.0.0.11`), written as PEM into the node's
//! temporary directory next to a copy of the CA certificate. Peers trust the CA through their
//! `ca_file` / `federation_custom_ca_list` setting and verify the IP SAN (no SNI for IP
//! literals), exactly as `TESTING.md` describes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// File names used inside a node's directory.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// A CA certificate plus the key that signs leaves.
pub struct TestCa {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The leaf certificate (not followed by the CA: peers trust the CA directly).
    pub cert_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

/// Paths of the PEM files written for one node.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A fresh CA ("Ganglion test CA").
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Ganglion test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA of this test process (created on first use). All nodes of all tests in the
    /// process share it, so any node trusts any other.
    pub fn shared() -> &'static TestCa {
        static CA: OnceLock<TestCa> = OnceLock::new();
        CA.get_or_init(TestCa::new)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A leaf for `ip` (IP SAN; CN is the IP too), valid for TLS server and client auth.
    pub fn leaf(&self, ip: IpAddr) -> Leaf {
        self.leaf_for_names(&[ip.to_string()])
    }

    /// A leaf whose SANs are `names` (IP literals become IP SANs, anything else DNS SANs).
    pub fn leaf_for_names(&self, names: &[String]) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::new(names.to_vec()).expect("leaf params");
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `ca.crt`, `tls.crt` and `tls.key` (a fresh leaf for `ip`) into `dir`.
    pub fn write_node_files(&self, dir: &Path, ip: IpAddr) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("create TLS dir");
        let leaf = self.leaf(ip);
        let files = TlsFiles {
            ca: dir.join(CA_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        };
        std::fs::write(&files.ca, &self.ca_pem).expect("write ca.crt");
        std::fs::write(&files.cert, &leaf.cert_pem).expect("write tls.crt");
        std::fs::write(&files.key, &leaf.key_pem).expect("write tls.key");
        files
    }

    /// The CA certificate as DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("parse CA PEM")
    }

    /// A rustls client config that trusts only this CA (ring provider, no client certs).
    pub fn rustls_client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA to root store");
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }

    /// A rustls server config serving `leaf` (HTTP/1.1 only), for in-test fake servers.
    pub fn rustls_server_config(&self, leaf: &Leaf) -> rustls::ServerConfig {
        let certs =
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("parse leaf PEM")];
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("parse key PEM");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    /// An HTTPS client that trusts only this CA (and verifies IP SANs; no SNI for IP literals).
    pub fn http_client(&self) -> reqwest::Client {
        crate::install_crypto_provider();
        reqwest::Client::builder()
            .use_preconfigured_tls(self.rustls_client_config())
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build HTTPS client")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl_available() -> bool {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn leaf_verifies_against_ca_with_openssl() {
        if !openssl_available() {
            eprintln!("SKIPPED: no openssl binary");
            return;
        }
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let ip: IpAddr = "127.0.0.11".parse().expect("ip");
        let files = ca.write_node_files(dir.path(), ip);
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&files.ca)
            .arg("-purpose")
            .arg("sslserver")
            .arg("-verify_ip")
            .arg("127.0.0.11")
            .arg(&files.cert)
            .output()
            .expect("run openssl verify");
        assert!(
            out.status.success(),
            "openssl verify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The wrong IP must not verify.
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&files.ca)
            .arg("-verify_ip")
            .arg("127.0.0.12")
            .arg(&files.cert)
            .output()
            .expect("run openssl verify");
        assert!(!out.status.success(), "leaf verified for the wrong IP");
        // The key matches the certificate.
        let pubkey = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let cert = files.cert.display().to_string();
        let key = files.key.display().to_string();
        assert_eq!(
            pubkey(&["x509", "-in", &cert, "-noout", "-pubkey"]),
            pubkey(&["pkey", "-in", &key, "-pubout"])
        );
    }

    #[tokio::test]
    async fn rustls_handshake_with_ip_san() {
        crate::install_crypto_provider();
        let ca = TestCa::new();
        let ip: IpAddr = "127.0.0.11".parse().expect("ip");
        let leaf = ca.leaf(ip);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.rustls_server_config(&leaf)));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("TLS accept");
            let mut buf = [0u8; 1024];
            let _ = tls.read(&mut buf).await;
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            let _ = tls.shutdown().await;
        });
        let resp = ca
            .http_client()
            .get(format!("https://{ip}:{port}/"))
            .send()
            .await
            .expect("HTTPS request");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.expect("body"), "ok");
    }
}
