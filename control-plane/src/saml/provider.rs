//! The service provider on `samael` and libxmlsec1: metadata, AuthnRequests, and the
//! verification of a Response (feature `saml`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use samael::crypto::{AllowedSignatureAlgorithm, Crypto, CryptoProvider as _, ReduceMode};
use samael::metadata::EntityDescriptor;
use samael::schema::Assertion;
use samael::service_provider::{Error as SamlError, ServiceProvider};

use super::decryption::{self, Undecryptable};
use super::{MAX_ISSUE_DELAY, SpKeys, VerifiedAssertion, check_shape, decode_response};
use crate::config::SamlConfig;
use crate::domain::{Attribute, User};
use crate::error::Error;

/// Responses waiting for or in verification on this replica at most; more are answered 503.
const MAX_QUEUED_VERIFICATIONS: usize = 16;

/// A place in the bounded queue of Responses to verify, given back when dropped.
pub(super) struct VerificationQueue;

static QUEUED: AtomicUsize = AtomicUsize::new(0);

impl VerificationQueue {
    pub(super) fn join() -> Option<Self> {
        QUEUED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < MAX_QUEUED_VERIFICATIONS).then_some(queued + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for VerificationQueue {
    fn drop(&mut self) {
        QUEUED.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) const HTTP_REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// Signature algorithms taken on Responses and assertions. SHA-1 is refused: its collisions
/// are practical.
const ALLOWED_SIGNATURES: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];
/// The one answer to an encrypted assertion in an unsigned Response that fails before a
/// signature is verified: anyone can encrypt for this site (its certificate is public), and
/// answers that told a padding error from a parse error from a missing signature would be
/// the oracle that decrypts CBC ciphertexts (Jager and Somorovsky, 2011).
const ENCRYPTED_NOT_TAKEN: &str = "the encrypted SAML assertion cannot be decrypted for this site or is not signed by the identity provider";

/// The identity provider as its metadata describes it.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    descriptor: EntityDescriptor,
    /// The SingleSignOnService of the HTTP-Redirect binding.
    sso_redirect: String,
    /// The SingleLogoutService, HTTP-Redirect preferred over HTTP-POST; none: the provider
    /// takes no logout messages from us.
    pub(super) slo: Option<super::logout::SloService>,
}

impl IdpMetadata {
    /// Reads an `EntityDescriptor` with an `IDPSSODescriptor`: an entity id, an HTTP-Redirect
    /// SingleSignOnService and at least one signing certificate (several for rotation).
    pub fn parse(xml: &str) -> Result<Self, String> {
        let descriptor: EntityDescriptor = xml
            .parse()
            .map_err(|_| "is not SAML metadata with one EntityDescriptor".to_owned())?;
        if descriptor.entity_id.as_deref().is_none_or(str::is_empty) {
            return Err("names no entityID".to_owned());
        }
        let sso_redirect = descriptor
            .idp_sso_descriptors
            .iter()
            .flatten()
            .flat_map(|idp| &idp.single_sign_on_services)
            .find(|service| service.binding == HTTP_REDIRECT_BINDING)
            .map(|service| service.location.clone())
            .ok_or("has no SingleSignOnService with the HTTP-Redirect binding")?;
        if !sso_redirect
            .parse::<http::Uri>()
            .is_ok_and(|uri| matches!(uri.scheme_str(), Some("http" | "https")))
        {
            return Err("has a SingleSignOnService location that is not an http(s) URL".to_owned());
        }
        let sp = ServiceProvider {
            idp_metadata: descriptor.clone(),
            ..ServiceProvider::default()
        };
        match sp.idp_signing_certs() {
            Ok(Some(certificates)) if !certificates.is_empty() => {}
            Ok(_) => return Err("has no signing certificate".to_owned()),
            Err(_) => return Err("has a signing certificate that cannot be read".to_owned()),
        }
        let slo = super::logout::SloService::of(&descriptor)?;
        Ok(Self {
            descriptor,
            sso_redirect,
            slo,
        })
    }

