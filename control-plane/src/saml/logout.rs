//! Single Logout messages (feature `saml`): the LogoutRequest we send when a browser logs out
//! here, the LogoutRequest an identity provider sends when the user logs out there, and the
//! LogoutResponses both ways. A message from the identity provider is taken only with its
//! issuer, addressing and time checked; a LogoutRequest only when signed by one of the
//! provider's signing certificates: over HTTP-Redirect the query signature (openssl, over
//! the query string's bytes as received), over HTTP-POST the enveloped XML signature
//! (libxmlsec1 through `samael`, and only the signed element is read afterwards). Ours are
//! signed when the service provider has a key (`sign_logout_messages`): over HTTP-Redirect
//! with the AuthnRequest's query signature, over HTTP-POST with an enveloped XML signature.

use std::io::{Read as _, Write as _};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use samael::crypto::{AllowedSignatureAlgorithm, CryptoProvider as _, ReduceMode};
use samael::metadata::{EntityDescriptor, HTTP_POST_BINDING};

use super::MAX_ISSUE_DELAY;
use super::message::{LogoutXml, read_logout_xml};
use super::provider::{HTTP_REDIRECT_BINDING, Sp, VerificationQueue, libxml_lock};
use super::{IdpLogoutMessage, SamlSubject, SloAnswer, SloMessage, check_shape, decode_response};
use crate::error::Error;

/// Largest inflated HTTP-Redirect message: a LogoutRequest is a few KiB; more is a bomb.
const MAX_INFLATED: u64 = 256 * 1024;

/// What a query value leaves unencoded: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

const NOT_SIGNED: &str = "the SAML logout request is not signed by the identity provider";
const NOT_VALID: &str = "the SAML logout message is not valid";

/// The identity provider's SingleLogoutService, as its metadata names it.
#[derive(Debug, Clone)]
pub struct SloService {
    post: bool,
    location: String,
    /// Where LogoutResponses go, when not to `location`.
    response_location: Option<String>,
}

impl SloService {
    /// The HTTP-Redirect service, or else the HTTP-POST one, of the metadata's
    /// `IDPSSODescriptor`; `Ok(None)` without either.
    pub fn of(descriptor: &EntityDescriptor) -> Result<Option<Self>, String> {
        let services: Vec<_> = descriptor
            .idp_sso_descriptors
            .iter()
            .flatten()
            .flat_map(|idp| &idp.single_logout_services)
            .collect();
        let chosen = [HTTP_REDIRECT_BINDING, HTTP_POST_BINDING]
            .iter()
            .find_map(|binding| services.iter().find(|service| service.binding == *binding));
        let Some(service) = chosen else {
            return Ok(None);
        };
        let is_url = |url: &str| {
            url.parse::<http::Uri>()
                .is_ok_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")))
        };
        if !is_url(&service.location) || !service.response_location.as_deref().is_none_or(is_url) {
            return Err("has a SingleLogoutService location that is not an http(s) URL".to_owned());
        }
        Ok(Some(Self {
            post: service.binding == HTTP_POST_BINDING,
            location: service.location.clone(),
            response_location: service.response_location.clone(),
        }))
    }
}

/// The fields of a message, raw (percent-encoded, as received) and decoded.
struct Fields<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    fn of(text: &'a str) -> Result<Self, Error> {
        let pairs: Vec<(&str, &str)> = text
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .collect();
        for name in [
            "SAMLRequest",
            "SAMLResponse",
            "RelayState",
            "SigAlg",
            "Signature",
        ] {
            if pairs.iter().filter(|(key, _)| *key == name).count() > 1 {
                return Err(Error::invalid("a SAML logout message field is repeated"));
            }
        }
        Ok(Self { pairs })
    }

    fn raw(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
    }

    /// Form decoding: `+` is a space, then percent-decoding.
    fn decoded(&self, name: &str) -> Result<Option<String>, Error> {
        self.raw(name)
            .map(|raw| {
                percent_decode_str(&raw.replace('+', " "))
                    .decode_utf8()
                    .map(|value| value.into_owned())
                    .map_err(|_| Error::invalid("a SAML logout message field is not UTF-8"))
            })
            .transpose()
    }
}

/// The signature algorithms taken, as in logins (SHA-1 is refused).
const ALLOWED: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// The digest of an HTTP-Redirect `SigAlg` we take.
fn sig_alg_digest(sig_alg: &str) -> Option<openssl::hash::MessageDigest> {
    use openssl::hash::MessageDigest;
    let suffix = sig_alg.strip_prefix("http://www.w3.org/2001/04/xmldsig-more#")?;
    match suffix {
        "rsa-sha256" | "ecdsa-sha256" => Some(MessageDigest::sha256()),
        "rsa-sha384" | "ecdsa-sha384" => Some(MessageDigest::sha384()),
        "rsa-sha512" | "ecdsa-sha512" => Some(MessageDigest::sha512()),
        _ => None,
    }
}

