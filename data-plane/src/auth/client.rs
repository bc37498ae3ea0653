//! What a login records of the client it came from, for its user to recognise the session by
//! ("where am I logged in"): the client's address past the node's trusted proxies, and the
//! User-Agent, bounded.

use std::net::{IpAddr, SocketAddr};

use gatehouse_proto::v1 as pb;
use http::HeaderMap;
use http::header::{HeaderName, USER_AGENT};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client of a login whose request came from `peer` with `headers`.
pub fn login_client(
    trusted: &[ipnet::IpNet],
    headers: &HeaderMap,
    peer: SocketAddr,
) -> pb::ClientInfo {
    let user_agent = headers
        .get(USER_AGENT)
        .map(|value| String::from_utf8_lossy(value.as_bytes()))
        .unwrap_or_default();
    pb::ClientInfo {
        address: address(trusted, headers, peer.ip()).to_string(),
        user_agent: gatehouse_proto::cut_to_bytes(&user_agent, gatehouse_proto::MAX_USER_AGENT_LEN)
            .to_owned(),
    }
}

/// The client's address: the peer, unless it is a trusted proxy; then the `X-Forwarded-For`
/// entries from the right, each appended by the hop after it, up to the first one that is
/// not a trusted proxy itself (nginx's `real_ip_recursive`). An entry that is no address ends
/// the walk at the last hop that could be believed.
pub fn address(trusted: &[ipnet::IpNet], headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|network| network.contains(address));
    let mut address = peer.to_canonical();
    let entries = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&byte| byte == b','));
    for entry in entries {
        if !is_trusted(&address) {
            break;
        }
        let Some(named) = std::str::from_utf8(entry)
            .ok()
            .and_then(|entry| entry.trim().parse::<IpAddr>().ok())
        else {
            break;
        };
        address = named.to_canonical();
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    fn peer(address: &str) -> SocketAddr {
        SocketAddr::new(address.parse().unwrap(), 40_000)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.9")]);
        let client = login_client(&[], &forwarded, peer("192.0.2.1"));
        assert_eq!(client.address, "192.0.2.1");
    }

    #[test]
    fn trusted_proxies_are_walked_past_from_the_right() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let forwarded = headers(&[
            ("x-forwarded-for", "203.0.113.5, 198.51.100.9"),
            ("x-forwarded-for", "10.0.0.7"),
        ]);
        let client = login_client(&trusted, &forwarded, peer("10.0.0.2"));
        // 10.0.0.7 is a trusted proxy too; 198.51.100.9 is the first hop that is not, so
        // whatever it claims (203.0.113.5) is not believed.
        assert_eq!(client.address, "198.51.100.9");
        let garbled = headers(&[("x-forwarded-for", "203.0.113.5, not-an-address")]);
        let client = login_client(&trusted, &garbled, peer("::ffff:10.0.0.2"));
        assert_eq!(client.address, "10.0.0.2");
    }

    #[test]
    fn the_user_agent_is_cut_on_a_character_boundary() {
        let long = format!("{}é", "a".repeat(255));
        let client = login_client(&[], &headers(&[("user-agent", &long)]), peer("192.0.2.1"));
        assert_eq!(client.user_agent, "a".repeat(255));
        let none = login_client(&[], &HeaderMap::new(), peer("192.0.2.1"));
        assert_eq!(none.user_agent, "");
    }
}
