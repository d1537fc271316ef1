//! The certificate, key and client CAs, read from PEM files as operators
//! keep them (certbot's `fullchain.pem` and `privkey.pem`, say), and
//! checked before they are used: a key that does not match its
//! certificate is refused here, not at the first handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where the TLS settings come from (`tls_certificate`, `tls_private_key`,
/// `tls_client_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// Its private key: PKCS#8, SEC1 or PKCS#1.
    pub private_key: PathBuf,
    /// CA certificates a client's certificate must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A file that does not give what it should, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct TlsError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsError {
    fn new(file: &Path, reason: impl Into<String>) -> Self {
        TlsError {
            file: file.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Why a PEM file did not load, as an operator reads it.
fn pem_reason(error: pem::Error, what: &str) -> String {
    match error {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("no {what} in it (not a PEM file?)"),
        other => format!("not a valid PEM file: {other:?}"),
    }
}

impl TlsFiles {
    /// Reads every file and builds the server's settings from them.
    pub(super) fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = self.certificate_chain()?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key)
            .map_err(|e| TlsError::new(&self.private_key, pem_reason(e, "private key")))?;
        // ring has no post-quantum key exchange (aws-lc-rs has), which
        // rustls marks by deprecating it; it is chosen all the same for the
        // build it needs and the size it adds (docs/performance.md).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::new(&self.certificate, e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = client_roots(path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::new(path, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::new(
                &self.private_key,
                format!(
                    "does not match the certificate in {}",
                    self.certificate.display()
                ),
            ),
            other => TlsError::new(&self.private_key, other.to_string()),
        })?;
        // A client that resumes gets a new handshake's worth of keys all
        // the same; tickets would only add state a restart cannot carry.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        // After the handshake the record layer is ours (see records.rs):
        // rustls hands over the keys, and its key log, which writes
        // nothing anywhere, tells the TLS 1.3 traffic secrets.
        config.enable_secret_extraction = true;
        config.key_log = Arc::new(super::session::CaptureSecrets);
        Ok(Arc::new(config))
    }

    fn certificate_chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let path = &self.certificate;
        let chain = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError::new(path, pem_reason(e, "certificate")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::new(path, pem_reason(e, "certificate")))?;
        if chain.is_empty() {
            return Err(TlsError::new(
                path,
                "no certificate in it (not a PEM file?)",
            ));
        }
        Ok(chain)
    }
}

/// The CA certificates of `path`, for verifying clients.
fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(path, pem_reason(e, "CA certificate")))?
    {
        let cert = cert.map_err(|e| TlsError::new(path, pem_reason(e, "CA certificate")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::new(path, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::new(
            path,
            "no CA certificate in it (not a PEM file?)",
        ));
    }
    Ok(roots)
}
