//! SAML 2.0 Single Logout through real nodes against a real identity provider (pysaml2, see
//! `harness::saml_idp` and the `slo_*` routes of `tests/saml-idp/idp.py`): two nodes on one
//! control plane. The identity provider's signed LogoutRequest, over HTTP-Redirect or
//! HTTP-POST, brought by the browser to one node, ends the sessions it names on every node
//! and closes their WebSockets on the other; an unsigned or foreign-signed one ends nothing.
//! A logout here sends the browser to the identity provider with our LogoutRequest, and its
//! LogoutResponse brings the browser back, once, to the browser that logged out only: another
//! browser bringing it spends nothing.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::browser::fixtures::{AppProxy, COOKIE, PROPAGATION, assert_still_open, open_socket};
use crate::harness::client::{self, HttpResponse, encode, expect_close, query_param, websocket};
use crate::harness::redis_server::free_port;
use crate::harness::saml_idp::{SamlIdp, make_key};
use crate::harness::web_browser::{WebBrowser, form_action, input_value};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};

pub(super) const BINDING: &str = "X-Qlik-Session-app-saml";
pub(super) const SP_ENTITY: &str = "urn:gatehouse:test:app";

/// An identity provider, virtual proxy "app" with Single Logout, one control plane and two
/// nodes; the identity provider knows node A's address (as it would the load balancer's).
pub(super) struct Fleet {
    _redis: Option<RedisServer>,
    pub(super) idp: SamlIdp,
    _upstream: EchoUpstream,
    _control_plane: ControlPlane,
    pub(super) a: DataPlaneNode,
    pub(super) b: DataPlaneNode,
    /// The service provider's key pair (`sp.key`, `sp.crt`), when it has one.
    _keys: tempfile::TempDir,
}

/// A browser's login: its cookie pair and the SessionIndex the identity provider gave it.
pub(super) struct Login {
    pub(super) browser: WebBrowser,
    pub(super) cookie: String,
    pub(super) session_index: String,
}

/// How a fleet differs from the plain one.
#[derive(Default)]
pub(super) struct Variant<'a> {
    /// The control plane's store (the memory store without).
    pub(super) redis: Option<RedisServer>,
    /// More options of `idp.py` (`--slo-binding post`, `--want-signed-logout`).
    pub(super) idp_options: &'a [&'a str],
    /// The service provider has a key pair.
    pub(super) key_pair: bool,
    /// More lines of the `saml` table.
    pub(super) saml: &'a str,
}

async fn fleet() -> Option<Fleet> {
    fleet_with(Variant::default()).await
}

async fn fleet_on(redis: Option<RedisServer>) -> Option<Fleet> {
    fleet_with(Variant {
        redis,
        ..Variant::default()
    })
    .await
}

/// The fleet, as `variant` says.
pub(super) async fn fleet_with(variant: Variant<'_>) -> Option<Fleet> {
    let port_a = free_port();
    let url_a = format!("http://127.0.0.1:{port_a}");
    let metadata_url = format!("{url_a}/app/saml/metadata");
    let idp = SamlIdp::start_with(&metadata_url, variant.idp_options).await?;
    let upstream = EchoUpstream::start("engine").await;
    let keys = tempfile::TempDir::new().expect("a temporary directory");
    let key_lines = if variant.key_pair {
        make_key(keys.path(), "sp");
        format!(
            "sp_key_file = {:?}\nsp_certificate_file = {:?}\n",
            keys.path().join("sp.key"),
            keys.path().join("sp.crt")
        )
    } else {
        String::new()
    };
    let table = format!(
        "[virtual_proxies.saml]\nidp_metadata_file = {:?}\nentity_id = \"{SP_ENTITY}\"\n\
         acs_url = \"{url_a}/app/saml/acs\"\nuser_directory = \"IDP\"\nsingle_logout = true\n\
         logout_redirect = \"/app/signed-out\"\n{key_lines}{}\n",
        idp.metadata_file().to_str().expect("a UTF-8 path"),
        variant.saml,
    );
    let redis = variant.redis;
    let proxy = AppProxy::new([upstream.node()]).table(&table);
    let settings = redis
        .as_ref()
        .map_or_else(|| proxy.toml(), |redis| proxy.on_redis(redis));
    let control_plane = ControlPlane::start(&settings).await;
    let a = DataPlaneNode::start_with(&control_plane, &format!("listen = \"127.0.0.1:{port_a}\""))
        .await;
    let b = DataPlaneNode::start(&control_plane).await;
    Some(Fleet {
        _redis: redis,
        idp,
        _upstream: upstream,
        _control_plane: control_plane,
        a,
        b,
        _keys: keys,
    })
}

