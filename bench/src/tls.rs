//! The load generators' TLS client: rustls with ring (the daemon's own
//! stack), TLS 1.3 only, one cipher suite, and no session resumption, so
//! that every connection makes a full handshake (ECDHE with X25519, the
//! server's signature checked).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the client checks the server's certificate.
pub enum Trust<'a> {
    /// Chains to the CA certificate(s) in this PEM file, for the name given.
    Ca(&'a Path),
    /// Any certificate (the bench only): the handshake's signature is
    /// still checked, so the client's cost stays that of a real one but
    /// for the chain.
    Any,
}

/// The TLS 1.3 cipher suite all the benchmarks use: the one rustls and
/// OpenSSL both prefer by default.
pub const SUITE: &str = "TLS13_AES_256_GCM_SHA384";

/// The key exchange the client offers (its key share): X25519, what
/// OpenSSL, curl and browsers send first. (ring's default list in this
/// rustls starts with secp384r1, several times slower with ring; a client
/// that sent that share would measure P-384 rather than the server.)
pub const GROUP: &str = "X25519";

fn provider(suite: &str, group: &str) -> io::Result<CryptoProvider> {
    // ring has no post-quantum key exchange, which rustls marks by
    // deprecating it; it is the daemon's provider, so the bench's too.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()) == suite);
    if provider.cipher_suites.is_empty() {
        return Err(io::Error::other(format!("no cipher suite {suite} in ring")));
    }
    provider
        .kx_groups
        .retain(|g| format!("{:?}", g.name()) == group);
    if provider.kx_groups.is_empty() {
        return Err(io::Error::other(format!("no key exchange {group} in ring")));
    }
    Ok(provider)
}

/// A client configuration: TLS 1.3, `suite` and `group` only (see
/// [`SUITE`], [`GROUP`]), no resumption (no session cache, no tickets kept).
pub fn client_config(trust: Trust, suite: &str, group: &str) -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(provider(suite, group)?);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?;
    let mut config = match trust {
        Trust::Ca(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?
            {
                let cert =
                    cert.map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(io::Error::other)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Any => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The server name to send and check (`localhost`, or an IP address).
pub fn server_name(name: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(io::Error::other)
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
