//! The control plane's vocabulary: users, sessions, tickets, targets and revocations. No I/O.

use std::time::{Duration, SystemTime};

use gatehouse_proto::user_name;
use serde::{Deserialize, Serialize};

/// Longest user directory or user id accepted, in bytes.
pub const MAX_USER_FIELD_LEN: usize = 256;
/// Most attributes one user may carry.
pub const MAX_ATTRIBUTES: usize = 256;
/// Longest attribute name or value accepted, in bytes.
pub const MAX_ATTRIBUTE_LEN: usize = 1024;
pub use gatehouse_proto::MAX_USER_AGENT_LEN;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    pub value: String,
}

/// A validated user: directory and id trimmed, not blank, no backslash, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub directory: String,
    pub id: String,
    pub attributes: Vec<Attribute>,
}

/// Why a user given by a client is not acceptable; shown to that client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("{0} must not be blank")]
    Blank(&'static str),
    #[error("{0} must not contain a backslash")]
    Backslash(&'static str),
    #[error("{0} must not contain control characters")]
    Control(&'static str),
    #[error("{0} must not contain invisible formatting characters")]
    Invisible(&'static str),
    #[error("{0} is longer than {MAX_USER_FIELD_LEN} bytes")]
    TooLong(&'static str),
    #[error("attribute names must not be blank")]
    BlankAttributeName,
    #[error(
        "attributes are limited to {MAX_ATTRIBUTES}, each name and value to {MAX_ATTRIBUTE_LEN} bytes"
    )]
    AttributesTooLarge,
}

impl User {
    /// Checks and normalises a user as QPS does: directory and id are trimmed.
    pub fn new(directory: &str, id: &str, attributes: Vec<Attribute>) -> Result<Self, UserError> {
        let directory = user_field("user_directory", directory)?;
        let id = user_field("user_id", id)?;
        if attributes.len() > MAX_ATTRIBUTES
            || attributes
                .iter()
                .any(|a| a.name.len() > MAX_ATTRIBUTE_LEN || a.value.len() > MAX_ATTRIBUTE_LEN)
        {
            return Err(UserError::AttributesTooLarge);
        }
        if attributes.iter().any(|a| a.name.trim().is_empty()) {
            return Err(UserError::BlankAttributeName);
        }
        Ok(Self {
            directory,
            id,
            attributes,
        })
    }

    /// The identity without attributes, for finding a user's sessions.
    pub fn key(&self) -> UserKey {
        UserKey {
            directory: self.directory.clone(),
            id: self.id.clone(),
        }
    }
}

/// Who a user is, without what they carry: the unit of "log this user out".
/// Directory and id compare case-insensitively, as user directories do in QPS.
#[derive(Debug, Clone, Eq)]
pub struct UserKey {
    pub directory: String,
    pub id: String,
}

impl UserKey {
    pub fn new(directory: &str, id: &str) -> Result<Self, UserError> {
        Ok(Self {
            directory: user_field("user_directory", directory)?,
            id: user_field("user_id", id)?,
        })
    }

    /// Case-folded form used to index sessions.
    pub fn normalized(&self) -> (String, String) {
        (user_name::fold(&self.directory), user_name::fold(&self.id))
    }

    pub fn matches(&self, user: &User) -> bool {
        self.normalized() == user.key().normalized()
    }
}

impl PartialEq for UserKey {
    fn eq(&self, other: &Self) -> bool {
        self.normalized() == other.normalized()
    }
}

fn user_field(field: &'static str, value: &str) -> Result<String, UserError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(UserError::Blank(field));
    }
    if value.contains('\\') {
        return Err(UserError::Backslash(field));
    }
    if value.chars().any(char::is_control) {
        return Err(UserError::Control(field));
    }
    if value.chars().any(gatehouse_proto::is_invisible_formatting) {
        return Err(UserError::Invisible(field));
    }
    if value.len() > MAX_USER_FIELD_LEN {
        return Err(UserError::TooLong(field));
    }
    Ok(value.to_owned())
}

/// What happens when a user already holds the maximum number of sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapPolicy {
    /// The new session is refused (`RESOURCE_EXHAUSTED`), as QPS does.
    #[default]
    Refuse,
    /// The user's oldest sessions are ended to make room.
    EvictOldest,
}