    pub fn entity_id(&self) -> &str {
        self.descriptor.entity_id.as_deref().unwrap_or_default()
    }

    /// Whether the metadata names a SingleLogoutService (HTTP-Redirect or HTTP-POST).
    pub fn has_single_logout(&self) -> bool {
        self.slo.is_some()
    }
}

/// One virtual proxy's service provider, built from its configuration.
#[derive(Clone)]
pub struct Sp {
    pub(super) config: SamlConfig,
    pub(super) idp: IdpMetadata,
    /// `samael`'s service provider, for SP-initiated logins (`InResponseTo` required).
    pub(super) inner: ServiceProvider,
    /// This service provider's key pair (`sp_key_file`), if it has one.
    pub(super) keys: Option<SpKeys>,
}

impl std::fmt::Debug for Sp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sp")
            .field("entity_id", &self.config.entity_id)
            .field("idp", &self.idp.entity_id())
            .finish_non_exhaustive()
    }
}

impl Sp {
    /// The service provider of `config` for the identity provider `metadata` describes.
    pub fn new(config: SamlConfig, metadata: &str) -> Result<Self, String> {
        let idp = IdpMetadata::parse(metadata)?;
        let skew = chrono::Duration::from_std(config.clock_skew).map_err(|e| e.to_string())?;
        let delay = chrono::Duration::from_std(MAX_ISSUE_DELAY).map_err(|e| e.to_string())?;
        let inner = ServiceProvider {
            entity_id: Some(config.entity_id.clone()),
            acs_url: Some(config.acs_url().to_owned()),
            metadata_url: None,
            slo_url: None,
            idp_metadata: idp.descriptor.clone(),
            authn_name_id_format: config.name_id_format.clone(),
            allow_idp_initiated: false,
            max_clock_skew: skew,
            max_issue_delay: delay + skew,
            allowed_signature_algorithms: Some(ALLOWED_SIGNATURES.to_vec()),
            ..ServiceProvider::default()
        };
        let keys = config
            .has_key_pair()
            .then(|| {
                SpKeys::parse(
                    &config.sp_key_pair.key_pem,
                    &config.sp_key_pair.certificate_pem,
                )
            })
            .transpose()?;
        Ok(Self {
            config,
            idp,
            inner,
            keys,
        })
    }

    pub fn config(&self) -> &SamlConfig {
        &self.config
    }

    /// The identity provider's URL to send the browser to: an AuthnRequest with `request_id`
    /// over the HTTP-Redirect binding, and `relay_state`.
    pub fn authn_request_uri(&self, request_id: &str, relay_state: &str) -> Result<String, Error> {
        let failed = |detail: String| {
            tracing::error!(%detail, "cannot make a SAML AuthnRequest");
            Error::ProviderUnavailable("SAML login is not available right now")
        };
        let mut request = self
            .inner
            .make_authentication_request(&self.idp.sso_redirect)
            .map_err(|error| failed(error.to_string()))?;
        request.id = request_id.to_owned();
        let url = request
            .redirect(relay_state)
            .map_err(|error| failed(error.to_string()))?
            .ok_or_else(|| failed("no destination".to_owned()))?
            .to_string();
        match (&self.keys, self.config.sign_authn_requests) {
            (Some(keys), true) => super::redirect_signature::sign(&url, keys.key()).map_err(failed),
            _ => Ok(url),
        }
    }

    /// The identity provider's entity id.
    pub fn idp_entity_id(&self) -> &str {
        self.idp.entity_id()
    }
}

