//! OpenID Connect login (authorization code with PKCE) through a node, against a real
//! certified provider (panva's oidc-provider, see `harness::oidc_provider`). A browser without
//! a session is sent to the provider, signs in there, and comes back to the node's callback,
//! which ends in a normal session (user from the provider's `sub`, attributes from its
//! userinfo). Every way a callback can be wrong (unknown or replayed state, another browser, a
//! used code, a refusal at the provider, missing parameters) ends with no session. The
//! provider's back-channel logout ends the session and its WebSockets; a forged logout token
//! does nothing; logging out at the node ends the session and sends the browser to the
//! provider's end-session endpoint. Behind a load balancer, a login started on one node
//! finishes on another (the state is in Redis), and a logout token arriving at one node
//! closes WebSockets on the others. The OpenID login, a refused callback and the back-channel
//! logout are audit events (read from the Redis stream of them).

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_proto::v1 as pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::browser::fixtures::{
    AppProxy, COOKIE, PROPAGATION, open_socket, qlik_user, seen_header, with_cookie,
};
use crate::harness::audit::{self, stream_entries};
use crate::harness::client::{self, HttpResponse, encode, expect_close, query_param};
use crate::harness::eventually::eventually;
use crate::harness::oidc_provider::{OidcProvider, accounts, web_client};
use crate::harness::redis_server::free_port;
use crate::harness::web_browser::WebBrowser;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer};

const CLIENT_ID: &str = "gatehouse-app";
const CLIENT_SECRET: &str = "gatehouse-app-secret-0123456789abcdef0123";
/// The cookie that ties a login in progress to the browser that started it.
const BINDING: &str = "X-Qlik-Session-app-oidc";
/// The user directory of every user the provider signs in.
const DIRECTORY: &str = "IDP";
const SCOPES: [&str; 4] = ["openid", "profile", "email", "groups"];
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A provider, virtual proxy "app" signing in with it, and one node.
struct Site {
    provider: OidcProvider,
    upstream: EchoUpstream,
    control_plane: ControlPlane,
    node: DataPlaneNode,
    /// The sessions' store, for a site that audits to a stream.
    redis: Option<RedisServer>,
    _dir: TempDir,
}

/// The stream an audited site appends its audit events to.
const AUDIT_STREAM: &str = "gatehouse:audit";

/// `[virtual_proxies.oidc]` of "app".
fn oidc_table(issuer: &str, secret_file: &Path, node_port: u16) -> String {
    format!(
        "[virtual_proxies.oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = {:?}\nscopes = {SCOPES:?}\nuser_directory = \"{DIRECTORY}\"\n\
         attributes = {{ Email = \"email\" }}\ngroups_claim = \"groups\"\n\
         authorization_params = {{ ui_locales = \"en\" }}\n\
         post_logout_redirect_uri = \"http://127.0.0.1:{node_port}/app/\"\n",
        secret_file.to_str().expect("a UTF-8 temporary path"),
    )
}

/// The site, with users alice (groups sales and admins) and bob at the provider. `None` when
/// the test is skipped (no Node.js or provider packages outside CI).
async fn site() -> Option<Site> {
    site_with(false).await
}

/// [`site`], with sessions in a Redis of its own and, when `audited`, the audit events
/// appended to its stream [`AUDIT_STREAM`].
async fn site_with(audited: bool) -> Option<Site> {
    let mut provider = OidcProvider::start().await?;
    let redis = if audited {
        Some(RedisServer::start().await)
    } else {
        None
    };
    let dir = TempDir::new().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    let upstream = EchoUpstream::start("engine").await;
    // The node's port is chosen first: its post-logout address is in the control plane's
    // configuration.
    let node_port = free_port();
    let proxy = AppProxy::new([upstream.node()]).table(&oidc_table(
        provider.issuer(),
        &secret_file,
        node_port,
    ));
    let config = match &redis {
        Some(redis) => format!(
            "{}\n[audit]\nredis_stream = \"{AUDIT_STREAM}\"\n",
            proxy.on_redis(redis)
        ),
        None => proxy.toml(),
    };
    let control_plane = ControlPlane::start(&config).await;
    let node = DataPlaneNode::start_with(
        &control_plane,
        &format!("listen = \"127.0.0.1:{node_port}\""),
    )
    .await;
    provider
        .configure(
            json!([web_client(
                CLIENT_ID,
                CLIENT_SECRET,
                &node.url("/app/oidc/callback"),
                &node.url("/app/"),
                &node.url("/app/oidc/backchannel-logout"),
            )]),
            accounts(),
        )
        .await;
    Some(Site {
        provider,
        upstream,
        control_plane,
        node,
        redis,
        _dir: dir,
    })
}

impl Site {
    fn callback(&self, query: &str) -> String {
        self.node.url(&format!("/app/oidc/callback{query}"))
    }

    /// A GET of `path` by `browser` without a session: the redirect to the provider's
    /// authorization endpoint, returned.
    async fn login_redirect(&self, browser: &mut WebBrowser, path: &str) -> String {
        let response = browser.get(&self.node.url(path)).await;
        assert_eq!(response.status, 302, "{path}: {}", response.text());
        let location = response.location().expect("a Location").to_owned();
        let endpoint = self.provider.endpoint("authorization_endpoint").await;
        assert!(location.starts_with(&format!("{endpoint}?")), "{location}");
        location
    }

