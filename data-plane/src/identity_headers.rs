//! The identity headers an upstream gets: who the user is (`X-Qlik-User` and
//! `X-Qlik-Security`, or Gatehouse's generic `X-Gatehouse-*`), and which proxy sent the
//! request. Made per request from the cached session, with the headers that are the same for
//! every user of a virtual proxy made once when its snapshot arrives. Any front end that
//! passes a user on (the proxy, a forward-auth answer) writes them with [`inject`], the
//! signed assertion (`crate::assertion`) among them when the proxy sends one.

use gatehouse_proto::identity_headers as names;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::assertion::ProxyAssertion;
use crate::cache::CachedSession;

/// URL-encoding for identity values: everything but RFC 3986 unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

// The names are the contract's (`gatehouse_proto::identity_headers`), which the control
// plane checks header authentication against.
const X_QLIK_USER: HeaderName = HeaderName::from_static(names::QLIK_USER);
const X_QLIK_SECURITY: HeaderName = HeaderName::from_static(names::QLIK_SECURITY);
const X_QLIK_PROXYID: HeaderName = HeaderName::from_static(names::QLIK_PROXYID);
const X_QLIK_VIRTUAL_PROXY_PREFIX: HeaderName =
    HeaderName::from_static(names::QLIK_VIRTUAL_PROXY_PREFIX);
const X_GATEHOUSE_USER_DIRECTORY: HeaderName =
    HeaderName::from_static(names::GATEHOUSE_USER_DIRECTORY);
const X_GATEHOUSE_USER_ID: HeaderName = HeaderName::from_static(names::GATEHOUSE_USER_ID);
const X_GATEHOUSE_ATTRIBUTES: HeaderName = HeaderName::from_static(names::GATEHOUSE_ATTRIBUTES);
const X_GATEHOUSE_VIRTUAL_PROXY: HeaderName =
    HeaderName::from_static(names::GATEHOUSE_VIRTUAL_PROXY);

