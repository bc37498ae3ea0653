//! SAML: the Response a browser posts to the ACS, as the control plane checks it
//! (`saml::Sp::verify`) with the metadata of an identity provider whose key no input can
//! have. Nothing may panic, and nothing may log in.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use gatehouse_control_plane::config::SamlConfig;
use gatehouse_control_plane::saml::{Sp, request_id};

/// A self-signed certificate whose private key was thrown away.
pub(super) const CERTIFICATE: &str = "\
MIIDHTCCAgWgAwIBAgIUOkheZyuR9LRvDxCDXXrrch0gv0cwDQYJKoZIhvcNAQELBQAwHTEbMBkG\
A1UEAwwSZ2F0ZWhvdXNlLWZ1enotaWRwMCAXDTI2MTIwNDE5MTA1NFoYDzIxMjYxMTEwMTkxMDU0\
WjAdMRswGQYDVQQDDBJnYXRlaG91c2UtZnV6ei1pZHAwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAw\
ggEKAoIBAQDKsu8iVu5nqH21BDeeokjRneui9/0629x5auw3G3F2IYnrP9SZHGbrNFTz/4MIjap8\
NF+c6y4BQea+qXu9bLkhWWFD27W9YT7OQISze5QsMIbAx4g6UM0Ounvi9hD23WQdp+naRYc3bp7J\
GRyt8ejIN+0HmvZfkGR6y5GsEIXrEQit/4DvFXjNeh4ju5iFq1JtIh4iTNjn1FChEolS0Gf/cnj8\
1VtJ0OOm4u1lSlDzQCBCKnGBquVW+3rUm+7zkObdbTDhxTxWq19vL/9EzuR7hkQVj9zei2kn4VOZ\
R3qvLEePJxhk8vnFW0AetfVYDGSPVMM33v6tvUvzGFsDlFRrAgMBAAGjUzBRMB0GA1UdDgQWBBQO\
7sSG3MLN0ey4p29C4nROSPCCmDAfBgNVHSMEGDAWgBQO7sSG3MLN0ey4p29C4nROSPCCmDAPBgNV\
HRMBAf8EBTADAQH/MA0GCSqGSIb3DQEBCwUAA4IBAQBNtT35hhMj9SPIB+Py4iGw8YiJtGQOzR0t\
JeTinVV62uBHhEYHfiTQe1JvQcJjcxHXaTy4hfUwrUG8ujt7GwUvS7IzBefu8N01p4jfFIkcZ6vW\
8yHZt7M42ZIlWyM+YLzKtHSjyvWqpMo2LyBdWBjza1q7fBN3W4X52aWFaNzNq0rTrAEov3+8mVxc\
lqy5JFR4W43+Ih0l+Vod/HzCw9ZtOvliSO/5AHX09oLeyCuEaDFzEOaF9FqSIEnj98wM2Fz86ht7\
wiP6coGxfyr4rbmzAfW51Uo5r8KUWWtneMnFqeOKZ8kgFRrswulE+S9ucs++qf2K6Mi2UGDnmwtm\
Z2Al";

fn metadata() -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.com/metadata"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{CERTIFICATE}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

fn service_provider(allow_idp_initiated: bool) -> Sp {
    let config = SamlConfig {
        idp_metadata_file: Some("idp.xml".into()),
        idp_metadata_url: None,
        metadata_refresh: Duration::from_secs(3600),
        entity_id: "https://gh.example.com/app".into(),
        acs_url: Some("https://gh.example.com/app/saml/acs".into()),
        name_id_format: None,
        user_id_attribute: None,
        user_directory_attribute: Some("directory".into()),
        user_directory: Some("CORP".into()),
        attributes: BTreeMap::from([("Email".into(), "mail".into())]),
        groups_attribute: Some("groups".into()),
        clock_skew: Duration::from_secs(60),
        login_timeout: Duration::from_secs(600),
        allow_idp_initiated,
        single_logout: false,
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

/// The input as the Response's XML, checked for an SP-initiated login and, with
/// IdP-initiated logins allowed, as an unsolicited one; also the input as the posted
/// base64 text itself.
pub fn response(data: &[u8]) {
    static PROVIDERS: OnceLock<(Sp, Sp)> = OnceLock::new();
    let (solicited, unsolicited) =
        PROVIDERS.get_or_init(|| (service_provider(false), service_provider(true)));
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let id = request_id("binding", "relay-state");
    for posted in [encoded.as_str(), &String::from_utf8_lossy(data)] {
        assert!(
            solicited.verify(posted, Some(&id)).is_err(),
            "an unsigned input logged in"
        );
        assert!(
            unsolicited.verify(posted, None).is_err(),
            "an unsigned input logged in"
        );
    }
}
