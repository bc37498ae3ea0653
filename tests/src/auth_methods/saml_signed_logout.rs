//! Single Logout with the service provider's key pair: our LogoutRequests and
//! LogoutResponses are signed (the query signature over HTTP-Redirect, an enveloped XML
//! signature over HTTP-POST), and an identity provider that requires signed logout messages
//! (pysaml2, `idp.py --want-signed-logout`, checking them with the certificate our metadata
//! announces for signing) takes them, and refuses them altered or unsigned. A provider whose
//! SingleLogoutService takes only HTTP-POST is sent our LogoutRequest in a form the browser
//! posts. The fleet is the one of `saml_logout`.

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::saml_logout::{Fleet, Variant, closed_by_revocation, fleet_with};
use crate::browser::fixtures::open_socket;
use crate::harness::client::{self, query_param};
use crate::harness::web_browser::{WebBrowser, form_action, input_value};

const STRICT: &[&str] = &["--want-signed-logout"];
const STRICT_POST: &[&str] = &["--want-signed-logout", "--slo-binding", "post"];
const POST_ONLY: &[&str] = &["--slo-binding", "post"];

async fn keyed(idp_options: &[&str], saml: &str) -> Option<Fleet> {
    fleet_with(Variant {
        idp_options,
        key_pair: true,
        saml,
        ..Variant::default()
    })
    .await
}

