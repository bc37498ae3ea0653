//! Windows authentication: the `Authorization: Negotiate` header a node reads and the
//! principal name the control plane splits into user and realm.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_control_plane::kerberos::split_principal;
use gatehouse_data_plane::auth::kerberos::{self, Negotiation};
use gatehouse_data_plane::virtual_proxy::VirtualProxy;
use gatehouse_proto::v1 as pb;
use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderValue};

use super::{text, two};

/// How every NTLM message starts, in base64 (`NTLMSSP\0`).
const NTLM_PREFIX: &str = "TlRMTVNTUAA";

fn windows_proxy() -> VirtualProxy {
    VirtualProxy::from_proto(
        &pb::VirtualProxy {
            prefix: "app".into(),
            kerberos_authentication: Some(pb::KerberosAuthentication {
                user_agent_pattern: "Windows".into(),
            }),
            ..Default::default()
        },
        None,
    )
    .expect("fixed virtual proxy")
}

/// The token of a `Negotiate` value, read apart from the node's own reader to check it.
fn negotiate_token(value: &[u8]) -> Option<&str> {
    let (scheme, token) = std::str::from_utf8(value).ok()?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("negotiate")
        .then_some(token.trim())
}

/// The `Negotiate` header (`negotiate`): a `User-Agent` value, then an `Authorization`
/// value. Only clients whose User-Agent holds the pattern are read; a token taken is the
/// header's base64, decoded exactly (it encodes back to what was sent); NTLM is told apart;
/// and the `WWW-Authenticate` answer to a token reads back as that token.
pub fn negotiate_header(data: &[u8]) {
    let (user_agent, authorization) = two(data);
    let mut headers = HeaderMap::new();
    if !user_agent.is_empty() {
        let Ok(value) = HeaderValue::from_str(&user_agent) else {
            return;
        };
        headers.insert(USER_AGENT, value);
    }
    let authorization = match HeaderValue::from_bytes(authorization.as_bytes()) {
        Ok(value) if !authorization.is_empty() => Some(value),
        Ok(_) => None,
        Err(_) => return,
    };
    if let Some(value) = &authorization {
        headers.insert(AUTHORIZATION, value.clone());
    }
    let proxy = windows_proxy();
    let read = kerberos::read(&proxy, &headers);
    let applies = user_agent.to_ascii_lowercase().contains("windows");
    assert_eq!(
        read == Negotiation::NotApplicable,
        !applies,
        "{user_agent:?}"
    );
    let sent = authorization
        .as_ref()
        .and_then(|value| negotiate_token(value.as_bytes()));
    match &read {
        Negotiation::NotApplicable => {}
        Negotiation::Absent => assert!(sent.is_none(), "{sent:?}"),
        Negotiation::Ntlm => assert!(sent.is_some_and(|token| token.starts_with(NTLM_PREFIX))),
        Negotiation::Malformed => {
            let token = sent.expect("a malformed token was sent");
            assert!(token.is_empty() || STANDARD.decode(token).is_err() || token.len() > 88 * 1024);
        }
        Negotiation::Token(bytes) => {
            let token = sent.expect("a token was sent");
            assert!(!bytes.is_empty());
            assert_eq!(STANDARD.encode(bytes), token);
            let answer = kerberos::mutual_authentication(bytes).expect("a token has an answer");
            let mut again = HeaderMap::new();
            again.insert(USER_AGENT, HeaderValue::from_static("Windows"));
            again.insert(AUTHORIZATION, answer);
            assert_eq!(kerberos::read(&proxy, &again), read);
        }
    }
}

/// The principal split (`kerberos_principal`): `user@REALM` is cut at its last `@` that no
/// backslash escapes, and the parts put together again are the principal.
pub fn principal(data: &[u8]) {
    let principal = text(data);
    let unescaped_at = |text: &str| {
        text.char_indices()
            .any(|(at, c)| c == '@' && !text[..at].ends_with('\\'))
    };
    match split_principal(&principal) {
        Some((user, realm)) => {
            assert!(!user.is_empty() && !realm.is_empty());
            assert_eq!(format!("{user}@{realm}"), principal);
            assert!(!unescaped_at(realm), "{principal:?}");
        }
        None => {
            let splittable = principal
                .char_indices()
                .rfind(|&(at, c)| c == '@' && !principal[..at].ends_with('\\'))
                .is_some_and(|(at, _)| at > 0 && at + 1 < principal.len());
            assert!(!splittable, "{principal:?}");
        }
    }
}
