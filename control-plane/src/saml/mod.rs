//! SAML 2.0 service provider for one virtual proxy: the AuthnRequest a browser is sent to the
//! identity provider with, this site's SP metadata, and the verification of the Response the
//! browser posts back. XML signatures are checked by `samael` on libxmlsec1 (no canonicalisation
//! of our own), and only the content the signature covers is read: `samael` reduces the
//! document to the signed element before anything is parsed, which defeats signature
//! wrapping. What is bound to the login (the request id, the browser) is decided in
//! `authority::saml_login`.
//!
//! The signature checks link libxmlsec1, so they are the cargo feature `saml` (on by
//! default; the demo builds without it): without it every SAML configuration is refused with
//! that reason.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::domain::User;
use crate::error::Error;

#[cfg(feature = "saml")]
mod decryption;
#[cfg(feature = "saml")]
mod logout;
#[cfg(feature = "saml")]
mod message;
#[cfg(feature = "saml")]
mod provider;
#[cfg(feature = "saml")]
mod redirect_signature;
mod source;
#[cfg(feature = "saml")]
mod sp_keys;
#[cfg(feature = "saml")]
mod sp_metadata;
#[cfg(not(feature = "saml"))]
mod unsupported;
#[cfg(feature = "saml")]
mod validity;
#[cfg(feature = "saml")]
mod xml_signature;

#[cfg(feature = "saml")]
pub use self::provider::{IdpMetadata, Sp};
pub use self::source::{SamlProviders, SamlSource};
#[cfg(feature = "saml")]
pub use self::sp_keys::SpKeys;
#[cfg(feature = "saml")]
pub use self::sp_metadata::sp_metadata_xml;
#[cfg(not(feature = "saml"))]
pub use self::unsupported::{IdpMetadata, Sp, SpKeys, sp_metadata_xml};

/// Longest a spent assertion's id is remembered. Assertions acceptable for longer are
/// refused (see `validity`), so no marker expires while its assertion could still be taken.
pub const MAX_ASSERTION_MEMORY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Largest Response accepted, base64 as posted (a signed assertion with many groups is a
/// few tens of KiB).
pub const MAX_RESPONSE_LEN: usize = 512 * 1024;

/// What a verified assertion says, and what replay protection needs.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    pub id: String,
    /// The latest instant the assertion passes the checks at: how long its spent marker
    /// must be kept.
    pub usable_until: SystemTime,
    pub user: User,
    /// Whom the identity provider logged in, for Single Logout; none without a NameID.
    pub subject: Option<SamlSubject>,
}

/// The identity provider's name for a login: its `NameID` and the `SessionIndex` of its
/// `AuthnStatement`. Kept with the session, so that a logout either way can name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SamlSubject {
    pub name_id: String,
    pub format: Option<String>,
    pub session_index: Option<String>,
}

/// Where the sessions of a NameID (`session_index` none) or of one of its provider
/// sessions are linked, per virtual proxy and identity provider.
pub fn link_key(
    virtual_proxy: &str,
    idp: &str,
    name_id: &str,
    session_index: Option<&str>,
) -> crate::tokens::TokenHash {
    // XML text holds no NUL, so the fields cannot run into each other.
    let which = session_index.map_or_else(|| "all".to_owned(), |index| format!("index\0{index}"));
    crate::tokens::TokenHash::of(&format!(
        "gatehouse-saml-link\0{virtual_proxy}\0{idp}\0{name_id}\0{which}"
    ))
}

/// Where a session's [`SamlSubject`] is kept, by its handle.
pub fn subject_key(handle: &str) -> crate::tokens::TokenHash {
    crate::tokens::TokenHash::of(&format!("gatehouse-saml-subject\0{handle}"))
}

/// A fresh message id (an `xsd:ID`).
#[cfg_attr(not(feature = "saml"), allow(dead_code))]
fn response_id() -> String {
    format!("_{}", crate::tokens::new_session_token())
}

/// How long after its `IssueInstant` a Response, Assertion or logout message is still taken
/// (plus the skew): the browser brings it within seconds of the identity provider making it.
pub const MAX_ISSUE_DELAY: Duration = Duration::from_secs(90);

