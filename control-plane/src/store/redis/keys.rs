//! The Redis schema: every key the control plane writes, in one place.
//!
//! Keys of one user in one virtual proxy (their sessions and the index of them) share a hash
//! tag, so every multi-key script runs in one Redis Cluster slot. A session's public handle is
//! `<tag>.<id>`, which lets any replica find the slot from the handle alone.
//!
//! | key                              | type   | holds                                   | expires |
//! |----------------------------------|--------|-----------------------------------------|---------|
//! | `P:ticket:<hash of ticket>`      | hash   | `vp`, `rec` (JSON user)                 | ticket TTL |
//! | `P:target:<id>`                  | string | JSON target                             | target TTL |
//! | `P:jwt:<hash of session token>`  | string | `1`: this JWT's session was started     | the JWT's `exp` |
//! | `P:oidc:<hash of state>`         | string | JSON OpenID Connect login in flight     | login timeout |
//! | `P:link:<hash of subject>`       | set    | session handles of an OpenID subject or provider session | the longest session |
//! | `P:used:<hash of credential>`    | string | `1`: a one-time credential (Kerberos authenticator) was used | its lifetime |
//! | `P:token:<hash of token>`        | string | the session's handle                    | with the session |
//! | `P:{<tag>}:session:<id>`         | hash   | `vp user th created last idle abs`      | session's inactivity expiry |
//! | `P:{<tag>}:sessions`             | zset   | session ids scored by creation time     | latest absolute expiry |
//! | `P:revocations`                  | stream | `handle vp reason` per ended session    | trimmed to a length |
//!
//! With `audit.redis_stream` set, audit records are appended to the stream of that name (its
//! own key, e.g. `P:audit`), trimmed to about `audit.redis_stream_max_len` entries.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::domain::UserKey;
use crate::tokens::TokenHash;

/// Length of a user tag: 12 hash bytes in base64, 96 bits, so two users practically never
/// share an index.
const TAG_LEN: usize = 16;
/// Length of a session id: 16 random bytes in base64.
const ID_LEN: usize = 22;

#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

/// Where a session lives, parsed from its handle. Ordered by tag, then id: the order in which
/// a listing page returns the sessions of one SCAN batch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SessionAddress {
    pub tag: String,
    pub id: String,
}

impl SessionAddress {
    pub fn new(tag: String, id: String) -> Self {
        Self { tag, id }
    }

    /// `None` for anything that is not a handle this store issued: such a session is not found.
    pub fn from_handle(handle: &str) -> Option<Self> {
        let (tag, id) = handle.split_once('.')?;
        (tag.len() == TAG_LEN && id.len() == ID_LEN && is_base64url(tag) && is_base64url(id))
            .then(|| Self::new(tag.to_owned(), id.to_owned()))
    }

    pub fn handle(&self) -> String {
        format!("{}.{}", self.tag, self.id)
    }
}

fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The hash tag shared by one user's keys in one virtual proxy.
pub(super) fn user_tag(virtual_proxy: &str, user: &UserKey) -> String {
    let (directory, id) = user.normalized();
    let mut hasher = Sha256::new();
    for part in [virtual_proxy, &directory, &id] {
        // Length-prefixed, so ("a", "bc") and ("ab", "c") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12])
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn ticket(&self, hash: &TokenHash) -> String {
        format!("{}:ticket:{}", self.prefix, hash.to_text())
    }

    pub fn target(&self, id: &str) -> String {
        format!("{}:target:{id}", self.prefix)
    }

    pub fn oidc_login(&self, state_hash: &TokenHash) -> String {
        format!("{}:oidc:{}", self.prefix, state_hash.to_text())
    }

    pub fn used(&self, hash: &TokenHash) -> String {
        format!("{}:used:{}", self.prefix, hash.to_text())
    }

    pub fn link(&self, key: &TokenHash) -> String {
        format!("{}:link:{}", self.prefix, key.to_text())
    }

    pub fn jwt(&self, hash: &TokenHash) -> String {
        format!("{}:jwt:{}", self.prefix, hash.to_text())
    }

    pub fn token(&self, hash: &TokenHash) -> String {
        format!("{}:token:{}", self.prefix, hash.to_text())
    }

    pub fn token_from_text(&self, hash_text: &str) -> String {
        format!("{}:token:{hash_text}", self.prefix)
    }

    /// Key of a session; the script-side equivalent is `session_prefix(tag) .. id`.
    pub fn session(&self, address: &SessionAddress) -> String {
        format!("{}{}", self.session_prefix(&address.tag), address.id)
    }

    pub fn session_prefix(&self, tag: &str) -> String {
        format!("{}:{{{tag}}}:session:", self.prefix)
    }

    pub fn user_index(&self, tag: &str) -> String {
        format!("{}:{{{tag}}}:sessions", self.prefix)
    }

    /// One hash of every seal key: field = key id, value as `seal_keys` writes it.
    pub fn seal_keys(&self) -> String {
        format!("{}:seal-keys", self.prefix)
    }

    /// One hash of every assertion-signing key: field = key id, value as `assertion_keys`
    /// writes it.
    pub fn assertion_keys(&self) -> String {
        format!("{}:assertion-keys", self.prefix)
    }

    pub fn revocations(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    /// SCAN pattern matching every session key. The prefix is validated to hold no glob
    /// characters.
    pub fn session_pattern(&self) -> String {
        format!("{}:{{*}}:session:*", self.prefix)
    }

    /// The address of a session key found by SCAN.
    pub fn address_of(&self, key: &str) -> Option<SessionAddress> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (tag, id) = rest.split_once("}:session:")?;
        SessionAddress::from_handle(&format!("{tag}.{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_garbage_is_not_a_handle() {
        let keys = Keys::new("gh");
        let tag = user_tag(
            "",
            &UserKey::new("d", "u").unwrap_or_else(|e| panic!("{e}")),
        );
        let address = SessionAddress::new(tag.clone(), crate::tokens::new_id());
        assert_eq!(
            SessionAddress::from_handle(&address.handle()),
            Some(address.clone())
        );
        assert_eq!(keys.address_of(&keys.session(&address)), Some(address));
        for garbage in [
            "",
            ".",
            "x.y",
            "a*b{c}.d",
            &format!("{tag}.{}", "*".repeat(22)),
        ] {
            assert_eq!(SessionAddress::from_handle(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn one_user_shares_a_tag_across_case_but_not_across_proxies() {
        let alice = UserKey::new("Corp", "Alice").unwrap_or_else(|e| panic!("{e}"));
        let lower = UserKey::new("corp", "alice").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_tag("a", &alice), user_tag("a", &lower));
        assert_ne!(user_tag("a", &alice), user_tag("b", &alice));
        assert_eq!(user_tag("a", &alice).len(), TAG_LEN);
    }
}