impl Sp {
    /// Verifies a posted `SAMLResponse` (base64). `request_id` is the AuthnRequest this login
    /// sent; `None` for an IdP-initiated Response, which the configuration must allow and
    /// which must not answer any request. Blocking (libxml2): call it off the async threads.
    pub fn verify(
        &self,
        saml_response: &str,
        request_id: Option<&str>,
    ) -> Result<VerifiedAssertion, Error> {
        // What needs no libxml2 is refused before any wait for it.
        let xml = decode_response(saml_response)?;
        let shape = check_shape(&xml)?;
        if shape.plain && self.config.require_encrypted_assertions {
            return Err(Error::Unauthenticated(
                "the identity provider must encrypt the SAML assertion for this site",
            ));
        }
        if shape.encrypted && self.keys.is_none() {
            return Err(Error::Unauthenticated(
                "encrypted SAML assertions are not accepted: this site has no key to decrypt them",
            ));
        }
        let mut sp = self.inner.clone();
        let ids: Vec<&str> = request_id.into_iter().collect();
        if request_id.is_none() {
            if !self.config.allow_idp_initiated {
                return Err(Error::Unauthenticated(
                    "unsolicited SAML responses are not accepted; start the login here",
                ));
            }
            // Another browser's Response, posted without its relay state, must not pass
            // for an unsolicited one (its binding to that browser would be skipped).
            if shape.answers_a_request {
                return Err(Error::Unauthenticated(
                    "the SAML response answers a login this browser did not start",
                ));
            }
            sp.allow_idp_initiated = true;
        }
        // One Response at a time: the `libxml` binding does not promise that documents on
        // several threads are safe, and logins are few next to requests. The queue is
        // bounded, so that a flood of large Responses costs waiting callers a quick 503
        // instead of blocking threads for as long as it lasts.
        let Some(_queued) = VerificationQueue::join() else {
            tracing::warn!("SAML verification queue full; a Response was turned away");
            return Err(Error::ProviderUnavailable(
                "too many SAML logins are being checked; try again shortly",
            ));
        };
        let _one_at_a_time = libxml_lock();
        let ids = request_id.map(|_| ids.as_slice());
        let assertion = if shape.encrypted {
            self.open_encrypted(&sp, &xml, shape.response_signed, ids)?
        } else {
            sp.parse_xml_response(&xml, ids).map_err(|error| {
                tracing::info!(%error, "SAML response refused");
                refusal(&error)
            })?
        };
        self.check_assertion(&assertion, request_id)
    }