/// The session cap of one virtual proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCap {
    pub max_per_user: u32,
    pub policy: CapPolicy,
}

/// Where a login came from, as the node that ran it saw it, for its user to recognise the
/// session by ("where am I logged in"). Empty fields: nothing was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// An IP address in its canonical text form.
    pub address: String,
    pub user_agent: String,
}

impl ClientInfo {
    /// Bounds what a node reports: an address that is no IP address is dropped; the user
    /// agent loses its control and invisible formatting characters and is cut to [`MAX_USER_AGENT_LEN`] bytes on a
    /// character boundary. Never fails: a login does not depend on it.
    pub fn new(address: &str, user_agent: &str) -> Self {
        let address = address
            .trim()
            .parse::<std::net::IpAddr>()
            .map(|address| address.to_canonical().to_string())
            .unwrap_or_default();
        let user_agent: String = user_agent
            .trim()
            .chars()
            .filter(|c| !c.is_control() && !gatehouse_proto::is_invisible_formatting(*c))
            .collect();
        Self {
            address,
            user_agent: gatehouse_proto::cut_to_bytes(&user_agent, MAX_USER_AGENT_LEN).to_owned(),
        }
    }
}

/// A session as everyone but its holder sees it. The token is not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public name for listing and admin deletion; assigned by the store.
    pub handle: String,
    pub virtual_proxy: String,
    pub user: User,
    pub created: SystemTime,
    pub last_active: SystemTime,
    pub inactivity_timeout: Duration,
    pub absolute_expiry: SystemTime,
    /// Recorded at login.
    pub client: ClientInfo,
}

impl Session {
    /// When the session ends if nothing keeps it active.
    pub fn inactivity_expiry(&self) -> SystemTime {
        (self.last_active + self.inactivity_timeout).min(self.absolute_expiry)
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.inactivity_expiry()
    }

    /// The session after activity at `at` (activity never moves backwards).
    pub fn touched(&self, at: SystemTime) -> Self {
        Self {
            last_active: self.last_active.max(at),
            ..self.clone()
        }
    }
}

/// A session about to be stored: everything but the handle, plus the hash of its token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: crate::tokens::TokenHash,
    pub virtual_proxy: String,
    pub user: User,
    pub created: SystemTime,
    pub inactivity_timeout: Duration,
    pub absolute_expiry: SystemTime,
    pub client: ClientInfo,
}

/// The result of storing a new session.
// Made once per login and moved straight into the answer: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    Created {
        session: Session,
        /// Sessions ended to make room under [`CapPolicy::EvictOldest`].
        evicted: Vec<Session>,
    },
    /// The user is at the cap and the policy is [`CapPolicy::Refuse`].
    CapReached,
    /// A session with this token exists already (only possible for caller-chosen tokens).
    TokenInUse,
}

/// A one-time login ticket as stored (under the hash of the ticket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub virtual_proxy: String,
    pub user: User,
}

/// The URL a browser asked for before it was sent to log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub virtual_proxy: String,
    pub uri: String,
}

/// An OpenID Connect login in flight: the browser was sent to the identity provider and is
/// expected back at the callback with the state this record is stored under (hashed). The
/// PKCE verifier and the nonce are not here: they are derived from the state and the
/// browser's binding cookie, which the store never sees.
///
/// A SAML login in flight is the same record under the hash of its RelayState (with a prefix
/// of its own), `redirect_uri` holding the ACS URL; its AuthnRequest id is likewise derived
/// from the RelayState and the binding cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcLogin {
    pub virtual_proxy: String,
    /// Hash of the binding cookie's value: only the browser that started the login finishes it.
    pub binding_hash: String,
    /// The `redirect_uri` sent to the provider, which the token request must repeat.
    pub redirect_uri: String,
    /// Where the browser goes once logged in: a path on this virtual proxy.
    pub target: String,
}