impl Sp {
    /// Whether this service provider takes part in Single Logout: configured, and the
    /// identity provider has a SingleLogoutService.
    pub fn single_logout(&self) -> bool {
        self.config.single_logout && self.idp.slo.is_some()
    }

    /// Reads and checks a message the browser brought from the identity provider.
    /// Blocking (libxml2 for HTTP-POST): call it off the async threads.
    pub fn read_logout_message(
        &self,
        message: &SloMessage,
        now: SystemTime,
    ) -> Result<IdpLogoutMessage, Error> {
        if !self.single_logout() {
            return Err(Error::PermissionDenied(
                "SAML single logout is not configured here",
            ));
        }
        let (xml, relay_state, signed) = match message {
            SloMessage::Redirect(query) => self.read_redirect(query)?,
            SloMessage::Post(form) => self.read_post(form)?,
        };
        let logout = read_logout_xml(&xml)?;
        self.check_logout_xml(&logout, now)?;
        match logout {
            LogoutXml::Request {
                id,
                name_id,
                session_indexes,
                encrypted_id,
                ..
            } => {
                if !signed {
                    return Err(Error::PermissionDenied(NOT_SIGNED));
                }
                if encrypted_id {
                    return Err(Error::invalid("encrypted NameIDs are not supported"));
                }
                let name_id = name_id.ok_or(Error::invalid(NOT_VALID))?;
                let id = id.ok_or(Error::invalid(NOT_VALID))?;
                Ok(IdpLogoutMessage::Request {
                    id,
                    name_id,
                    session_indexes,
                    relay_state,
                })
            }
            LogoutXml::Response {
                in_response_to,
                success,
                ..
            } => Ok(IdpLogoutMessage::Response {
                in_response_to: in_response_to.ok_or(Error::Unauthenticated(
                    "the SAML logout response answers no logout of ours",
                ))?,
                relay_state: relay_state.unwrap_or_default(),
                success,
            }),
        }
    }

    /// An HTTP-Redirect message: its XML, RelayState, and whether its query signature was
    /// made by one of the provider's signing certificates (refused when it names one but
    /// fails).
    fn read_redirect(&self, query: &str) -> Result<(String, Option<String>, bool), Error> {
        let fields = Fields::of(query)?;
        let (name, raw) = match (fields.raw("SAMLRequest"), fields.raw("SAMLResponse")) {
            (Some(raw), None) => ("SAMLRequest", raw),
            (None, Some(raw)) => ("SAMLResponse", raw),
            _ => {
                return Err(Error::invalid(
                    "the query has no SAMLRequest or SAMLResponse",
                ));
            }
        };
        let relay_state = fields.decoded("RelayState")?;
        let signed = match (fields.raw("SigAlg"), fields.decoded("Signature")?) {
            (Some(sig_alg_raw), Some(signature)) => {
                // SAML bindings 3.4.4.1: the octets signed are the fields as they were
                // URL-encoded by the sender, in this order.
                let mut octets = format!("{name}={raw}");
                if let Some(relay) = fields.raw("RelayState") {
                    octets.push_str(&format!("&RelayState={relay}"));
                }
                octets.push_str(&format!("&SigAlg={sig_alg_raw}"));
                let sig_alg = fields.decoded("SigAlg")?.unwrap_or_default();
                self.check_query_signature(&octets, &sig_alg, &signature)?;
                true
            }
            (None, None) => false,
            _ => return Err(Error::PermissionDenied(NOT_SIGNED)),
        };
        let encoded = fields.decoded(name)?.unwrap_or_default();
        if encoded.is_empty() || encoded.len() > super::MAX_RESPONSE_LEN {
            return Err(Error::invalid(NOT_VALID));
        }
        let compact: String = encoded.split_whitespace().collect();
        let deflated = STANDARD
            .decode(compact)
            .map_err(|_| Error::invalid(NOT_VALID))?;
        let mut xml = String::new();
        flate2::read::DeflateDecoder::new(deflated.as_slice())
            .take(MAX_INFLATED)
            .read_to_string(&mut xml)
            .map_err(|_| Error::invalid(NOT_VALID))?;
        check_shape(&xml)?;
        Ok((xml, relay_state, signed))
    }

