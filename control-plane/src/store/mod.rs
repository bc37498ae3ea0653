//! Where sessions, tickets, targets, revocations, seal keys and assertion keys live: one
//! trait per aggregate ([`OneTimeRecords`], [`Sessions`], [`RevocationLog`], [`SealKeys`],
//! [`AssertionKeys`]), gathered by
//! [`Store`], and two implementations.
//!
//! [`RedisStore`] is the production store, shared by every control-plane replica.
//! [`MemoryStore`] keeps everything in the process, for a single replica (the all-in-one
//! local run). Both pass the same conformance suite (`tests/src/store_conformance.rs`).

mod memory;
mod redis;

use std::time::{Duration, SystemTime};

/// Most revocation events one read returns.
pub const REVOCATION_BATCH: usize = 1000;

/// Longest a blocking read of the revocation stream waits: a longer wait is cut to this.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

use async_trait::async_trait;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisAuditStream, RedisStore};
use crate::domain::{
    AssertionKey, CreateOutcome, LoginClaim, NewSession, OidcLogin, Page, RevocationReason,
    Revocations, SealKey, Session, SessionCap, Target, Ticket, UserKey,
};
pub use crate::error::StoreError;
use crate::tokens::TokenHash;

/// Largest page a listing returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Storage of all control-plane state: every aggregate, and a health check. Callers hold an
/// `Arc<dyn Store>`; the methods of all three aggregates are callable on it without importing
/// their traits.
#[async_trait]
pub trait Store:
    OneTimeRecords
    + Sessions
    + RevocationLog
    + SealKeys
    + AssertionKeys
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// Succeeds when the store can serve requests.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Records that live for a short TTL and are used once or looked up by hash: tickets, login
/// targets, remembered JWTs, used one-time credentials and OpenID Connect logins in flight.
#[async_trait]
pub trait OneTimeRecords: Send + Sync {
    /// Stores a ticket under the hash of its text, for `ttl`.
    async fn put_ticket(
        &self,
        hash: &TokenHash,
        ticket: &Ticket,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Consumes the ticket if it exists, has not expired and belongs to `virtual_proxy`.
    /// Atomic: of concurrent calls for one ticket, at most one gets it. A ticket presented at
    /// the wrong virtual proxy is left in place.
    async fn take_ticket(
        &self,
        hash: &TokenHash,
        virtual_proxy: &str,
    ) -> Result<Option<Ticket>, StoreError>;

    async fn put_target(&self, id: &str, target: &Target, ttl: Duration) -> Result<(), StoreError>;

    async fn get_target(&self, id: &str) -> Result<Option<Target>, StoreError>;

    /// Remembers a hash for `ttl`. For a JWT whose session was started, so the token cannot
    /// start another one once that session has ended (deleted by an admin, logged out, timed
    /// out); for an OpenID logout token, so it works once.
    async fn remember_jwt(&self, hash: &TokenHash, ttl: Duration) -> Result<(), StoreError>;

    /// Whether [`remember_jwt`](Self::remember_jwt) recorded this hash and it has not expired.
    async fn jwt_remembered(&self, hash: &TokenHash) -> Result<bool, StoreError>;

    /// Records that a one-time credential (a Kerberos authenticator) was used, for `ttl`;
    /// `false` when it was recorded already. Atomic: of concurrent calls for one hash,
    /// exactly one gets `true`, whichever replica makes it.
    async fn first_use(&self, hash: &TokenHash, ttl: Duration) -> Result<bool, StoreError>;

    /// Stores an OpenID Connect login in flight under the hash of its `state`, for `ttl`
    /// (a SAML login too, under the hash of its RelayState).
    async fn put_oidc_login(
        &self,
        state_hash: &TokenHash,
        login: &OidcLogin,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Consumes the login stored under this state hash. Atomic: of concurrent calls for one
    /// state, at most one gets it, so a callback URL works once.
    async fn take_oidc_login(
        &self,
        state_hash: &TokenHash,
    ) -> Result<Option<OidcLogin>, StoreError>;

    /// Consumes the login stored under this state hash only for the browser that started
    /// it: the one whose binding cookie hashes to `binding_hash`. For any other caller the
    /// login stays in place, so whoever learns a state (from a log, a `Referer`) cannot
    /// spend the browser's login by posting junk with it. Atomic: the comparison and the
    /// removal are one step, and of concurrent claims by the right browser at most one
    /// gets the login.
    async fn claim_login(
        &self,
        state_hash: &TokenHash,
        binding_hash: &str,
    ) -> Result<LoginClaim, StoreError>;
}

/// Sessions: created under the per-user cap, found by token or handle, touched, listed and
/// ended, and the links from an OpenID provider's subject or session to them. Every method
/// that deletes a session also appends a revocation event for it, so data-plane nodes can
/// drop it.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Adds a session handle to the set under `key` (an OpenID provider's subject or session
    /// id, or a SAML NameID and SessionIndex, hashed), kept for `ttl` after the last
    /// addition, so a back-channel or single logout naming that subject or session finds the
    /// Gatehouse sessions to end. SAML logins also keep, under a key naming the session's
    /// handle, one member that is the JSON of the identity provider's subject (what our
    /// LogoutRequest names): any short text is a member.
    async fn link_session(
        &self,
        key: &TokenHash,
        handle: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The handles [`link_session`](Self::link_session) recorded under `key` (some may name
    /// sessions that have ended since).
    async fn linked_sessions(&self, key: &TokenHash) -> Result<Vec<String>, StoreError>;

    /// Stores a session, enforcing the per-user cap of its virtual proxy atomically.
    async fn create_session(
        &self,
        new: NewSession,
        cap: SessionCap,
    ) -> Result<CreateOutcome, StoreError>;

    /// The live session whose token has this hash.
    async fn session_by_token(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError>;

    async fn session_by_handle(&self, handle: &str) -> Result<Option<Session>, StoreError>;

    /// Records activity at `at`, sliding the inactivity expiry (never past the absolute one).
    async fn touch_session(
        &self,
        handle: &str,
        at: SystemTime,
    ) -> Result<Option<Session>, StoreError>;

    /// Deletes a session and returns it.
    async fn delete_session(
        &self,
        handle: &str,
        reason: RevocationReason,
    ) -> Result<Option<Session>, StoreError>;

    /// The user's live sessions in one virtual proxy, oldest first.
    async fn user_sessions(
        &self,
        virtual_proxy: &str,
        user: &UserKey,
    ) -> Result<Vec<Session>, StoreError>;

    /// Deletes the user's sessions in one virtual proxy and returns them.
    async fn delete_user_sessions(
        &self,
        virtual_proxy: &str,
        user: &UserKey,
        reason: RevocationReason,
    ) -> Result<Vec<Session>, StoreError>;

    /// One page of all live sessions, optionally of one virtual proxy. `page_size` is at most
    /// [`MAX_PAGE_SIZE`]. A page may hold fewer sessions than asked even when more follow.
    async fn list_sessions(
        &self,
        virtual_proxy: Option<&str>,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page, StoreError>;
}

/// The log of ended sessions that data-plane nodes follow to drop what they cached.
#[async_trait]
pub trait RevocationLog: Send + Sync {
    /// Revocation events after `cursor` (from the oldest retained one when `None`), at most
    /// `limit` of them.
    async fn revocations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Revocations, StoreError>;

    /// Appends a [`RevocationReason::Created`] event: a session of `virtual_proxy` now exists
    /// for the token whose negative-cache digest is `digest` (hex).
    async fn announce_created(&self, virtual_proxy: &str, digest: &str) -> Result<(), StoreError>;

    /// Cursor of the newest revocation event (`None` while there has been none): where a node
    /// that has just cached nothing starts following.
    async fn revocation_head(&self) -> Result<Option<String>, StoreError>;

    /// As [`revocations_after`](Self::revocations_after), but when nothing follows the
    /// cursor, waits up to `wait` (at most [`MAX_BLOCK`]) for an event instead of answering
    /// empty at once.
    async fn wait_for_revocations(
        &self,
        cursor: Option<&str>,
        wait: Duration,
    ) -> Result<Revocations, StoreError>;
}

/// The keys that seal session claims, shared by every replica (see `crate::outage`).
#[async_trait]
pub trait SealKeys: Send + Sync {
    /// Every key held, in no particular order.
    async fn seal_keys(&self) -> Result<Vec<SealKey>, StoreError>;

    /// Adds a key; one with the same id is left as it is.
    async fn add_seal_key(&self, key: &SealKey) -> Result<(), StoreError>;

    /// Removes a key; removing one that is not there is not an error.
    async fn remove_seal_key(&self, id: &str) -> Result<(), StoreError>;
}

/// The keys that sign identity assertions, shared by every replica (see `crate::assertion`).
#[async_trait]
pub trait AssertionKeys: Send + Sync {
    /// Every key held, in no particular order.
    async fn assertion_keys(&self) -> Result<Vec<AssertionKey>, StoreError>;

    /// Adds a key; one with the same id is left as it is.
    async fn add_assertion_key(&self, key: &AssertionKey) -> Result<(), StoreError>;

    /// Removes a key; removing one that is not there is not an error.
    async fn remove_assertion_key(&self, id: &str) -> Result<(), StoreError>;
}
