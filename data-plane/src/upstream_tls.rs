//! TLS to upstream nodes: which CAs to trust (a bundle, or the system's) and the certificate
//! the node presents when an upstream asks for one. One configuration per node, shared by
//! every pool that speaks TLS.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::tls::TlsError;

/// `[upstream_tls]` of the node's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFiles {
    /// PEM CA bundle for upstream certificates; the system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for upstreams that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The client configuration for upstreams: the configured files, or system roots and no
/// client certificate.
pub fn client_config(
    files: Option<&UpstreamTlsFiles>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let files = files.cloned().unwrap_or_default();
    if files == UpstreamTlsFiles::default() {
        return default_config();
    }
    build(&files)
}

fn default_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    static DEFAULT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(config) = DEFAULT.get() {
        return Ok(config.clone());
    }
    let config = build(&UpstreamTlsFiles::default())?;
    Ok(DEFAULT.get_or_init(|| config).clone())
}

fn build(files: &UpstreamTlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let read_error = |path: &PathBuf, reason: String| TlsError::Read {
        path: path.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca_file {
        Some(path) => {
            for certificate in CertificateDer::pem_file_iter(path)
                .map_err(|error| read_error(path, error.to_string()))?
            {
                let certificate =
                    certificate.map_err(|error| read_error(path, error.to_string()))?;
                roots
                    .add(certificate)
                    .map_err(|error| read_error(path, error.to_string()))?;
            }
        }
        None => {
            // A system store with some unreadable entries still has the readable ones.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Setup(error.to_string()))?
        .with_root_certificates(roots);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|error| read_error(cert, error.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|error| read_error(cert, error.to_string()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| read_error(key, error.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| TlsError::Setup(error.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Setup(
                "upstream_tls: cert_file and key_file go together".to_owned(),
            ));
        }
    };
    Ok(Arc::new(config))
}
