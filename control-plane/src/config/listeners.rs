//! Where the control plane listens: the QPS-compatible REST surface's settings, and the rule
//! that no two of its listeners share a port. Two listeners on one port would otherwise fail
//! at start with an OS error that names neither setting; the usual way in is `rest.listen`
//! put on 4243, where QPS serves REST and gRPC listens by default.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// The QPS-compatible REST surface (`/qps/{prefix}/ticket` and friends). It uses the gRPC
/// server's `[tls]` material and admits only `tls.roles.admin` certificates.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Address of the REST server.
    pub listen: SocketAddr,
    /// The REST surface's address as authentication modules reach it (e.g.
    /// `https://gatehouse-cp.example.com:4244/`), sent to nodes for `proxyRestUri`. Without
    /// it, the bound address is used.
    pub public_url: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileRestConfig {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
}

/// The REST surface follows the gRPC port's rule: plaintext only on loopback.
pub(super) fn validate_rest(
    rest: &FileRestConfig,
    tls: bool,
) -> Result<Option<RestConfig>, ConfigError> {
    let invalid = |message: String| Err(ConfigError::Invalid(message));
    let Some(listen) = rest.listen else {
        if rest.public_url.is_some() {
            return invalid("rest.public_url needs rest.listen".to_owned());
        }
        return Ok(None);
    };
    if !tls && !listen.ip().is_loopback() {
        return invalid(format!(
            "TLS is required for the REST surface on {listen} (configure [tls], or listen on a loopback address for development)"
        ));
    }
    let public_url = match &rest.public_url {
        Some(url) => {
            let parsed: http::Uri = url
                .parse()
                .map_err(|_| ConfigError::Invalid("rest.public_url is not a URL".to_owned()))?;
            let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
            if !scheme_ok || parsed.host().is_none_or(str::is_empty) || parsed.query().is_some() {
                return invalid(
                    "rest.public_url must be an absolute http or https URL without a query"
                        .to_owned(),
                );
            }
            Some(url.clone())
        }
        // Nodes would send modules `https://0.0.0.0:4243/qps/...` as proxyRestUri.
        None if listen.ip().is_unspecified() => {
            return invalid(format!(
                "rest.public_url is required with rest.listen = \"{listen}\": it is the address authentication modules are sent to as proxyRestUri"
            ));
        }
        None => None,
    };
    Ok(Some(RestConfig { listen, public_url }))
}

/// Refuses two listeners (named by their keys) that would claim the same port. Port 0 asks
/// the system for a free port, so it never clashes.
pub(super) fn distinct_ports(listeners: &[(&'static str, SocketAddr)]) -> Result<(), ConfigError> {
    for (index, (first, first_address)) in listeners.iter().enumerate() {
        for (second, second_address) in &listeners[index + 1..] {
            if !overlap(*first_address, *second_address) {
                continue;
            }
            // Serving REST where QPS modules expect it is the usual way into this.
            let hint = if [*first, *second] == ["listen", "rest.listen"] {
                " (to serve REST on this port, move gRPC: listen = \"0.0.0.0:4250\", and point the nodes' control_plane.endpoints there)"
            } else {
                ""
            };
            return Err(ConfigError::Invalid(format!(
                "{first} ({first_address}) and {second} ({second_address}) cannot share port {port}: give each its own{hint}",
                port = first_address.port(),
            )));
        }
    }
    Ok(())
}

/// Whether binding both would fail: the same port on the same address, or on any address
/// when one of them is the wildcard (`0.0.0.0` or `[::]`, which also takes IPv4 on Linux).
fn overlap(first: SocketAddr, second: SocketAddr) -> bool {
    first.port() != 0
        && first.port() == second.port()
        && (first.ip() == second.ip()
            || first.ip().is_unspecified()
            || second.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn rest(listen: &str, public_url: Option<&str>) -> FileRestConfig {
        FileRestConfig {
            listen: Some(at(listen)),
            public_url: public_url.map(str::to_owned),
        }
    }

    #[test]
    fn a_rest_surface_on_every_address_needs_the_address_modules_reach() {
        for wildcard in ["0.0.0.0:4243", "[::]:4243"] {
            let Err(ConfigError::Invalid(message)) = validate_rest(&rest(wildcard, None), true)
            else {
                panic!("{wildcard} without public_url accepted");
            };
            assert!(
                message.contains("rest.public_url is required") && message.contains(wildcard),
                "{message}"
            );
            let url = "https://gatehouse.example.com:4243";
            let config = validate_rest(&rest(wildcard, Some(url)), true)
                .unwrap()
                .unwrap();
            assert_eq!(config.public_url.as_deref(), Some(url));
        }
        // A named address is one modules can be sent to.
        let config = validate_rest(&rest("10.0.0.1:4243", None), true)
            .unwrap()
            .unwrap();
        assert_eq!(config.public_url, None);
    }

    #[test]
    fn listeners_on_one_port_are_refused_with_both_keys_named() {
        for (grpc, rest) in [
            ("127.0.0.1:4243", "0.0.0.0:4243"),
            ("0.0.0.0:4243", "0.0.0.0:4243"),
            ("10.0.0.1:4243", "10.0.0.1:4243"),
            ("[::]:4243", "127.0.0.1:4243"),
        ] {
            let Err(ConfigError::Invalid(message)) =
                distinct_ports(&[("listen", at(grpc)), ("rest.listen", at(rest))])
            else {
                panic!("{grpc} and {rest} accepted");
            };
            assert!(
                message.contains("listen (")
                    && message.contains("rest.listen (")
                    && message.contains("port 4243")
                    && message.contains("move gRPC"),
                "{message}"
            );
        }
        let Err(ConfigError::Invalid(message)) = distinct_ports(&[
            ("listen", at("127.0.0.1:4243")),
            ("admin_listen", at("127.0.0.1:9902")),
            ("health_listen", at("0.0.0.0:9902")),
        ]) else {
            panic!("admin and health ports on one port accepted");
        };
        assert!(
            message.starts_with("admin_listen (127.0.0.1:9902) and health_listen"),
            "{message}"
        );
        assert!(!message.contains("move gRPC"), "{message}");
    }

    #[test]
    fn distinct_ports_addresses_and_ephemeral_ports_pass() {
        for (grpc, rest) in [
            ("0.0.0.0:4250", "0.0.0.0:4243"),
            ("127.0.0.1:4243", "10.0.0.1:4243"),
            ("127.0.0.1:4243", "[::1]:4243"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            assert!(
                distinct_ports(&[("listen", at(grpc)), ("rest.listen", at(rest))]).is_ok(),
                "{grpc} and {rest}"
            );
        }
    }
}
