//! Sealed session claims: what a node needs to serve a session (its handle, user, virtual
//! proxy, lifetimes and when it was last seen valid), encrypted and authenticated with
//! AES-256-GCM under a key only control-plane replicas hold. The additional data binds a seal
//! to the SHA-256 of its session token and to its virtual proxy: a seal is worthless without
//! the cookie it was made for, and a copy cannot be moved to another session or proxy.
//!
//! Text form: `base64url(version ‖ key id ‖ nonce ‖ ciphertext ‖ tag)`, cookie-safe.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest as _, Sha256};

use crate::domain::{Attribute, ClientInfo, SealKey, Session, User};

const VERSION: u8 = 1;
/// Bytes of a key id inside a seal (ids are 16 hex digits).
const KEY_ID_LEN: usize = 8;
/// Longest seal made or accepted. A seal rides on every request beside the session cookie,
/// one per virtual proxy, through upstreams' header limits (8 KB is common): a user whose
/// claims do not fit gets no seal rather than requests refused with 431.
pub const MAX_SEAL_LEN: usize = 1200;

/// The claims inside a seal.
#[derive(Clone, PartialEq, prost::Message)]
struct Claims {
    #[prost(string, tag = "1")]
    handle: String,
    #[prost(string, tag = "2")]
    virtual_proxy: String,
    #[prost(string, tag = "3")]
    user_directory: String,
    #[prost(string, tag = "4")]
    user_id: String,
    #[prost(message, repeated, tag = "5")]
    attributes: Vec<ClaimedAttribute>,
    #[prost(uint64, tag = "6")]
    created_ms: u64,
    #[prost(uint64, tag = "7")]
    absolute_expiry_ms: u64,
    #[prost(uint64, tag = "8")]
    inactivity_timeout_ms: u64,
    /// When the session was last seen valid in the store: the seal was made then.
    #[prost(uint64, tag = "9")]
    valid_at_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClaimedAttribute {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// What an opened seal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub session: Session,
    /// When the store last said the session was valid.
    pub valid_at: SystemTime,
}

/// One usable key, as ring wants it.
struct RingKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
    active_from: SystemTime,
}

/// The keys a replica seals and opens with.
#[derive(Default)]
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// A key id in text (as the store names it) as the bytes inside a seal.
pub fn key_id_bytes(id: &str) -> Option<[u8; KEY_ID_LEN]> {
    if id.len() != KEY_ID_LEN * 2 {
        return None;
    }
    let mut bytes = [0; KEY_ID_LEN];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(id.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

impl KeyRing {
    /// The ring of `keys`; keys with a malformed id are left out.
    pub fn new(keys: &[SealKey]) -> Self {
        let mut keys: Vec<RingKey> = keys
            .iter()
            .filter_map(|key| {
                Some(RingKey {
                    id: key_id_bytes(&key.id)?,
                    key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.secret).ok()?),
                    active_from: key.active_from,
                })
            })
            .collect();
        // Newest first: the first active key seals.
        keys.sort_by_key(|key| std::cmp::Reverse(key.active_from));
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `session` for the holder of `token`, as valid in the store at `now`. `None` when
    /// no key is active yet.
    pub fn seal(&self, token: &str, session: &Session, now: SystemTime) -> Option<String> {
        let key = self.keys.iter().find(|key| key.active_from <= now)?;
        let claims = Claims {
            handle: session.handle.clone(),
            virtual_proxy: session.virtual_proxy.clone(),
            user_directory: session.user.directory.clone(),
            user_id: session.user.id.clone(),
            attributes: session
                .user
                .attributes
                .iter()
                .map(|attribute| ClaimedAttribute {
                    name: attribute.name.clone(),
                    value: attribute.value.clone(),
                })
                .collect(),
            created_ms: unix_millis(session.created),
            absolute_expiry_ms: unix_millis(session.absolute_expiry),
            inactivity_timeout_ms: u64::try_from(session.inactivity_timeout.as_millis())
                .unwrap_or(u64::MAX),
            valid_at_ms: unix_millis(now),
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let mut sealed = claims.encode_to_vec();
        let aad = additional_data(token, &session.virtual_proxy);
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed,
            )
            .ok()?;
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        let text = URL_SAFE_NO_PAD.encode(out);
        (text.len() <= MAX_SEAL_LEN).then_some(text)
    }

    /// The claims of a seal made for `token` at `virtual_proxy`, if it is authentic.
    pub fn open(&self, token: &str, virtual_proxy: &str, text: &str) -> Option<Sealed> {
        if text.len() > MAX_SEAL_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || rest.len() < KEY_ID_LEN + NONCE_LEN {
            return None;
        }
        let (id, rest) = rest.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|key| key.id == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let aad = additional_data(token, virtual_proxy);
        let mut sealed = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(&aad), &mut sealed)
            .ok()?;
        let claims = Claims::decode(&*plain).ok()?;
        if claims.virtual_proxy != virtual_proxy {
            return None;
        }
        let valid_at = from_millis(claims.valid_at_ms)?;
        let created = from_millis(claims.created_ms)?;
        let absolute_expiry = from_millis(claims.absolute_expiry_ms)?;
        let inactivity_timeout = Duration::from_millis(claims.inactivity_timeout_ms);
        // Sums a check makes later must not overflow.
        valid_at.checked_add(inactivity_timeout)?;
        Some(Sealed {
            session: Session {
                handle: claims.handle,
                virtual_proxy: claims.virtual_proxy,
                user: User {
                    directory: claims.user_directory,
                    id: claims.user_id,
                    attributes: claims
                        .attributes
                        .into_iter()
                        .map(|attribute| Attribute {
                            name: attribute.name,
                            value: attribute.value,
                        })
                        .collect(),
                },
                created,
                last_active: valid_at,
                inactivity_timeout,
                absolute_expiry,
                // A seal carries what access needs, not where the login came from.
                client: ClientInfo::default(),
            },
            valid_at,
        })
    }

    /// When the seal in `text` was made (without opening it), to tell whether it is due for
    /// renewal; `None` for anything this ring did not make.
    pub fn sealed_at(&self, token: &str, virtual_proxy: &str, text: &str) -> Option<SystemTime> {
        self.open(token, virtual_proxy, text)
            .map(|sealed| sealed.valid_at)
    }
}