    /// A login of `user` by `browser` started at `path` and signed in at the provider: the
    /// callback URL the provider sends the browser back to (not visited yet).
    async fn provider_callback(&self, browser: &mut WebBrowser, path: &str, user: &str) -> String {
        let authorize = self.login_redirect(browser, path).await;
        browser.login_at_provider(&authorize, user).await
    }

    /// A whole login of `user` by `browser`, starting at `path`: the session cookie's
    /// `name=value`.
    async fn login(&self, browser: &mut WebBrowser, path: &str, user: &str) -> String {
        let callback = self.provider_callback(browser, path, user).await;
        let done = browser.get(&callback).await;
        assert_eq!(done.status, 302, "{callback}: {}", done.text());
        assert_eq!(done.location(), Some(path));
        browser
            .cookie_pair(&self.node.url(path), COOKIE)
            .expect("the login sets the session cookie")
    }

    async fn all_sessions(&self) -> Vec<pb::Session> {
        self.control_plane
            .sessions()
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .expect("ListSessions")
            .into_inner()
            .sessions
    }

    async fn sessions_of(&self, user: &str) -> Vec<pb::Session> {
        self.control_plane
            .sessions()
            .list_user_sessions(pb::ListUserSessionsRequest {
                user_directory: DIRECTORY.into(),
                user_id: user.into(),
                virtual_proxy: Some("app".into()),
            })
            .await
            .expect("ListUserSessions")
            .into_inner()
            .sessions
    }

    /// Whether a GET with `cookie` is sent to the provider to log in (the session is not
    /// accepted).
    async fn sent_to_login(&self, cookie: &str) -> bool {
        let response = client::get(&self.node.url("/app/hub"), &with_cookie(cookie)).await;
        let endpoint = self.provider.endpoint("authorization_endpoint").await;
        response.status == 302
            && response
                .location()
                .is_some_and(|location| location.starts_with(&endpoint))
    }
}

/// The refusal of a callback: `status`, and no session cookie.
fn assert_refused(response: &HttpResponse, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert!(
        response.set_cookie(COOKIE).is_none(),
        "{what}: a session cookie was set"
    );
}

/// The values of attribute `name` of a session's user.
fn attribute<'a>(session: &'a pb::Session, name: &str) -> Vec<&'a str> {
    session
        .user
        .as_ref()
        .map(|user| {
            user.attributes
                .iter()
                .filter(|attribute| attribute.name == name)
                .map(|attribute| attribute.value.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// The attributes of one `Set-Cookie` header after its `name=value`, lower-cased.
fn cookie_attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|attribute| attribute.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn a_browser_is_sent_to_the_provider_and_comes_back_with_a_session() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let target = site.node.url("/app/hello?x=1");

    // Only a GET can be sent to log in; anything else without a session is refused.
    let post = browser.post_form(&target, &[("a", "b")], &[]).await;
    assert_eq!(post.status, 401, "{}", post.text());
    assert!(post.location().is_none());

    let first = browser.get(&target).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let authorize = first.location().expect("a Location").to_owned();
    let endpoint = site.provider.endpoint("authorization_endpoint").await;
    assert!(
        authorize.starts_with(&format!("{endpoint}?")),
        "{authorize}"
    );
    let callback_url = site.callback("");
    for (name, expected) in [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", callback_url.as_str()),
        ("code_challenge_method", "S256"),
        // From authorization_params.
        ("ui_locales", "en"),
    ] {
        assert_eq!(
            query_param(&authorize, name).as_deref(),
            Some(expected),
            "{name} in {authorize}"
        );
    }
    let scope = query_param(&authorize, "scope").expect("a scope");
    for wanted in SCOPES {
        assert!(scope.split(' ').any(|s| s == wanted), "{wanted} in {scope}");
    }
    let state = query_param(&authorize, "state").expect("a state");
    let nonce = query_param(&authorize, "nonce").expect("a nonce");
    assert!(
        !state.is_empty() && !nonce.is_empty() && state != nonce,
        "{authorize}"
    );
    let challenge = query_param(&authorize, "code_challenge").expect("a code challenge");
    assert_eq!(challenge.len(), 43, "a base64url SHA-256: {challenge}");
    let binding = first.set_cookie(BINDING).expect("the login-binding cookie");
    let attributes = cookie_attributes(&binding);
    for wanted in ["path=/", "httponly", "samesite=lax"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "{wanted} in {binding}"
        );
    }
    assert!(
        attributes.iter().any(|a| a.starts_with("max-age=")),
        "{binding}"
    );
    assert!(first.set_cookie(COOKIE).is_none());
    assert!(site.all_sessions().await.is_empty());

    let callback = browser.login_at_provider(&authorize, "alice").await;
    assert!(
        callback.starts_with(&format!("{callback_url}?")),
        "{callback}"
    );
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.location(), Some("/app/hello?x=1"));
    assert!(
        done.set_cookie(COOKIE).is_some(),
        "{:?}",
        done.set_cookies()
    );

    let page = browser.get(&target).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        seen_header(&page.json(), "x-qlik-user"),
        Some(qlik_user(DIRECTORY, "alice").as_str())
    );
    // Neither the session cookie nor the binding cookie reaches the upstream.
    let seen = page.json();
    let forwarded = seen_header(&seen, "cookie").unwrap_or_default();
    assert!(
        !forwarded.contains(BINDING) && !forwarded.contains(COOKIE),
        "{forwarded}"
    );
    let me = browser.get(&site.node.url("/app/qps/user")).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["userDirectory"], DIRECTORY);
    assert_eq!(me.json()["userId"], "alice");

    let sessions = site.sessions_of("alice").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].virtual_proxy, "app");
    assert_eq!(attribute(&sessions[0], "Email"), ["alice@example.test"]);
    assert_eq!(attribute(&sessions[0], "Group"), ["sales", "admins"]);
    assert_eq!(
        site.upstream.requests().len(),
        1,
        "the upstream saw only the request after the login"
    );
}

