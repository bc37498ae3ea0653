//! The small syntax checks configuration validation shares.

/// RFC 9110 token.
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

pub(super) fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// `host` or `host:port`, with an IPv6 literal in brackets.
pub(super) fn is_host_and_port(text: &str) -> bool {
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    is_host_name(host) && port.is_none_or(|port| port.parse::<u16>().is_ok())
}

pub(super) fn is_absolute_http_uri(uri: &str) -> bool {
    uri.parse::<tonic::codegen::http::Uri>()
        .is_ok_and(|parsed| {
            matches!(parsed.scheme_str(), Some("http" | "https"))
                && parsed.host().is_some_and(|h| !h.is_empty())
        })
}