    fn check_query_signature(
        &self,
        octets: &str,
        sig_alg: &str,
        signature: &str,
    ) -> Result<(), Error> {
        let digest = sig_alg_digest(sig_alg).ok_or(Error::PermissionDenied(
            "the SAML logout message is signed with an algorithm not accepted here",
        ))?;
        let signature = STANDARD
            .decode(signature.split_whitespace().collect::<String>())
            .map_err(|_| Error::PermissionDenied(NOT_SIGNED))?;
        let certificates = self.signing_certificates()?;
        let verified = certificates.iter().any(|certificate| {
            let check = || -> Result<bool, openssl::error::ErrorStack> {
                let key = openssl::x509::X509::from_der(certificate.der_data())?.public_key()?;
                let mut verifier = openssl::sign::Verifier::new(digest, &key)?;
                verifier.update(octets.as_bytes())?;
                verifier.verify(&signature)
            };
            check().unwrap_or(false)
        });
        if verified {
            Ok(())
        } else {
            tracing::info!("SAML logout message with a query signature by no known key");
            Err(Error::PermissionDenied(NOT_SIGNED))
        }
    }

    fn signing_certificates(&self) -> Result<Vec<samael::crypto::CertificateDer>, Error> {
        match self.inner.idp_signing_certs() {
            Ok(Some(certificates)) => Ok(certificates),
            _ => Err(Error::ProviderUnavailable(
                "the identity provider's signing certificates cannot be read",
            )),
        }
    }

