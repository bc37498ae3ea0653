//! SAML 2.0 login (Web Browser SSO, SP-initiated, HTTP-Redirect then HTTP-POST) through a
//! node, against a real identity provider (pysaml2, see `harness::saml_idp`). A browser
//! without a session is sent to the identity provider with an AuthnRequest, comes back with
//! the form the identity provider's page posts to the node's ACS, and ends with a normal
//! session (user from the NameID, attributes and groups from the assertion). Each way a
//! Response can be wrong ends with 401 and no session; the wrong Responses are made by
//! altering one thing in a genuine one and signing it with the identity provider's own key
//! (pysaml2's signing), so that each refusal is about that one thing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_proto::v1 as pb;

use crate::browser::fixtures::{AppProxy, COOKIE, qlik_user, seen_header};
use crate::harness::client::{self, HttpResponse, encode, query_param};
use crate::harness::redis_server::free_port;
use crate::harness::saml_idp::SamlIdp;
use crate::harness::web_browser::{WebBrowser, form_action, input_value};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer};

/// The cookie that ties a login in progress to the browser that started it.
const BINDING: &str = "X-Qlik-Session-app-saml";
/// The service provider's entity id, registered at the identity provider.
const SP_ENTITY: &str = "urn:gatehouse:test:app";
const DIRECTORY: &str = "IDP";

/// An identity provider, virtual proxy "app" logging in with it, and one node.
pub(super) struct Site {
    pub(super) idp: SamlIdp,
    _upstream: EchoUpstream,
    control_plane: ControlPlane,
    pub(super) node: DataPlaneNode,
}

/// `[virtual_proxies.saml]` of "app", whose ACS is on `node_url`, with its metadata from
/// the identity provider's file; `extra` goes into it.
fn saml_table(idp: &SamlIdp, node_url: &str, extra: &str) -> String {
    let file = format!(
        "idp_metadata_file = {:?}",
        idp.metadata_file()
            .to_str()
            .expect("a UTF-8 temporary path")
    );
    saml_table_with(&file, node_url, extra)
}

/// `[virtual_proxies.saml]` of "app" with `metadata` (the line naming where the identity
/// provider's metadata is).
fn saml_table_with(metadata: &str, node_url: &str, extra: &str) -> String {
    format!(
        "[virtual_proxies.saml]\n{metadata}\nentity_id = \"{SP_ENTITY}\"\n\
         acs_url = \"{node_url}/app/saml/acs\"\nuser_directory = \"{DIRECTORY}\"\n\
         attributes = {{ Email = \"mail\" }}\ngroups_attribute = \"eduPersonAffiliation\"\n{extra}\n",
    )
}

/// The site; `extra` goes into the `saml` table. `None` when the test is skipped.
async fn site(extra: &str) -> Option<Site> {
    let node_port = free_port();
    let node_url = format!("http://127.0.0.1:{node_port}");
    let idp = SamlIdp::start(&format!("{node_url}/app/saml/metadata")).await?;
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&saml_table(&idp, &node_url, extra));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start_with(
        &control_plane,
        &format!("listen = \"127.0.0.1:{node_port}\""),
    )
    .await;
    Some(Site {
        idp,
        _upstream: upstream,
        control_plane,
        node,
    })
}

/// What the identity provider's page posts: the ACS URL, `SAMLResponse` and `RelayState`.
#[derive(Debug, Clone)]
struct PostedForm {
    action: String,
    saml_response: String,
    relay_state: String,
}

impl PostedForm {
    /// The Response's XML.
    fn xml(&self) -> String {
        String::from_utf8(STANDARD.decode(&self.saml_response).expect("base64")).expect("UTF-8")
    }

    /// The same form with another Response.
    fn with_xml(&self, xml: &str) -> Self {
        Self {
            saml_response: STANDARD.encode(xml),
            ..self.clone()
        }
    }
}

