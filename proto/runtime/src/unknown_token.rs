//! The digest a node keeps a token by in its negative cache (tokens the control plane
//! answered unknown moments ago). One source for both planes: the control plane names a token
//! this way when it tells nodes, over `Watch`, that a session now exists for a token a client
//! may have sent before (a caller-chosen one), and a node must find the same entry.

use sha2::{Digest, Sha256};

/// SHA-256 of `virtual_proxy`, a zero byte and `token`: never the token itself.
pub fn digest(virtual_proxy: &str, token: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(virtual_proxy.as_bytes());
    // A byte no prefix holds: ("a", "bc") and ("ab", "c") stay apart.
    digest.update([0]);
    digest.update(token.as_bytes());
    digest.finalize().into()
}

/// [`digest`] as 64 lower-case hex digits, as it travels in a `Watch` event.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The digest written by [`hex`]; `None` for any other text.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0; 32];
    for (at, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(at * 2..at * 2 + 2)?, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hex_form_reads_back_and_nothing_else_does() {
        let key = digest("app", "token");
        assert_eq!(from_hex(&hex(&key)), Some(key));
        assert_eq!(hex(&key).len(), 64);
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"é".repeat(32)] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
        assert_ne!(digest("a", "bc"), digest("ab", "c"));
    }
}
