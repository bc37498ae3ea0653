//! SAML with the service provider's own key pair (`sp_key_file`, `sp_certificate_file`),
//! against the real identity provider (pysaml2, see `harness::saml_idp`): assertions
//! encrypted for this site (the identity provider takes the certificate from the SP
//! metadata, as it would in production), `require_encrypted_assertions`, and signed
//! AuthnRequests (`sign_authn_requests`) checked by an identity provider that requires them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_proto::v1 as pb;
use tempfile::TempDir;

use crate::browser::fixtures::{AppProxy, COOKIE, qlik_user, seen_header};
use crate::harness::client::{self, HttpResponse};
use crate::harness::redis_server::free_port;
use crate::harness::saml_idp::{SamlIdp, make_key};
use crate::harness::web_browser::{WebBrowser, form_action, input_value};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

const SP_ENTITY: &str = "urn:gatehouse:test:app";
const DIRECTORY: &str = "IDP";
const NOT_TAKEN: &str = "cannot be decrypted for this site or is not signed";
const ALGORITHM: &str = "algorithm this site does not accept";

/// An identity provider, virtual proxy "app" logging in with it, one node; the service
/// provider's key pair in `keys` (`sp.key`, `sp.crt`).
struct Site {
    idp: SamlIdp,
    _upstream: EchoUpstream,
    control_plane: ControlPlane,
    node: DataPlaneNode,
    keys: TempDir,
}

/// The site; with `key_pair`, the SP has one; `extra` goes into the `saml` table. `None`
/// when the test is skipped.
async fn site(key_pair: bool, extra: &str) -> Option<Site> {
    let node_port = free_port();
    let node_url = format!("http://127.0.0.1:{node_port}");
    let idp = SamlIdp::start(&format!("{node_url}/app/saml/metadata")).await?;
    let keys = TempDir::new().expect("a temporary directory");
    make_key(keys.path(), "sp");
    let key_lines = if key_pair {
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
         acs_url = \"{node_url}/app/saml/acs\"\nuser_directory = \"{DIRECTORY}\"\n\
         attributes = {{ Email = \"mail\" }}\n{key_lines}{extra}\n",
        idp.metadata_file(),
    );
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&table);
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
        keys,
    })
}

/// What the identity provider's page posts.
#[derive(Debug, Clone)]
struct PostedForm {
    action: String,
    saml_response: String,
    relay_state: String,
}

impl PostedForm {
    fn xml(&self) -> String {
        String::from_utf8(STANDARD.decode(&self.saml_response).expect("base64")).expect("UTF-8")
    }

    fn with_xml(&self, xml: &str) -> Self {
        Self {
            saml_response: STANDARD.encode(xml),
            ..self.clone()
        }
    }
}

impl Site {
    /// The identity provider's URL for `browser`'s login to `/app/hub`: the node's redirect.
    async fn start_login(&self, browser: &mut WebBrowser) -> String {
        let first = browser.get(&self.node.url("/app/hub")).await;
        assert_eq!(first.status, 302, "{}", first.text());
        let location = first.location().expect("a Location").to_owned();
        assert!(
            location.starts_with(&format!("{}?", self.idp.sso_url())),
            "{location}"
        );
        location
    }

    /// `browser` starts a login and signs in as alice at the identity provider, whose
    /// answer is shaped by `idp_options` (`sign=…`, `encrypt=…`, …). The identity
    /// provider's page, or its refusal.
    async fn idp_page(&self, browser: &mut WebBrowser, idp_options: &str) -> HttpResponse {
        let location = self.start_login(browser).await;
        browser
            .get(&format!("{location}&user=alice&{idp_options}"))
            .await
    }

    /// As [`idp_page`](Self::idp_page), for a page that must be the form to post.
    async fn sign_in(&self, browser: &mut WebBrowser, idp_options: &str) -> PostedForm {
        let page = self.idp_page(browser, idp_options).await;
        assert_eq!(page.status, 200, "the identity provider: {}", page.text());
        let html = page.text();
        PostedForm {
            action: form_action(&html).expect("a form"),
            saml_response: input_value(&html, "SAMLResponse").expect("a SAMLResponse"),
            relay_state: input_value(&html, "RelayState").unwrap_or_default(),
        }
    }

