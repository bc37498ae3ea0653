//! Who may call which service. With TLS, a client certificate signed by the configured CA
//! names its holder (subject CN or DNS SAN): admin names may call the Authentication and
//! Session APIs, node names the node API. The Personal API needs no certificate: the session
//! token is the credential. Without TLS (loopback development only), the admin APIs are open
//! and nodes present the shared secret.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tonic::{Request, Status};

use crate::config::{Secret, TlsConfig};

/// The services that need a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Node,
}

#[derive(Debug)]
enum Policy {
    /// TLS with client certificates.
    Certificates {
        admin: Vec<String>,
        node: Vec<String>,
    },
    /// No TLS: loopback development.
    Development { node_secret: Option<Secret> },
}

/// Checks every call of one service against its role.
#[derive(Debug, Clone)]
pub struct RequireRole {
    role: Role,
    policy: Arc<Policy>,
}

/// Builds the interceptors of a server.
#[derive(Debug, Clone)]
pub struct AccessPolicy(Arc<Policy>);

impl AccessPolicy {
    pub fn new(tls: Option<&TlsConfig>, node_secret: Option<Secret>) -> Self {
        Self(Arc::new(match tls {
            Some(tls) => Policy::Certificates {
                admin: lowercase(&tls.roles.admin),
                node: lowercase(&tls.roles.node),
            },
            None => Policy::Development { node_secret },
        }))
    }

    pub fn require(&self, role: Role) -> RequireRole {
        RequireRole {
            role,
            policy: self.0.clone(),
        }
    }
}

fn lowercase(names: &[String]) -> Vec<String> {
    names.iter().map(|name| name.to_ascii_lowercase()).collect()
}

/// The certificate name an admin call was admitted by (`None` without TLS), for the audit
/// trail. The admin interceptor attaches it to every request it lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminName(pub Option<String>);

impl AdminName {
    /// The name on a request the admin interceptor let through.
    pub fn of<T>(request: &Request<T>) -> Option<&str> {
        request
            .extensions()
            .get::<Self>()
            .and_then(|name| name.0.as_deref())
    }
}

/// Why a caller was refused by the certificate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No client certificate was presented.
    NoCertificate,
    /// A certificate that names no holder of the role.
    WrongRole,
}

impl Refusal {
    /// The reason shown to the caller.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoCertificate => "a client certificate is required for this service",
            Self::WrongRole => "this client certificate may not call this service",
        }
    }
}

impl AccessPolicy {
    /// The admin check of the gRPC admin services, for other surfaces (the REST API) that
    /// see the peer's certificates themselves. Without TLS (loopback development) it admits.
    /// Admitted: the certificate name that holds the role.
    pub fn admits_admin(
        &self,
        certificates: Option<&[CertificateDer<'_>]>,
    ) -> Result<AdminName, Refusal> {
        match &*self.0 {
            Policy::Certificates { admin, .. } => {
                check_certificates(admin, certificates).map(|name| AdminName(Some(name)))
            }
            Policy::Development { .. } => Ok(AdminName(None)),
        }
    }
}

/// One rule for every surface: the first certificate names a holder of the role. Returns
/// that name.
fn check_certificates(
    allowed: &[String],
    certificates: Option<&[CertificateDer<'_>]>,
) -> Result<String, Refusal> {
    let Some(first) = certificates.and_then(<[_]>::first) else {
        return Err(Refusal::NoCertificate);
    };
    certificate_names(first)
        .into_iter()
        .find(|name| allowed.contains(name))
        .ok_or(Refusal::WrongRole)
}

impl tonic::service::Interceptor for RequireRole {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match &*self.policy {
            Policy::Certificates { admin, node } => {
                let allowed = match self.role {
                    Role::Admin => admin,
                    Role::Node => node,
                };
                let certificates = request.peer_certs();
                match check_certificates(allowed, certificates.as_deref().map(Vec::as_slice)) {
                    Ok(name) => {
                        request.extensions_mut().insert(AdminName(Some(name)));
                        Ok(request)
                    }
                    Err(refusal @ Refusal::NoCertificate) => {
                        Err(Status::unauthenticated(refusal.reason()))
                    }
                    Err(refusal @ Refusal::WrongRole) => {
                        Err(Status::permission_denied(refusal.reason()))
                    }
                }
            }
            Policy::Development { node_secret } => match self.role {
                Role::Admin => {
                    request.extensions_mut().insert(AdminName(None));
                    Ok(request)
                }
                Role::Node => check_node_secret(node_secret.as_ref(), request),
            },
        }
    }
}

fn check_node_secret(secret: Option<&Secret>, request: Request<()>) -> Result<Request<()>, Status> {
    let Some(secret) = secret else {
        return Err(Status::unauthenticated(
            "the node API is disabled: the control plane has no node secret configured",
        ));
    };
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(candidate) if secret.matches(candidate.trim()) => Ok(request),
        _ => Err(Status::unauthenticated("missing or wrong node credential")),
    }
}

/// Subject common names and DNS subject-alternative names of a certificate, lowercase.
pub fn certificate_names(certificate: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    names
}