/// The SP metadata's KeyDescriptors' uses, in order.
async fn key_uses(fleet: &Fleet) -> Vec<String> {
    let metadata = client::get(&fleet.a.url("/app/saml/metadata"), &[]).await;
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    metadata
        .text()
        .split(" use=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Node A's `/saml/logout` for a logged-in browser: the URL it sends the browser to.
async fn logout_here(fleet: &Fleet, browser: &mut WebBrowser) -> String {
    let origin = format!("http://{}", fleet.a.address());
    let logout = browser
        .get_with(&fleet.a.url("/app/saml/logout"), &[("origin", &origin)])
        .await;
    assert_eq!(logout.status, 302, "{}", logout.text());
    logout.location().expect("a Location").to_owned()
}

#[tokio::test]
async fn a_signed_logout_request_is_taken_by_an_identity_provider_that_requires_one() {
    let Some(fleet) = keyed(STRICT, "").await else {
        return;
    };
    assert_eq!(
        key_uses(&fleet).await,
        ["encryption", "signing"],
        "the metadata announces the certificate for signing"
    );
    let mut alice = fleet.login("alice").await;
    let to_idp = logout_here(&fleet, &mut alice.browser).await;
    assert_eq!(
        query_param(&to_idp, "SigAlg").as_deref(),
        Some("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"),
        "{to_idp}"
    );
    assert!(query_param(&to_idp, "Signature").is_some(), "{to_idp}");

    // Altered after signing (another RelayState), or with the signature removed, the
    // identity provider refuses it.
    let relay = query_param(&to_idp, "RelayState").expect("a RelayState");
    let altered = to_idp.replace(&client::encode(&relay), "someone-elses");
    assert_ne!(altered, to_idp);
    let stripped: String = to_idp
        .split('&')
        .filter(|pair| !pair.starts_with("Signature="))
        .collect::<Vec<_>>()
        .join("&");
    for (what, url) in [("altered", &altered), ("unsigned", &stripped)] {
        let refused = WebBrowser::new().get(url).await;
        assert_eq!(refused.status, 400, "{what}: {}", refused.text());
        assert!(
            refused.text().contains("IncorrectlySigned"),
            "{what}: {}",
            refused.text()
        );
    }
    assert!(fleet.logout_requests_seen().await.is_empty());

    let at_idp = alice.browser.get(&to_idp).await;
    assert_eq!(
        at_idp.status,
        302,
        "the identity provider: {}",
        at_idp.text()
    );
    let seen = fleet.logout_requests_seen().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["signed"], true, "{seen:?}");
    assert_eq!(seen[0]["session_index"][0], alice.session_index.as_str());
    let back = at_idp.location().expect("a Location").to_owned();
    let landed = alice.browser.get(&back).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(landed.location(), Some("/app/signed-out"));
}

#[tokio::test]
async fn our_logout_response_over_redirect_is_signed_and_checked_by_the_identity_provider() {
    let Some(fleet) = keyed(STRICT, "").await else {
        return;
    };
    let mut alice = fleet.login("alice").await;
    let mut socket = open_socket(&fleet.b, &alice.cookie).await;
    let message = fleet
        .idp_logout_request(Some(&alice.session_index), "redirect", "own")
        .await;
    let logged_out = Instant::now();
    let answer = fleet.bring(&mut alice.browser, "redirect", &message).await;
    assert_eq!(answer.status, 302, "{}", answer.text());
    closed_by_revocation(&mut socket, logged_out, "signed answer").await;
    let back = answer.location().expect("a Location").to_owned();
    assert!(query_param(&back, "Signature").is_some(), "{back}");
    assert_eq!(
        query_param(&back, "RelayState").as_deref(),
        Some("idp-relay")
    );

    let altered = back.replace("RelayState=idp-relay", "RelayState=elsewhere");
    assert_ne!(altered, back);
    let refused = WebBrowser::new().get(&altered).await;
    assert_eq!(refused.status, 400, "altered: {}", refused.text());
    assert!(
        refused.text().contains("does not verify"),
        "{}",
        refused.text()
    );

    let at_idp = alice.browser.get(&back).await;
    assert_eq!(at_idp.status, 200, "{}", at_idp.text());
    assert!(
        at_idp
            .text()
            .contains("urn:oasis:names:tc:SAML:2.0:status:Success"),
        "{}",
        at_idp.text()
    );
}

#[tokio::test]
async fn our_logout_response_over_post_carries_an_xml_signature_the_identity_provider_checks() {
    let Some(fleet) = keyed(STRICT_POST, "").await else {
        return;
    };
    let mut alice = fleet.login("alice").await;
    let message = fleet
        .idp_logout_request(Some(&alice.session_index), "post", "own")
        .await;
    let answer = fleet.bring(&mut alice.browser, "post", &message).await;
    assert_eq!(
        answer.status,
        200,
        "an auto-posting form: {}",
        answer.text()
    );
    let html = answer.text();
    let action = form_action(&html).expect("a form");
    assert_eq!(action, format!("{}/slo/post", fleet.idp.origin()));
    let saml_response = input_value(&html, "SAMLResponse").expect("a SAMLResponse");
    let xml = String::from_utf8(STANDARD.decode(&saml_response).expect("base64")).expect("UTF-8");
    assert!(xml.contains("<ds:SignatureValue>"), "{xml}");
    let relay = input_value(&html, "RelayState").expect("a RelayState");
    assert!(fleet.refuses(&fleet.b, &alice.cookie).await);

    let post = |saml_response: String| {
        let action = action.clone();
        let relay = relay.clone();
        async move {
            let fields = [
                ("SAMLResponse", saml_response.as_str()),
                ("RelayState", relay.as_str()),
            ];
            WebBrowser::new().post_form(&action, &fields, &[]).await
        }
    };
    // The status altered after signing: the identity provider's check fails.
    let altered = xml.replace("status:Success", "status:Requester");
    assert_ne!(altered, xml);
    let refused = post(STANDARD.encode(&altered)).await;
    assert_eq!(refused.status, 400, "altered: {}", refused.text());
    assert!(
        refused.text().contains("SignatureError"),
        "{}",
        refused.text()
    );

    let at_idp = post(saml_response).await;
    assert_eq!(at_idp.status, 200, "{}", at_idp.text());
    assert!(
        at_idp
            .text()
            .contains("urn:oasis:names:tc:SAML:2.0:status:Success"),
        "{}",
        at_idp.text()
    );
}

#[tokio::test]
async fn without_a_key_or_with_signing_off_logout_messages_are_unsigned_as_before() {
    for (key_pair, saml, uses) in [
        (false, "", &[][..]),
        (true, "sign_logout_messages = false", &["encryption"][..]),
    ] {
        let Some(fleet) = fleet_with(Variant {
            idp_options: STRICT,
            key_pair,
            saml,
            ..Variant::default()
        })
        .await
        else {
            return;
        };
        assert_eq!(key_uses(&fleet).await, uses, "key pair {key_pair}");
        let mut alice = fleet.login("alice").await;
        let to_idp = logout_here(&fleet, &mut alice.browser).await;
        assert!(
            query_param(&to_idp, "SigAlg").is_none() && query_param(&to_idp, "Signature").is_none(),
            "{to_idp}"
        );
        let refused = alice.browser.get(&to_idp).await;
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert!(
            refused.text().contains("IncorrectlySigned"),
            "{}",
            refused.text()
        );
        assert!(
            fleet.refuses(&fleet.a, &alice.cookie).await,
            "logged out here all the same"
        );

        let message = fleet
            .idp_logout_request(Some(&alice.session_index), "redirect", "own")
            .await;
        let answer = fleet
            .bring(&mut WebBrowser::new(), "redirect", &message)
            .await;
        assert_eq!(answer.status, 302, "{}", answer.text());
        let back = answer.location().expect("a Location").to_owned();
        assert!(query_param(&back, "Signature").is_none(), "{back}");
    }
}

/// A logout here with an identity provider whose SingleLogoutService takes only HTTP-POST:
/// node A ends the session (its WebSocket on node B closes) and answers a form that posts
/// our LogoutRequest (signed with a key pair, checked by the provider; unsigned without);
/// the provider's LogoutResponse, posted back, lands the browser on `logout_redirect`, once.
/// `DELETE /qps/user` gives the page the same form as `samlLogoutForm`.
#[tokio::test]
async fn a_logout_here_posts_our_logout_request_to_a_post_only_identity_provider() {
    for (key_pair, idp_options) in [(true, STRICT_POST), (false, POST_ONLY)] {
        let Some(fleet) = fleet_with(Variant {
            idp_options,
            key_pair,
            ..Variant::default()
        })
        .await
        else {
            return;
        };
        let metadata = client::get(&fleet.a.url("/app/saml/metadata"), &[]).await;
        assert!(
            metadata.text().contains(
                "SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\""
            ),
            "the SP metadata offers /saml/slo over HTTP-POST: {}",
            metadata.text()
        );
        let mut alice = fleet.login("alice").await;
        let mut socket = open_socket(&fleet.b, &alice.cookie).await;
        let origin = format!("http://{}", fleet.a.address());
        let logged_out = Instant::now();
        let page = alice
            .browser
            .get_with(&fleet.a.url("/app/saml/logout"), &[("origin", &origin)])
            .await;
        assert_eq!(page.status, 200, "an auto-posting form: {}", page.text());
        closed_by_revocation(&mut socket, logged_out, "a logout posted").await;
        assert!(fleet.refuses(&fleet.b, &alice.cookie).await);
        let html = page.text();
        let action = form_action(&html).expect("a form");
        assert_eq!(action, format!("{}/slo/post", fleet.idp.origin()));
        let saml_request = input_value(&html, "SAMLRequest").expect("a SAMLRequest");
        let relay = input_value(&html, "RelayState").expect("a RelayState");
        let xml =
            String::from_utf8(STANDARD.decode(&saml_request).expect("base64")).expect("UTF-8");
        assert_eq!(xml.contains("<ds:SignatureValue>"), key_pair, "{xml}");

        if key_pair {
            // Another NameID put in after signing: the provider refuses it.
            let altered = xml.replace(">alice<", ">bob<");
            assert_ne!(altered, xml);
            let fields = [
                ("SAMLRequest", STANDARD.encode(&altered)),
                ("RelayState", relay.clone()),
            ];
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let refused = WebBrowser::new().post_form(&action, &fields, &[]).await;
            assert_eq!(refused.status, 400, "altered: {}", refused.text());
            assert!(
                refused.text().contains("IncorrectlySigned"),
                "{}",
                refused.text()
            );
        }

        let fields = [
            ("SAMLRequest", saml_request.as_str()),
            ("RelayState", relay.as_str()),
        ];
        let at_idp = alice.browser.post_form(&action, &fields, &[]).await;
        assert_eq!(
            at_idp.status,
            200,
            "the identity provider: {}",
            at_idp.text()
        );
        let seen = fleet.logout_requests_seen().await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["signed"], key_pair, "{seen:?}");
        assert_eq!(seen[0]["session_index"][0], alice.session_index.as_str());
        assert!(
            seen[0]["binding"]
                .as_str()
                .is_some_and(|binding| binding.ends_with("HTTP-POST")),
            "{seen:?}"
        );

        // The provider's signed LogoutResponse, posted back to node A.
        let answer = at_idp.text();
        let back = form_action(&answer).expect("the provider's form");
        assert_eq!(back, fleet.slo_url());
        let saml_response = input_value(&answer, "SAMLResponse").expect("a SAMLResponse");
        assert_eq!(
            input_value(&answer, "RelayState").as_deref(),
            Some(relay.as_str())
        );
        let fields = [
            ("SAMLResponse", saml_response.as_str()),
            ("RelayState", relay.as_str()),
        ];
        let idp_origin = [("origin", fleet.idp.origin())];
        let landed = alice.browser.post_form(&back, &fields, &idp_origin).await;
        assert_eq!(landed.status, 302, "{}", landed.text());
        assert_eq!(landed.location(), Some("/app/signed-out"));
        let again = alice.browser.post_form(&back, &fields, &idp_origin).await;
        assert_eq!(
            again.status,
            401,
            "a LogoutResponse works once: {}",
            again.text()
        );

        // The Personal API's logout names the same form for the page to post.
        let mut bob = fleet.login("bob").await;
        let deleted = bob
            .browser
            .send(
                http::Method::DELETE,
                &fleet.a.url("/app/qps/user"),
                &[("origin", &origin)],
                bytes::Bytes::new(),
            )
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        let form = &deleted.json()["samlLogoutForm"];
        assert_eq!(form["action"], action.as_str(), "{form}");
        assert!(
            form["SAMLRequest"]
                .as_str()
                .is_some_and(|value| !value.is_empty()),
            "{form}"
        );
        assert!(
            form["RelayState"]
                .as_str()
                .is_some_and(|value| !value.is_empty()),
            "{form}"
        );
        assert!(deleted.json().get("samlLogoutUri").is_none());
    }
}
