//! TLS termination: certificates chosen by SNI, reloaded from disk when their files change
//! (no restart), ALPN `h2` and `http/1.1`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

/// One certificate (chain) and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in {path} cannot be used: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// A loaded certificate with the names it serves.
#[derive(Debug)]
struct Served {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// The certificates in use; swapped whole on reload.
#[derive(Debug)]
pub struct CertificateStore {
    files: Vec<CertificateFiles>,
    current: ArcSwap<Vec<Served>>,
    modified: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

impl CertificateStore {
    /// Loads every certificate; the first is served when SNI names none of them.
    pub fn load(files: Vec<CertificateFiles>) -> Result<Arc<Self>, TlsError> {
        let served = load_all(&files)?;
        let modified = modification_times(&files);
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::from_pointee(served),
            modified: std::sync::Mutex::new(modified),
        }))
    }

    /// Reloads when any file changed; a broken new file keeps the old certificates in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = modification_times(&self.files);
        let mut seen = self
            .modified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == now {
            return false;
        }
        match load_all(&self.files) {
            Ok(served) => {
                self.current.store(Arc::new(served));
                *seen = now;
                tracing::info!("TLS certificates reloaded");
                true
            }
            Err(error) => {
                tracing::error!(%error, "new TLS certificates are not usable; keeping the current ones");
                false
            }
        }
    }

    /// Watches the files until the process ends.
    pub async fn reload_forever(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.reload_if_changed();
        }
    }

    /// A rustls server configuration using this store, with ALPN h2 and http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Setup(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertificateStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.0.current.load();
        let by_name = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            served.iter().find(|candidate| {
                candidate
                    .names
                    .iter()
                    .any(|pattern| name_matches(pattern, &name))
            })
        });
        by_name
            .or_else(|| served.first())
            .map(|served| served.key.clone())
    }
}

/// `pattern` is a certificate name, possibly `*.example.com` (one label).
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

fn modification_times(files: &[CertificateFiles]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .flat_map(|files| [&files.cert_file, &files.key_file])
        .map(|path| {
            std::fs::metadata(path)
                .and_then(|meta| meta.modified())
                .ok()
        })
        .collect()
}

fn load_all(files: &[CertificateFiles]) -> Result<Vec<Served>, TlsError> {
    files.iter().map(load_one).collect()
}

fn load_one(files: &CertificateFiles) -> Result<Served, TlsError> {
    let read_error = |path: &PathBuf, error: rustls::pki_types::pem::Error| TlsError::Read {
        path: path.clone(),
        reason: error.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|error| read_error(&files.cert_file, error))?
        .collect::<Result<_, _>>()
        .map_err(|error| read_error(&files.cert_file, error))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: files.cert_file.clone(),
        });
    };
    let names = certificate_names(leaf);
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|error| read_error(&files.key_file, error))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::Key {
            path: files.key_file.clone(),
            reason: error.to_string(),
        })?;
    Ok(Served {
        names,
        key: Arc::new(CertifiedKey::new(chain, signing)),
    })
}

/// DNS names of a certificate (SANs), lowercase, for SNI selection.
fn certificate_names(certificate: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("sense.example.com", "sense.example.com"));
    }
}
