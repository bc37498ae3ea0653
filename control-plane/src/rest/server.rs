//! The REST surface's own port: TLS with optional client certificates (a missing or foreign
//! certificate gets a 403 with a reason rather than a failed handshake), HTTP/1.1 through the
//! shared serve loop ([`http_server`]), bounded headers, bodies and connections, then the certificate, Xrfkey and route checks in
//! that order before any handler runs. Without TLS (loopback only) a request must also name
//! a loopback host (or `public_url`'s), against DNS rebinding: see
//! [`admin_access`](crate::admin_access).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_runtime::http_server::{self, ListenerPolicy, LogLines, PastCapacity, Protocols};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::reply::{self, Response};
use super::routes::{self, NoRoute};
use super::{handlers, xrfkey};
use crate::admin_access::{self, HostRule};
use crate::api::access::{AccessPolicy, AdminName, Refusal};
use crate::audit::{self, AdminCall};
use crate::authority::Authority;
use crate::config::{RestConfig, TlsConfig};

/// Largest request body read: a ticket or session request with generous attributes.
const MAX_BODY: usize = 256 * 1024;
/// Time allowed for the TLS handshake, the request head, and the body.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the listen backlog's place (they are dropped).
const MAX_CONNECTIONS: usize = 1024;
/// HTTP/1.1 only, request heads within 64 KiB and `HEADER_TIMEOUT`, no idle limit.
const LISTENER_POLICY: ListenerPolicy = ListenerPolicy {
    protocols: Protocols::Http1,
    header_read_timeout: HEADER_TIMEOUT,
    max_header_bytes: 64 * 1024,
    idle_timeout: None,
    max_connections: Some(MAX_CONNECTIONS),
    past_capacity: PastCapacity::Drop,
    accept_backoff: Duration::from_millis(100),
    log_lines: LogLines {
        accept_failed: "REST surface cannot accept a connection",
        dropped_at_capacity: "REST surface at its connection limit; connection dropped",
        connection_failed: "REST connection ended with an error",
    },
};

/// Why the REST surface could not start.
#[derive(Debug, thiserror::Error)]
pub enum RestStartError {
    #[error("cannot listen on {address} for the REST surface: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the TLS material for the REST surface: {0}")]
    Tls(String),
}

/// The REST surface with its socket bound.
pub struct BoundRest {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    public_url: String,
}

impl std::fmt::Debug for BoundRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundRest")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .field("public_url", &self.public_url)
            .finish()
    }
}

impl BoundRest {
    /// Binds `config.listen`; with `tls`, serves HTTPS with the gRPC server's certificate.
    pub async fn bind(
        config: &RestConfig,
        tls: Option<&TlsConfig>,
    ) -> Result<Self, RestStartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| RestStartError::Bind {
                    address: config.listen,
                    source,
                })?;
        let tls = tls.map(acceptor).transpose()?;
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => {
                let address = listener
                    .local_addr()
                    .map_err(|source| RestStartError::Bind {
                        address: config.listen,
                        source,
                    })?;
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{address}/")
            }
        };
        Ok(Self {
            listener,
            tls,
            public_url,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The base URL authentication modules are sent to.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Serves until `stop` is cancelled; open connections finish their current request.
    pub async fn serve(self, authority: Authority, access: AccessPolicy, stop: CancellationToken) {
        // Over TLS the certificate names the host; in plaintext only this machine's names
        // and the one the operator configured are answered.
        let plaintext_hosts = self.tls.is_none().then(|| {
            self.public_url
                .parse::<http::Uri>()
                .ok()
                .and_then(|url| url.host().map(str::to_owned))
                .into_iter()
                .collect()
        });
        let shared = Arc::new(Shared {
            authority,
            access,
            plaintext_hosts,
        });
        let serving = http_server::serve(self.listener, LISTENER_POLICY, move |tcp, _arrival| {
            let (shared, tls) = (shared.clone(), self.tls.clone());
            async move {
                let (io, admitted) = match tls {
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                        let Ok(Ok(stream)) = handshake else {
                            tracing::debug!("REST surface: TLS handshake failed or timed out");
                            return None;
                        };
                        let admitted = shared
                            .access
                            .admits_admin(stream.get_ref().1.peer_certificates());
                        (Either::Left(stream), admitted)
                    }
                    None => (Either::Right(tcp), shared.access.admits_admin(None)),
                };
                // The certificate is checked once per connection; every request on it
                // carries the verdict.
                let service = hyper::service::service_fn(move |request| {
                    let (shared, admitted) = (shared.clone(), admitted.clone());
                    async move { Ok::<_, Infallible>(handle(&shared, admitted, request).await) }
                });
                Some((io, service))
            }
        });
        stop.cancelled().await;
        // Open connections finish their current request; they are not waited for.
        let _ = serving.shutdown(Duration::ZERO).await;
    }
}