/// What claiming a login in flight for one browser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginClaim {
    /// The login was this browser's: it is consumed and can be claimed no more.
    Taken(OidcLogin),
    /// The login exists but another browser started it; it is left in place.
    OtherBrowser,
    /// No such login (never made, expired, or used).
    Unknown,
}

/// Why a session ended, as told to data-plane nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// Deleted through the Session API.
    Deleted,
    /// Its user was logged out through the Session API.
    UserLoggedOut,
    /// Its holder logged out through the Personal API.
    Logout,
    /// Ended to make room under the evict-oldest cap policy.
    Evicted,
    /// The user logged out at the OpenID provider, which told us (back-channel logout).
    ProviderLogout,
    /// Not an end: a session now exists for a token a client may have sent before it did (one
    /// a trusted caller chose). The event's handle is the digest nodes keep such a token by
    /// in their negative cache (`flood.negative_ttl`), so that they forget it; a node that
    /// does not know the reason ends a session with that handle, and none has it.
    Created,
}

impl RevocationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::UserLoggedOut => "user-logged-out",
            Self::Logout => "logout",
            Self::Evicted => "evicted",
            Self::ProviderLogout => "provider-logout",
            Self::Created => "created",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Deleted,
            Self::UserLoggedOut,
            Self::Logout,
            Self::Evicted,
            Self::ProviderLogout,
            Self::Created,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }
}

/// One entry of the revocation stream every data-plane node follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Position in the stream; a node resumes after it.
    pub cursor: String,
    pub handle: String,
    pub virtual_proxy: String,
    pub reason: RevocationReason,
}

/// A key that seals session claims (see `crate::outage`), shared by every replica through
/// the store. Seals are made with the newest key whose `active_from` has passed, so a key
/// another replica just added is not used before every replica has read it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey {
    /// Random, names the key inside each seal.
    pub id: String,
    pub secret: [u8; 32],
    pub created: SystemTime,
    pub active_from: SystemTime,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("active_from", &self.active_from)
            .finish_non_exhaustive()
    }
}

/// A key that signs identity assertions (see `crate::assertion`), shared by every replica
/// through the store and pushed to nodes, which sign with it. Published from when it is
/// made; signs only from `active_from`, so verifiers have fetched it before they meet it.
#[derive(Clone, PartialEq, Eq)]
pub struct AssertionKey {
    /// The JWS `kid`: the rotation period it was made in, so replicas name it alike.
    pub id: String,
    /// The P-256 key pair, PKCS#8 v1.
    pub pkcs8: Vec<u8>,
    pub created: SystemTime,
    pub active_from: SystemTime,
}

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("active_from", &self.active_from)
            .finish_non_exhaustive()
    }
}

