//! Who is making a request: the session cookie, a login ticket, a bearer JWT, a trusted
//! header, Windows sign-in or anonymous access (`identify`), else the login flow (a redirect
//! to the authentication module, the OpenID provider or the SAML identity provider for a GET, 401 for anything else).
//! Never a 401 or a redirect for a session that merely could not be checked: that is a 503.
//! `login` turns the control plane's answers into a session or a refusal; the other modules
//! read one credential each.

pub mod client;
pub mod cookie;
pub mod csrf;
pub mod header;
pub mod identify;
pub mod jwt;
pub mod kerberos;
pub mod login;
pub mod oidc;
pub mod query;
pub mod rules;
pub mod saml;