/// Binds a seal to its session token (by hash) and virtual proxy.
fn additional_data(token: &str, virtual_proxy: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48 + virtual_proxy.len());
    aad.extend_from_slice(b"gatehouse-seal-v1\0");
    aad.extend_from_slice(&Sha256::digest(token.as_bytes()));
    aad.extend_from_slice(virtual_proxy.as_bytes());
    aad
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `None` past what the system's time can hold.
fn from_millis(millis: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: u8, active_from: SystemTime) -> SealKey {
        SealKey {
            id: id.into(),
            secret: [secret; 32],
            created: active_from,
            active_from,
        }
    }

    fn session() -> Session {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Session {
            handle: "h1".into(),
            virtual_proxy: "sales".into(),
            user: User {
                directory: "CORP".into(),
                id: "alice".into(),
                attributes: vec![Attribute {
                    name: "group".into(),
                    value: "finance".into(),
                }],
            },
            created: at,
            last_active: at,
            inactivity_timeout: Duration::from_secs(1800),
            absolute_expiry: at + Duration::from_secs(8 * 3600),
            client: ClientInfo::default(),
        }
    }

    #[test]
    fn a_seal_opens_only_with_its_token_proxy_and_key() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        let ring = KeyRing::new(&[key("00000000000000aa", 1, now)]);
        let seal = ring.seal("token-1", &session(), now).unwrap();
        let opened = ring.open("token-1", "sales", &seal).unwrap();
        assert_eq!(Some(opened.valid_at), from_millis(unix_millis(now)));
        assert_eq!(opened.session.user, session().user);
        assert_eq!(opened.session.absolute_expiry, session().absolute_expiry);
        assert_eq!(opened.session.inactivity_timeout, Duration::from_secs(1800));
        assert_eq!(ring.open("token-2", "sales", &seal), None);
        assert_eq!(ring.open("token-1", "", &seal), None);
        let other = KeyRing::new(&[key("00000000000000aa", 2, now)]);
        assert_eq!(other.open("token-1", "sales", &seal), None);
        let mut tampered = URL_SAFE_NO_PAD.decode(&seal).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            ring.open("token-1", "sales", &URL_SAFE_NO_PAD.encode(tampered)),
            None
        );
        for garbage in ["", "AA", "!!!", &"A".repeat(MAX_SEAL_LEN + 1)] {
            assert_eq!(ring.open("token-1", "sales", garbage), None);
        }
    }

    #[test]
    fn the_newest_active_key_seals_and_older_keys_still_open() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        let old = key("0000000000000001", 1, now - Duration::from_secs(60));
        let ring = KeyRing::new(std::slice::from_ref(&old));
        let sealed_with_old = ring.seal("t", &session(), now).unwrap();
        let pending = key("0000000000000002", 2, now + Duration::from_secs(60));
        let ring = KeyRing::new(&[old.clone(), pending.clone()]);
        let still_old = ring.seal("t", &session(), now).unwrap();
        assert_eq!(
            KeyRing::new(&[old])
                .open("t", "sales", &still_old)
                .map(|sealed| sealed.session.handle),
            Some("h1".into()),
            "a key not active yet must not seal"
        );
        let later = now + Duration::from_secs(120);
        let sealed_with_new = ring.seal("t", &session(), later).unwrap();
        assert!(
            KeyRing::new(&[pending])
                .open("t", "sales", &sealed_with_new)
                .is_some()
        );
        assert!(ring.open("t", "sales", &sealed_with_old).is_some());
        assert!(KeyRing::default().seal("t", &session(), now).is_none());
    }

    #[test]
    fn key_ids_are_sixteen_hex_digits() {
        assert_eq!(
            key_id_bytes("0102030405060708"),
            Some([1, 2, 3, 4, 5, 6, 7, 8])
        );
        for bad in ["", "01", "010203040506070g", "01020304050607080"] {
            assert_eq!(key_id_bytes(bad), None);
        }
    }
}