impl Site {
    /// `browser` GETs `path` without a session and follows the redirect to the identity
    /// provider, signing in as `user`; `sign` is what the identity provider signs
    /// (`assertion`, `response`, `both`, `none`). Returns the form its page would post.
    async fn sign_in(
        &self,
        browser: &mut WebBrowser,
        path: &str,
        user: &str,
        sign: &str,
    ) -> PostedForm {
        let first = browser.get(&self.node.url(path)).await;
        assert_eq!(first.status, 302, "{path}: {}", first.text());
        let location = first.location().expect("a Location").to_owned();
        assert!(
            location.starts_with(&format!("{}?", self.idp.sso_url())),
            "{location}"
        );
        let page = browser
            .get(&format!("{location}&user={user}&sign={sign}"))
            .await;
        assert_eq!(page.status, 200, "the identity provider: {}", page.text());
        let html = page.text();
        PostedForm {
            action: form_action(&html).expect("a form"),
            saml_response: input_value(&html, "SAMLResponse").expect("a SAMLResponse"),
            relay_state: input_value(&html, "RelayState").unwrap_or_default(),
        }
    }

    /// `browser` posts `form` to the ACS, from the identity provider's page (a cross-site
    /// POST: its `Origin` is the identity provider's).
    async fn post(&self, browser: &mut WebBrowser, form: &PostedForm) -> HttpResponse {
        let mut fields = vec![("SAMLResponse", form.saml_response.as_str())];
        if !form.relay_state.is_empty() {
            fields.push(("RelayState", form.relay_state.as_str()));
        }
        browser
            .post_form(&form.action, &fields, &[("origin", self.idp.origin())])
            .await
    }