#[tokio::test]
async fn a_callback_with_a_state_the_node_did_not_issue_is_refused() {
    let Some(site) = site().await else {
        return;
    };
    let iss = encode(site.provider.issuer());
    let mut browser = WebBrowser::new();
    let authorize = site.login_redirect(&mut browser, "/app/hub").await;

    let made_up = site.callback(&format!("?code=made-up&state=made-up&iss={iss}"));
    assert_refused(&browser.get(&made_up).await, 401, "a made-up state");
    assert_refused(
        &WebBrowser::new().get(&made_up).await,
        401,
        "a made-up state from a fresh browser",
    );

    // A real code from the provider, with another state.
    let callback = browser.login_at_provider(&authorize, "alice").await;
    let code = query_param(&callback, "code").expect("a code");
    let swapped = site.callback(&format!(
        "?code={}&state=not-the-state&iss={iss}",
        encode(&code)
    ));
    assert_refused(
        &browser.get(&swapped).await,
        401,
        "a real code, another state",
    );
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn a_callback_sent_by_another_browser_is_refused() {
    let Some(site) = site().await else {
        return;
    };

    // A browser without any login-binding cookie.
    let mut genuine = WebBrowser::new();
    let callback = site
        .provider_callback(&mut genuine, "/app/hub", "alice")
        .await;
    let stranger = WebBrowser::new().get(&callback).await;
    assert_refused(&stranger, 401, "a browser without a binding cookie");

    // A browser with a binding cookie of its own login.
    let mut genuine = WebBrowser::new();
    let callback = site
        .provider_callback(&mut genuine, "/app/hub", "alice")
        .await;
    let mut other = WebBrowser::new();
    site.login_redirect(&mut other, "/app/hub").await;
    assert_refused(
        &other.get(&callback).await,
        401,
        "a browser with its own binding cookie",
    );
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn a_callback_tried_by_another_browser_first_still_works_for_its_own() {
    let Some(site) = site().await else {
        return;
    };
    // Someone who read the callback URL (a log, a Referer) opens it first: refused, and the
    // login it names stays for the browser that started it.
    let mut genuine = WebBrowser::new();
    let callback = site
        .provider_callback(&mut genuine, "/app/hub", "alice")
        .await;
    let stranger = WebBrowser::new().get(&callback).await;
    assert_refused(&stranger, 401, "a browser without a binding cookie");
    let done = genuine.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(site.all_sessions().await.len(), 1);
}

#[tokio::test]
async fn a_callback_replayed_after_the_login_is_refused() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let callback = site
        .provider_callback(&mut browser, "/app/hub", "alice")
        .await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert!(done.set_cookie(COOKIE).is_some());

    assert_refused(
        &browser.get(&callback).await,
        401,
        "replayed by the same browser",
    );
    assert_refused(
        &WebBrowser::new().get(&callback).await,
        401,
        "replayed by another browser",
    );
    assert_eq!(site.sessions_of("alice").await.len(), 1);
    assert_eq!(site.all_sessions().await.len(), 1);
}

#[tokio::test]
async fn a_callback_naming_another_issuer_is_refused() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let callback = site
        .provider_callback(&mut browser, "/app/hub", "alice")
        .await;
    let issuer = encode(site.provider.issuer());
    assert!(callback.contains(&format!("iss={issuer}")), "{callback}");
    // The same code and state, as if another provider had answered (RFC 9207 mix-up).
    let mixed_up = callback.replace(
        &format!("iss={issuer}"),
        &format!("iss={}", encode("https://other-idp.example.com")),
    );
    assert_refused(&browser.get(&mixed_up).await, 401, "another issuer");
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn a_used_code_with_a_fresh_state_is_refused() {
    let Some(site) = site_with(true).await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let first = site
        .provider_callback(&mut browser, "/app/hub", "alice")
        .await;
    let done = browser.get(&first).await;
    assert_eq!(done.status, 302, "{}", done.text());
    let used_code = query_param(&first, "code").expect("a code");

    // The user drops the session cookie and logs in again: the provider, still signed in,
    // answers at once with a new code and the new state.
    browser.forget(&site.node.url("/"), COOKIE);
    let second = site
        .provider_callback(&mut browser, "/app/hub", "alice")
        .await;
    let fresh_state = query_param(&second, "state").expect("a state");
    let mixed = site.callback(&format!(
        "?code={}&state={}&iss={}",
        encode(&used_code),
        encode(&fresh_state),
        encode(site.provider.issuer())
    ));
    assert_refused(
        &browser.get(&mixed).await,
        401,
        "a used code with a fresh state",
    );
    assert_eq!(site.sessions_of("alice").await.len(), 1);

    // Audited as a refused OpenID login, without the code or the state.
    let redis = site.redis.as_ref().expect("an audited site has its Redis");
    let entries = eventually("the refusal in the audit stream", PROPAGATION, || async {
        let entries = stream_entries(redis, AUDIT_STREAM).await;
        audit::find(&entries, "login_failed", |_| true)
            .is_some()
            .then_some(entries)
    })
    .await;
    let failed = audit::find(&entries, "login_failed", |_| true).expect("the refusal");
    audit::assert_fields(
        failed,
        &[
            ("method", "oidc"),
            ("virtual_proxy", "app"),
            ("client_address", "127.0.0.1"),
        ],
    );
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|reason| !reason.is_empty()),
        "{failed:#}"
    );
    assert!(failed.get("session").is_none(), "{failed:#}");
    for entry in &entries {
        let text = entry.to_string();
        assert!(
            !text.contains(&used_code) && !text.contains(&fresh_state),
            "a code or state in {entry:#}"
        );
    }
}