    /// The assertion of a Response holding an `EncryptedAssertion`, decrypted and put in
    /// its place. A signed Response is verified first, as sent (its signature covers the
    /// ciphertext), and the decrypted document is then checked as that verified Response.
    /// Otherwise the decrypted assertion must carry the identity provider's signature, and
    /// the document is checked as any plaintext Response. Call it under the libxml2 lock.
    fn open_encrypted(
        &self,
        sp: &ServiceProvider,
        xml: &str,
        response_signed: bool,
        ids: Option<&[&str]>,
    ) -> Result<Assertion, Error> {
        let key = self
            .keys
            .as_ref()
            .ok_or(Error::Unauthenticated(ENCRYPTED_NOT_TAKEN))?
            .key();
        if response_signed {
            let certificates =
                sp.idp_signing_certs()
                    .ok()
                    .flatten()
                    .ok_or(Error::Unauthenticated(
                        "the SAML response is not signed by the identity provider",
                    ))?;
            let verified = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
                xml,
                &certificates,
                ReduceMode::default(),
                Some(&ALLOWED_SIGNATURES),
            )
            .map_err(|_| {
                Error::Unauthenticated("the SAML response is not signed by the identity provider")
            })?;
            let decrypted = decryption::decrypt_in_place(&verified, key)?;
            let shape = check_shape(&decrypted)?;
            if !shape.plain || shape.encrypted {
                return Err(Error::Unauthenticated("the SAML response is not valid"));
            }
            // Verified above, before decryption; the signature no longer matches the
            // document with the plaintext in place, so `samael` checks it without one.
            let mut verified_checks = sp.clone();
            for idp in verified_checks
                .idp_metadata
                .idp_sso_descriptors
                .iter_mut()
                .flatten()
            {
                idp.key_descriptors.clear();
            }
            return verified_checks
                .parse_xml_response(&decrypted, ids)
                .map_err(|error| {
                    tracing::info!(%error, "decrypted SAML response refused");
                    refusal(&error)
                });
        }
        let not_taken = |detail: &dyn std::fmt::Display| {
            tracing::info!(%detail, "encrypted SAML assertion refused");
            Error::Unauthenticated(ENCRYPTED_NOT_TAKEN)
        };
        let decrypted = match decryption::decrypt_in_place(xml, key) {
            Ok(decrypted) => decrypted,
            Err(Undecryptable::Algorithm) => return Err(Undecryptable::Algorithm.into()),
            Err(error @ Undecryptable::Failed) => return Err(not_taken(&error)),
        };
        match check_shape(&decrypted) {
            Ok(shape) if shape.plain && !shape.encrypted => {}
            Ok(_) => return Err(not_taken(&"not one plaintext assertion")),
            Err(error) => return Err(not_taken(&error)),
        }
        sp.parse_xml_response(&decrypted, ids)
            .map_err(|error| match error {
                SamlError::FailedToValidateSignature
                | SamlError::FailedToParseSamlResponse(_)
                | SamlError::FailedToParseSamlAssertion(_)
                | SamlError::CryptoXmlError(_) => not_taken(&error),
                error => {
                    tracing::info!(%error, "decrypted SAML response refused");
                    refusal(&error)
                }
            })
    }

    /// What `samael` leaves to the service provider: an `Audience` is required (the profile
    /// says so; `samael` checks it only when present), an IdP-initiated Response answers no
    /// request, and the assertion names a user.
    fn check_assertion(
        &self,
        assertion: &Assertion,
        request_id: Option<&str>,
    ) -> Result<VerifiedAssertion, Error> {
        let conditions = assertion.conditions.as_ref();
        let audience = conditions
            .and_then(|conditions| conditions.audience_restrictions.as_ref())
            .is_some_and(|restrictions| {
                !restrictions.is_empty()
                    && restrictions
                        .iter()
                        .all(|restriction| restriction.audience.contains(&self.config.entity_id))
            });
        if !audience {
            return Err(Error::Unauthenticated(
                "the SAML assertion is meant for another service provider (Audience)",
            ));
        }
        let confirmations = assertion
            .subject
            .as_ref()
            .and_then(|subject| subject.subject_confirmations.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|confirmation| confirmation.subject_confirmation_data.as_ref());
        for data in confirmations {
            if request_id.is_none() && data.in_response_to.is_some() {
                return Err(Error::Unauthenticated(
                    "the SAML response answers a login this browser did not start",
                ));
            }
        }
        let until = super::validity::usable_until(
            assertion,
            self.config.clock_skew,
            MAX_ISSUE_DELAY + self.config.clock_skew,
            SystemTime::now(),
        )?;
        Ok(VerifiedAssertion {
            id: assertion.id.clone(),
            usable_until: until,
            user: self.user(assertion)?,
            subject: subject(assertion),
        })
    }

    /// The user the assertion names: user id from the NameID or `user_id_attribute`,
    /// directory from `user_directory_attribute` or the fixed one, and the mapped attributes.
    pub fn user(&self, assertion: &Assertion) -> Result<User, Error> {
        let values = |name: &str| -> Vec<String> {
            assertion
                .attribute_statements
                .iter()
                .flatten()
                .flat_map(|statement| &statement.attributes)
                .filter(|attribute| {
                    attribute.name.as_deref() == Some(name)
                        || attribute.friendly_name.as_deref() == Some(name)
                })
                .flat_map(|attribute| &attribute.values)
                .filter_map(|value| value.value.as_ref())
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
                .collect()
        };
        let no_user = |reason: &str| {
            tracing::info!(reason, "SAML assertion names no valid user");
            Error::Unauthenticated("the identity provider's answer names no valid user")
        };
        let id = match &self.config.user_id_attribute {
            Some(name) => values(name).into_iter().next(),
            None => assertion
                .subject
                .as_ref()
                .and_then(|subject| subject.name_id.as_ref())
                .map(|name_id| name_id.value.trim().to_owned())
                .filter(|value| !value.is_empty()),
        }
        .ok_or_else(|| no_user("no user id"))?;
        let directory = self
            .config
            .user_directory_attribute
            .as_deref()
            .and_then(|name| values(name).into_iter().next())
            .or_else(|| self.config.user_directory.clone())
            .ok_or_else(|| no_user("no user directory"))?;
        let mut attributes = Vec::new();
        let groups = self
            .config
            .groups_attribute
            .iter()
            .map(|from| ("Group", from));
        let mapped = self
            .config
            .attributes
            .iter()
            .map(|(name, from)| (name.as_str(), from));
        for (name, from) in mapped.chain(groups) {
            attributes.extend(values(from).into_iter().map(|value| Attribute {
                name: name.to_owned(),
                value,
            }));
        }
        User::new(&directory, &id, attributes).map_err(|_| no_user("not a valid user"))
    }
}

