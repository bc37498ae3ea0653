//! A control plane built without the feature `saml` (no libxmlsec1): every SAML
//! configuration is refused when it is read, with the reason, so no proxy ever offers a
//! login this build cannot verify.

use std::convert::Infallible;

use std::time::SystemTime;

use super::{IdpLogoutMessage, SamlSubject, SloAnswer, SloMessage, VerifiedAssertion};
use crate::config::SamlConfig;
use crate::error::Error;

const UNSUPPORTED: &str =
    "needs a control plane built with SAML support (cargo feature `saml`, which links libxmlsec1)";

/// Never made: metadata cannot be read without the signature library.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    never: Infallible,
}

impl IdpMetadata {
    pub fn parse(_xml: &str) -> Result<Self, String> {
        Err(UNSUPPORTED.to_owned())
    }

    pub fn entity_id(&self) -> &str {
        match self.never {}
    }

    pub fn has_single_logout(&self) -> bool {
        match self.never {}
    }
}

/// Never made, like [`IdpMetadata`].
#[derive(Debug, Clone)]
pub struct Sp {
    never: Infallible,
}

impl Sp {
    pub fn new(_config: SamlConfig, _metadata: &str) -> Result<Self, String> {
        Err(UNSUPPORTED.to_owned())
    }

    pub fn config(&self) -> &SamlConfig {
        match self.never {}
    }

    pub fn authn_request_uri(
        &self,
        _request_id: &str,
        _relay_state: &str,
    ) -> Result<String, Error> {
        match self.never {}
    }

    pub fn idp_entity_id(&self) -> &str {
        match self.never {}
    }

    pub fn verify(
        &self,
        _saml_response: &str,
        _request_id: Option<&str>,
    ) -> Result<VerifiedAssertion, Error> {
        match self.never {}
    }
}

impl Sp {
    pub fn single_logout(&self) -> bool {
        match self.never {}
    }

    pub fn read_logout_message(
        &self,
        _message: &SloMessage,
        _now: SystemTime,
    ) -> Result<IdpLogoutMessage, Error> {
        match self.never {}
    }

    pub fn logout_request(
        &self,
        _request_id: &str,
        _subject: &SamlSubject,
        _relay_state: &str,
        _now: SystemTime,
    ) -> Result<Option<SloAnswer>, Error> {
        match self.never {}
    }

    pub fn logout_response(
        &self,
        _in_response_to: &str,
        _relay_state: Option<&str>,
        _now: SystemTime,
    ) -> Result<SloAnswer, Error> {
        match self.never {}
    }
}

/// Never made, like [`IdpMetadata`].
#[derive(Debug, Clone)]
pub struct SpKeys {
    never: Infallible,
}

impl SpKeys {
    pub fn parse(_key_pem: &str, _certificate_pem: &str) -> Result<Self, String> {
        Err(UNSUPPORTED.to_owned())
    }

    pub fn certificate_base64(&self) -> String {
        match self.never {}
    }
}

/// Not reached: no proxy has a SAML configuration in this build.
pub fn sp_metadata_xml(_config: &SamlConfig) -> Result<String, Error> {
    Err(Error::ProviderUnavailable(
        "this control plane was built without SAML support",
    ))
}
