//! Public paths behind real ingresses (nginx `auth_request`, Caddy `forward_auth`) running
//! the example configurations (the `qlik` preset's headers): the check is allowed with no
//! identity, so the upstream gets none, never the client's forged copy, whether or not the
//! browser has a session.

use super::Authorizers;
use super::endpoint::PUBLIC_PATHS;
use crate::harness::client::get;
use crate::harness::ingress::Ingress;

/// Forged identity headers of the `qlik` preset.
const FORGED: [(&str, &str); 4] = [
    ("x-qlik-user", "UserDirectory=CORP; UserId=root"),
    ("x-qlik-security", "SecureRequest=true; group=admins"),
    ("x-qlik-proxyid", "ProxyId=admin"),
    ("x-qlik-virtual-proxy-prefix", "admin"),
];

/// A public path through `ingress`, with and without alice's session: served, with no
/// identity header reaching the upstream. Caddy before 2.10 sets a header its answer lacks
/// to the unexpanded placeholder (`{http.reverse_proxy.header.X-Qlik-User}`), which names
/// nobody; that is the only value allowed besides none.
async fn served_with_no_identity(authorizers: &Authorizers, ingress: &Ingress) {
    let cookie = authorizers.alice_session().await;
    let with_session: Vec<(&str, &str)> = FORGED
        .iter()
        .copied()
        .chain([("cookie", cookie.as_str())])
        .collect();
    for headers in [&FORGED[..], &with_session[..]] {
        let response = get(&ingress.url("/app/static/a.css"), headers).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let seen = response.json();
        let identity: Vec<&String> = seen["headers"]
            .as_object()
            .map(|headers| {
                headers
                    .iter()
                    .filter(|(name, value)| {
                        name.starts_with("x-qlik-")
                            && !value
                                .as_str()
                                .is_some_and(|value| value.starts_with("{http.reverse_proxy."))
                    })
                    .map(|(name, _)| name)
                    .collect()
            })
            .unwrap_or_default();
        assert!(identity.is_empty(), "the upstream saw {identity:?}: {seen}");
    }
    let private = get(&ingress.url("/app/hub"), &FORGED).await;
    assert_ne!(
        private.status, 200,
        "off the public path, a login is needed"
    );
}

#[tokio::test]
async fn a_public_path_through_nginx_reaches_the_upstream_with_no_identity() {
    let authorizers = Authorizers::start_with(&PUBLIC_PATHS).await;
    let Some(ingress) = authorizers.nginx_in_front_of_one().await else {
        return;
    };
    served_with_no_identity(&authorizers, &ingress).await;
}

#[tokio::test]
async fn a_public_path_through_caddy_reaches_the_upstream_with_no_identity() {
    let authorizers = Authorizers::start_with(&PUBLIC_PATHS).await;
    let Some(ingress) = authorizers.caddy_in_front_of_one().await else {
        return;
    };
    served_with_no_identity(&authorizers, &ingress).await;
}
