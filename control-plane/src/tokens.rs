//! Secrets and identifiers: generation, hashing, and the check on caller-chosen tokens.
//!
//! Tokens and tickets are stored only as SHA-256 hashes. They are 128 to 256 uniformly random
//! bits, so a fast hash is enough: there is nothing to brute-force.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Characters allowed in a session token: those that survive a cookie value and a URL.
const TOKEN_ALPHABET_EXTRA: &str = "-_.~";
/// Shortest caller-chosen session token accepted.
pub const MIN_CALLER_TOKEN_LEN: usize = 32;
/// Longest caller-chosen session token accepted.
pub const MAX_CALLER_TOKEN_LEN: usize = 256;
/// Estimated entropy a caller-chosen token must carry. The estimate of a random UUID (122
/// random bits) is 109 to 130 bits (lowest of 300,000 seen: 109), so every one passes; short
/// alphabets and lopsided strings do not.
const MIN_CALLER_TOKEN_BITS: f64 = 96.0;

/// `bytes` random bytes from the thread's CSPRNG, URL-safe base64 without padding.
fn random_text(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// A new session token: 256 random bits.
pub fn new_session_token() -> String {
    random_text(32)
}

/// Length of a login ticket.
pub const TICKET_LEN: usize = 32;

/// A new login ticket: 32 letters and digits, 190 random bits. No punctuation: modules pass
/// tickets through URLs and some check their shape.
pub fn new_ticket() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(TICKET_LEN)
        .map(char::from)
        .collect()
}

/// A new random id in GUID form (a version 4 UUID: 122 random bits), as QPS's target ids and
/// anonymous user ids look; lowercase hex, `8-4-4-4-12`.
pub fn new_guid() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `id` as [`new_guid`] writes it when it is a GUID in any letter case (GUID parsers read
/// either case, and some write capitals back); any other text unchanged.
pub fn canonical_guid(id: &str) -> std::borrow::Cow<'_, str> {
    let groups = id.split('-');
    let is_guid = groups.clone().map(str::len).eq([8, 4, 4, 4, 12])
        && groups
            .flat_map(str::bytes)
            .all(|byte| byte.is_ascii_hexdigit());
    if is_guid && id.bytes().any(|byte| byte.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(id.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(id)
    }
}

/// A new id for a session handle: 128 random bits.
pub fn new_id() -> String {
    random_text(16)
}

/// SHA-256 of a secret, the only form in which a secret is stored.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// URL-safe text form, used in store keys.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only a prefix: enough to correlate in a debug print, not enough to look anything up.
        write!(f, "TokenHash({}…)", &self.to_text()[..8])
    }
}

/// Why a caller-chosen session token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "session_token must be {MIN_CALLER_TOKEN_LEN} to {MAX_CALLER_TOKEN_LEN} characters long"
    )]
    Length,
    #[error("session_token may only hold letters, digits and -_.~")]
    Alphabet,
    #[error("session_token is not random enough")]
    LowEntropy,
}

/// Accepts a caller-chosen token only if it is long, cookie-safe and looks random: it is a
/// bearer credential, and a guessable one would let anyone in.
pub fn check_caller_token(token: &str) -> Result<(), TokenError> {
    if !(MIN_CALLER_TOKEN_LEN..=MAX_CALLER_TOKEN_LEN).contains(&token.len()) {
        return Err(TokenError::Length);
    }
    if !token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || TOKEN_ALPHABET_EXTRA.contains(c))
    {
        return Err(TokenError::Alphabet);
    }
    let bytes = token.as_bytes();
    if estimated_entropy_bits(bytes) < MIN_CALLER_TOKEN_BITS
        || is_mostly_sequential(bytes)
        || is_repetitive(bytes)
    {
        return Err(TokenError::LowEntropy);
    }
    Ok(())
}

/// Length times the empirical Shannon entropy per character: a rough upper bound on the
/// randomness a string can carry, which catches repetition and tiny alphabets.
fn estimated_entropy_bits(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &byte in bytes {
        counts[usize::from(byte)] += 1;
    }
    let total = bytes.len() as f64;
    let per_char: f64 = counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / total;
            -p * p.log2()
        })
        .sum();
    per_char * total
}

/// "password1password1password1…": a short piece repeated, whatever the piece.
fn is_repetitive(bytes: &[u8]) -> bool {
    (1..=bytes.len() / 2).any(|period| {
        let compared = bytes.len() - period;
        let same = (0..compared)
            .filter(|&i| bytes[i] == bytes[i + period])
            .count();
        same * 10 >= compared * 9
    })
}