/// Held while libxml2 works on a document: one at a time, for Responses and logout
/// messages alike.
pub(super) fn libxml_lock() -> std::sync::MutexGuard<'static, ()> {
    static LIBXML: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LIBXML
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The NameID and SessionIndex the assertion gives the login, for Single Logout.
fn subject(assertion: &Assertion) -> Option<super::SamlSubject> {
    let name_id = assertion.subject.as_ref()?.name_id.as_ref()?;
    let value = name_id.value.trim();
    if value.is_empty() {
        return None;
    }
    let session_index = assertion
        .authn_statements
        .iter()
        .flatten()
        .find_map(|statement| statement.session_index.clone());
    Some(super::SamlSubject {
        name_id: value.to_owned(),
        format: name_id.format.clone(),
        session_index,
    })
}

/// The short reason a client is told for a Response `samael` refused.
fn refusal(error: &SamlError) -> Error {
    Error::Unauthenticated(match error {
        SamlError::FailedToValidateSignature => {
            "the SAML response is not signed by the identity provider"
        }
        SamlError::DestinationValidationError { .. } => {
            "the SAML response is addressed to another site (Destination)"
        }
        SamlError::AssertionRecipientMismatch { .. } => {
            "the SAML assertion is addressed to another site (Recipient)"
        }
        SamlError::AssertionConditionAudienceRestrictionFailed { .. } => {
            "the SAML assertion is meant for another service provider (Audience)"
        }
        SamlError::ResponseInResponseToInvalid { .. }
        | SamlError::AssertionInResponseToInvalid { .. } => {
            "the SAML response answers a login this browser did not start"
        }
        SamlError::ResponseExpired { .. }
        | SamlError::AssertionExpired { .. }
        | SamlError::AssertionConditionExpired { .. }
        | SamlError::AssertionSubjectConfirmationExpired { .. } => {
            "the SAML response has expired; start again"
        }
        SamlError::AssertionConditionExpiredBefore { .. }
        | SamlError::AssertionSubjectConfirmationExpiredBefore { .. } => {
            "the SAML response is not valid yet (check the clocks)"
        }
        SamlError::ResponseIssuerMismatch { .. } | SamlError::AssertionIssuerMismatch { .. } => {
            "the SAML response comes from another identity provider"
        }
        SamlError::ResponseBadStatusCode { .. } => "the identity provider did not log you in",
        SamlError::MissingPrivateKeySP | SamlError::EncryptedAssertionsNotYetSupported => {
            "encrypted SAML assertions are not accepted here"
        }
        _ => "the SAML response is not valid",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verification_queue_is_bounded_and_gives_places_back() {
        let held: Vec<_> = std::iter::from_fn(VerificationQueue::join)
            .take(100)
            .collect();
        assert_eq!(held.len(), MAX_QUEUED_VERIFICATIONS);
        assert!(VerificationQueue::join().is_none());
        drop(held);
        assert!(VerificationQueue::join().is_some());
    }
}
