//! This service provider's metadata (SP metadata) for the identity provider's
//! administrator: entity id, ACS, the SingleLogoutService when Single Logout is on, and the
//! key pair's certificate for encryption (and for signing when AuthnRequests or logout
//! messages are signed). Built from the configuration alone, so it is
//! served even while the identity provider is unreachable.

use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    EncryptionMethod, EntityDescriptor, HTTP_POST_BINDING, IndexedEndpoint, KeyDescriptor,
    SpSsoDescriptor,
};
use samael::traits::ToXml as _;

use super::SpKeys;
use crate::config::SamlConfig;
use crate::error::Error;

/// This service provider's metadata, for the identity provider's administrator: from the
/// configuration alone, so it is served even while the identity provider is unreachable.
pub fn sp_metadata_xml(config: &SamlConfig) -> Result<String, Error> {
    {
        let key_descriptors = if config.has_key_pair() {
            let keys = SpKeys::parse(
                &config.sp_key_pair.key_pem,
                &config.sp_key_pair.certificate_pem,
            )
            .map_err(|detail| {
                tracing::error!(%detail, "cannot read the SAML SP key pair");
                Error::ProviderUnavailable("the SAML metadata cannot be written right now")
            })?;
            key_descriptors(&keys, config.signs_messages())
        } else {
            Vec::new()
        };
        let descriptor = EntityDescriptor {
            entity_id: Some(config.entity_id.clone()),
            sp_sso_descriptors: Some(vec![SpSsoDescriptor {
                protocol_support_enumeration: Some(
                    "urn:oasis:names:tc:SAML:2.0:protocol".to_owned(),
                ),
                authn_requests_signed: Some(config.sign_authn_requests),
                key_descriptors: Some(key_descriptors).filter(|keys| !keys.is_empty()),
                want_assertions_signed: Some(true),
                name_id_formats: config.name_id_format.clone().map(|format| vec![format]),
                assertion_consumer_services: vec![IndexedEndpoint {
                    binding: HTTP_POST_BINDING.to_owned(),
                    location: config.acs_url().to_owned(),
                    index: 0,
                    is_default: Some(true),
                    ..IndexedEndpoint::default()
                }],
                // `/saml/slo` takes both bindings; an identity provider whose own service
                // is POST only answers over POST.
                single_logout_services: config.single_logout.then(|| {
                    [super::provider::HTTP_REDIRECT_BINDING, HTTP_POST_BINDING]
                        .into_iter()
                        .map(|binding| samael::metadata::Endpoint {
                            binding: binding.to_owned(),
                            location: config.slo_url(),
                            response_location: None,
                        })
                        .collect()
                }),
                ..SpSsoDescriptor::default()
            }]),
            ..EntityDescriptor::default()
        };
        descriptor.to_string().map_err(|error| {
            tracing::error!(%error, "cannot write the SAML SP metadata");
            Error::ProviderUnavailable("the SAML metadata cannot be written right now")
        })
    }
}

/// Content encryption algorithms announced (and taken), best first; key transport
/// RSA-OAEP. See `decryption`.
const ENCRYPTION_METHODS: [&str; 8] = [
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    "http://www.w3.org/2009/xmlenc11#aes192-gcm",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes192-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    "http://www.w3.org/2009/xmlenc11#rsa-oaep",
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
];

/// The certificate for encryption, and for signing when AuthnRequests or logout messages
/// are signed: an identity provider checks a signature only with a certificate announced
/// for signing (or for no use in particular).
fn key_descriptors(keys: &SpKeys, signing: bool) -> Vec<KeyDescriptor> {
    let key_info = || KeyInfo {
        id: None,
        x509_data: Some(X509Data {
            certificates: vec![keys.certificate_base64()],
        }),
    };
    let mut descriptors = vec![KeyDescriptor {
        key_use: Some("encryption".to_owned()),
        key_info: key_info(),
        encryption_methods: Some(
            ENCRYPTION_METHODS
                .iter()
                .map(|algorithm| EncryptionMethod {
                    algorithm: (*algorithm).to_owned(),
                })
                .collect(),
        ),
    }];
    if signing {
        descriptors.push(KeyDescriptor {
            key_use: Some("signing".to_owned()),
            key_info: key_info(),
            encryption_methods: None,
        });
    }
    descriptors
}
