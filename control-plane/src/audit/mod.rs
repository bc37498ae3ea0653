//! Audit events: one record for each login that succeeded or failed, each logout, each
//! session ended by someone other than time (an administrator, its own holder, the OpenID
//! provider, the per-user cap) and each session an administrator created. They answer "who
//! logged in, from where, how, and who ended which session".
//!
//! Each record is one JSON line on the log target [`AUDIT_TARGET`], written whatever
//! `GATEHOUSE_LOG` lets through (the logger routes audit records past its filter), and
//! counted in `gatehouse_control_plane_audit_events_total` by kind. Optionally it is also
//! appended to a Redis stream and exported as an OTLP log record (`sink`, `otlp`), off the
//! caller's path. A record names a session by its public handle only: no token, ticket,
//! cookie or password ever reaches one.

mod otlp;
mod sink;

use std::sync::Arc;
use std::time::SystemTime;

use self::sink::SinkQueue;
use crate::config::{AuditConfig, StoreConfig};
use crate::domain::{ClientInfo, RevocationReason, Session, User};
use crate::error::{Error, StoreError};
use crate::metrics::Metrics;
use crate::store::RedisAuditStream;

pub use gatehouse_runtime::logging::AUDIT_TARGET;

/// Longest reason written; a provider's error text can be long.
const MAX_REASON_LEN: usize = 200;

/// How a login (or an administrator's session) came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Ticket,
    Header,
    Anonymous,
    Kerberos,
    Jwt,
    Oidc,
    Saml,
    /// `CreateSession` of the gRPC Session API.
    SessionApi,
    /// The QPS-compatible REST surface.
    Rest,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ticket => "ticket",
            Self::Header => "header",
            Self::Anonymous => "anonymous",
            Self::Kerberos => "kerberos",
            Self::Jwt => "jwt",
            Self::Oidc => "oidc",
            Self::Saml => "saml",
            Self::SessionApi => "session_api",
            Self::Rest => "rest",
        }
    }
}

/// Who ended or created a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An administrator, by the name its client certificate matched the admin role with.
    Admin(String),
    /// The session's own user, through the Personal API (or a node's logout endpoint).
    OwnUser,
    /// The OpenID provider, by back-channel logout.
    Provider,
    /// The per-user session cap, making room for a newer session.
    Eviction,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Self::Admin(name) => format!("admin:{name}"),
            Self::OwnUser => "self".to_owned(),
            Self::Provider => "provider".to_owned(),
            Self::Eviction => "eviction".to_owned(),
        }
    }
}

/// An administrator's call: who made it, and through which surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCall {
    /// The certificate name that holds the admin role; [`AdminCall::NO_TLS`] without TLS.
    pub name: String,
    /// [`Method::SessionApi`] or [`Method::Rest`].
    pub surface: Method,
}

impl AdminCall {
    /// The name of every administrator when TLS is off (loopback development): there is no
    /// certificate to tell them apart.
    pub const NO_TLS: &'static str = "no-tls";

    pub fn new(name: Option<&str>, surface: Method) -> Self {
        Self {
            name: name.unwrap_or(Self::NO_TLS).to_owned(),
            surface,
        }
    }
}

/// One audit event.
#[derive(Debug, Clone)]
pub enum AuditEvent<'a> {
    LoginSucceeded {
        method: Method,
        session: &'a Session,
    },
    LoginFailed {
        method: Method,
        virtual_proxy: &'a str,
        /// The user the login claimed, when the control plane knew it before refusing.
        user: Option<&'a User>,
        client: &'a ClientInfo,
        reason: String,
    },
    /// A user ended the session they were calling with.
    Logout { session: &'a Session },
    SessionRevoked {
        session: &'a Session,
        actor: Actor,
        reason: RevocationReason,
    },
    SessionCreated {
        session: &'a Session,
        by: &'a AdminCall,
    },
}

/// An event's fields, by their stable names; absent ones are not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub event: &'static str,
    /// When it was decided; `time` is the same instant as text.
    pub at: SystemTime,
    pub time: String,
    pub method: Option<&'static str>,
    pub virtual_proxy: String,
    pub user_directory: Option<String>,
    pub user_id: Option<String>,
    pub session: Option<String>,
    pub client_address: Option<String>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

