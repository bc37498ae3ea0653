//! OpenID Connect login on a node: a browser without a session is sent to the provider with
//! a URL the control plane makes, and a binding cookie that ties the login to this browser.
//! The routes the browser and the provider come back to are the node's own endpoints
//! (`endpoints::oidc`); the control plane alone talks to the provider.

use gatehouse_proto::v1 as pb;
use http::HeaderValue;
use http::request::Parts;

use crate::auth::login::refused_by_control_plane;
use crate::auth::{cookie, query};
use crate::control::ControlError;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::state::NodeState;
use crate::virtual_proxy::{OidcAuthentication, VirtualProxy};

pub const LOGIN: &str = "/oidc/login";
pub const CALLBACK: &str = "/oidc/callback";
pub const BACKCHANNEL_LOGOUT: &str = "/oidc/backchannel-logout";
pub const LOGOUT: &str = "/oidc/logout";

/// A browser without a session: 302 to the provider, with the binding cookie that ties the
/// login to this browser. It comes back to the page it asked for.
pub async fn begin(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Refusal {
    let target = query::local_redirect(parts.uri.path(), parts.uri.query(), "forceAuthentication");
    begin_to(state, proxy, parts, origin, target).await
}

/// The sign-in URL of this virtual proxy, `/{prefix}/oidc/login?target=...`, coming back to
/// `target`; `None` unless `target` is on this site (see [`local_target`]).
pub fn login_uri(proxy: &VirtualProxy, origin: &Origin, target: &str) -> Option<String> {
    let target = local_target(proxy, target, origin)?;
    Some(origin.url(&format!(
        "{}{LOGIN}?target={}",
        proxy.path_prefix(),
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC)
    )))
}

/// `requested` as a path on this site: a path with one leading `/`, or an absolute URL on one
/// of the proxy's own origins (reduced to its path and query). Anything else (another host,
/// `//host`, `/\host`, another scheme) is `None`: no open redirect.
pub fn local_target(proxy: &VirtualProxy, requested: &str, origin: &Origin) -> Option<String> {
    let path = if requested.starts_with('/') {
        requested.to_owned()
    } else {
        if !crate::origin::is_on_own_origin(proxy, origin, requested) {
            return None;
        }
        let uri: http::Uri = requested.parse().ok()?;
        uri.path_and_query()?.as_str().to_owned()
    };
    let local = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.chars().any(char::is_control);
    local.then_some(path)
}

/// To the provider, coming back to `target` (a path on this site).
pub async fn begin_to(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    target: String,
) -> Refusal {
    let Some(oidc) = &proxy.oidc else {
        return Refusal::NotFound("not found".into());
    };
    let redirect_uri = origin.url(&format!("{}{CALLBACK}", proxy.path_prefix()));
    let request = pb::OidcBeginRequest {
        virtual_proxy: proxy.prefix.clone(),
        redirect_uri,
        target,
        binding: cookie::read(&parts.headers, oidc.binding_cookie(origin.secure))
            .unwrap_or_default()
            .to_owned(),
    };
    match state.control.oidc_begin(request).await {
        Ok(started) => {
            let max_age = started
                .login_timeout
                .and_then(|timeout| u64::try_from(timeout.seconds).ok())
                .unwrap_or(600);
            let binding = binding_cookie(proxy, oidc, &started.binding, max_age, origin.secure);
            Refusal::redirect(started.authorization_uri, binding)
        }
        Err(error) => refused(state, error),
    }
}

/// `Set-Cookie` for the binding cookie: SameSite=Lax always, since the browser comes back
/// from the provider's site with a top-level GET; no Domain, so it stays with this host;
/// over TLS a `__Host-` name, which browsers accept only from this host over HTTPS.
fn binding_cookie(
    proxy: &VirtualProxy,
    oidc: &OidcAuthentication,
    value: &str,
    max_age: u64,
    secure: bool,
) -> Option<HeaderValue> {
    let mut cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        oidc.binding_cookie(secure)
    );
    if oidc.binding_is_secure(secure) || proxy.cookie_host_prefix {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

/// What the browser (or provider) gets when the control plane says no or cannot answer:
/// its own short reason for a login it refused or a request it found malformed, else what
/// any other login would get.
pub fn refused(state: &NodeState, error: ControlError) -> Refusal {
    refused_by_control_plane(state, error, "oidc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_sites_paths_are_login_targets() {
        let origin = Origin::new(true, "gh.example.com").unwrap();
        let proxy = VirtualProxy::from_proto(&Default::default(), None).unwrap();
        let local = |requested: &str| local_target(&proxy, requested, &origin);
        assert_eq!(local("/app/hub?x=1").as_deref(), Some("/app/hub?x=1"));
        assert_eq!(
            local("https://gh.example.com/app/a?b=c").as_deref(),
            Some("/app/a?b=c")
        );
        assert_eq!(local("https://GH.example.com").as_deref(), Some("/"));
        for refused in [
            "https://evil.example.com/app/",
            "//evil.example.com/",
            "/\\evil.example.com/",
            "javascript:alert(1)",
            "app/hub",
            "/a\nb",
        ] {
            assert_eq!(local(refused), None, "{refused}");
        }
    }
}
