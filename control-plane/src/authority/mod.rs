//! The rules of the control plane, independent of gRPC: who gets a ticket, what a ticket
//! buys, how sessions are created, found, capped and ended. The shared [`Authority`] is here;
//! each use case is in its own file: `tickets` (tickets and login targets), `sessions`
//! (creating, finding, listing and ending sessions), `logins` (header, Kerberos, JWT and
//! anonymous logins), `personal` (the caller's own sessions), `oidc_login` and `saml_login`.

mod logins;
// Public for its checks of what a browser sends (the fuzz targets call them).
pub mod oidc_login;
mod personal;
mod saml_login;
mod saml_logout;
mod sessions;
mod tickets;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::assertion::SigningKeys;
use crate::audit::{Audit, AuditEvent, Method};
use crate::clock::Clock;
use crate::config::{AssertionConfig, TicketConfig};
use crate::domain::{ClientInfo, User};
use crate::error::Error;
use crate::jwt::JwtVerifiers;
use crate::oidc::OidcProviders;
use crate::outage::OutageFallback;
use crate::saml::SamlProviders;
use crate::store::Store;
use crate::virtual_proxies::VirtualProxies;

pub use self::oidc_login::OidcLoginStarted;
pub use self::personal::{NO_SESSION, OwnSessions};
pub use self::saml_login::SamlLoginStarted;
pub use self::saml_logout::{SamlLogoutOutcome, SamlLogoutStarted};
pub use self::sessions::{CheckedSession, IssuedSession, SessionSelector};
pub use self::tickets::IssuedTicket;

#[derive(Debug, Clone)]
pub struct Authority {
    store: Arc<dyn Store>,
    proxies: Arc<ArcSwap<VirtualProxies>>,
    tickets: TicketConfig,
    clock: Arc<dyn Clock>,
    /// Base URL of the REST surface, when it is on: login redirects name it in
    /// `proxyRestUri`.
    rest_base: Option<Arc<str>>,
    jwt: Arc<JwtVerifiers>,
    oidc: Arc<OidcProviders>,
    saml: Arc<SamlProviders>,
    /// Seals sessions and serves them from their seals while the store is down; `None`
    /// when sealing is off.
    outage: Option<Arc<OutageFallback>>,
    /// The keys nodes sign identity assertions with (none until the server starts them).
    signing_keys: Arc<SigningKeys>,
    audit: Audit,
}

impl Authority {
    pub fn new(
        store: Arc<dyn Store>,
        proxies: VirtualProxies,
        tickets: TicketConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            proxies: Arc::new(ArcSwap::from_pointee(proxies)),
            tickets,
            clock: clock.clone(),
            rest_base: None,
            jwt: Arc::new(JwtVerifiers::default()),
            oidc: Arc::new(OidcProviders::default()),
            saml: Arc::new(SamlProviders::default()),
            outage: None,
            signing_keys: Arc::new(SigningKeys::new(AssertionConfig::default(), clock.clone())),
            audit: Audit::default(),
        }
    }

    /// Sends audit events to `audit` (by default: logged, not counted).
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Writes one audit event, stamped with this authority's clock.
    pub(crate) fn audit(&self, event: &AuditEvent<'_>) {
        self.audit.emit(event, self.clock.now());
    }

    /// Lets the audit sinks write what is queued, for at most `within` (at shutdown).
    pub async fn flush_audit(&self, within: std::time::Duration) {
        self.audit.flush(within).await;
    }

    /// The audit event of a login's outcome: succeeded, with its session, or failed, with
    /// the reason its client was told (and `user` when the login named one).
    pub(crate) fn audit_login(
        &self,
        method: Method,
        virtual_proxy: &str,
        user: Option<&User>,
        client: &ClientInfo,
        outcome: Result<&IssuedSession, &Error>,
    ) {
        match outcome {
            Ok(issued) => self.audit(&AuditEvent::LoginSucceeded {
                method,
                session: &issued.session,
            }),
            Err(error) => self.audit(&AuditEvent::LoginFailed {
                method,
                virtual_proxy,
                user,
                client,
                reason: crate::audit::failure_reason(error),
            }),
        }
    }

    /// Seals sessions with `fallback` and serves them from their seals during an outage.
    pub fn with_outage_fallback(mut self, fallback: Arc<OutageFallback>) -> Self {
        self.outage = Some(fallback);
        self
    }

    pub fn outage_fallback(&self) -> Option<&Arc<OutageFallback>> {
        self.outage.as_ref()
    }

    /// Pushes `keys` to nodes for signing identity assertions.
    pub fn with_signing_keys(mut self, keys: Arc<SigningKeys>) -> Self {
        self.signing_keys = keys;
        self
    }

    pub fn signing_keys(&self) -> &Arc<SigningKeys> {
        &self.signing_keys
    }

    /// Names the REST surface's public base URL (ending in `/`), so that nodes send
    /// authentication modules there.
    pub fn with_rest_base(mut self, base: &str) -> Self {
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        self.rest_base = Some(base.into());
        self
    }

    /// Where an authentication module of this virtual proxy requests tickets
    /// (`proxyRestUri`), when the REST surface is on: `{base}qps/{prefix}/`, `{base}qps/` for
    /// the default virtual proxy.
    pub fn proxy_rest_uri(&self, virtual_proxy: &str) -> Option<String> {
        self.rest_base.as_ref().map(|base| {
            if virtual_proxy.is_empty() {
                format!("{base}qps/")
            } else {
                format!("{base}qps/{virtual_proxy}/")
            }
        })
    }

    /// The virtual proxies in force now (they change when the configuration is reloaded).
    pub fn virtual_proxies(&self) -> Arc<VirtualProxies> {
        self.proxies.load_full()
    }

    /// Puts a reloaded set of virtual proxies in force; sessions are untouched.
    pub fn replace_virtual_proxies(&self, proxies: VirtualProxies) {
        self.proxies.store(Arc::new(proxies));
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