    async fn post(&self, browser: &mut WebBrowser, form: &PostedForm) -> HttpResponse {
        browser
            .post_form(
                &form.action,
                &[
                    ("SAMLResponse", form.saml_response.as_str()),
                    ("RelayState", form.relay_state.as_str()),
                ],
                &[("origin", self.idp.origin())],
            )
            .await
    }

    /// A fresh browser logs in with `idp_options`; the node's answer to its post.
    async fn login(&self, idp_options: &str) -> (WebBrowser, PostedForm, HttpResponse) {
        let mut browser = WebBrowser::new();
        let form = self.sign_in(&mut browser, idp_options).await;
        let answer = self.post(&mut browser, &form).await;
        (browser, form, answer)
    }

    /// `browser`, logged in, reaches the upstream as alice.
    async fn assert_alice(&self, browser: &mut WebBrowser, what: &str) {
        let page = browser.get(&self.node.url("/app/hub")).await;
        assert_eq!(page.status, 200, "{what}: {}", page.text());
        assert_eq!(
            seen_header(&page.json(), "x-qlik-user"),
            Some(qlik_user(DIRECTORY, "alice").as_str()),
            "{what}"
        );
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

    fn certificate_base64(&self) -> String {
        let pem = std::fs::read_to_string(self.keys.path().join("sp.crt")).expect("sp.crt");
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .collect()
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

/// The element `local` (any prefix) of `xml` as a substring, from its `<` to its end tag.
fn element_of<'a>(xml: &'a str, local: &str) -> &'a str {
    let open = xml
        .match_indices(&format!(":{local}"))
        .map(|(at, _)| xml[..at].rfind('<').expect("a tag"))
        .find(|start| !xml[*start..].starts_with("</"))
        .unwrap_or_else(|| panic!("no {local} in {xml}"));
    let prefix = &xml[open + 1..open + xml[open..].find(':').expect("a prefix")];
    let close_tag = format!("</{prefix}:{local}>");
    let close = xml[open..].find(&close_tag).expect("its end") + open + close_tag.len();
    &xml[open..close]
}

#[tokio::test]
async fn encrypted_assertions_log_in_with_aes_gcm_and_cbc_and_the_metadata_offers_the_key() {
    let Some(site) = site(true, "").await else {
        return;
    };
    let metadata = client::get(&site.node.url("/app/saml/metadata"), &[]).await;
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    let xml = metadata.text();
    assert!(xml.contains("use=\"encryption\""), "{xml}");
    assert!(xml.contains(&site.certificate_base64()), "{xml}");
    assert!(xml.contains("xmlenc11#aes256-gcm"), "{xml}");
    assert!(
        !xml.contains("use=\"signing\""),
        "no signing key announced: {xml}"
    );
    assert!(xml.contains("AuthnRequestsSigned=\"false\""), "{xml}");
    assert!(
        !xml.contains("PRIVATE"),
        "the private key is never in the metadata"
    );

    for encrypt in ["aes128-gcm", "aes256-gcm", "aes128-cbc", "aes256-cbc"] {
        let (mut browser, form, done) = site
            .login(&format!("sign=assertion&encrypt={encrypt}"))
            .await;
        let posted = form.xml();
        assert!(
            posted.contains("EncryptedAssertion") && !posted.contains(">alice<"),
            "{encrypt}: the assertion travels encrypted: {posted}"
        );
        assert_eq!(done.status, 302, "{encrypt}: {}", done.text());
        assert!(done.set_cookie(COOKIE).is_some(), "{encrypt}: a session");
        site.assert_alice(&mut browser, encrypt).await;
        // The assertion is spent like a plaintext one.
        let again = site.post(&mut browser, &form).await;
        assert_refused(&again, "already used", encrypt);
    }
    let sessions = site.all_sessions().await;
    assert_eq!(sessions.len(), 4, "{sessions:?}");
    assert!(sessions.iter().all(|session| {
        session.user.as_ref().is_some_and(|user| {
            user.attributes.iter().any(|attribute| {
                attribute.name == "Email" && attribute.value == "alice@example.com"
            })
        })
    }));
}

#[tokio::test]
async fn an_encrypted_assertion_in_a_signed_response_logs_in() {
    let Some(site) = site(true, "").await else {
        return;
    };
    for sign in ["response", "both"] {
        let (mut browser, _form, done) =
            site.login(&format!("sign={sign}&encrypt=aes256-gcm")).await;
        assert_eq!(
            done.status,
            302,
            "signed {sign}: {} {}",
            done.text(),
            _form.xml()
        );
        site.assert_alice(&mut browser, sign).await;
    }
}

#[tokio::test]
async fn an_unsigned_or_altered_encrypted_assertion_is_refused() {
    let Some(site) = site(true, "").await else {
        return;
    };
    // Anyone can encrypt for this site: encryption is no signature.
    let (_, _, unsigned) = site.login("sign=none&encrypt=aes128-gcm").await;
    assert_refused(&unsigned, NOT_TAKEN, "an encrypted assertion nobody signed");
    let (_, _, unsigned) = site.login("sign=none&encrypt=aes128-cbc").await;
    assert_refused(&unsigned, NOT_TAKEN, "the same with CBC");

    // A ciphertext altered in transit: under a signed Response, the Response's signature
    // fails; in an unsigned one, the decryption or the assertion's signature does, with one
    // answer for both.
    for (sign, reason) in [
        ("response", "not signed by the identity provider"),
        ("assertion", NOT_TAKEN),
    ] {
        let mut browser = WebBrowser::new();
        let form = site
            .sign_in(&mut browser, &format!("sign={sign}&encrypt=aes256-cbc"))
            .await;
        let xml = form.xml();
        // The data's CipherValue: the last in EncryptedData (the key's comes first).
        let encrypted_data = element_of(&xml, "EncryptedData");
        let last_open = encrypted_data
            .match_indices(":CipherValue")
            .map(|(at, _)| encrypted_data[..at].rfind('<').expect("a tag"))
            .filter(|start| !encrypted_data[*start..].starts_with("</"))
            .last()
            .expect("a CipherValue");
        let value = element_of(&encrypted_data[last_open..], "CipherValue");
        let start = value.find('>').expect("a start tag") + 1;
        // Flip a character in the middle of the base64, keeping it base64.
        let at = start + (value.len() - start) / 2;
        let flipped = if &value[at..=at] == "A" { "B" } else { "A" };
        let altered_value = format!("{}{flipped}{}", &value[..at], &value[at + 1..]);
        let altered = xml.replacen(value, &altered_value, 1);
        assert_ne!(altered, xml);
        let answer = site.post(&mut browser, &form.with_xml(&altered)).await;
        assert_refused(
            &answer,
            reason,
            &format!("altered ciphertext, signed {sign}"),
        );
    }
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn triple_des_and_rsa_pkcs1_v1_5_encryption_are_refused() {
    let Some(site) = site(true, "").await else {
        return;
    };
    // pysaml2's own encrypt_assertion: Triple DES.
    let (_, form, native) = site.login("sign=assertion&encrypt=native").await;
    assert!(form.xml().contains("tripledes-cbc"), "{}", form.xml());
    assert_refused(&native, ALGORITHM, "Triple DES");
    let (_, _, pkcs1) = site
        .login("sign=assertion&encrypt=aes128-gcm&key-transport=rsa-1_5")
        .await;
    assert_refused(&pkcs1, ALGORITHM, "RSA PKCS#1 v1.5 key transport");
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn require_encrypted_assertions_refuses_plaintext_ones() {
    let Some(site) = site(true, "require_encrypted_assertions = true").await else {
        return;
    };
    for sign in ["assertion", "response", "both"] {
        let (_, _, plain) = site.login(&format!("sign={sign}")).await;
        assert_refused(&plain, "must encrypt", &format!("plaintext, signed {sign}"));
    }
    let (mut browser, _, done) = site.login("sign=assertion&encrypt=aes256-gcm").await;
    assert_eq!(done.status, 302, "{}", done.text());
    site.assert_alice(&mut browser, "encrypted").await;
    assert_eq!(site.all_sessions().await.len(), 1);
}

#[tokio::test]
async fn without_a_key_pair_nothing_is_offered_for_encryption_and_encrypted_assertions_are_refused()
{
    let Some(keyed) = site(true, "").await else {
        return;
    };
    let Some(site) = site(false, "").await else {
        return;
    };
    let metadata = client::get(&site.node.url("/app/saml/metadata"), &[]).await;
    assert!(
        !metadata.text().contains("KeyDescriptor"),
        "{}",
        metadata.text()
    );
    // The identity provider finds no certificate to encrypt for.
    let page = site
        .idp_page(&mut WebBrowser::new(), "sign=assertion&encrypt=aes128-gcm")
        .await;
    assert_eq!(page.status, 400, "{}", page.text());
    assert!(
        page.text().contains("no encryption certificate"),
        "{}",
        page.text()
    );
    // An EncryptedAssertion (one made for another site) in place of this login's
    // assertion.
    let (_, encrypted, _) = keyed.login("sign=assertion&encrypt=aes128-gcm").await;
    let encrypted_xml = encrypted.xml();
    let foreign = element_of(&encrypted_xml, "EncryptedAssertion");
    let mut browser = WebBrowser::new();
    let form = {
        let page = site.idp_page(&mut browser, "sign=assertion").await;
        assert_eq!(page.status, 200, "{}", page.text());
        let html = page.text();
        PostedForm {
            action: form_action(&html).expect("a form"),
            saml_response: input_value(&html, "SAMLResponse").expect("a SAMLResponse"),
            relay_state: input_value(&html, "RelayState").unwrap_or_default(),
        }
    };
    let xml = form.xml();
    let swapped = xml.replacen(element_of(&xml, "Assertion"), foreign, 1);
    let answer = site.post(&mut browser, &form.with_xml(&swapped)).await;
    assert_refused(
        &answer,
        "no key to decrypt",
        "an encrypted assertion, no key",
    );
    assert!(site.all_sessions().await.is_empty());
}

#[tokio::test]
async fn signed_authn_requests_are_taken_by_an_identity_provider_that_requires_them() {
    let Some(site) = site(true, "sign_authn_requests = true").await else {
        return;
    };
    let metadata = client::get(&site.node.url("/app/saml/metadata"), &[]).await;
    let xml = metadata.text();
    assert!(xml.contains("AuthnRequestsSigned=\"true\""), "{xml}");
    assert!(xml.contains("use=\"signing\""), "{xml}");

    let mut browser = WebBrowser::new();
    let location = site.start_login(&mut browser).await;
    assert!(
        location.contains(
            "&SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256&Signature="
        ),
        "{location}"
    );
    let page = browser
        .get(&format!("{location}&user=alice&want-signed=1"))
        .await;
    assert_eq!(page.status, 200, "the identity provider: {}", page.text());
    let html = page.text();
    let form = PostedForm {
        action: form_action(&html).expect("a form"),
        saml_response: input_value(&html, "SAMLResponse").expect("a SAMLResponse"),
        relay_state: input_value(&html, "RelayState").unwrap_or_default(),
    };
    let done = site.post(&mut browser, &form).await;
    assert_eq!(done.status, 302, "{}", done.text());
    site.assert_alice(&mut browser, "a signed AuthnRequest")
        .await;
}

#[tokio::test]
async fn a_tampered_or_unsigned_authn_request_is_refused_by_the_identity_provider() {
    let Some(signing) = site(true, "sign_authn_requests = true").await else {
        return;
    };
    let refused_by_idp = |page: &HttpResponse, what: &str| {
        assert_eq!(page.status, 400, "{what}: {}", page.text());
        assert!(
            page.text().contains("IncorrectlySigned"),
            "{what}: {}",
            page.text()
        );
    };
    // Another RelayState than the one signed (one character changed).
    let mut browser = WebBrowser::new();
    let location = signing.start_login(&mut browser).await;
    let relay_at = location.find("RelayState=").expect("a RelayState") + "RelayState=".len();
    let changed = if &location[relay_at..=relay_at] == "A" {
        "B"
    } else {
        "A"
    };
    let tampered = format!(
        "{}{changed}{}",
        &location[..relay_at],
        &location[relay_at + 1..]
    );
    let page = browser
        .get(&format!("{tampered}&user=alice&want-signed=1"))
        .await;
    refused_by_idp(&page, "a tampered RelayState");
    // The signature taken off.
    let unsigned = &location[..location.find("&SigAlg=").expect("a SigAlg")];
    let page = browser
        .get(&format!("{unsigned}&user=alice&want-signed=1"))
        .await;
    refused_by_idp(&page, "no signature");

    // A service provider that does not sign is refused by the same identity provider.
    let Some(unsigning) = site(true, "").await else {
        return;
    };
    let mut browser = WebBrowser::new();
    let location = unsigning.start_login(&mut browser).await;
    assert!(!location.contains("Signature="), "{location}");
    let page = browser
        .get(&format!("{location}&user=alice&want-signed=1"))
        .await;
    refused_by_idp(&page, "an unsigned AuthnRequest");
}