impl Fleet {
    /// A fresh browser logs in as `user` at node A.
    pub(super) async fn login(&self, user: &str) -> Login {
        let mut browser = WebBrowser::new();
        let first = browser.get(&self.a.url("/app/hub")).await;
        assert_eq!(first.status, 302, "{}", first.text());
        let location = first.location().expect("a Location").to_owned();
        let page = browser.get(&format!("{location}&user={user}")).await;
        assert_eq!(page.status, 200, "the identity provider: {}", page.text());
        let html = page.text();
        let saml_response = input_value(&html, "SAMLResponse").expect("a SAMLResponse");
        let xml =
            String::from_utf8(STANDARD.decode(&saml_response).expect("base64")).expect("UTF-8");
        let session_index = xml
            .split("SessionIndex=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the assertion has a SessionIndex")
            .to_owned();
        let relay_state = input_value(&html, "RelayState").unwrap_or_default();
        let fields = [
            ("SAMLResponse", saml_response.as_str()),
            ("RelayState", relay_state.as_str()),
        ];
        let action = form_action(&html).expect("a form");
        let done = browser
            .post_form(&action, &fields, &[("origin", self.idp.origin())])
            .await;
        assert_eq!(done.status, 302, "{}", done.text());
        let cookie = done.cookie_pair(COOKIE).expect("a session cookie");
        Login {
            browser,
            cookie,
            session_index,
        }
    }

    pub(super) fn slo_url(&self) -> String {
        self.a.url("/app/saml/slo")
    }

    /// The identity provider's LogoutRequest for alice (of one SessionIndex, or all hers),
    /// over `binding` (`redirect`: the URL; `post`: the base64 SAMLRequest), signed by
    /// `sign` (`own`, `other`, `none`).
    pub(super) async fn idp_logout_request(
        &self,
        index: Option<&str>,
        binding: &str,
        sign: &str,
    ) -> String {
        let mut url = format!(
            "{}/slo/start?destination={}&name_id=alice&binding={binding}&sign={sign}",
            self.idp.origin(),
            encode(&self.slo_url())
        );
        if let Some(index) = index {
            url.push_str(&format!("&session_index={}", encode(index)));
        }
        let made = client::get(&url, &[]).await;
        assert_eq!(made.status, 200, "the identity provider: {}", made.text());
        made.text()
    }

    /// The browser brings the identity provider's LogoutRequest to node A.
    pub(super) async fn bring(
        &self,
        browser: &mut WebBrowser,
        binding: &str,
        message: &str,
    ) -> HttpResponse {
        if binding == "redirect" {
            browser.get(message).await
        } else {
            let fields = [("SAMLRequest", message), ("RelayState", "idp-relay")];
            browser
                .post_form(&self.slo_url(), &fields, &[("origin", self.idp.origin())])
                .await
        }
    }

    /// Whether node `node` refuses `cookie` (sends the browser to log in again).
    pub(super) async fn refuses(&self, node: &DataPlaneNode, cookie: &str) -> bool {
        let page = client::get(&node.url("/app/hub"), &[("cookie", cookie)]).await;
        page.status == 302
            && page
                .location()
                .is_some_and(|location| location.starts_with(&self.idp.sso_url()))
    }

    pub(super) async fn serves(&self, node: &DataPlaneNode, cookie: &str) -> bool {
        client::get(&node.url("/app/hub"), &[("cookie", cookie)])
            .await
            .status
            == 200
    }