/// Whether `name` is an identity header of either preset: never accepted from a client.
pub fn is_identity_header(name: &str) -> bool {
    names::is_identity_header(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityPreset {
    Qlik,
    Generic,
}

/// A virtual proxy's identity headers: its preset, and the headers of it that do not depend
/// on the user, made once; and its signed assertion, if it sends one.
#[derive(Debug, Clone)]
pub struct ProxyIdentity {
    pub preset: IdentityPreset,
    fixed: Vec<(HeaderName, HeaderValue)>,
    pub assertion: Option<ProxyAssertion>,
}

impl ProxyIdentity {
    pub fn new(preset: IdentityPreset, proxy_id: &str, prefix: &str) -> Self {
        Self {
            preset,
            fixed: fixed_headers(preset, proxy_id, prefix),
            assertion: None,
        }
    }

    /// The header the proxy's assertion travels in, when it sends one: never taken from a
    /// client (the default name is among the identity headers, stripped for every proxy).
    pub fn assertion_header(&self) -> Option<&HeaderName> {
        self.assertion.as_ref().map(|assertion| &assertion.header)
    }
}

/// The user's identity headers. Those that are the same for every user of the proxy were
/// made with the proxy; the user's own are written straight into one buffer each (no
/// intermediate strings), which is cheap enough not to be worth keeping per session: a
/// per-session copy would double the memory a cached session takes.
pub fn inject(
    headers: &mut HeaderMap,
    identity: &ProxyIdentity,
    session: &CachedSession,
    secure: bool,
) {
    for (name, value) in &identity.fixed {
        headers.insert(name.clone(), value.clone());
    }
    let attributes = |out: &mut String| {
        for (index, (name, value)) in session.attributes.iter().enumerate() {
            if index > 0 {
                out.push_str("; ");
            }
            encode_into(out, name);
            out.push('=');
            encode_into(out, value);
        }
    };
    match identity.preset {
        IdentityPreset::Qlik => {
            insert_built(headers, X_QLIK_USER, |out| {
                out.push_str("UserDirectory=");
                encode_into(out, &session.user_directory);
                out.push_str("; UserId=");
                encode_into(out, &session.user_id);
            });
            let fixed = if secure {
                "SecureRequest=true; Context=AppAccess"
            } else {
                "SecureRequest=false; Context=AppAccess"
            };
            // Without attributes (anonymous users, most directories) the value is one of two
            // fixed ones: nothing to build, copy or check.
            if session.attributes.is_empty() {
                headers.insert(X_QLIK_SECURITY, HeaderValue::from_static(fixed));
            } else {
                insert_built(headers, X_QLIK_SECURITY, |out| {
                    out.push_str(fixed);
                    out.push_str("; ");
                    attributes(out);
                });
            }
        }
        IdentityPreset::Generic => {
            insert_built(headers, X_GATEHOUSE_USER_DIRECTORY, |out| {
                encode_into(out, &session.user_directory);
            });
            insert_built(headers, X_GATEHOUSE_USER_ID, |out| {
                encode_into(out, &session.user_id);
            });
            insert_built(headers, X_GATEHOUSE_ATTRIBUTES, |out| attributes(out));
        }
    }
    if let Some(assertion) = &identity.assertion
        && let Some(value) = assertion.value_for(session)
    {
        headers.insert(assertion.header.clone(), value);
    }
}

/// The identity headers that do not depend on the user.
fn fixed_headers(
    preset: IdentityPreset,
    proxy_id: &str,
    prefix: &str,
) -> Vec<(HeaderName, HeaderValue)> {
    let headers = match preset {
        IdentityPreset::Qlik => vec![
            (
                X_QLIK_PROXYID,
                format!("ProxyId={proxy_id}; Prefix={prefix}"),
            ),
            (X_QLIK_VIRTUAL_PROXY_PREFIX, prefix.to_owned()),
        ],
        IdentityPreset::Generic => vec![(X_GATEHOUSE_VIRTUAL_PROXY, prefix.to_owned())],
    };
    headers
        .into_iter()
        .filter_map(|(name, value)| {
            // Configuration the control plane validated; a value that is not a valid header
            // would only be left out, never panic.
            Some((name, HeaderValue::from_str(&value).ok()?))
        })
        .collect()
}

/// Builds a header value in one buffer and inserts it. Every piece is percent-encoded or a
/// fixed ASCII string, so the value is always valid; if not, the header is left out.
pub(crate) fn insert_built(
    headers: &mut HeaderMap,
    name: HeaderName,
    build: impl FnOnce(&mut String),
) {
    // Room for a user with a long id (`UserDirectory=...; UserId=...` of an anonymous user
    // is over 70 bytes) without growing the buffer on the way.
    let mut value = String::with_capacity(128);
    build(&mut value);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(name, value);
    }
}

fn encode_into(out: &mut String, value: &str) {
    // Most directories and ids are unreserved characters only: copied whole, not read out
    // of the encoder piece by piece (which was 2 % of a forward-auth check).
    if value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~'))
    {
        out.push_str(value);
        return;
    }
    for piece in utf8_percent_encode(value, ENCODE) {
        out.push_str(piece);
    }
}

/// Reads `X-Qlik-User` (`UserDirectory=<dir>; UserId=<id>`, URL-encoded, with or without the
/// space) back into directory and id: what an upstream does with it.
pub fn parse_qlik_user(value: &str) -> Option<(String, String)> {
    let mut directory = None;
    let mut id = None;
    for part in value.split(';') {
        let (key, encoded) = part.trim().split_once('=')?;
        let decoded = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .ok()?
            .into_owned();
        match key {
            "UserDirectory" => directory = Some(decoded),
            "UserId" => id = Some(decoded),
            _ => return None,
        }
    }
    Some((directory?, id?))
}
