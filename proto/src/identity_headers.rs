//! The headers that carry a user's identity upstream. The data plane sets them on every
//! forwarded request and strips any a client sent; the control plane refuses them as the
//! header of header authentication (a client can never supply them). Both planes must agree
//! on the one list, so it lives here beside the contract rather than in either plane.

/// `IdentityPreset::Qlik`: the user (`UserDirectory=…; UserId=…`).
pub const QLIK_USER: &str = "x-qlik-user";
/// `IdentityPreset::Qlik`: whether the request came over TLS, and the user's attributes.
pub const QLIK_SECURITY: &str = "x-qlik-security";
/// The virtual proxy's configured proxy id.
pub const QLIK_PROXYID: &str = "x-qlik-proxyid";
/// `IdentityPreset::Qlik`: the virtual proxy's prefix.
pub const QLIK_VIRTUAL_PROXY_PREFIX: &str = "x-qlik-virtual-proxy-prefix";
/// `IdentityPreset::Generic`: the user's directory.
pub const GATEHOUSE_USER_DIRECTORY: &str = "x-gatehouse-user-directory";
/// `IdentityPreset::Generic`: the user's id.
pub const GATEHOUSE_USER_ID: &str = "x-gatehouse-user-id";
/// `IdentityPreset::Generic`: the user's attributes.
pub const GATEHOUSE_ATTRIBUTES: &str = "x-gatehouse-attributes";
/// `IdentityPreset::Generic`: the virtual proxy's prefix.
pub const GATEHOUSE_VIRTUAL_PROXY: &str = "x-gatehouse-virtual-proxy";

/// The signed identity assertion's default header (a virtual proxy may name another, which
/// the data plane strips for that proxy too).
pub const GATEHOUSE_ASSERTION: &str = "x-gatehouse-assertion";

/// Identity headers of both presets and the assertion's default header, lowercase: never
/// accepted from a client, whether or not a virtual proxy sends an assertion.
pub const ALL: [&str; 9] = [
    QLIK_USER,
    QLIK_SECURITY,
    QLIK_PROXYID,
    QLIK_VIRTUAL_PROXY_PREFIX,
    GATEHOUSE_USER_DIRECTORY,
    GATEHOUSE_USER_ID,
    GATEHOUSE_ATTRIBUTES,
    GATEHOUSE_VIRTUAL_PROXY,
    GATEHOUSE_ASSERTION,
];

/// Whether `name` (lowercase, as `http::HeaderName` spells it) is an identity header.
pub fn is_identity_header(name: &str) -> bool {
    ALL.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_header_is_a_distinct_lowercase_header_name() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert!(seen.insert(name), "{name} is listed twice");
        }
    }

    #[test]
    fn both_presets_are_recognised_and_other_headers_are_not() {
        for name in ALL {
            assert!(is_identity_header(name), "{name}");
        }
        assert!(ALL.iter().any(|name| name.starts_with("x-qlik-")));
        assert!(ALL.iter().any(|name| name.starts_with("x-gatehouse-")));
        for other in [
            "x-qlik-session",
            "authorization",
            "X-Qlik-User",
            "x-forwarded-for",
        ] {
            assert!(!is_identity_header(other), "{other}");
        }
    }
}