struct Shared {
    authority: Authority,
    access: AccessPolicy,
    /// Without TLS: the names answered besides loopback ones.
    plaintext_hosts: Option<Vec<String>>,
}

async fn handle(
    shared: &Shared,
    admitted: Result<AdminName, Refusal>,
    request: http::Request<Incoming>,
) -> Response {
    if let Some(also) = &shared.plaintext_hosts
        && let Err(refusal) =
            admin_access::check_host(HostRule::Loopback, request.uri(), request.headers(), also)
    {
        return gatehouse_runtime::admin_port::refuse(refusal);
    }
    let caller = match admitted {
        Ok(AdminName(name)) => AdminCall::new(name.as_deref(), audit::Method::Rest),
        Err(refusal) => return reply::refuse(StatusCode::FORBIDDEN, refusal.reason()),
    };
    if let Err(reason) = xrfkey::check(request.uri().query(), request.headers()) {
        return reply::refuse(StatusCode::FORBIDDEN, reason);
    }
    let proxies = shared.authority.virtual_proxies();
    let route = match routes::route(request.method(), request.uri().path(), |prefix| {
        proxies.get(prefix).is_ok()
    }) {
        Ok(route) => route,
        Err(NoRoute::NotFound) => return reply::refuse(StatusCode::NOT_FOUND, "no such endpoint"),
        Err(NoRoute::BadEncoding) => {
            return reply::refuse(
                StatusCode::BAD_REQUEST,
                "the path is not valid percent-encoded UTF-8",
            );
        }
        Err(NoRoute::MethodNotAllowed(allow)) => {
            let mut response =
                reply::refuse(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return response;
        }
    };
    let delete = request.method() == Method::DELETE;
    let body = Limited::new(request.into_body(), MAX_BODY);
    let body = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return reply::refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than 256 KiB",
            );
        }
        Ok(Err(_)) => return reply::refuse(StatusCode::BAD_REQUEST, "the body could not be read"),
        Err(_) => {
            return reply::refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the body took too long to arrive",
            );
        }
    };
    handlers::dispatch(&shared.authority, &caller, route, delete, body).await
}

/// A TLS server with the gRPC server's certificate, asking for (not requiring) a client
/// certificate signed by the configured CA: [`AccessPolicy::admits_admin`] decides.
fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, RestStartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let failed = |path: &Path, error: &dyn std::fmt::Display| {
        RestStartError::Tls(format!("{}: {error}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| failed(&config.cert_file, &error))?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|error| failed(&config.key_file, &error))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&config.client_ca_file)
        .map_err(|error| failed(&config.client_ca_file, &error))?
    {
        let certificate = certificate.map_err(|error| failed(&config.client_ca_file, &error))?;
        roots
            .add(certificate)
            .map_err(|error| failed(&config.client_ca_file, &error))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|error| RestStartError::Tls(error.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| RestStartError::Tls(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|error| RestStartError::Tls(error.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
