//! Each login method end to end, against a real identity provider: JWT bearer tokens,
//! Windows authentication (Kerberos) against an MIT KDC, OpenID Connect against a provider,
//! SAML 2.0 against an identity provider.

/// Its keys and tokens are reused by the audit tests.
pub(crate) mod jwt;
mod kerberos;
mod oidc;
mod saml;
mod saml_encryption;
mod saml_logout;
mod saml_metadata_file;
mod saml_signed_logout;
