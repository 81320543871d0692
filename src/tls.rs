//! TLS client configuration for the connections asterai opens (ARI, chan_websocket media, the
//! `asterai feed` command): rustls, the one TLS stack, with either the public web roots or the
//! certificate authorities of one PEM file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A client configuration that trusts only the certificates in the PEM file at `path` (a private
/// CA, or a self-signed certificate). The error says what is wrong with the file, without its
/// name: the caller names the setting it came from.
pub fn trusting_only(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())? {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether an I/O error is a TLS handshake refusing the peer's certificate (rustls reports it
/// through the I/O error of the stream).
pub fn is_certificate_error(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert_eq!(trusting_only(&empty).unwrap_err(), "no PEM certificate in it");
        assert!(trusting_only(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn certificate_errors_are_recognized() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_certificate_error(&refused));
        assert!(!is_certificate_error(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
    }
}
