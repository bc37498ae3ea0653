//! The signed identity assertion: a short-lived ES256 JWT naming the user, sent upstream
//! (and in forward-auth answers) beside the identity headers, so that an upstream can check
//! who is asking instead of trusting the network. The control plane makes and rotates the
//! keys and pushes them in every snapshot (`keys`); the node signs, and keeps each signed
//! assertion on the session's cache entry until close to its expiry (`assertion_slot`), so a
//! cached request pays one atomic load and a header clone, not a signature.

mod keys;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_proto::v1 as pb;
use http::{HeaderName, HeaderValue};

pub use self::keys::{JWKS_PATH, KeySet, jwks_response};
use crate::assertion_slot::SignedAssertion;
use crate::cache::CachedSession;

/// Tells apart the settings (and keys) an assertion was signed under: each proxy built from
/// a snapshot gets a new one, so a cached assertion never outlives its audience or its key.
static GENERATION: AtomicU64 = AtomicU64::new(1);
/// The last generation that found no key to sign with, and said so.
static WARNED: AtomicU64 = AtomicU64::new(0);

/// A virtual proxy's assertion settings, with the keys of the snapshot they came in.
#[derive(Debug, Clone)]
pub struct ProxyAssertion {
    pub header: HeaderName,
    audience: String,
    issuer: String,
    lifetime: Duration,
    prefix: String,
    keys: Arc<KeySet>,
    generation: u64,
}

impl ProxyAssertion {
    pub fn from_proto(proto: &pb::IdentityAssertion, prefix: &str) -> Result<Self, String> {
        let header = HeaderName::from_bytes(proto.header.as_bytes())
            .map_err(|_| format!("bad assertion header {:?}", proto.header))?;
        let lifetime = proto
            .lifetime
            .and_then(|lifetime| Duration::try_from(lifetime).ok())
            .filter(|lifetime| *lifetime >= Duration::from_secs(1))
            .unwrap_or(Duration::from_secs(120));
        Ok(Self {
            header,
            audience: proto.audience.clone(),
            issuer: proto.issuer.clone(),
            lifetime,
            prefix: prefix.to_owned(),
            keys: Arc::new(KeySet::default()),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Signs with `keys` from now on (the snapshot's).
    pub fn use_keys(&mut self, keys: Arc<KeySet>) {
        self.keys = keys;
        self.generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    /// The session's assertion: the cached one while it has a quarter of its life left and
    /// was signed under these settings, else a new one. `None` when no key signs yet.
    pub fn value_for(&self, session: &CachedSession) -> Option<HeaderValue> {
        let now = SystemTime::now();
        if let Some(value) = session.assertion.current(self.generation, now) {
            return Some(value);
        }
        let signed = self.sign(session, now)?;
        let value = signed.value.clone();
        session.assertion.store(signed);
        Some(value)
    }

    fn sign(&self, session: &CachedSession, now: SystemTime) -> Option<SignedAssertion> {
        let Some((key, next)) = self.keys.signing_at(now) else {
            // Once per snapshot, not once per request.
            if WARNED.swap(self.generation, Ordering::Relaxed) != self.generation {
                tracing::warn!(
                    virtual_proxy = %self.prefix,
                    "no assertion key signs yet: requests go upstream without an assertion"
                );
            }
            return None;
        };
        let issued = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let expires = issued + self.lifetime.as_secs().max(1);
        let mut attributes = serde_json::Map::new();
        for (name, value) in &session.attributes {
            if let serde_json::Value::Array(values) = attributes
                .entry(name.clone())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()))
            {
                values.push(value.clone().into());
            }
        }
        let claims = serde_json::json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": session.user_id,
            "user_directory": session.user_directory,
            "attributes": attributes,
            "sid": session.handle,
            "virtual_proxy": self.prefix,
            // No `nbf`: an upstream whose clock is a second behind would refuse a fresh one.
            "iat": issued,
            "exp": expires,
        });
        let token = key.sign(&URL_SAFE_NO_PAD.encode(claims.to_string()))?;
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(token)).ok()?;
        // Re-signed when a quarter of its life is left, so an upstream always receives one
        // with time to spare, and at once when the next key takes over.
        let mut refresh_at = now + self.lifetime - self.lifetime / 4;
        if let Some(next) = next {
            refresh_at = refresh_at.min(next);
        }
        Some(SignedAssertion {
            generation: self.generation,
            refresh_at,
            value,
        })
    }
}

#[cfg(test)]
mod tests;
