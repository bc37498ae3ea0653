//! Header authentication: a trusted front end names the user in a header. Accepted only from
//! the virtual proxy's trusted networks; from anywhere else the header is ignored.

use std::net::IpAddr;

use http::HeaderMap;

use crate::virtual_proxy::{HeaderAuthentication, HeaderUser};

/// The user a trusted header names, if the header is present and the peer trusted.
pub fn user(
    config: &HeaderAuthentication,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Option<(String, String)> {
    let value = headers.get(&config.header)?.to_str().ok()?.trim();
    if value.is_empty() {
        return None;
    }
    let peer = peer.to_canonical();
    if !config
        .trusted_networks
        .iter()
        .any(|network| network.contains(&peer))
    {
        tracing::debug!(%peer, header = %config.header, "identity header from an untrusted network ignored");
        return None;
    }
    match &config.user {
        HeaderUser::Static(directory) => Some((directory.clone(), value.to_owned())),
        HeaderUser::Pattern(pattern) => parse_pattern(pattern, value),
    }
}

/// Reads directory and id out of `value` laid out as `pattern` (`$ud` and `$id` placeholders,
/// anything else literal), e.g. `$ud\$id` on `CORP\alice`.
fn parse_pattern(pattern: &str, value: &str) -> Option<(String, String)> {
    let ud = pattern.find("$ud")?;
    let id = pattern.find("$id")?;
    let (first_at, second_at, first_is_dir) = if ud < id {
        (ud, id, true)
    } else {
        (id, ud, false)
    };
    let leading = &pattern[..first_at];
    let between = &pattern[first_at + 3..second_at];
    let trailing = &pattern[second_at + 3..];
    let rest = value.strip_prefix(leading)?.strip_suffix(trailing)?;
    // Without a separator the split is ambiguous.
    if between.is_empty() {
        return None;
    }
    let (first, second) = rest.split_once(between)?;
    if first.is_empty() || second.is_empty() {
        return None;
    }
    let (directory, id) = if first_is_dir {
        (first, second)
    } else {
        (second, first)
    };
    Some((directory.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn config(user: HeaderUser) -> HeaderAuthentication {
        HeaderAuthentication {
            header: HeaderName::from_static("x-remote-user"),
            user,
            trusted_networks: vec![
                "10.0.0.0/8".parse().unwrap(),
                "127.0.0.1/32".parse().unwrap(),
            ],
        }
    }

    fn headers(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn static_and_dynamic_users_are_read_from_trusted_peers_only() {
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        let fixed = config(HeaderUser::Static("CORP".into()));
        assert_eq!(
            user(&fixed, &headers("alice"), trusted),
            Some(("CORP".into(), "alice".into()))
        );
        assert_eq!(user(&fixed, &headers("alice"), untrusted), None);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(
            user(&fixed, &headers("alice"), mapped).is_some(),
            "IPv4-mapped peers match IPv4 networks"
        );

        let dynamic = config(HeaderUser::Pattern("$ud\\$id".into()));
        assert_eq!(
            user(&dynamic, &headers("CORP\\alice"), trusted),
            Some(("CORP".into(), "alice".into()))
        );
        assert_eq!(user(&dynamic, &headers("alice"), trusted), None);
        let reversed = config(HeaderUser::Pattern("$id@$ud".into()));
        assert_eq!(
            user(&reversed, &headers("alice@CORP"), trusted),
            Some(("CORP".into(), "alice".into()))
        );
    }
}
