//! The OpenID provider harness on its own, without Gatehouse: a stand-in relying party (a
//! loopback listener that records what reaches it) signs a user in with the authorization code
//! flow and PKCE, redeems the code at the token endpoint as a confidential client, and ends
//! the session, receiving the provider's back-channel logout token. This proves the harness
//! the OpenID Connect tests rely on, and pins down what the provider sends.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::harness::client::{self, HttpResponse, encode, query_param};
use crate::harness::oidc_provider::{OidcProvider, accounts, web_client};
use crate::harness::web_browser::{Followed, WebBrowser, form_action, site};

const CLIENT_ID: &str = "harness-client";
const CLIENT_SECRET: &str = "harness-client-secret-0123456789abcdef";
const SCOPE: &str = "openid profile email groups";
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// One request that reached the relying party.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: String,
}

/// The relying party as the provider sees it: answers 200 to everything and records it.
struct RelyingParty {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: JoinHandle<()>,
}

impl RelyingParty {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let method = request.method().to_string();
                            let path = request
                                .uri()
                                .path_and_query()
                                .map_or("/", |pq| pq.as_str())
                                .to_owned();
                            let body = request.into_body().collect().await.map_or_else(
                                |_| String::new(),
                                |body| String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                            );
                            recorded
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(Seen { method, path, body });
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            address,
            seen,
            accept,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for RelyingParty {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A provider with one confidential client of `relying_party` and user alice. `None` when
/// the test is skipped.
async fn provider(relying_party: &RelyingParty) -> Option<OidcProvider> {
    let mut provider = OidcProvider::start().await?;
    provider
        .configure(
            json!([web_client(
                CLIENT_ID,
                CLIENT_SECRET,
                &relying_party.url("/callback"),
                &relying_party.url("/signed-out"),
                &relying_party.url("/backchannel-logout"),
            )]),
            accounts(),
        )
        .await;
    Some(provider)
}

/// Random enough for a test: std's per-instance hash keys.
fn random_text() -> String {
    let state = RandomState::new();
    format!("{:016x}{:016x}", state.hash_one(1u8), state.hash_one(2u8))
}

/// A PKCE pair: the verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = format!("verifier-{}-{}", random_text(), random_text());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The authorization request of the client, with `extra` parameters (`&name=value...`).
async fn authorize_url(
    provider: &OidcProvider,
    relying_party: &RelyingParty,
    state: &str,
    extra: &str,
) -> String {
    format!(
        "{}?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope={}&state={state}{extra}",
        provider.endpoint("authorization_endpoint").await,
        encode(&relying_party.url("/callback")),
        encode(SCOPE),
    )
}

/// The code grant at the token endpoint, the client authenticated with HTTP Basic.
async fn redeem(
    provider: &OidcProvider,
    relying_party: &RelyingParty,
    code: &str,
    verifier: &str,
) -> HttpResponse {
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", encode(CLIENT_ID), encode(CLIENT_SECRET)))
    );
    let body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        encode(code),
        encode(&relying_party.url("/callback")),
        encode(verifier)
    );
    client::post(
        &provider.endpoint("token_endpoint").await,
        &[
            ("authorization", &basic),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &body,
    )
    .await
}

/// Header and claims of a JWT, unverified.
fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let part = parts.next().expect("a JWT has three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    };
    (next(), next())
}

/// A completed login of alice in `browser`: the ID token's claims and the access token.
async fn login(
    provider: &OidcProvider,
    relying_party: &RelyingParty,
    browser: &mut WebBrowser,
) -> (Value, String) {
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        provider,
        relying_party,
        "s1",
        &format!("&nonce=n1&code_challenge={challenge}&code_challenge_method=S256"),
    )
    .await;
    let callback = browser.login_at_provider(&url, "alice").await;
    let code = query_param(&callback, "code").expect("a code");
    let tokens = redeem(provider, relying_party, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    let (_, claims) = decode_jwt(tokens["id_token"].as_str().unwrap());
    (claims, tokens["access_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_login_with_pkce_gives_a_code_that_buys_an_id_token_once() {
    let relying_party = RelyingParty::start().await;
    let Some(provider) = provider(&relying_party).await else {
        return;
    };
    let issuer = provider.issuer().to_owned();
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &provider,
        &relying_party,
        "state-1",
        &format!("&nonce=nonce-1&code_challenge={challenge}&code_challenge_method=S256"),
    )
    .await;

    let mut browser = WebBrowser::new();
    let callback = browser.login_at_provider(&url, "alice").await;
    assert!(
        callback.starts_with(&relying_party.url("/callback?")),
        "{callback}"
    );
    assert_eq!(query_param(&callback, "state").as_deref(), Some("state-1"));
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(issuer.as_str()),
        "the provider names itself in the redirect (RFC 9207)"
    );
    let code = query_param(&callback, "code").expect("a code");
    assert!(
        relying_party.seen().is_empty(),
        "the browser stopped before the callback"
    );

    let tokens = redeem(&provider, &relying_party, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], SCOPE);
    let (header, claims) = decode_jwt(tokens["id_token"].as_str().expect("an ID token"));
    assert_eq!(header["alg"], "RS256");
    let jwks = provider.jwks().await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|key| key["kid"] == header["kid"]),
        "the signing key is published: {header} {jwks}"
    );
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "nonce-1");
    assert!(claims["sid"].is_string(), "{claims}");
    // Nothing else: no auth_time (no max_age was asked for), no at_hash (not in the code
    // flow's ID token) and, with conformIdTokenClaims, none of the scopes' claims, which only
    // the userinfo endpoint gives.
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["aud", "exp", "iat", "iss", "nonce", "sid", "sub"],
        "{claims}"
    );

    let userinfo = client::get(
        &provider.endpoint("userinfo_endpoint").await,
        &[(
            "authorization",
            &format!("Bearer {}", tokens["access_token"].as_str().unwrap()),
        )],
    )
    .await;
    assert_eq!(userinfo.status, 200, "{}", userinfo.text());
    assert_eq!(
        userinfo.json(),
        json!({
            "sub": "alice",
            "email": "alice@example.test",
            "email_verified": true,
            "name": "Alice",
            "groups": ["sales", "admins"],
        })
    );

    // Signed in at the provider, the browser gets a new code without the login page; a
    // verifier that does not match its challenge buys nothing.
    let (_, challenge) = pkce();
    let url = authorize_url(
        &provider,
        &relying_party,
        "state-2",
        &format!("&nonce=nonce-2&code_challenge={challenge}&code_challenge_method=S256"),
    )
    .await;
    let second = browser
        .follow(&url, |next| next.starts_with(&relying_party.url("/")))
        .await
        .stopped_at();
    assert_eq!(query_param(&second, "state").as_deref(), Some("state-2"));
    let second_code = query_param(&second, "code").expect("a second code");
    let mismatch = redeem(&provider, &relying_party, &second_code, &verifier).await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.text());
    assert_eq!(mismatch.json()["error"], "invalid_grant");

    // A code is good once; presented again (with its right verifier) it is refused, and the
    // provider revokes the whole grant, the access token bought with it included.
    let again = redeem(&provider, &relying_party, &code, &verifier).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["error"], "invalid_grant");
    let revoked = client::get(
        &provider.endpoint("userinfo_endpoint").await,
        &[(
            "authorization",
            &format!("Bearer {}", tokens["access_token"].as_str().unwrap()),
        )],
    )
    .await;
    assert_eq!(revoked.status, 401, "{}", revoked.text());
}