    /// What the identity provider's SingleLogoutService received from us.
    pub(super) async fn logout_requests_seen(&self) -> Vec<serde_json::Value> {
        let seen = client::get(&format!("{}/slo/seen", self.idp.origin()), &[]).await;
        seen.text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON"))
            .collect()
    }
}

/// Waits for the session-ended close frame, within 2 s of `since`.
pub(super) async fn closed_by_revocation(
    socket: &mut client::WebSocket,
    since: Instant,
    what: &str,
) {
    let frame = expect_close(socket, Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("{what}: a close frame with a code"));
    eprintln!(
        "{what}: WebSocket closed {:?} after the logout",
        since.elapsed()
    );
    assert_eq!(frame.code, CloseCode::Policy, "{what}: {frame:?}");
}

/// IdP-initiated logout over `binding`: the browser brings the identity provider's signed
/// LogoutRequest for one of alice's SessionIndexes to node A; that session's WebSocket on
/// node B closes and both nodes refuse its cookie, while her other session and bob's live
/// on, and the browser is sent back to the identity provider with our LogoutResponse.
async fn identity_provider_logout_closes_a_websocket_on_another_node(
    binding: &str,
    redis: Option<RedisServer>,
) {
    let Some(fleet) = fleet_on(redis).await else {
        return;
    };
    let mut first = fleet.login("alice").await;
    let second = fleet.login("alice").await;
    let bob = fleet.login("bob").await;
    assert_ne!(first.session_index, second.session_index);
    assert!(fleet.serves(&fleet.b, &first.cookie).await);
    let mut socket = open_socket(&fleet.b, &first.cookie).await;

    let message = fleet
        .idp_logout_request(Some(&first.session_index), binding, "own")
        .await;
    let logged_out = Instant::now();
    let answer = fleet.bring(&mut first.browser, binding, &message).await;
    assert_eq!(answer.status, 302, "{binding}: {}", answer.text());
    let back = answer.location().expect("a Location").to_owned();
    assert!(
        back.starts_with(&format!(
            "{}/slo/redirect?SAMLResponse=",
            fleet.idp.origin()
        )),
        "{back}"
    );
    assert_eq!(
        query_param(&back, "RelayState").as_deref(),
        Some("idp-relay"),
        "{back}"
    );
    closed_by_revocation(&mut socket, logged_out, binding).await;

    let at_idp = first.browser.get(&back).await;
    assert_eq!(at_idp.status, 200, "{}", at_idp.text());
    assert!(
        at_idp
            .text()
            .contains("urn:oasis:names:tc:SAML:2.0:status:Success"),
        "the identity provider read our LogoutResponse: {}",
        at_idp.text()
    );
    for node in [&fleet.a, &fleet.b] {
        let cookie = first.cookie.clone();
        eventually("the logged-out cookie refused", PROPAGATION, || async {
            fleet.refuses(node, &cookie).await.then_some(())
        })
        .await;
    }
    assert!(
        websocket(&fleet.b.ws_url("/app/ws"), &[("cookie", &first.cookie)])
            .await
            .is_err(),
        "no new WebSocket for the ended session"
    );
    assert!(
        fleet.serves(&fleet.b, &second.cookie).await,
        "alice's other session"
    );
    assert!(fleet.serves(&fleet.b, &bob.cookie).await, "bob's session");

    // The same LogoutRequest again ends nothing (the second session stays).
    let again = fleet.bring(&mut WebBrowser::new(), binding, &message).await;
    assert_eq!(
        again.status,
        401,
        "a replayed LogoutRequest: {}",
        again.text()
    );
    assert!(fleet.serves(&fleet.a, &second.cookie).await);
}

#[tokio::test]
async fn an_identity_provider_logout_over_redirect_closes_a_websocket_on_another_node() {
    identity_provider_logout_closes_a_websocket_on_another_node("redirect", None).await;
}

#[tokio::test]
async fn an_identity_provider_logout_closes_a_websocket_on_another_node_with_the_store_on_redis() {
    let redis = RedisServer::start().await;
    identity_provider_logout_closes_a_websocket_on_another_node("redirect", Some(redis)).await;
}