/// A logout message as the browser brought it to `/{prefix}/saml/slo`.
#[derive(Debug, Clone)]
pub enum SloMessage {
    /// HTTP-Redirect: the query string exactly as received (its signature covers those bytes).
    Redirect(String),
    /// HTTP-POST: the form body as received.
    Post(String),
}

/// What the identity provider sent, checked.
#[derive(Debug, Clone)]
pub enum IdpLogoutMessage {
    /// It ends the user's session there, and asks us to end ours.
    Request {
        id: String,
        name_id: String,
        /// None: every session of the NameID.
        session_indexes: Vec<String>,
        relay_state: Option<String>,
    },
    /// It answers a LogoutRequest of ours.
    Response {
        in_response_to: String,
        relay_state: String,
        success: bool,
    },
}

/// How the browser takes our LogoutRequest or LogoutResponse to the identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SloAnswer {
    Redirect(String),
    /// An auto-submitting form: `saml_message` is the base64 `SAMLRequest` or
    /// `SAMLResponse`, as the caller knows which it asked for.
    Post {
        action: String,
        saml_message: String,
        relay_state: Option<String>,
    },
}

/// How long a LogoutRequest id is remembered: as long as its `IssueInstant` keeps it
/// acceptable, so a replayed one is refused rather than ending sessions started since.
pub fn request_memory(skew: Duration) -> Duration {
    MAX_ISSUE_DELAY + skew + skew
}

/// The Response's XML from the posted base64 (line breaks allowed, as many IdPs wrap it).
#[cfg_attr(not(feature = "saml"), allow(dead_code))]
fn decode_response(saml_response: &str) -> Result<String, Error> {
    let not_valid = || Error::invalid("SAMLResponse is not base64 of an XML document");
    if saml_response.is_empty() || saml_response.len() > MAX_RESPONSE_LEN {
        return Err(Error::invalid("SAMLResponse is missing or too large"));
    }
    let compact: String = saml_response
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| not_valid())?;
    String::from_utf8(bytes).map_err(|_| not_valid())
}

#[cfg_attr(not(feature = "saml"), allow(dead_code))]
pub(crate) const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
#[cfg_attr(not(feature = "saml"), allow(dead_code))]
const DSIG_NS: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";