/// "abcdef…", "0123…", "zyxw…": distinct characters but no randomness.
fn is_mostly_sequential(bytes: &[u8]) -> bool {
    let steps = bytes
        .windows(2)
        .filter(|pair| pair[0].abs_diff(pair[1]) == 1)
        .count();
    steps * 2 > bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_letters_and_digits_and_ids_are_version_4_guids() {
        let tickets: std::collections::HashSet<String> = (0..100).map(|_| new_ticket()).collect();
        assert_eq!(tickets.len(), 100);
        for ticket in &tickets {
            assert_eq!(ticket.len(), TICKET_LEN);
            assert!(
                ticket.bytes().all(|byte| byte.is_ascii_alphanumeric()),
                "{ticket}"
            );
        }
        for _ in 0..100 {
            let guid = new_guid();
            let groups: Vec<&str> = guid.split('-').collect();
            assert_eq!(
                groups.iter().map(|group| group.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{guid}"
            );
            assert!(
                guid.bytes()
                    .all(|byte| byte == b'-' || byte.is_ascii_hexdigit())
            );
            assert!(guid.bytes().all(|byte| !byte.is_ascii_uppercase()));
            assert_eq!(&guid[14..15], "4", "version 4: {guid}");
            assert!(
                matches!(&guid[19..20], "8" | "9" | "a" | "b"),
                "variant: {guid}"
            );
        }
        assert_ne!(new_guid(), new_guid());
    }

    #[test]
    fn guids_in_capitals_read_as_the_guid_and_other_ids_stay_as_they_are() {
        let guid = new_guid();
        assert_eq!(canonical_guid(&guid.to_ascii_uppercase()), guid);
        assert_eq!(canonical_guid(&guid), guid);
        for other in [
            "kq3J2m0cN1R8dXvZ5yTQ4A",
            "0B0C2F41-6A55-4C1E-9A5D-3F4B7D8E9C1",
            "0B0C2F41-6A55-4C1E-9A5D-3F4B7D8E9C1G",
            "{0B0C2F41-6A55-4C1E-9A5D-3F4B7D8E9C10}",
            "",
        ] {
            assert_eq!(canonical_guid(other), other);
        }
    }

    #[test]
    fn generated_secrets_have_the_promised_size_and_alphabet() {
        assert_eq!(new_session_token().len(), 43);
        assert_eq!(new_ticket().len(), 32);
        assert_eq!(new_id().len(), 22);
        assert_ne!(new_session_token(), new_session_token());
        assert!(check_caller_token(&new_session_token()).is_ok());
        assert!(
            new_ticket()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn hashes_are_stable_and_do_not_show_the_secret() {
        assert_eq!(TokenHash::of("a"), TokenHash::of("a"));
        assert_ne!(TokenHash::of("a"), TokenHash::of("b"));
        assert!(!format!("{:?}", TokenHash::of("secret")).contains("secret"));
    }

    #[test]
    fn caller_tokens_must_be_long_safe_and_random() {
        assert_eq!(check_caller_token("short"), Err(TokenError::Length));
        assert_eq!(
            check_caller_token(&"a".repeat(300)),
            Err(TokenError::Length)
        );
        assert_eq!(
            check_caller_token(&"a".repeat(40)),
            Err(TokenError::LowEntropy)
        );
        assert_eq!(
            check_caller_token(&"ab".repeat(20)),
            Err(TokenError::LowEntropy)
        );
        assert_eq!(
            check_caller_token("abcdefghijklmnopqrstuvwxyz0123456789ABCD"),
            Err(TokenError::LowEntropy)
        );
        assert_eq!(
            check_caller_token(&format!("{};x", new_session_token())),
            Err(TokenError::Alphabet)
        );
        assert_eq!(
            check_caller_token("password1234password1234password1234"),
            Err(TokenError::LowEntropy)
        );
        // Random UUIDs, as portals commonly use for session ids, including the one with the
        // lowest entropy estimate seen in a large sample.
        assert!(check_caller_token("9b2f7c1e-4d8a-4e3b-a6f0-2c7d5e9a1b84").is_ok());
        assert!(check_caller_token("a2690a52-55c5-4bb9-94ac-992acfa92722").is_ok());
    }
}
