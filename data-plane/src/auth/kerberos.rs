//! Windows authentication (Kerberos / SPNEGO, RFC 4559). The node only reads the
//! `Authorization: Negotiate` header and asks for it; the token is checked by the control
//! plane, which alone holds the keytab. As in QPS, only clients whose User-Agent matches the
//! virtual proxy's pattern are asked; the others get the ticket flow.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderValue};

use crate::refusal::Refusal;
use crate::virtual_proxy::VirtualProxy;

/// Base64 of `NTLMSSP\0`, how every NTLM message starts.
const NTLM_PREFIX: &str = "TlRMTVNTUAA";

/// Longest `Authorization: Negotiate` value read (base64 of the control plane's limit).
const MAX_HEADER_LEN: usize = 88 * 1024;

/// What the client sent, for a virtual proxy with Windows authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// Not a client this method applies to (User-Agent): the usual flow.
    NotApplicable,
    /// A matching client without a Negotiate token: it gets the challenge.
    Absent,
    /// A decoded SPNEGO / Kerberos token.
    Token(Vec<u8>),
    /// An NTLM token, which Gatehouse does not accept.
    Ntlm,
    /// A Negotiate header that is not base64 or too long.
    Malformed,
}

/// Reads the request's `Authorization: Negotiate` token, if the method applies to it.
pub fn read(proxy: &VirtualProxy, headers: &HeaderMap) -> Negotiation {
    let Some(config) = &proxy.kerberos else {
        return Negotiation::NotApplicable;
    };
    if !config.applies_to(headers.get(USER_AGENT).map(HeaderValue::as_bytes)) {
        return Negotiation::NotApplicable;
    }
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Negotiation::Absent;
    };
    let Some(token) = negotiate_token(value.as_bytes()) else {
        // Basic, Bearer and the like are not for this method.
        return Negotiation::Absent;
    };
    if token.starts_with(NTLM_PREFIX) {
        return Negotiation::Ntlm;
    }
    if token.is_empty() || token.len() > MAX_HEADER_LEN {
        return Negotiation::Malformed;
    }
    match STANDARD.decode(token) {
        Ok(bytes) => Negotiation::Token(bytes),
        Err(_) => Negotiation::Malformed,
    }
}

/// The token of a `Negotiate <base64>` value (scheme matched case-insensitively).
fn negotiate_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("negotiate")
        .then(|| token.trim())
}

/// The `WWW-Authenticate: Negotiate <token>` that completes mutual authentication.
pub fn mutual_authentication(output_token: &[u8]) -> Option<HeaderValue> {
    if output_token.is_empty() {
        return None;
    }
    HeaderValue::from_str(&format!("Negotiate {}", STANDARD.encode(output_token))).ok()
}

/// 401 for an NTLM token: out of scope, and said so rather than challenged again (which
/// would loop).
pub fn ntlm_refused() -> Refusal {
    Refusal::unauthorized(
        "NTLM is not supported; Windows sign-in needs Kerberos (reach this site by a name that has a service principal)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtual_proxy::KerberosAuthentication;

    #[test]
    fn user_agent_rule_matches_case_insensitively() {
        let config = KerberosAuthentication {
            user_agent_pattern: "windows".into(),
        };
        assert!(config.applies_to(Some(b"Mozilla/5.0 (Windows NT 10.0; Win64; x64)")));
        assert!(!config.applies_to(Some(b"Mozilla/5.0 (X11; Linux x86_64)")));
        assert!(!config.applies_to(None));
        let everyone = KerberosAuthentication {
            user_agent_pattern: String::new(),
        };
        assert!(everyone.applies_to(None));
    }

    #[test]
    fn negotiate_tokens_are_read_whatever_their_case() {
        assert_eq!(negotiate_token(b"Negotiate YWJj"), Some("YWJj"));
        assert_eq!(negotiate_token(b"negotiate  YWJj "), Some("YWJj"));
        assert_eq!(negotiate_token(b"Bearer YWJj"), None);
        assert_eq!(negotiate_token(b"Negotiate"), None);
        assert_eq!(negotiate_token(&[0xff, b' ', b'a']), None);
    }
}