/// Revocations after a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocations {
    pub events: Vec<Revocation>,
    /// The cursor is older than what the stream still holds: events were missed, so a node
    /// must drop every session it cached.
    pub trimmed: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub sessions: Vec<Session>,
    /// Empty on the last page.
    pub next_page_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_fields_are_trimmed_and_checked() {
        let user = User::new("  CORP ", " alice\t", vec![]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (user.directory.as_str(), user.id.as_str()),
            ("CORP", "alice")
        );
        assert_eq!(
            User::new(" ", "a", vec![]),
            Err(UserError::Blank("user_directory"))
        );
        assert_eq!(
            User::new("d", "a\\b", vec![]),
            Err(UserError::Backslash("user_id"))
        );
        assert_eq!(
            User::new("d", &"x".repeat(300), vec![]),
            Err(UserError::TooLong("user_id"))
        );
        assert_eq!(
            User::new("d", "a\nb", vec![]),
            Err(UserError::Control("user_id"))
        );
        let blank_name = vec![Attribute {
            name: " ".into(),
            value: "v".into(),
        }];
        assert_eq!(
            User::new("d", "a", blank_name),
            Err(UserError::BlankAttributeName)
        );
    }

    #[test]
    fn names_that_display_as_other_names_are_refused() {
        // Right-to-left override, isolates and zero-width characters make a name shown in a
        // listing read as another one, or as no change at all.
        for disguised in [
            "alice\u{202E}",
            "\u{2066}bob\u{2069}",
            "kate\u{200B}",
            "\u{FEFF}eve",
            "kate\u{3164}",
            "kate\u{FE0F}",
        ] {
            assert_eq!(
                User::new("corp", disguised, vec![]),
                Err(UserError::Invisible("user_id")),
                "{disguised:?}"
            );
            assert_eq!(
                User::new(disguised, "a", vec![]),
                Err(UserError::Invisible("user_directory")),
                "{disguised:?}"
            );
        }
        assert!(User::new("corp", "Zoë Ørsted", vec![]).is_ok());
    }

    #[test]
    fn a_user_agent_keeps_no_invisible_formatting() {
        let client = ClientInfo::new("", "Firefox\u{202E}/1\u{200B}28 \u{2067}x\u{2069}");
        assert_eq!(client.user_agent, "Firefox/128 x");
        assert_eq!(
            ClientInfo::new("", "Mozilla/5.0 (é)").user_agent,
            "Mozilla/5.0 (é)"
        );
    }

    #[test]
    fn client_info_is_bounded() {
        let client = ClientInfo::new(" ::ffff:192.0.2.7 ", "Firefox\t/1\r\n");
        assert_eq!(client.address, "192.0.2.7");
        assert_eq!(client.user_agent, "Firefox/1");
        assert_eq!(ClientInfo::new("not-an-ip", "").address, "");
        // 255 bytes of ASCII, then a two-byte character that would end past the limit.
        let long = format!("{}é and more", "a".repeat(255));
        let cut = ClientInfo::new("2001:db8::1", &long);
        assert_eq!(cut.address, "2001:db8::1");
        assert_eq!(cut.user_agent, "a".repeat(255));
        assert!(ClientInfo::new("", &"é".repeat(300)).user_agent.len() <= MAX_USER_AGENT_LEN);
    }

    #[test]
    fn user_keys_compare_case_insensitively() {
        let user = User::new("Corp", "Alice", vec![]).unwrap_or_else(|e| panic!("{e}"));
        let key = UserKey::new("CORP", "alice").unwrap_or_else(|e| panic!("{e}"));
        assert!(key.matches(&user));
        assert_eq!(key, user.key());
        let umlaut = UserKey::new("corp", "ÄRGER").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            umlaut,
            UserKey::new("CORP", "ärger").unwrap_or_else(|e| panic!("{e}"))
        );
    }

    #[test]
    fn a_character_that_folds_into_ascii_names_another_user() {
        let kate = UserKey::new("corp", "kate").unwrap_or_else(|e| panic!("{e}"));
        for look_alike in ["\u{212A}ate", "\u{212A}ATE"] {
            let other = UserKey::new("corp", look_alike).unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(kate, other, "{look_alike}");
        }
        let dotted = UserKey::new("corp", "\u{130}van").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(
            dotted,
            UserKey::new("corp", "ivan").unwrap_or_else(|e| panic!("{e}"))
        );
        let directory = UserKey::new("\u{212A}ORP", "kate").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(directory, kate);
    }

    #[test]
    fn inactivity_expiry_slides_but_never_passes_the_absolute_expiry() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let session = Session {
            handle: "h".into(),
            virtual_proxy: String::new(),
            user: User::new("d", "u", vec![]).unwrap_or_else(|e| panic!("{e}")),
            created: start,
            last_active: start,
            inactivity_timeout: Duration::from_secs(60),
            absolute_expiry: start + Duration::from_secs(100),
            client: ClientInfo::default(),
        };
        assert_eq!(session.inactivity_expiry(), start + Duration::from_secs(60));
        let touched = session.touched(start + Duration::from_secs(50));
        assert_eq!(
            touched.inactivity_expiry(),
            start + Duration::from_secs(100)
        );
        assert!(!touched.is_expired(start + Duration::from_secs(99)));
        assert!(touched.is_expired(start + Duration::from_secs(100)));
        assert_eq!(touched.touched(start).last_active, touched.last_active);
    }
}