#[tokio::test]
async fn pkce_is_required_and_only_s256() {
    let relying_party = RelyingParty::start().await;
    let Some(provider) = provider(&relying_party).await else {
        return;
    };
    let leaves = |url: &str| site(url) != site(provider.issuer());
    let (verifier, _) = pkce();
    for (what, extra) in [
        ("no challenge", "&nonce=n".to_owned()),
        (
            "plain",
            format!("&nonce=n&code_challenge={verifier}&code_challenge_method=plain"),
        ),
    ] {
        let url = authorize_url(&provider, &relying_party, "s", &extra).await;
        let refused = WebBrowser::new().follow(&url, leaves).await.stopped_at();
        assert!(
            refused.starts_with(&relying_party.url("/callback?")),
            "{what}: {refused}"
        );
        assert_eq!(
            query_param(&refused, "error").as_deref(),
            Some("invalid_request"),
            "{what}: {refused}"
        );
        assert!(query_param(&refused, "code").is_none(), "{what}");
    }
}

#[tokio::test]
async fn an_unknown_user_is_sent_back_with_access_denied() {
    let relying_party = RelyingParty::start().await;
    let Some(provider) = provider(&relying_party).await else {
        return;
    };
    let (_, challenge) = pkce();
    let url = authorize_url(
        &provider,
        &relying_party,
        "state-m",
        &format!("&nonce=n&code_challenge={challenge}&code_challenge_method=S256"),
    )
    .await;
    let callback = WebBrowser::new().login_at_provider(&url, "mallory").await;
    assert!(
        callback.starts_with(&relying_party.url("/callback?")),
        "{callback}"
    );
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(
        query_param(&callback, "error_description").as_deref(),
        Some("unknown user")
    );
    assert_eq!(query_param(&callback, "state").as_deref(), Some("state-m"));
    assert!(query_param(&callback, "code").is_none());
}

#[tokio::test]
async fn ending_the_session_posts_a_logout_token_to_the_client() {
    let relying_party = RelyingParty::start().await;
    let Some(provider) = provider(&relying_party).await else {
        return;
    };
    let issuer = provider.issuer().to_owned();
    let mut browser = WebBrowser::new();
    let (id_token, _) = login(&provider, &relying_party, &mut browser).await;

    let end_session = format!(
        "{}?client_id={CLIENT_ID}&post_logout_redirect_uri={}&state=bye",
        provider.endpoint("end_session_endpoint").await,
        encode(&relying_party.url("/signed-out")),
    );
    let back = browser
        .end_session_at_provider(&end_session)
        .await
        .stopped_at();
    assert_eq!(back, relying_party.url("/signed-out?state=bye"));

    // The provider posted the logout token before it answered the confirmation.
    let seen = relying_party.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/backchannel-logout")
    );
    let token = query_param(&format!("?{}", seen[0].body), "logout_token").expect("logout_token");
    let (header, claims) = decode_jwt(&token);
    assert_eq!(header["typ"], "logout+jwt", "{header}");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], issuer);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], id_token["sid"], "the ID token's session");
    assert_eq!(claims["events"], json!({ BACKCHANNEL_LOGOUT_EVENT: {} }));
    assert!(claims["jti"].is_string(), "{claims}");
    assert!(claims.get("nonce").is_none(), "{claims}");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 120, "{claims}");

    // Signed out at the provider: the next authorization shows the login page again.
    let (_, challenge) = pkce();
    let url = authorize_url(
        &provider,
        &relying_party,
        "s",
        &format!("&nonce=n&code_challenge={challenge}&code_challenge_method=S256"),
    )
    .await;
    match browser
        .follow(&url, |next| next.starts_with(&relying_party.url("/")))
        .await
    {
        Followed::Arrived { url, response } => {
            assert_eq!(response.status, 200, "{url}");
            assert!(
                form_action(&response.text()).is_some(),
                "{}",
                response.text()
            );
        }
        Followed::Stopped(url) => panic!("still signed in at the provider: {url}"),
    }
}