#[tokio::test]
async fn an_identity_provider_logout_over_post_closes_a_websocket_on_another_node() {
    identity_provider_logout_closes_a_websocket_on_another_node("post", None).await;
}

#[tokio::test]
async fn a_logout_request_without_a_session_index_ends_every_session_of_the_name_id() {
    let Some(fleet) = fleet().await else {
        return;
    };
    let first = fleet.login("alice").await;
    let second = fleet.login("alice").await;
    let bob = fleet.login("bob").await;
    let mut socket = open_socket(&fleet.b, &second.cookie).await;
    let message = fleet.idp_logout_request(None, "post", "own").await;
    let logged_out = Instant::now();
    let answer = fleet.bring(&mut WebBrowser::new(), "post", &message).await;
    assert_eq!(answer.status, 302, "{}", answer.text());
    closed_by_revocation(&mut socket, logged_out, "no SessionIndex").await;
    for cookie in [&first.cookie, &second.cookie] {
        eventually("alice's sessions refused", PROPAGATION, || async {
            fleet.refuses(&fleet.b, cookie).await.then_some(())
        })
        .await;
    }
    assert!(fleet.serves(&fleet.b, &bob.cookie).await, "bob's session");
}

#[tokio::test]
async fn unsigned_foreign_signed_or_altered_logout_requests_are_refused_and_end_nothing() {
    let Some(fleet) = fleet().await else {
        return;
    };
    let alice = fleet.login("alice").await;
    let mut socket = open_socket(&fleet.b, &alice.cookie).await;
    let index = Some(alice.session_index.as_str());
    for (binding, sign) in [
        ("redirect", "none"),
        ("redirect", "other"),
        ("post", "none"),
        ("post", "other"),
    ] {
        let message = fleet.idp_logout_request(index, binding, sign).await;
        let answer = fleet.bring(&mut WebBrowser::new(), binding, &message).await;
        assert_eq!(answer.status, 403, "{binding} {sign}: {}", answer.text());
        assert!(
            answer
                .text()
                .contains("not signed by the identity provider"),
            "{binding} {sign}: {}",
            answer.text()
        );
    }
    // Signed, then altered: another RelayState than the one signed.
    let signed = fleet.idp_logout_request(index, "redirect", "own").await;
    let altered = signed.replace("RelayState=idp-relay", "RelayState=elsewhere");
    assert_ne!(altered, signed);
    let answer = fleet
        .bring(&mut WebBrowser::new(), "redirect", &altered)
        .await;
    assert_eq!(answer.status, 403, "altered: {}", answer.text());
    // A signature with its SigAlg removed is no signature: refused too.
    let stripped: String = signed
        .split('&')
        .filter(|pair| !pair.starts_with("SigAlg="))
        .collect::<Vec<_>>()
        .join("&");
    let answer = fleet
        .bring(&mut WebBrowser::new(), "redirect", &stripped)
        .await;
    assert_eq!(answer.status, 403, "without SigAlg: {}", answer.text());

    assert_still_open(&mut socket).await;
    assert!(fleet.serves(&fleet.a, &alice.cookie).await);
    assert!(fleet.serves(&fleet.b, &alice.cookie).await);
}