#[tokio::test]
async fn a_login_the_provider_refused_is_refused() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let callback = site
        .provider_callback(&mut browser, "/app/hub", "mallory")
        .await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied"),
        "{callback}"
    );
    assert_refused(&browser.get(&callback).await, 401, "error=access_denied");
    assert!(site.all_sessions().await.is_empty());
    assert!(site.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_callback_without_state_or_code_is_a_bad_request() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let authorize = site.login_redirect(&mut browser, "/app/hub").await;
    let state = encode(&query_param(&authorize, "state").expect("a state"));
    let iss = encode(site.provider.issuer());
    for query in [
        format!("?code=some-code&iss={iss}"),
        format!("?state={state}&iss={iss}"),
        String::new(),
    ] {
        let response = browser.get(&site.callback(&query)).await;
        assert_refused(&response, 400, &format!("callback{query}"));
    }
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn an_issuer_that_is_down_gets_503_rather_than_a_redirect() {
    // No provider is needed: nothing listens at the issuer.
    let dir = TempDir::new().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    let upstream = EchoUpstream::start("engine").await;
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let proxy =
        AppProxy::new([upstream.node()]).table(&oidc_table(&issuer, &secret_file, free_port()));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;

    let response = client::get(&node.url("/app/hub"), &[]).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(response.location().is_none());
    assert!(response.set_cookie(BINDING).is_none());
    assert!(upstream.requests().is_empty());

    // Hostile input to the OpenID routes is refused without asking the provider.
    let long = "a".repeat(1_000);
    for (what, path, status) in [
        (
            "an oversized state",
            format!("/app/oidc/callback?code=c&state={long}"),
            400,
        ),
        (
            "bad percent-encoding",
            "/app/oidc/callback?code=%ff%fe&state=%zz".to_owned(),
            401,
        ),
        (
            "an unknown state",
            "/app/oidc/callback?code=c&state=s".to_owned(),
            401,
        ),
        (
            "a provider error with markup",
            "/app/oidc/callback?error=%3Cscript%3E".to_owned(),
            401,
        ),
    ] {
        let answer = client::get(&node.url(&path), &[]).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        assert!(!answer.text().contains("<script>"), "{what}");
    }
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let logout = node.url("/app/oidc/backchannel-logout");
    let huge = format!("logout_token={}", "a".repeat(100_000));
    assert_eq!(client::post(&logout, &form, &huge).await.status, 400);
    assert_eq!(
        client::post(&logout, &[], "logout_token=x").await.status,
        400
    );
    let wrong_method = client::get(&logout, &[]).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_back_channel_logout_ends_the_session_and_closes_its_websockets() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let cookie = site.login(&mut browser, "/app/hub", "alice").await;
    let mut socket = open_socket(&site.node, &cookie).await;
    let bystander = site.login(&mut WebBrowser::new(), "/app/hub", "bob").await;

    // The user signs out at the provider, which posts a logout token to the node.
    let end_session = format!(
        "{}?client_id={CLIENT_ID}",
        site.provider.endpoint("end_session_endpoint").await
    );
    let (url, page) = browser
        .end_session_at_provider(&end_session)
        .await
        .arrived();
    assert_eq!(page.status, 200, "{url}: {}", page.text());

    expect_close(&mut socket, PROPAGATION).await;
    assert!(site.sessions_of("alice").await.is_empty());
    eventually("the node refuses the old cookie", PROPAGATION, || {
        let cookie = cookie.clone();
        let site = &site;
        async move { site.sent_to_login(&cookie).await.then_some(()) }
    })
    .await;
    assert_eq!(
        site.sessions_of("bob").await.len(),
        1,
        "only alice signed out"
    );
    assert!(!site.sent_to_login(&bystander).await);
}

/// The provider's back-channel logout is in the audit trail: the OpenID login, then the
/// revocation by `provider`, field by field, read from the Redis stream of audit events; no
/// token of the run (the session cookie, an ID or logout token) in either.
#[tokio::test]
async fn a_back_channel_logout_is_audited_as_a_revocation_by_the_provider() {
    let Some(site) = site_with(true).await else {
        return;
    };
    let redis = site.redis.as_ref().expect("an audited site has its Redis");
    let mut browser = WebBrowser::new();
    let cookie = site.login(&mut browser, "/app/hub", "alice").await;
    let sessions = site.sessions_of("alice").await;
    let handle = sessions[0].handle.clone();
    let end_session = format!(
        "{}?client_id={CLIENT_ID}",
        site.provider.endpoint("end_session_endpoint").await
    );
    let (url, page) = browser
        .end_session_at_provider(&end_session)
        .await
        .arrived();
    assert_eq!(page.status, 200, "{url}: {}", page.text());

    let entries = eventually("the revocation in the audit stream", PROPAGATION, || {
        let handle = handle.clone();
        async move {
            let entries = stream_entries(redis, AUDIT_STREAM).await;
            audit::find(&entries, "session_revoked", |entry| {
                entry["session"] == handle.as_str()
            })
            .is_some()
            .then_some(entries)
        }
    })
    .await;
    let of_session = [
        ("virtual_proxy", "app"),
        ("user_directory", DIRECTORY),
        ("user_id", "alice"),
        ("session", handle.as_str()),
        ("client_address", "127.0.0.1"),
    ];
    let login = audit::find(&entries, "login_succeeded", |_| true).expect("the login");
    audit::assert_fields(login, &[&of_session[..], &[("method", "oidc")]].concat());
    assert!(
        login.get("actor").is_none() && login.get("reason").is_none(),
        "{login:#}"
    );
    let revoked = audit::find(&entries, "session_revoked", |_| true).expect("the revocation");
    audit::assert_fields(
        revoked,
        &[
            &of_session[..],
            &[("actor", "provider"), ("reason", "provider-logout")],
        ]
        .concat(),
    );
    assert!(revoked.get("method").is_none(), "{revoked:#}");
    let token = cookie.split_once('=').expect("name=value").1;
    for entry in &entries {
        let text = entry.to_string();
        // A JWT's header starts `{"` in base64url: `eyJ`.
        assert!(!text.contains(token) && !text.contains("eyJ"), "{entry:#}");
    }
}

/// An RSA private key the provider does not have, from `openssl`.
fn stranger_key() -> Vec<u8> {
    let output = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test]
async fn a_forged_logout_token_is_refused_and_the_session_survives() {
    let Some(site) = site().await else {
        return;
    };
    let cookie = site
        .login(&mut WebBrowser::new(), "/app/hub", "alice")
        .await;
    let jwks = site.provider.jwks().await;
    let kid = jwks["keys"][0]["kid"]
        .as_str()
        .expect("the provider's key id");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // As the provider's own tokens are, but for the signature (and the sid, which only the
    // provider and the node know).
    let claims = json!({
        "iss": site.provider.issuer(),
        "aud": CLIENT_ID,
        "sub": "alice",
        "sid": "forged-session",
        "iat": now,
        "exp": now + 120,
        "jti": "forged-1",
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some("logout+jwt".to_owned());
    let wrong_key = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&stranger_key()).unwrap(),
    )
    .unwrap();
    let encode_part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!(
        "{}.{}.",
        encode_part(&json!({ "alg": "none", "typ": "logout+jwt" })),
        encode_part(&claims)
    );

    let url = site.node.url("/app/oidc/backchannel-logout");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for (what, body) in [
        (
            "signed by another key",
            format!("logout_token={}", encode(&wrong_key)),
        ),
        ("alg none", format!("logout_token={}", encode(&unsigned))),
        ("not a JWT", "logout_token=not-a-jwt".to_owned()),
        ("no logout_token", String::new()),
        ("another field", "token=x".to_owned()),
    ] {
        let response = client::post(&url, &form, &body).await;
        assert_eq!(response.status, 400, "{what}: {}", response.text());
    }

    assert_eq!(site.sessions_of("alice").await.len(), 1);
    let still = client::get(&site.node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(still.status, 200, "{}", still.text());
}

/// A token signed with the provider's own key and `kid` (RS256), with header `typ`.
fn sign_as_provider(site: &Site, typ: &str, claims: &Value) -> String {
    let (kid, pem) = site.provider.signing_key();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some(typ.to_owned());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("the provider's key is an RSA PEM");
    jsonwebtoken::encode(&header, claims, &key).expect("sign a token")
}

/// POSTs `logout_token` to the node's back-channel logout endpoint.
async fn post_logout_token(site: &Site, token: &str) -> HttpResponse {
    client::post(
        &site.node.url("/app/oidc/backchannel-logout"),
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("logout_token={}", encode(token)),
    )
    .await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_logout_token_naming_only_the_subject_ends_all_its_sessions_once() {
    let Some(site) = site().await else {
        return;
    };
    // Two sessions of alice (two browsers) and one of bob.
    let first = site
        .login(&mut WebBrowser::new(), "/app/hub", "alice")
        .await;
    let second = site
        .login(&mut WebBrowser::new(), "/app/hub", "alice")
        .await;
    let bob = site.login(&mut WebBrowser::new(), "/app/hub", "bob").await;
    assert_eq!(site.sessions_of("alice").await.len(), 2);
    let now = unix_now();
    let logout = |jti: &str| {
        json!({
            "iss": site.provider.issuer(), "aud": CLIENT_ID, "sub": "alice",
            "iat": now, "exp": now + 120, "jti": jti,
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        })
    };
    let token = sign_as_provider(&site, "logout+jwt", &logout("by-subject-1"));
    let answer = post_logout_token(&site, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert!(site.sessions_of("alice").await.is_empty());
    assert!(site.sent_to_login(&first).await && site.sent_to_login(&second).await);
    assert_eq!(site.sessions_of("bob").await.len(), 1);
    assert!(!site.sent_to_login(&bob).await);

    // The same token again, after alice logged in anew: refused, her new session lives.
    let third = site
        .login(&mut WebBrowser::new(), "/app/hub", "alice")
        .await;
    let replayed = post_logout_token(&site, &token).await;
    assert_eq!(replayed.status, 400, "{}", replayed.text());
    assert_eq!(replayed.json()["error"], "invalid_request");
    assert!(!site.sent_to_login(&third).await);
    assert_eq!(site.sessions_of("alice").await.len(), 1);
}

#[tokio::test]
async fn logout_tokens_that_are_expired_early_or_id_tokens_are_refused() {
    let Some(site) = site().await else {
        return;
    };
    let cookie = site
        .login(&mut WebBrowser::new(), "/app/hub", "alice")
        .await;
    let now = unix_now();
    let claims = |extra: Value| {
        let mut claims = json!({
            "iss": site.provider.issuer(), "aud": CLIENT_ID, "sub": "alice",
            "iat": now, "exp": now + 120, "jti": format!("j-{extra}"),
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        });
        for (name, value) in extra.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    };
    for (what, token) in [
        (
            "expired",
            sign_as_provider(
                &site,
                "logout+jwt",
                &claims(json!({"iat": now - 900, "exp": now - 600})),
            ),
        ),
        (
            "issued in the future",
            sign_as_provider(
                &site,
                "logout+jwt",
                &claims(json!({"iat": now + 3600, "exp": now + 3700})),
            ),
        ),
        (
            "for another client",
            sign_as_provider(
                &site,
                "logout+jwt",
                &claims(json!({"aud": "another-client"})),
            ),
        ),
        (
            "from another issuer",
            sign_as_provider(
                &site,
                "logout+jwt",
                &claims(json!({"iss": "https://other-idp.example.com"})),
            ),
        ),
        (
            "an ID token (a nonce, no logout event)",
            sign_as_provider(&site, "JWT", &claims(json!({"nonce": "n", "events": null}))),
        ),
        (
            "naming nobody",
            sign_as_provider(&site, "logout+jwt", &claims(json!({"sub": null}))),
        ),
        (
            "without a jti",
            sign_as_provider(&site, "logout+jwt", &claims(json!({"jti": null}))),
        ),
    ] {
        let answer = post_logout_token(&site, &token).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.text());
    }
    assert_eq!(site.sessions_of("alice").await.len(), 1);
    assert!(!site.sent_to_login(&cookie).await);

    // The same claims, unchanged, are a good logout token: only the changes above refused.
    let good = sign_as_provider(&site, "logout+jwt", &claims(json!({})));
    let answer = post_logout_token(&site, &good).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(site.sessions_of("alice").await.is_empty());
}

#[tokio::test]
async fn a_callback_without_the_iss_the_provider_promises_is_refused() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let callback = site
        .provider_callback(&mut browser, "/app/hub", "alice")
        .await;
    let without_iss = callback.replace(&format!("&iss={}", encode(site.provider.issuer())), "");
    assert_ne!(without_iss, callback, "the provider sends iss: {callback}");
    assert_refused(&browser.get(&without_iss).await, 401, "no iss");
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn logging_out_at_the_node_ends_the_session_and_goes_on_to_the_provider() {
    let Some(site) = site().await else {
        return;
    };
    let end_session = site.provider.endpoint("end_session_endpoint").await;
    let origin = format!("http://{}", site.node.address());
    let logout_url = site.node.url("/app/oidc/logout");
    let mut browser = WebBrowser::new();

    // From a page of the node itself (Origin).
    site.login(&mut browser, "/app/hub", "alice").await;
    let out = browser.get_with(&logout_url, &[("origin", &origin)]).await;
    assert_eq!(out.status, 302, "{}", out.text());
    let location = out.location().expect("a Location").to_owned();
    assert!(
        location.starts_with(&format!("{end_session}?")),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert_eq!(
        query_param(&location, "post_logout_redirect_uri"),
        Some(site.node.url("/app/"))
    );
    assert!(out.set_cookie(COOKIE).is_some(), "{:?}", out.set_cookies());
    assert!(
        browser.cookie(&site.node.url("/app/"), COOKIE).is_none(),
        "the session cookie is cleared: {:?}",
        out.set_cookie(COOKIE)
    );
    assert!(site.sessions_of("alice").await.is_empty());
    // The provider accepts the request, signs the user out there too, and sends the browser
    // back to the node.
    let back = browser
        .end_session_at_provider(&location)
        .await
        .stopped_at();
    assert!(back.starts_with(&site.node.url("/app/")), "{back}");

    // From a page of the node itself (Referer only).
    site.login(&mut browser, "/app/hub", "alice").await;
    let referer = site.node.url("/app/hub");
    let out = browser
        .get_with(&logout_url, &[("referer", &referer)])
        .await;
    assert_eq!(out.status, 302, "{}", out.text());
    assert!(
        out.location().is_some_and(|l| l.starts_with(&end_session)),
        "{:?}",
        out.location()
    );
    assert!(site.sessions_of("alice").await.is_empty());
}

#[tokio::test]
async fn a_cross_site_logout_is_refused_and_the_session_survives() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let cookie = site.login(&mut browser, "/app/hub", "alice").await;
    let logout_url = site.node.url("/app/oidc/logout");

    for (what, headers) in [
        ("no Origin or Referer", vec![]),
        (
            "another site's Origin",
            vec![("origin", "http://evil.test")],
        ),
        (
            "another site's Referer",
            vec![("referer", "http://evil.test/page")],
        ),
    ] {
        let response = browser.get_with(&logout_url, &headers).await;
        assert_eq!(response.status, 403, "{what}: {}", response.text());
        assert!(response.set_cookie(COOKIE).is_none(), "{what}");
    }
    assert_eq!(site.sessions_of("alice").await.len(), 1);
    let still = client::get(&site.node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(still.status, 200, "{}", still.text());
}

/// Two nodes behind a load balancer, each on its own control-plane replica, sharing Redis: a
/// login started on one node finishes on the other (the state is in Redis, not in the node or
/// a cookie), and the provider's back-channel logout, arriving at the second node, closes the
/// WebSocket open on the first.
#[tokio::test]
async fn a_login_started_on_one_node_finishes_on_another_and_logs_out_everywhere() {
    let Some(mut provider) = OidcProvider::start().await else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let (port_a, port_b) = (free_port(), free_port());
    // The address the provider knows is node A's, as it would be the load balancer's.
    let callback_a = format!("http://127.0.0.1:{port_a}/app/oidc/callback");
    let proxy = AppProxy::new([upstream.node()]).table(&format!(
        "{}redirect_uri = \"{callback_a}\"\n",
        oidc_table(provider.issuer(), &secret_file, port_a)
    ));
    let replica_a = ControlPlane::start(&proxy.on_redis(&redis)).await;
    let replica_b = ControlPlane::start(&proxy.on_redis(&redis)).await;
    let node_a =
        DataPlaneNode::start_with(&replica_a, &format!("listen = \"127.0.0.1:{port_a}\"")).await;
    let node_b =
        DataPlaneNode::start_with(&replica_b, &format!("listen = \"127.0.0.1:{port_b}\"")).await;
    provider
        .configure(
            json!([web_client(
                CLIENT_ID,
                CLIENT_SECRET,
                &callback_a,
                &node_a.url("/app/"),
                &node_b.url("/app/oidc/backchannel-logout"),
            )]),
            accounts(),
        )
        .await;

    let mut browser = WebBrowser::new();
    let first = browser.get(&node_a.url("/app/hub")).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let authorize = first.location().expect("a Location").to_owned();
    let callback = browser.login_at_provider(&authorize, "alice").await;
    assert!(callback.starts_with(&callback_a), "{callback}");
    // The load balancer sends the browser's return to node B, cookies and all.
    let binding = browser
        .cookie_pair(&node_a.url("/"), BINDING)
        .expect("node A set the binding cookie");
    let on_b = callback.replacen(
        &format!("127.0.0.1:{port_a}"),
        &format!("127.0.0.1:{port_b}"),
        1,
    );
    let done = browser.get_with(&on_b, &[("cookie", &binding)]).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.location(), Some("/app/hub"));
    let cookie = done
        .cookie_pair(COOKIE)
        .expect("node B set the session cookie");

    // Node A serves the session node B created, and holds its WebSocket.
    let page = client::get(&node_a.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        seen_header(&page.json(), "x-qlik-user"),
        Some(qlik_user(DIRECTORY, "alice").as_str())
    );
    let mut socket = open_socket(&node_a, &cookie).await;

    // alice signs out at the provider; its logout token reaches node B and replica B.
    let end_session = format!(
        "{}?client_id={CLIENT_ID}",
        provider.endpoint("end_session_endpoint").await
    );
    let (url, page) = browser
        .end_session_at_provider(&end_session)
        .await
        .arrived();
    assert_eq!(page.status, 200, "{url}: {}", page.text());
    expect_close(&mut socket, PROPAGATION).await;
    eventually("node A refuses the old cookie", PROPAGATION, || {
        let cookie = cookie.clone();
        let node_a = &node_a;
        async move {
            let answer = client::get(&node_a.url("/app/hub"), &with_cookie(&cookie)).await;
            (answer.status == 302).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn logins_started_in_two_tabs_both_finish() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let first = site.login_redirect(&mut browser, "/app/one").await;
    let binding = browser
        .cookie_pair(&site.node.url("/"), BINDING)
        .expect("the first tab got the binding cookie");
    let second = site.login_redirect(&mut browser, "/app/two").await;
    // The second tab kept the binding cookie the first one got.
    assert_eq!(
        browser.cookie_pair(&site.node.url("/"), BINDING),
        Some(binding)
    );
    assert_ne!(query_param(&first, "state"), query_param(&second, "state"));

    let second_back = browser.login_at_provider(&second, "alice").await;
    let first_back = browser.login_at_provider(&first, "alice").await;
    for (callback, path) in [(second_back, "/app/two"), (first_back, "/app/one")] {
        let done = browser.get(&callback).await;
        assert_eq!(done.status, 302, "{path}: {}", done.text());
        assert_eq!(done.location(), Some(path));
    }
    assert_eq!(site.sessions_of("alice").await.len(), 2);
}

#[tokio::test]
async fn a_callback_while_the_provider_is_down_gets_503() {
    let Some(site) = site().await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let callback = site
        .provider_callback(&mut browser, "/app/hub", "alice")
        .await;
    let Site {
        provider,
        control_plane,
        node,
        ..
    } = site;
    let issuer = provider.issuer().trim_start_matches("http://").to_owned();
    drop(provider);
    eventually("the provider is gone", PROPAGATION, || {
        let issuer = issuer.clone();
        async move {
            tokio::net::TcpStream::connect(&issuer)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    let answer = browser.get(&callback).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(answer.set_cookie(COOKIE).is_none());
    let sessions = control_plane
        .sessions()
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions;
    assert!(sessions.is_empty());
    drop(node);
}

#[tokio::test]
async fn a_sign_in_link_logs_in_and_comes_back_to_its_target() {
    let Some(site) = site().await else {
        return;
    };
    // The Personal API names the link for a page on this site, and none for another host.
    let own = site.node.url("/app/deep?x=1");
    let who = client::get(
        &site
            .node
            .url(&format!("/app/qps/user?targetUri={}", encode(&own))),
        &[],
    )
    .await;
    assert_eq!(who.json()["session"], "inactive");
    let link = who.json()["loginUri"]
        .as_str()
        .expect("a loginUri")
        .to_owned();
    assert_eq!(
        link,
        site.node.url(&format!(
            "/app/oidc/login?target={}",
            encode("/app/deep?x=1")
        ))
    );
    let elsewhere = client::get(
        &site.node.url(&format!(
            "/app/qps/user?targetUri={}",
            encode("https://evil.example.com/app/")
        )),
        &[],
    )
    .await;
    assert!(
        elsewhere.json().get("loginUri").is_none(),
        "{}",
        elsewhere.text()
    );

    let mut browser = WebBrowser::new();
    let start = browser.get(&link).await;
    assert_eq!(start.status, 302, "{}", start.text());
    let callback = browser
        .login_at_provider(start.location().expect("a Location"), "alice")
        .await;
    let done = browser.get(&callback).await;
    assert_eq!(done.location(), Some("/app/deep?x=1"));
    // Signed in, the link goes straight to its target.
    let again = browser.get(&link).await;
    assert_eq!(again.status, 302);
    assert_eq!(again.location(), Some("/app/deep?x=1"));

    for target in [
        "//evil.example.com/",
        "https://evil.example.com/",
        "javascript:alert(1)",
    ] {
        let refused = client::get(
            &site
                .node
                .url(&format!("/app/oidc/login?target={}", encode(target))),
            &[],
        )
        .await;
        assert_eq!(refused.status, 400, "{target}: {}", refused.text());
        assert!(refused.location().is_none());
    }
}

/// Behind a TLS-terminating load balancer the node hears plain HTTP, but the browser speaks
/// https: with an https `redirect_uri`, the binding cookie is the `__Host-`, Secure one.
#[tokio::test]
async fn an_https_redirect_uri_makes_the_binding_cookie_secure_behind_a_load_balancer() {
    let Some(mut provider) = OidcProvider::start().await else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    let upstream = EchoUpstream::start("engine").await;
    let public = "https://gatehouse.example.com/app/oidc/callback";
    let proxy = AppProxy::new([upstream.node()]).table(&format!(
        "{}redirect_uri = \"{public}\"\n",
        oidc_table(provider.issuer(), &secret_file, free_port())
    ));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    provider
        .configure(
            json!([web_client(
                CLIENT_ID,
                CLIENT_SECRET,
                public,
                "https://gatehouse.example.com/app/",
                "https://gatehouse.example.com/app/oidc/backchannel-logout",
            )]),
            accounts(),
        )
        .await;

    let response = client::get(&node.url("/app/hub"), &[]).await;
    assert_eq!(response.status, 302, "{}", response.text());
    let location = response.location().expect("a Location");
    assert_eq!(
        query_param(location, "redirect_uri").as_deref(),
        Some(public)
    );
    let binding = response
        .set_cookie(&format!("__Host-{BINDING}"))
        .expect("the __Host- binding cookie");
    assert!(
        cookie_attributes(&binding).iter().any(|a| a == "secure"),
        "{binding}"
    );
    assert!(response.set_cookie(BINDING).is_none());
}

/// A forged `Host` is never the base of the `redirect_uri` the provider sends the code to: the
/// node refuses it before the login starts, and the control plane refuses a callback URL on
/// no origin even from a node.
#[tokio::test]
async fn a_forged_host_never_becomes_the_redirect_uri() {
    let Some(site) = site().await else {
        return;
    };
    let port = site.node.address().port();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("127.0.0.1:{port}@evil.example"),
        format!("localhost.evil.example:{port}"),
    ] {
        for path in ["/app/hello", "/app/oidc/login?target=%2Fapp%2F"] {
            let response = client::get(&site.node.url(path), &[("host", &host)]).await;
            assert_eq!(response.status, 400, "{host:?} {path}: {}", response.text());
            assert!(response.location().is_none(), "{host:?} {path}");
        }
    }
    let status = site
        .control_plane
        .node()
        .oidc_begin(pb::OidcBeginRequest {
            virtual_proxy: "app".into(),
            redirect_uri: "http://evil.example/app/oidc/callback".into(),
            target: "/app/".into(),
            binding: String::new(),
        })
        .await
        .expect_err("a callback on a foreign host");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}
