//! The provider's discovery document (OpenID Connect Discovery 1.0): read from
//! `{issuer}/.well-known/openid-configuration`, and accepted only when it names the configured
//! issuer exactly and its endpoints are https (or http on a loopback host, for a provider
//! under test).

use serde::Deserialize;

use crate::config::OidcConfig;
use crate::outbound::{self, HttpClient};

/// What Gatehouse uses of the provider's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// The provider names itself in `iss` on its authorization responses (RFC 9207).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// The discovery document's URL for an issuer.
pub fn url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Reads and checks the provider's metadata; the error says what is wrong, for the log.
pub async fn fetch(client: &HttpClient, config: &OidcConfig) -> Result<Metadata, String> {
    let body = outbound::get(client, &url(&config.issuer)).await?;
    parse(&body, &config.issuer)
}

/// Reads and checks a discovery document for `issuer`.
pub fn parse(body: &[u8], issuer: &str) -> Result<Metadata, String> {
    let metadata: Metadata = serde_json::from_slice(body)
        .map_err(|error| format!("the discovery document is not valid: {error}"))?;
    // A document naming another issuer may be an attempt to have tokens of that issuer
    // accepted here (OpenID Connect Discovery 1.0, section 4.3).
    if metadata.issuer != issuer {
        return Err(format!(
            "the discovery document names the issuer {:?}, not {issuer:?}",
            metadata.issuer
        ));
    }
    let endpoints = [
        (
            "authorization_endpoint",
            Some(&metadata.authorization_endpoint),
        ),
        ("token_endpoint", Some(&metadata.token_endpoint)),
        ("jwks_uri", Some(&metadata.jwks_uri)),
        ("userinfo_endpoint", metadata.userinfo_endpoint.as_ref()),
        (
            "end_session_endpoint",
            metadata.end_session_endpoint.as_ref(),
        ),
    ];
    for (name, endpoint) in endpoints {
        if let Some(endpoint) = endpoint {
            let acceptable = endpoint
                .parse::<http::Uri>()
                .is_ok_and(|uri| crate::config::is_https_or_loopback(&uri));
            if !acceptable {
                return Err(format!(
                    "{name} {endpoint:?} is not an https URL (http only on a loopback host)"
                ));
            }
        }
    }
    if let Some(methods) = &metadata.code_challenge_methods_supported
        && !methods.iter().any(|method| method == "S256")
    {
        return Err("the provider does not support PKCE with S256".to_owned());
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://idp.example.com";

    fn document(issuer: &str, token_endpoint: &str) -> Vec<u8> {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "https://idp.example.com/auth",
            "token_endpoint": token_endpoint,
            "jwks_uri": "https://idp.example.com/jwks",
            "end_session_endpoint": "https://idp.example.com/session/end",
            "code_challenge_methods_supported": ["S256"],
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_document_for_the_issuer_is_accepted() {
        let metadata = parse(&document(ISSUER, "https://idp.example.com/token"), ISSUER).unwrap();
        assert_eq!(metadata.token_endpoint, "https://idp.example.com/token");
        assert_eq!(metadata.userinfo_endpoint, None);
    }

    #[test]
    fn another_issuer_or_a_plain_http_endpoint_is_refused() {
        let other = parse(
            &document("https://evil.example.com", "https://idp.example.com/token"),
            ISSUER,
        );
        assert!(other.unwrap_err().contains("evil.example.com"));
        let plain = parse(&document(ISSUER, "http://idp.example.com/token"), ISSUER);
        assert!(plain.unwrap_err().contains("token_endpoint"));
        assert!(parse(b"not json", ISSUER).is_err());
    }

    #[test]
    fn the_document_lives_under_the_issuer() {
        assert_eq!(
            url("https://idp.example.com/realms/a/"),
            "https://idp.example.com/realms/a/.well-known/openid-configuration"
        );
    }
}