#[tokio::test]
async fn a_logout_here_goes_to_the_identity_provider_and_comes_back() {
    let Some(fleet) = fleet().await else {
        return;
    };
    let metadata = client::get(&fleet.a.url("/app/saml/metadata"), &[]).await;
    assert!(
        metadata.text().contains("SingleLogoutService")
            && metadata.text().contains(&fleet.slo_url()),
        "the SP metadata announces its SingleLogoutService: {}",
        metadata.text()
    );
    let mut alice = fleet.login("alice").await;
    let mut socket = open_socket(&fleet.b, &alice.cookie).await;

    // A cross-site link cannot log the user out.
    let cross_site = alice
        .browser
        .get_with(
            &fleet.a.url("/app/saml/logout"),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(cross_site.status, 403, "{}", cross_site.text());
    assert!(fleet.serves(&fleet.a, &alice.cookie).await);

    let origin = format!("http://{}", fleet.a.address());
    let logged_out = Instant::now();
    let logout = alice
        .browser
        .get_with(&fleet.a.url("/app/saml/logout"), &[("origin", &origin)])
        .await;
    assert_eq!(logout.status, 302, "{}", logout.text());
    let to_idp = logout.location().expect("a Location").to_owned();
    assert!(
        to_idp.starts_with(&format!("{}/slo/redirect?SAMLRequest=", fleet.idp.origin())),
        "{to_idp}"
    );
    closed_by_revocation(&mut socket, logged_out, "a logout here").await;
    assert!(fleet.refuses(&fleet.b, &alice.cookie).await);

    // The identity provider reads our LogoutRequest and sends the browser back.
    let at_idp = alice.browser.get(&to_idp).await;
    assert_eq!(
        at_idp.status,
        302,
        "the identity provider: {}",
        at_idp.text()
    );
    let seen = fleet.logout_requests_seen().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["name_id"], "alice");
    assert_eq!(seen[0]["issuer"], SP_ENTITY);
    assert_eq!(seen[0]["session_index"][0], alice.session_index.as_str());
    let back = at_idp.location().expect("a Location").to_owned();
    assert!(
        back.starts_with(&format!("{}?SAMLResponse=", fleet.slo_url())),
        "{back}"
    );
    assert!(
        back.contains("&Signature="),
        "pysaml2 signs its answer: {back}"
    );

    // Another browser cannot take the answer, nor spend it: the browser that logged out
    // still lands, once.
    let elsewhere = WebBrowser::new().get(&back).await;
    assert_eq!(elsewhere.status, 401, "{}", elsewhere.text());
    assert!(
        elsewhere
            .text()
            .contains("answers no logout of this browser")
    );
    let landed = alice.browser.get(&back).await;
    assert_eq!(
        landed.status,
        302,
        "the other browser's attempt left the logout in place: {}",
        landed.text()
    );
    assert_eq!(landed.location(), Some("/app/signed-out"));
    let again = alice.browser.get(&back).await;
    assert_eq!(
        again.status,
        401,
        "a LogoutResponse works once: {}",
        again.text()
    );
}

#[tokio::test]
async fn a_logout_response_lands_once_and_only_where_the_logout_started() {
    let Some(fleet) = fleet().await else {
        return;
    };
    let mut alice = fleet.login("alice").await;
    let origin = format!("http://{}", fleet.a.address());
    // `DELETE /qps/user` names the identity provider's logout URL for the page to go to.
    let deleted = alice
        .browser
        .send(
            http::Method::DELETE,
            &fleet.a.url("/app/qps/user"),
            &[("origin", &origin)],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["session"], "ended");
    let to_idp = deleted.json()["samlLogoutUri"]
        .as_str()
        .expect("samlLogoutUri")
        .to_owned();
    assert!(
        alice
            .browser
            .cookie_pair(&fleet.a.url("/"), BINDING)
            .is_some()
    );

    // The identity provider's genuine, signed answer to our LogoutRequest sent on with
    // another RelayState (our request is unsigned, so the provider takes it): it answers no
    // logout of ours.
    let relay = query_param(&to_idp, "RelayState").expect("a RelayState");
    let other = to_idp.replace(&encode(&relay), "someone-elses");
    assert_ne!(other, to_idp);
    let at_idp = alice.browser.get(&other).await;
    assert_eq!(
        at_idp.status,
        302,
        "the identity provider: {}",
        at_idp.text()
    );
    let unknown = at_idp.location().expect("a Location").to_owned();
    assert!(unknown.contains("&Signature="), "{unknown}");
    let refused = alice.browser.get(&unknown).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(refused.text().contains("answers no logout of this browser"));

    let at_idp = alice.browser.get(&to_idp).await;
    assert_eq!(
        at_idp.status,
        302,
        "the identity provider: {}",
        at_idp.text()
    );
    let back = at_idp.location().expect("a Location").to_owned();
    let landed = alice.browser.get(&back).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(landed.location(), Some("/app/signed-out"));
    let again = alice.browser.get(&back).await;
    assert_eq!(
        again.status,
        401,
        "a LogoutResponse works once: {}",
        again.text()
    );
}
