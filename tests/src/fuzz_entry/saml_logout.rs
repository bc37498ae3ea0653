//! SAML Single Logout: a message a browser brings to `/{prefix}/saml/slo`, as the control
//! plane reads it (`saml::Sp::read_logout_message`), over HTTP-Redirect (the query string)
//! and HTTP-POST (the form), with the metadata of an identity provider whose key no input
//! can have. Nothing may panic, and no LogoutRequest may be taken (none can be signed).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_control_plane::config::SamlConfig;
use gatehouse_control_plane::saml::{IdpLogoutMessage, SloMessage, Sp};

use super::saml::CERTIFICATE;

fn metadata() -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.com/metadata"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{CERTIFICATE}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/slo"/><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

fn service_provider() -> Sp {
    let config = SamlConfig {
        idp_metadata_file: Some("idp.xml".into()),
        idp_metadata_url: None,
        metadata_refresh: Duration::from_secs(3600),
        entity_id: "https://gh.example.com/app".into(),
        acs_url: Some("https://gh.example.com/app/saml/acs".into()),
        name_id_format: None,
        user_id_attribute: None,
        user_directory_attribute: None,
        user_directory: Some("CORP".into()),
        attributes: BTreeMap::new(),
        groups_attribute: None,
        clock_skew: Duration::from_secs(60),
        login_timeout: Duration::from_secs(600),
        allow_idp_initiated: false,
        single_logout: true,
        logout_redirect: None,
        sp_key_file: None,
        sp_certificate_file: None,
        require_encrypted_assertions: false,
        sign_authn_requests: false,
        sign_logout_messages: None,
        idp_metadata: metadata(),
        sp_key_pair: Default::default(),
    };
    let metadata = config.idp_metadata.clone();
    Sp::new(config, &metadata).expect("the fixture's service provider")
}

/// The input as the raw query string and form, and as the XML of a LogoutRequest carried
/// by each binding (deflated for HTTP-Redirect, with a made-up signature too).
pub fn logout_message(data: &[u8]) {
    static PROVIDER: OnceLock<Sp> = OnceLock::new();
    let sp = PROVIDER.get_or_init(service_provider);
    let text = String::from_utf8_lossy(data).into_owned();
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let deflated = deflater
        .write_all(data)
        .and_then(|()| deflater.finish())
        .unwrap_or_default();
    let redirect = crate::harness::client::encode(&STANDARD.encode(deflated));
    let posted = crate::harness::client::encode(&STANDARD.encode(data));
    let messages = [
        SloMessage::Redirect(text.clone()),
        SloMessage::Post(text),
        SloMessage::Redirect(format!("SAMLRequest={redirect}&RelayState=r")),
        SloMessage::Redirect(format!(
            "SAMLRequest={redirect}&SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256&Signature=AAAA"
        )),
        SloMessage::Post(format!("SAMLRequest={posted}")),
    ];
    for message in &messages {
        let read = sp.read_logout_message(message, SystemTime::now());
        assert!(
            !matches!(read, Ok(IdpLogoutMessage::Request { .. })),
            "an unsigned LogoutRequest was taken: {message:?}"
        );
    }
}