impl AuditEvent<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LoginSucceeded { .. } => "login_succeeded",
            Self::LoginFailed { .. } => "login_failed",
            Self::Logout { .. } => "logout",
            Self::SessionRevoked { .. } => "session_revoked",
            Self::SessionCreated { .. } => "session_created",
        }
    }

    /// The record of this event at `time`.
    pub fn record(&self, time: SystemTime) -> AuditRecord {
        let base = AuditRecord {
            event: self.kind(),
            at: time,
            time: humantime::format_rfc3339_millis(time).to_string(),
            method: None,
            virtual_proxy: String::new(),
            user_directory: None,
            user_id: None,
            session: None,
            client_address: None,
            reason: None,
            actor: None,
        };
        match self {
            Self::LoginSucceeded { method, session } => AuditRecord {
                method: Some(method.as_str()),
                ..of_session(base, session)
            },
            Self::LoginFailed {
                method,
                virtual_proxy,
                user,
                client,
                reason,
            } => AuditRecord {
                method: Some(method.as_str()),
                virtual_proxy: (*virtual_proxy).to_owned(),
                user_directory: user.map(|user| user.directory.clone()),
                user_id: user.map(|user| user.id.clone()),
                client_address: non_empty(&client.address),
                reason: Some(bounded(reason)),
                ..base
            },
            Self::Logout { session } => AuditRecord {
                actor: Some(Actor::OwnUser.label()),
                reason: Some(RevocationReason::Logout.as_str().to_owned()),
                ..of_session(base, session)
            },
            Self::SessionRevoked {
                session,
                actor,
                reason,
            } => AuditRecord {
                actor: Some(actor.label()),
                reason: Some(reason.as_str().to_owned()),
                ..of_session(base, session)
            },
            Self::SessionCreated { session, by } => AuditRecord {
                method: Some(by.surface.as_str()),
                actor: Some(Actor::Admin(by.name.clone()).label()),
                ..of_session(base, session)
            },
        }
    }
}

impl AuditRecord {
    /// The fields present, by name, in the order of the JSON line: what the Redis stream
    /// entry and the OTLP log record's attributes hold.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        let optional = [
            ("method", self.method),
            ("virtual_proxy", Some(self.virtual_proxy.as_str())),
            ("user_directory", self.user_directory.as_deref()),
            ("user_id", self.user_id.as_deref()),
            ("session", self.session.as_deref()),
            ("client_address", self.client_address.as_deref()),
            ("reason", self.reason.as_deref()),
            ("actor", self.actor.as_deref()),
        ];
        [("event", self.event), ("time", self.time.as_str())]
            .into_iter()
            .chain(
                optional
                    .into_iter()
                    .filter_map(|(name, value)| value.map(|value| (name, value))),
            )
            .collect()
    }
}

fn of_session(base: AuditRecord, session: &Session) -> AuditRecord {
    AuditRecord {
        virtual_proxy: session.virtual_proxy.clone(),
        user_directory: Some(session.user.directory.clone()),
        user_id: Some(session.user.id.clone()),
        session: Some(session.handle.clone()),
        client_address: non_empty(&session.client.address),
        ..base
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn bounded(reason: &str) -> String {
    gatehouse_proto::cut_to_bytes(reason, MAX_REASON_LEN).to_owned()
}

/// The short reason of a refused login, as its client was told it. Store failures carry
/// internal detail, so they are named by kind only.
pub fn failure_reason(error: &Error) -> String {
    match error {
        Error::Store(StoreError::Unavailable(_)) => "session store unavailable".to_owned(),
        Error::Store(_) => "session store failure".to_owned(),
        other => other.to_string(),
    }
}

/// Where audit events go: the log (unless turned off), the metrics, and the sinks
/// configured under `[audit]`.
#[derive(Debug, Clone)]
pub struct Audit {
    log: bool,
    metrics: Option<Arc<Metrics>>,
    sinks: Arc<[SinkQueue]>,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            log: true,
            metrics: None,
            sinks: Arc::new([]),
        }
    }
}

