//! TLS to upstream nodes: which CAs to trust (a bundle, or the system's) and the certificate
//! the node presents when an upstream asks for one, one configuration per node shared by
//! every pool that speaks TLS; and the name each node's certificate is checked against.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

use super::discovery::ResolvedNames;
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

/// Wraps `tcp` in TLS for `https` URIs (and leaves `http` ones alone), checking each node's
/// certificate against `server_name`, else the DNS name its address was resolved from.
pub(super) fn connector(
    tcp: HttpConnector,
    config: &rustls::ClientConfig,
    server_name: Option<String>,
    resolved: ResolvedNames,
    http2: bool,
) -> HttpsConnector<HttpConnector> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.clone())
        .https_or_http()
        .with_server_name_resolver(ServerNames {
            fixed: server_name,
            by_address: resolved,
        })
        .enable_http1();
    if http2 {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.wrap_connector(tcp)
    }
}

/// The name a node's certificate must carry: the configured one, else the DNS name its
/// address was resolved from, else the address itself.
#[derive(Debug, Clone)]
struct ServerNames {
    fixed: Option<String>,
    by_address: ResolvedNames,
}

impl hyper_rustls::ResolveServerName for ServerNames {
    fn resolve(
        &self,
        uri: &Uri,
    ) -> Result<ServerName<'static>, Box<dyn std::error::Error + Sync + Send>> {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = match (&self.fixed, host.parse::<IpAddr>()) {
            (Some(fixed), _) => fixed.clone(),
            (None, Ok(ip)) => self
                .by_address
                .load()
                .get(&ip)
                .cloned()
                .unwrap_or_else(|| ip.to_string()),
            (None, Err(_)) => host.to_owned(),
        };
        Ok(ServerName::try_from(name)?)
    }
}
