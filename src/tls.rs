//! TLS for MQTT destinations (mqtts://, wss://): one rustls `ClientConfig` per destination.
//!
//! The broker's certificate is always verified unless `tls_insecure_skip_verify` says
//! otherwise: against `ca_file` when given, else the system trust store, else the Mozilla
//! roots compiled in (`webpki-roots`, for minimal containers without a CA bundle). A client
//! certificate is sent when `cert_file` and `key_file` are set (mutual TLS: AWS IoT Core,
//! Azure X.509 devices, Mosquitto with `require_certificate`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

/// What a destination asks of TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM CA certificates that sign the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// ALPN protocol names.
    pub alpn: Vec<String>,
    /// Accept any broker certificate.
    pub insecure_skip_verify: bool,
}

/// Why TLS could not be set up; each names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key} \"{path}\": {reason}")]
    File {
        /// Config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Only one of `cert_file` and `key_file` is set.
    #[error("cert_file and key_file must be set together")]
    HalfClientAuth,
    /// rustls refused the combination (e.g. a key that does not fit the certificate).
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(key: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if let Some(path) = ca_file {
        for cert in read_certs("ca_file", path)? {
            store
                .add(cert)
                .map_err(|e| file_error("ca_file", path, e))?;
        }
        return Ok(store);
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = store.add_parsable_certificates(native.certs);
    if added == 0 {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(store)
}

/// The rustls client config for `s`.
pub fn client_config(s: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if s.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
    } else {
        builder.with_root_certificates(roots(s.ca_file.as_deref())?)
    };
    let mut config = match (&s.cert_file, &s.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("cert_file", cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("key_file", key, e))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientAuth),
    };
    config.alpn_protocols = s.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// `tls_insecure_skip_verify = true`: signatures are still checked, the chain and name are not.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_key_and_path() {
        let s = TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let e = client_config(&s).unwrap_err().to_string();
        assert!(e.starts_with("ca_file \"/nonexistent/ca.pem\""), "{e}");
        let s = TlsSettings {
            cert_file: Some("/nonexistent/c.pem".into()),
            ..TlsSettings::default()
        };
        assert!(matches!(client_config(&s), Err(TlsError::HalfClientAuth)));
    }

    #[test]
    fn default_roots_are_never_empty_and_alpn_is_offered() {
        let s = TlsSettings {
            alpn: vec!["x-amzn-mqtt-ca".into()],
            ..TlsSettings::default()
        };
        let c = client_config(&s).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
        assert!(!roots(None).unwrap().is_empty());
    }
}