impl Audit {
    /// `log`: write the JSON line (`[audit] log`); events are counted in `metrics` either way.
    pub fn new(log: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            log,
            metrics: Some(metrics),
            sinks: Arc::new([]),
        }
    }

    /// As [`new`](Self::new), with the sinks `config` names, each fed by a task of its own
    /// (so call it inside the Tokio runtime). Redis is not contacted here: a sink that cannot
    /// write yet retries, and the control plane starts.
    pub fn start(
        config: &AuditConfig,
        store: &StoreConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkSetupError> {
        let mut sinks = Vec::new();
        if let Some(key) = &config.redis_stream {
            let stream = RedisAuditStream::new(store, key, config.redis_stream_max_len)
                .map_err(|error| SinkSetupError::RedisStream(error.to_string()))?;
            sinks.push(SinkQueue::start(
                sink::RedisStreamSink(stream),
                config.sink_queue_len,
                metrics.clone(),
            ));
        }
        if let Some(endpoint) = &config.otlp_endpoint {
            let exporter = otlp::OtlpSink::new(endpoint, config.otlp_ca_file.as_deref())
                .map_err(SinkSetupError::Otlp)?;
            sinks.push(SinkQueue::start(
                exporter,
                config.sink_queue_len,
                metrics.clone(),
            ));
        }
        Ok(Self {
            log: config.log,
            metrics: Some(metrics),
            sinks: sinks.into(),
        })
    }

    /// Writes, counts and hands on one event. Never fails and never waits: an audit record
    /// does not hold up a login, and a sink that cannot keep up loses events (counted) rather
    /// than slowing anyone down.
    pub fn emit(&self, event: &AuditEvent<'_>, now: SystemTime) {
        if let Some(metrics) = &self.metrics {
            metrics.audit_event(event.kind());
        }
        if !self.log && self.sinks.is_empty() {
            return;
        }
        let record = event.record(now);
        if self.log {
            // The field set is fixed at the call site; `None` fields are simply not written.
            tracing::info!(
                target: AUDIT_TARGET,
                event = record.event,
                time = %record.time,
                method = record.method,
                virtual_proxy = %record.virtual_proxy,
                user_directory = record.user_directory.as_deref(),
                user_id = record.user_id.as_deref(),
                session = record.session.as_deref(),
                client_address = record.client_address.as_deref(),
                reason = record.reason.as_deref(),
                actor = record.actor.as_deref(),
            );
        }
        for sink in self.sinks.iter() {
            sink.offer(&record);
        }
    }
}

impl Audit {
    /// Gives the sinks until `within` from now to write what is queued (at shutdown, after the
    /// last call has been answered); what is left is lost to them, and said so. The log has
    /// every event either way.
    pub async fn flush(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        for sink in self.sinks.iter() {
            let left = sink.flush(deadline).await;
            if left > 0 {
                tracing::warn!(
                    sink = sink.name(),
                    events = left,
                    "audit events not delivered to the sink before shutdown; the log has them"
                );
            }
        }
    }
}

/// Why an audit sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    #[error("audit.redis_stream: {0}")]
    RedisStream(String),
    #[error("audit.otlp_endpoint: {0}")]
    Otlp(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::User;
    use std::time::Duration;

    fn session() -> Session {
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Session {
            handle: "h-1".to_owned(),
            virtual_proxy: "app".to_owned(),
            user: User::new("CORP", "alice", Vec::new()).expect("valid user"),
            created,
            last_active: created,
            inactivity_timeout: Duration::from_secs(60),
            absolute_expiry: created + Duration::from_secs(3600),
            client: ClientInfo::new("192.0.2.7", "agent"),
        }
    }

    #[test]
    fn a_login_names_method_proxy_user_client_and_handle() {
        let session = session();
        let record = AuditEvent::LoginSucceeded {
            method: Method::Ticket,
            session: &session,
        }
        .record(SystemTime::UNIX_EPOCH);
        assert_eq!(record.event, "login_succeeded");
        assert_eq!(record.time, "1970-01-01T00:00:00.000Z");
        assert_eq!(record.method, Some("ticket"));
        assert_eq!(record.virtual_proxy, "app");
        assert_eq!(record.user_directory.as_deref(), Some("CORP"));
        assert_eq!(record.user_id.as_deref(), Some("alice"));
        assert_eq!(record.session.as_deref(), Some("h-1"));
        assert_eq!(record.client_address.as_deref(), Some("192.0.2.7"));
        assert_eq!(record.actor, None);
    }

    #[test]
    fn actors_are_labelled_by_who_they_are() {
        assert_eq!(
            Actor::Admin("ops.example".into()).label(),
            "admin:ops.example"
        );
        assert_eq!(Actor::OwnUser.label(), "self");
        assert_eq!(Actor::Provider.label(), "provider");
        assert_eq!(Actor::Eviction.label(), "eviction");
        assert_eq!(AdminCall::new(None, Method::Rest).name, "no-tls");
    }

    #[test]
    fn reasons_are_bounded_on_a_character_boundary_and_hide_store_detail() {
        let long = "é".repeat(300);
        assert!(bounded(&long).len() <= MAX_REASON_LEN);
        let store = Error::Store(StoreError::Unavailable("redis://secret-host".into()));
        assert_eq!(failure_reason(&store), "session store unavailable");
    }
}