    /// A fresh login of alice whose Response is unsigned, altered by `alter`, then signed
    /// (`what`, with the other key when `other_key`), and posted: the node's answer.
    pub(super) async fn altered(
        &self,
        what: &str,
        other_key: bool,
        alter: impl FnOnce(String) -> String,
    ) -> HttpResponse {
        let mut browser = WebBrowser::new();
        let form = self
            .sign_in(&mut browser, "/app/hub", "alice", "none")
            .await;
        let xml = alter(form.xml());
        let signed = self.idp.sign(&xml, what, other_key).await;
        self.post(&mut browser, &form.with_xml(&signed)).await
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
}

/// A refusal: 401 with `reason` in the body, and no session cookie.
fn assert_refused(response: &HttpResponse, reason: &str, what: &str) {
    assert_eq!(response.status, 401, "{what}: {}", response.text());
    assert!(
        response.text().contains(reason),
        "{what}: {:?} does not say {reason:?}",
        response.text()
    );
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

/// `xml` with the value of every attribute `name` replaced by `value`.
fn set_attribute(xml: &str, name: &str, value: &str) -> String {
    let needle = format!(" {name}=\"");
    let mut out = String::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&needle) {
        let start = at + needle.len();
        let end = start + rest[start..].find('"').expect("a closing quote");
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The assertion element of `xml` (with its prefix), as a substring.
fn assertion_of(xml: &str) -> &str {
    let open = xml
        .match_indices(":Assertion ")
        .next()
        .map(|(at, _)| xml[..at].rfind('<').expect("a tag"))
        .expect("an assertion");
    let prefix = &xml[open + 1..xml[open..].find(':').expect("a prefix") + open];
    let close_tag = format!("</{prefix}:Assertion>");
    let close = xml.find(&close_tag).expect("the assertion's end") + close_tag.len();
    &xml[open..close]
}

#[tokio::test]
async fn a_browser_is_sent_to_the_identity_provider_and_comes_back_with_a_session() {
    let Some(site) = site("").await else {
        return;
    };
    let mut browser = WebBrowser::new();

    // Only a GET can be sent to log in; anything else without a session is refused.
    let post = browser
        .post_form(&site.node.url("/app/hello"), &[("a", "b")], &[])
        .await;
    assert_eq!(post.status, 401, "{}", post.text());

    let first = browser.get(&site.node.url("/app/hello?x=1")).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let location = first.location().expect("a Location");
    assert!(query_param(location, "SAMLRequest").is_some(), "{location}");
    let relay_state = query_param(location, "RelayState").expect("a RelayState");
    assert_eq!(relay_state.len(), 43, "256 random bits: {relay_state}");
    let binding = first.set_cookie(BINDING).expect("the login-binding cookie");
    assert!(
        binding.to_ascii_lowercase().contains("httponly"),
        "{binding}"
    );

    let page = browser.get(&format!("{location}&user=alice")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let form = PostedForm {
        action: form_action(&html).expect("a form"),
        saml_response: input_value(&html, "SAMLResponse").expect("a SAMLResponse"),
        relay_state: input_value(&html, "RelayState").unwrap_or_default(),
    };
    assert_eq!(form.action, site.node.url("/app/saml/acs"));
    assert_eq!(form.relay_state, relay_state);

    let done = site.post(&mut browser, &form).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.location(), Some("/app/hello?x=1"));
    assert!(done.set_cookie(COOKIE).is_some(), "the session cookie");

    let page = browser.get(&site.node.url("/app/hello?x=1")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let seen = page.json();
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some(qlik_user(DIRECTORY, "alice").as_str())
    );
    // The groups and attributes of the assertion reach the upstream with the identity.
    let security = seen_header(&seen, "x-qlik-security").unwrap_or_default();
    for attribute in ["Group=admins", "Group=sales", "Email=alice%40example.com"] {
        assert!(security.contains(attribute), "{attribute} in {security}");
    }
    // Neither the session cookie nor the binding cookie reaches the upstream.
    let forwarded = seen_header(&seen, "cookie").unwrap_or_default();
    assert!(
        !forwarded.contains(COOKIE) && !forwarded.contains(BINDING),
        "{forwarded}"
    );

    let sessions = site.all_sessions().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let mut groups = attribute(&sessions[0], "Group");
    groups.sort_unstable();
    assert_eq!(groups, ["admins", "sales"]);
    assert_eq!(attribute(&sessions[0], "Email"), ["alice@example.com"]);

    // The Response works once: posted again, it names a login that is used up.
    let again = site.post(&mut WebBrowser::new(), &form).await;
    assert_refused(&again, "already used", "a replayed Response");
    let again = site.post(&mut browser, &form).await;
    assert_refused(&again, "already used", "a replayed Response, same browser");
}

#[tokio::test]
async fn the_service_provider_metadata_names_the_acs_and_entity_id() {
    let Some(site) = site("").await else {
        return;
    };
    let metadata = client::get(&site.node.url("/app/saml/metadata"), &[]).await;
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    assert_eq!(
        metadata.header("content-type"),
        Some("application/samlmetadata+xml")
    );
    let xml = metadata.text();
    assert!(xml.contains(&format!("entityID=\"{SP_ENTITY}\"")), "{xml}");
    assert!(
        xml.contains(&format!("Location=\"{}\"", site.node.url("/app/saml/acs"))),
        "{xml}"
    );
    assert!(xml.contains("WantAssertionsSigned=\"true\""), "{xml}");
}

#[tokio::test]
async fn a_response_signed_only_over_the_response_logs_in() {
    let Some(site) = site("").await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let form = site
        .sign_in(&mut browser, "/app/hub", "bob", "response")
        .await;
    let done = site.post(&mut browser, &form).await;
    assert_eq!(done.status, 302, "{}", done.text());
    let page = browser.get(&site.node.url("/app/hub")).await;
    assert_eq!(
        seen_header(&page.json(), "x-qlik-user"),
        Some(qlik_user(DIRECTORY, "bob").as_str())
    );
}

#[tokio::test]
async fn unsigned_or_foreign_signed_or_altered_responses_are_refused() {
    let Some(site) = site("").await else {
        return;
    };
    let not_signed = "not signed by the identity provider";

    let mut browser = WebBrowser::new();
    let unsigned = site
        .sign_in(&mut browser, "/app/hub", "alice", "none")
        .await;
    assert_refused(
        &site.post(&mut browser, &unsigned).await,
        not_signed,
        "an unsigned Response and Assertion",
    );

    let foreign = site.altered("assertion", true, |xml| xml).await;
    assert_refused(&foreign, not_signed, "an assertion signed by another key");
    let foreign = site.altered("response", true, |xml| xml).await;
    assert_refused(&foreign, not_signed, "a Response signed by another key");

    // Signed, then altered: the NameID changed after the identity provider signed.
    let mut browser = WebBrowser::new();
    let form = site
        .sign_in(&mut browser, "/app/hub", "alice", "none")
        .await;
    let signed = site.idp.sign(&form.xml(), "assertion", false).await;
    let altered = signed.replace(">alice<", ">bob<");
    assert_ne!(altered, signed);
    let response = site.post(&mut browser, &form.with_xml(&altered)).await;
    assert_refused(&response, not_signed, "an assertion altered after signing");

    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn a_signed_assertion_beside_an_unsigned_one_is_refused() {
    let Some(site) = site("").await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let form = site
        .sign_in(&mut browser, "/app/hub", "alice", "none")
        .await;
    let signed = site.idp.sign(&form.xml(), "assertion", false).await;
    let genuine = assertion_of(&signed).to_owned();
    // The forgery: the same assertion for mallory, without its signature, placed first
    // (where a naive reader looks) with the signed one after it.
    let signature_start = genuine
        .find("Signature ")
        .map(|at| genuine[..at].rfind('<').expect("a tag"));
    let forged = match signature_start {
        Some(start) => {
            let prefix_end = genuine[start + 1..].find(':').expect("a prefix") + start + 1;
            let close = format!("</{}:Signature>", &genuine[start + 1..prefix_end]);
            let end = genuine.find(&close).expect("the signature's end") + close.len();
            format!("{}{}", &genuine[..start], &genuine[end..])
        }
        None => panic!("the signed assertion has no signature: {genuine}"),
    }
    .replace(">alice<", ">mallory<");
    let forged = set_attribute(&forged, "ID", "_forged0123456789");
    let wrapped = signed.replacen(&genuine, &format!("{forged}{genuine}"), 1);
    let response = site.post(&mut browser, &form.with_xml(&wrapped)).await;
    assert_refused(&response, "more than one assertion", "signature wrapping");
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn misaddressed_expired_and_unrequested_responses_are_refused() {
    let Some(site) = site("").await else {
        return;
    };
    let audience = site
        .altered("assertion", false, |xml| {
            let altered = xml.replace(&format!(">{SP_ENTITY}<"), ">urn:another:sp<");
            assert_ne!(altered, xml, "an Audience to change");
            altered
        })
        .await;
    assert_refused(&audience, "Audience", "another Audience");

    let destination = site
        .altered("response", false, |xml| {
            set_attribute(&xml, "Destination", "http://elsewhere.test/saml/acs")
        })
        .await;
    assert_refused(&destination, "Destination", "another Destination");

    let recipient = site
        .altered("assertion", false, |xml| {
            set_attribute(&xml, "Recipient", "http://elsewhere.test/saml/acs")
        })
        .await;
    assert_refused(&recipient, "Recipient", "another Recipient");

    let expired = site
        .altered("assertion", false, |xml| {
            let old = "2020-01-01T00:00:00Z";
            let xml = set_attribute(&xml, "IssueInstant", old);
            let xml = set_attribute(&xml, "NotBefore", old);
            set_attribute(&xml, "NotOnOrAfter", "2020-01-01T00:05:00Z")
        })
        .await;
    assert_refused(&expired, "expired", "an expired Response");

    let unrequested = site
        .altered("both", false, |xml| {
            set_attribute(
                &xml,
                "InResponseTo",
                "_0123456789abcdef0123456789abcdef01234567",
            )
        })
        .await;
    assert_refused(
        &unrequested,
        "did not start",
        "an InResponseTo the node did not issue",
    );

    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn an_assertion_issued_in_the_future_is_refused_as_it_would_outlive_its_replay_marker() {
    let Some(site) = site("").await else {
        return;
    };
    // Issued a year ahead and valid for a day after that (an identity provider whose clock
    // runs ahead): taken, it would stay acceptable long after its spent marker expired.
    let ahead = site
        .altered("assertion", false, |xml| {
            let xml = set_attribute(&xml, "IssueInstant", "2099-01-01T00:00:00Z");
            set_attribute(&xml, "NotOnOrAfter", "2099-01-02T00:00:00Z")
        })
        .await;
    assert_refused(&ahead, "not valid yet", "an assertion issued in the future");
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn a_response_posted_by_another_browser_is_refused() {
    let Some(site) = site("").await else {
        return;
    };
    let mut victim = WebBrowser::new();
    let mut attacker = WebBrowser::new();
    let form = site
        .sign_in(&mut attacker, "/app/hub", "alice", "assertion")
        .await;
    // The attacker's own Response, posted from the victim's browser (login CSRF).
    let response = site.post(&mut victim, &form).await;
    assert_refused(
        &response,
        "another browser",
        "a Response from another browser",
    );
    // The victim's own login in progress does not help either: its binding is not this one.
    let _ = site
        .sign_in(&mut victim, "/app/hub", "bob", "assertion")
        .await;
    let form = site
        .sign_in(&mut attacker, "/app/hub", "alice", "assertion")
        .await;
    let response = site.post(&mut victim, &form).await;
    assert_refused(&response, "another browser", "with a login of its own");
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn a_relay_state_posted_by_another_browser_does_not_spend_the_login() {
    let Some(site) = site("").await else {
        return;
    };
    let mut victim = WebBrowser::new();
    let form = site
        .sign_in(&mut victim, "/app/hub", "alice", "assertion")
        .await;
    // Someone who learnt the victim's RelayState (a log, a Referer) posts with it first:
    // junk, and the victim's genuine Response itself, from browsers without its binding.
    let junk = form.with_xml("<junk/>");
    let refused = site.post(&mut WebBrowser::new(), &junk).await;
    assert_refused(
        &refused,
        "another browser",
        "junk with the victim's RelayState",
    );
    let refused = site.post(&mut WebBrowser::new(), &form).await;
    assert_refused(
        &refused,
        "another browser",
        "the Response from another browser",
    );
    // The victim's login is still there, and works once.
    let done = site.post(&mut victim, &form).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert!(done.set_cookie(COOKIE).is_some(), "the session cookie");
    let again = site.post(&mut victim, &form).await;
    assert_refused(&again, "already used", "the Response a second time");
    assert_eq!(site.all_sessions().await.len(), 1);
}

#[tokio::test]
async fn unsolicited_responses_are_refused_unless_allowed_and_then_work_once() {
    let Some(site) = site("").await else {
        return;
    };
    let form = unsolicited(&site).await;
    let refused = site.post(&mut WebBrowser::new(), &form).await;
    assert_refused(
        &refused,
        "unsolicited",
        "an IdP-initiated Response, not allowed",
    );

    let Some(allowing) = site_allowing_idp_initiated().await else {
        return;
    };
    let form = unsolicited(&allowing).await;
    let mut browser = WebBrowser::new();
    let done = allowing.post(&mut browser, &form).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.location(), Some("/app/"));
    assert!(done.set_cookie(COOKIE).is_some(), "the session cookie");
    // The assertion is spent: the same Response, posted again, starts no second session.
    let again = allowing.post(&mut WebBrowser::new(), &form).await;
    assert_refused(&again, "used already", "a replayed IdP-initiated Response");
    assert_eq!(allowing.all_sessions().await.len(), 1);

    // Another browser's Response to a login it started, posted without its relay state
    // where unsolicited ones are allowed: its InResponseTo, here on the Response element
    // only, keeps it from passing for one (its binding to that browser would be skipped).
    let started = allowing
        .sign_in(&mut WebBrowser::new(), "/app/hub", "bob", "none")
        .await;
    let xml = started.xml();
    let root_end = xml.find('>').expect("a Response element");
    let (root, rest) = xml.split_at(root_end);
    assert!(root.contains(" InResponseTo=\""), "{root}");
    let rest = without_attribute(rest, "InResponseTo");
    let signed = allowing
        .idp
        .sign(&format!("{root}{rest}"), "assertion", false)
        .await;
    let stolen = PostedForm {
        relay_state: String::new(),
        ..started.with_xml(&signed)
    };
    let refused = allowing.post(&mut WebBrowser::new(), &stolen).await;
    assert_refused(
        &refused,
        "did not start",
        "another browser's Response as unsolicited",
    );
    assert_eq!(allowing.all_sessions().await.len(), 1);
}

/// `xml` without any `name="..."` attribute.
fn without_attribute(xml: &str, name: &str) -> String {
    xml.split(&format!(" {name}=\""))
        .enumerate()
        .map(|(index, part)| {
            if index == 0 {
                part.to_owned()
            } else {
                part[part.find('"').expect("a closing quote") + 1..].to_owned()
            }
        })
        .collect()
}

/// An IdP-initiated Response for alice: no RelayState, no InResponseTo, signed.
async fn unsolicited(site: &Site) -> PostedForm {
    let mut browser = WebBrowser::new();
    let form = site
        .sign_in(&mut browser, "/app/hub", "alice", "none")
        .await;
    let xml = without_attribute(&form.xml(), "InResponseTo");
    assert!(!xml.contains("InResponseTo"), "{xml}");
    let signed = site.idp.sign(&xml, "assertion", false).await;
    PostedForm {
        relay_state: String::new(),
        ..form.with_xml(&signed)
    }
}

async fn site_allowing_idp_initiated() -> Option<Site> {
    site("allow_idp_initiated = true").await
}

#[tokio::test]
async fn a_login_started_on_one_node_finishes_on_another_and_an_assertion_works_once_everywhere() {
    let (port_a, port_b) = (free_port(), free_port());
    // The address the identity provider knows is node A's, as it would be the load balancer's.
    let url_a = format!("http://127.0.0.1:{port_a}");
    let Some(idp) = SamlIdp::start(&format!("{url_a}/app/saml/metadata")).await else {
        return;
    };
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&saml_table(
        &idp,
        &url_a,
        "allow_idp_initiated = true",
    ));
    let replica_a = ControlPlane::start(&proxy.on_redis(&redis)).await;
    let replica_b = ControlPlane::start(&proxy.on_redis(&redis)).await;
    let node_a =
        DataPlaneNode::start_with(&replica_a, &format!("listen = \"127.0.0.1:{port_a}\"")).await;
    let node_b =
        DataPlaneNode::start_with(&replica_b, &format!("listen = \"127.0.0.1:{port_b}\"")).await;
    let on_b = |url: &str| {
        url.replacen(
            &format!("127.0.0.1:{port_a}"),
            &format!("127.0.0.1:{port_b}"),
            1,
        )
    };
    let site_a = Site {
        idp,
        _upstream: upstream,
        control_plane: replica_a,
        node: node_a,
    };

    // Started on node A; the load balancer sends the POST to node B, cookies and all.
    let mut browser = WebBrowser::new();
    let form = site_a
        .sign_in(&mut browser, "/app/hub", "alice", "assertion")
        .await;
    let binding = browser
        .cookie_pair(&site_a.node.url("/"), BINDING)
        .expect("node A set the binding cookie");
    let to_b = PostedForm {
        action: on_b(&form.action),
        ..form.clone()
    };
    let fields = [
        ("SAMLResponse", to_b.saml_response.as_str()),
        ("RelayState", to_b.relay_state.as_str()),
    ];
    let done = browser
        .post_form(&to_b.action, &fields, &[("cookie", &binding)])
        .await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.location(), Some("/app/hub"));
    let cookie = done
        .cookie_pair(COOKIE)
        .expect("node B set the session cookie");
    // Node A serves the session node B created.
    let page = client::get(&site_a.node.url("/app/hub"), &[("cookie", &cookie)]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        seen_header(&page.json(), "x-qlik-user"),
        Some(qlik_user(DIRECTORY, "alice").as_str())
    );
    // The same Response at node A: its login is spent on the other replica.
    let again = site_a.post(&mut browser, &form).await;
    assert_refused(
        &again,
        "already used",
        "a Response replayed at the other node",
    );

    // An IdP-initiated Response logs in at node B once; at node A it is spent already.
    let unsolicited = unsolicited(&site_a).await;
    let at_b = PostedForm {
        action: on_b(&unsolicited.action),
        ..unsolicited.clone()
    };
    let first = site_a.post(&mut WebBrowser::new(), &at_b).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let replayed = site_a.post(&mut WebBrowser::new(), &unsolicited).await;
    assert_refused(
        &replayed,
        "used already",
        "an assertion replayed at the other replica",
    );
    assert_eq!(site_a.all_sessions().await.len(), 2);
    drop(node_b);
    drop(replica_b);
}

#[tokio::test]
async fn a_sign_in_link_logs_in_and_comes_back_to_its_target() {
    let Some(site) = site("").await else {
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
            "/app/saml/login?target={}",
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
    let off_site = client::get(
        &site
            .node
            .url("/app/saml/login?target=https://evil.example.com/"),
        &[],
    )
    .await;
    assert_eq!(off_site.status, 400, "{}", off_site.text());

    let mut browser = WebBrowser::new();
    let start = browser.get(&link).await;
    assert_eq!(start.status, 302, "{}", start.text());
    let page = browser
        .get(&format!(
            "{}&user=bob",
            start.location().expect("a Location")
        ))
        .await;
    let html = page.text();
    let form = PostedForm {
        action: form_action(&html).expect("a form"),
        saml_response: input_value(&html, "SAMLResponse").expect("a SAMLResponse"),
        relay_state: input_value(&html, "RelayState").unwrap_or_default(),
    };
    let done = site.post(&mut browser, &form).await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(done.location(), Some("/app/deep?x=1"));
    // With a session, the link goes straight to its target.
    let again = browser.get(&link).await;
    assert_eq!(again.status, 302, "{}", again.text());
    assert_eq!(again.location(), Some("/app/deep?x=1"));
}

#[tokio::test]
async fn a_store_outage_is_503_at_the_login_and_at_the_acs_never_401() {
    let node_port = free_port();
    let node_url = format!("http://127.0.0.1:{node_port}");
    let Some(idp) = SamlIdp::start(&format!("{node_url}/app/saml/metadata")).await else {
        return;
    };
    let mut redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&saml_table(&idp, &node_url, ""));
    let control_plane = ControlPlane::start(&proxy.on_redis(&redis)).await;
    let node = DataPlaneNode::start_with(
        &control_plane,
        &format!("listen = \"127.0.0.1:{node_port}\""),
    )
    .await;
    let site = Site {
        idp,
        _upstream: upstream,
        control_plane,
        node,
    };
    let mut browser = WebBrowser::new();
    let form = site
        .sign_in(&mut browser, "/app/hub", "alice", "assertion")
        .await;

    redis.kill().await;
    let posted = site.post(&mut browser, &form).await;
    assert_eq!(posted.status, 503, "{}", posted.text());
    assert!(
        posted.set_cookie(COOKIE).is_none(),
        "a session cookie was set"
    );
    let fresh = WebBrowser::new().get(&site.node.url("/app/other")).await;
    assert_eq!(fresh.status, 503, "{}", fresh.text());
    assert!(
        fresh.location().is_none(),
        "sent to log in during an outage"
    );
}

/// A site whose `saml` table names the metadata with `metadata(idp)`.
pub(super) async fn site_with_metadata(metadata: impl FnOnce(&SamlIdp) -> String) -> Option<Site> {
    let node_port = free_port();
    let node_url = format!("http://127.0.0.1:{node_port}");
    let idp = SamlIdp::start(&format!("{node_url}/app/saml/metadata")).await?;
    let upstream = EchoUpstream::start("engine").await;
    let table = saml_table_with(&metadata(&idp), &node_url, "");
    let control_plane =
        ControlPlane::start(&AppProxy::new([upstream.node()]).table(&table).toml()).await;
    let node = DataPlaneNode::start_with(
        &control_plane,
        &format!("listen = \"127.0.0.1:{node_port}\""),
    )
    .await;
    Some(Site {
        idp,
        _upstream: upstream,
        control_plane,
        node,
    })
}

#[tokio::test]
async fn the_identity_providers_metadata_can_come_from_a_url() {
    let Some(site) =
        site_with_metadata(|idp| format!("idp_metadata_url = \"{}/metadata\"", idp.origin())).await
    else {
        return;
    };
    let mut browser = WebBrowser::new();
    let form = site
        .sign_in(&mut browser, "/app/hub", "alice", "assertion")
        .await;
    let done = site.post(&mut browser, &form).await;
    assert_eq!(done.status, 302, "{}", done.text());
    let page = browser.get(&site.node.url("/app/hub")).await;
    assert_eq!(
        seen_header(&page.json(), "x-qlik-user"),
        Some(qlik_user(DIRECTORY, "alice").as_str())
    );
}

#[tokio::test]
async fn an_unreachable_metadata_url_is_503_never_a_redirect_or_401() {
    let nothing_there = free_port();
    let Some(site) = site_with_metadata(|_| {
        format!("idp_metadata_url = \"http://127.0.0.1:{nothing_there}/metadata\"")
    })
    .await
    else {
        return;
    };
    let first = WebBrowser::new().get(&site.node.url("/app/hub")).await;
    assert_eq!(first.status, 503, "{}", first.text());
    assert!(
        first.location().is_none(),
        "sent to log in without metadata"
    );
    assert!(first.header("retry-after").is_some(), "{:?}", first.text());
    assert!(first.text().contains("metadata"), "{}", first.text());
    // The service provider's own metadata needs nothing from the identity provider.
    let own = client::get(&site.node.url("/app/saml/metadata"), &[]).await;
    assert_eq!(own.status, 200, "{}", own.text());
    // What can be refused without the metadata still is: a login this site never started.
    let mut browser = WebBrowser::new();
    let posted = browser
        .post_form(
            &site.node.url("/app/saml/acs"),
            &[("SAMLResponse", "PHg+"), ("RelayState", "unknown")],
            &[],
        )
        .await;
    assert_refused(&posted, "unknown", "a Response to an unknown login");
}