/// What is refused before any signature is looked at: a DTD (entity expansion; SAML
/// messages have none), XML that does not parse, and more than one assertion. `samael`
/// reads only the signed assertion, but a Response carrying a second one is a signature
/// wrapping attempt or a provider this service provider does not understand; either way
/// no login.
#[cfg_attr(not(feature = "saml"), allow(dead_code))]
fn check_shape(xml: &str) -> Result<Shape, Error> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let not_valid = || Error::Unauthenticated("the SAML response is not valid");
    let mut reader = quick_xml::NsReader::from_str(xml);
    let mut assertions = 0usize;
    let mut root = None;
    let mut shape = Shape::default();
    let mut depth = 0usize;
    loop {
        let (namespace, event) = reader.read_resolved_event().map_err(|_| not_valid())?;
        let bound =
            |want: &[u8]| matches!(namespace, ResolveResult::Bound(ns) if ns.as_ref() == want);
        match event {
            Event::DocType(_) => return Err(not_valid()),
            Event::Start(ref element) | Event::Empty(ref element) => {
                if root.is_none() {
                    root = Some(element.attributes().any(|attribute| {
                        attribute.is_ok_and(|attribute| attribute.key.as_ref() == b"InResponseTo")
                    }));
                }
                let local = element.local_name();
                match local.as_ref() {
                    b"Assertion" if bound(ASSERTION_NS) => {
                        assertions += 1;
                        shape.plain = true;
                    }
                    b"EncryptedAssertion" if bound(ASSERTION_NS) => {
                        assertions += 1;
                        shape.encrypted = true;
                    }
                    b"Signature" if depth == 1 && bound(DSIG_NS) => shape.response_signed = true,
                    _ => {}
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
    }
    if assertions > 1 {
        return Err(Error::Unauthenticated(
            "the SAML response holds more than one assertion",
        ));
    }
    shape.answers_a_request = root.unwrap_or(false);
    Ok(shape)
}

/// What the shape check saw of a Response. Read before any signature is checked, so it
/// only chooses which checks run and refuses; it never lets anything through.
#[cfg_attr(not(feature = "saml"), allow(dead_code))]
#[derive(Debug, Default)]
struct Shape {
    /// The Response element names a request it answers (`InResponseTo`): a Response that
    /// answers a request is never taken as unsolicited, wherever its `InResponseTo` stands.
    answers_a_request: bool,
    /// It holds a plaintext `Assertion`.
    plain: bool,
    /// It holds an `EncryptedAssertion`.
    encrypted: bool,
    /// The Response element has a signature of its own (a `ds:Signature` child).
    response_signed: bool,
}

/// The AuthnRequest id of a login: derived from the binding cookie and the relay state, so
/// it is not stored and only the browser that started the login can have its Response
/// taken. An `xsd:ID` (starts with `_`).
pub fn request_id(binding: &str, relay_state: &str) -> String {
    let digest = Sha256::digest(format!("gatehouse-saml-request\0{binding}\0{relay_state}"));
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"><saml:Assertion ID="_a"/></samlp:Response>"#;

    #[test]
    fn responses_with_a_dtd_or_two_assertions_are_refused_before_any_signature_check() {
        assert!(check_shape(ONE).is_ok_and(|shape| !shape.answers_a_request
            && shape.plain
            && !shape.encrypted
            && !shape.response_signed));
        let encrypted = ONE.replace(
            "<saml:Assertion ID=\"_a\"/>",
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/><saml:EncryptedAssertion/>",
        );
        assert!(
            check_shape(&encrypted)
                .is_ok_and(|shape| shape.encrypted && !shape.plain && shape.response_signed)
        );
        let answering = ONE.replace("<samlp:Response ", "<samlp:Response InResponseTo=\"_r\" ");
        assert!(check_shape(&answering).is_ok_and(|shape| shape.answers_a_request));
        let two = ONE.replace(
            "<saml:Assertion ID=\"_a\"/>",
            "<saml:Assertion ID=\"_a\"/><saml:Assertion ID=\"_b\"/>",
        );
        assert!(check_shape(&two).is_err());
        let nested = ONE.replace(
            "<saml:Assertion ID=\"_a\"/>",
            "<x><saml:EncryptedAssertion/></x><saml:Assertion ID=\"_a\"/>",
        );
        assert!(check_shape(&nested).is_err());
        // Another namespace's Assertion is not a SAML assertion, and no reason to refuse.
        let foreign = ONE.replace(
            "<saml:Assertion ID=\"_a\"/>",
            "<x:Assertion xmlns:x=\"urn:x\"/><saml:Assertion ID=\"_a\"/>",
        );
        assert!(check_shape(&foreign).is_ok());
        let dtd = format!("<!DOCTYPE r [<!ENTITY a \"a\">]>{ONE}");
        assert!(check_shape(&dtd).is_err());
        assert!(check_shape("<a><b></a>").is_err());
    }

    #[test]
    fn the_posted_response_is_base64_with_line_breaks_allowed() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(ONE);
        let wrapped: String = encoded
            .as_bytes()
            .chunks(64)
            .map(|line| format!("{}\r\n", String::from_utf8_lossy(line)))
            .collect();
        assert_eq!(decode_response(&wrapped).ok().as_deref(), Some(ONE));
        assert!(decode_response("not base64!").is_err());
        assert!(decode_response("").is_err());
        assert!(decode_response(&"A".repeat(MAX_RESPONSE_LEN + 4)).is_err());
        let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]);
        assert!(decode_response(&not_utf8).is_err());
    }

    #[test]
    fn request_ids_are_xsd_ids_bound_to_the_binding_and_the_relay_state() {
        let id = request_id("binding", "relay");
        assert_eq!(id.len(), 41);
        assert!(id.starts_with('_') && id[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, request_id("binding", "relay"));
        assert_ne!(id, request_id("other", "relay"));
        assert_ne!(id, request_id("binding", "other"));
    }
}