    /// An HTTP-POST message: when it carries an XML signature, only what that signature
    /// covers (the whole message) is returned.
    fn read_post(&self, form: &str) -> Result<(String, Option<String>, bool), Error> {
        let fields = Fields::of(form)?;
        let encoded = match (
            fields.decoded("SAMLRequest")?,
            fields.decoded("SAMLResponse")?,
        ) {
            (Some(value), None) | (None, Some(value)) => value,
            _ => {
                return Err(Error::invalid(
                    "the form has no SAMLRequest or SAMLResponse",
                ));
            }
        };
        let relay_state = fields.decoded("RelayState")?;
        let xml = decode_response(&encoded)?;
        check_shape(&xml)?;
        if !has_signature(&xml) {
            return Ok((xml, relay_state, false));
        }
        let certificates = self.signing_certificates()?;
        // The same bounded queue and lock as Responses (see `Sp::verify`).
        let Some(_queued) = VerificationQueue::join() else {
            return Err(Error::ProviderUnavailable(
                "too many SAML messages are being checked; try again shortly",
            ));
        };
        let _one_at_a_time = libxml_lock();
        let signed = samael::crypto::Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            &xml,
            &certificates,
            ReduceMode::ValidateAndMarkNoAncestors,
            Some(&ALLOWED),
        )
        .map_err(|error| {
            tracing::info!(%error, "SAML logout message with a bad XML signature");
            Error::PermissionDenied(NOT_SIGNED)
        })?;
        Ok((signed, relay_state, true))
    }

    /// Issuer, Destination and the time window, for either kind of message.
    fn check_logout_xml(&self, logout: &LogoutXml, now: SystemTime) -> Result<(), Error> {
        let common = logout.common();
        if common.issuer.as_deref() != Some(self.idp.entity_id()) {
            return Err(Error::Unauthenticated(
                "the SAML logout message comes from another identity provider",
            ));
        }
        // Required: the bindings require it of a signed message (3.4.5.2, 3.5.5.2), and
        // without it a message for another service provider of the same identity provider
        // would be taken here.
        if common.destination.as_deref() != Some(self.config.slo_url().as_str()) {
            return Err(Error::Unauthenticated(
                "the SAML logout message is addressed to another site (Destination)",
            ));
        }
        let skew = self.config.clock_skew;
        let issued = common.issue_instant.ok_or(Error::invalid(NOT_VALID))?;
        if issued > now + skew || issued + MAX_ISSUE_DELAY + skew < now {
            return Err(Error::Unauthenticated(
                "the SAML logout message has expired",
            ));
        }
        if common
            .not_on_or_after
            .is_some_and(|until| until + skew <= now)
        {
            return Err(Error::Unauthenticated(
                "the SAML logout message has expired",
            ));
        }
        Ok(())
    }

    /// How the browser takes our LogoutRequest for `subject` to the identity provider, over
    /// the binding of its SingleLogoutService; `None` when it has none.
    /// Blocking when signed over HTTP-POST (libxml2): call it off the async threads.
    pub fn logout_request(
        &self,
        request_id: &str,
        subject: &SamlSubject,
        relay_state: &str,
        now: SystemTime,
    ) -> Result<Option<SloAnswer>, Error> {
        let Some(service) = self.idp.slo.as_ref() else {
            return Ok(None);
        };
        let outgoing = Outgoing {
            field: "SAMLRequest",
            id: request_id,
            destination: &service.location,
            post: service.post,
            relay_state: Some(relay_state),
        };
        self.send(&outgoing, now, |head| {
            super::message::logout_request_xml(head, subject)
        })
        .map(Some)
    }

    /// Our LogoutResponse (Success) to the provider's LogoutRequest `in_response_to`, over
    /// the binding of its SingleLogoutService. Blocking when signed over HTTP-POST
    /// (libxml2): call it off the async threads.
    pub fn logout_response(
        &self,
        in_response_to: &str,
        relay_state: Option<&str>,
        now: SystemTime,
    ) -> Result<SloAnswer, Error> {
        let service = self.idp.slo.as_ref().ok_or(Error::PermissionDenied(
            "SAML single logout is not configured here",
        ))?;
        let id = super::response_id();
        let outgoing = Outgoing {
            field: "SAMLResponse",
            id: &id,
            destination: service
                .response_location
                .as_deref()
                .unwrap_or(&service.location),
            post: service.post,
            relay_state,
        };
        self.send(&outgoing, now, |head| {
            super::message::logout_response_xml(head, in_response_to)
        })
    }

    /// The message `write` makes, signed when this service provider signs its logout
    /// messages: over HTTP-POST an enveloped XML signature, over HTTP-Redirect the query
    /// signature (the AuthnRequest's).
    fn send(
        &self,
        outgoing: &Outgoing<'_>,
        now: SystemTime,
        write: impl Fn(&super::message::Head<'_>) -> String,
    ) -> Result<SloAnswer, Error> {
        let failed = |detail: String| {
            tracing::error!(%detail, "cannot make a SAML logout message");
            Error::ProviderUnavailable("SAML logout is not available right now")
        };
        let keys = self
            .keys
            .as_ref()
            .filter(|_| self.config.signs_logout_messages());
        let template = match keys {
            Some(keys) if outgoing.post => {
                Some(super::xml_signature::template(outgoing.id, keys).map_err(failed)?)
            }
            _ => None,
        };
        let xml = write(&super::message::Head {
            id: outgoing.id,
            issuer: &self.config.entity_id,
            destination: outgoing.destination,
            issued: now,
            signature: template.as_deref(),
        });
        if outgoing.post {
            let xml = match keys {
                Some(keys) => super::xml_signature::sign(&xml, keys).map_err(failed)?,
                None => xml,
            };
            return Ok(SloAnswer::Post {
                action: outgoing.destination.to_owned(),
                saml_message: STANDARD.encode(xml),
                relay_state: outgoing.relay_state.map(str::to_owned),
            });
        }
        let mut query = format!("{}={}", outgoing.field, encode_redirect(&xml)?);
        if let Some(relay_state) = outgoing.relay_state {
            query.push_str(&format!(
                "&RelayState={}",
                utf8_percent_encode(relay_state, QUERY_VALUE)
            ));
        }
        let url = join_query(outgoing.destination, &query);
        match keys {
            Some(keys) => super::redirect_signature::sign(&url, keys.key())
                .map(SloAnswer::Redirect)
                .map_err(failed),
            None => Ok(SloAnswer::Redirect(url)),
        }
    }
}

/// Where and how one of our logout messages goes.
struct Outgoing<'a> {
    /// The form field or query parameter: `SAMLRequest` or `SAMLResponse`.
    field: &'static str,
    id: &'a str,
    destination: &'a str,
    post: bool,
    relay_state: Option<&'a str>,
}

/// DEFLATE, base64 and URL-encoding, as the HTTP-Redirect binding carries a message.
fn encode_redirect(xml: &str) -> Result<String, Error> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let deflated = encoder
        .write_all(xml.as_bytes())
        .and_then(|()| encoder.finish())
        .map_err(|error| {
            tracing::error!(%error, "cannot deflate a SAML logout message");
            Error::ProviderUnavailable("SAML logout is not available right now")
        })?;
    Ok(utf8_percent_encode(&STANDARD.encode(deflated), QUERY_VALUE).to_string())
}

fn join_query(location: &str, query: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}{query}")
}

/// Whether the document holds an XML signature at all (the verification decides the rest).
fn has_signature(xml: &str) -> bool {
    xml.contains("http://www.w3.org/2000/09/xmldsig#")
}
