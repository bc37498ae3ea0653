//! The session cookie: reading it from requests, setting and clearing it, and keeping it away
//! from upstreams.

use http::HeaderValue;
use http::header::{COOKIE, HeaderMap};

use crate::virtual_proxy::{SameSite, VirtualProxy};

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// `Set-Cookie` for a new session. HttpOnly always; Secure over TLS (and always for a
/// `__Host-` cookie); SameSite as configured, except that None needs Secure and falls back
/// to Lax over plain HTTP.
pub fn set(proxy: &VirtualProxy, token: &str, secure: bool) -> Option<HeaderValue> {
    set_cookie(proxy, &proxy.cookie_name, token, "", secure)
}

/// `Set-Cookie` for the session's seal, with the session cookie's attributes. `None` for an
/// empty seal (the control plane seals nothing).
pub fn set_seal(proxy: &VirtualProxy, seal: &str, secure: bool) -> Option<HeaderValue> {
    if seal.is_empty() {
        return None;
    }
    set_cookie(proxy, &proxy.seal_cookie_name, seal, "", secure)
}

/// `Set-Cookie` that removes the session cookie from the browser.
fn clear(proxy: &VirtualProxy, secure: bool) -> Option<HeaderValue> {
    set_cookie(proxy, &proxy.cookie_name, "", EXPIRED, secure)
}

/// `Set-Cookie` that removes the seal cookie from the browser.
fn clear_seal(proxy: &VirtualProxy, secure: bool) -> Option<HeaderValue> {
    set_cookie(proxy, &proxy.seal_cookie_name, "", EXPIRED, secure)
}

/// `Set-Cookie` values that remove the session and its seal from the browser (a logout).
pub fn clear_session(proxy: &VirtualProxy, secure: bool) -> impl Iterator<Item = HeaderValue> {
    [clear(proxy, secure), clear_seal(proxy, secure)]
        .into_iter()
        .flatten()
}

const EXPIRED: &str = "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

fn set_cookie(
    proxy: &VirtualProxy,
    name: &str,
    value: &str,
    lifetime: &str,
    secure: bool,
) -> Option<HeaderValue> {
    let same_site = match proxy.same_site {
        SameSite::Strict => "Strict",
        SameSite::None if secure => "None",
        SameSite::Lax | SameSite::None => "Lax",
    };
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}{lifetime}");
    if let Some(domain) = &proxy.cookie_domain {
        cookie.push_str("; Domain=");
        cookie.push_str(domain);
    }
    if secure || proxy.cookie_host_prefix {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

/// Removes the named cookies from the `Cookie` headers, keeping every other cookie: session
/// tokens are Gatehouse's, never the upstream's (any virtual proxy's: they all have Path=/).
/// Runs on every request: the kept cookies are copied once into one buffer.
pub fn strip(headers: &mut HeaderMap, names: &[String]) {
    let is_ours = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(cookie, _)| names.iter().any(|name| name == cookie.trim()))
    };
    let mut removed = false;
    let mut kept = String::new();
    for header in headers.get_all(COOKIE) {
        let Ok(header) = header.to_str() else {
            continue;
        };
        for pair in header.split(';').map(str::trim) {
            if is_ours(pair) {
                removed = true;
            } else if !pair.is_empty() {
                if kept.is_empty() {
                    kept.reserve(header.len());
                } else {
                    kept.push_str("; ");
                }
                kept.push_str(pair);
            }
        }
    }
    if !removed {
        return;
    }
    headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept))
    {
        headers.insert(COOKIE, value);
    }
}

/// Whether a `Set-Cookie` value sets one of the named cookies.
pub fn sets_any(set_cookie: &HeaderValue, names: &[String]) -> bool {
    set_cookie
        .to_str()
        .ok()
        .and_then(|value| value.split_once('='))
        .is_some_and(|(cookie, _)| {
            names
                .iter()
                .any(|name| name.eq_ignore_ascii_case(cookie.trim()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_read_and_stripped_without_touching_others() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; X-Qlik-Session=tok"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(read(&headers, "X-Qlik-Session"), Some("tok"));
        assert_eq!(read(&headers, "X-Qlik-Session-x"), None);
        strip(&mut headers, &["X-Qlik-Session".into()]);
        assert_eq!(headers.get(COOKIE).unwrap(), "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(
            COOKIE,
            HeaderValue::from_static("X-Qlik-Session=tok; X-Qlik-Session-hr=t2"),
        );
        strip(
            &mut only,
            &["X-Qlik-Session".into(), "X-Qlik-Session-hr".into()],
        );
        assert!(only.get(COOKIE).is_none());
        let planted = HeaderValue::from_static("x-qlik-session-hr=evil; Path=/");
        assert!(sets_any(&planted, &["X-Qlik-Session-hr".into()]));
        assert!(!sets_any(
            &HeaderValue::from_static("JSESSIONID=1"),
            &["X-Qlik-Session".into()]
        ));
    }
}
