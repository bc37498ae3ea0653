//! HTTP requests the control plane makes to identity providers (JWKS, OpenID discovery, token
//! and userinfo endpoints): https verified against the system's roots (plus an optional CA
//! file), every answer bounded in size and time, so a slow or hostile provider costs a login
//! an error, never a stuck task or unbounded memory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest answer read from a provider.
pub const MAX_BODY_LEN: usize = 1024 * 1024;
/// Longest wait for a provider's whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// An answer read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A client trusting the system's roots and the certificates in `extra_ca` (PEM), if given.
pub fn client(extra_ca: Option<&Path>) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = extra_ca {
        for certificate in crate::config::read_oidc_ca_file(path)? {
            roots
                .add(certificate)
                .map_err(|error| format!("{}: {error}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Sends `request` and reads the answer, whatever its status. The error names the URL.
pub async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Result<Reply, String> {
    let url = request.uri().to_string();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_LEN)
            .collect()
            .await
            .map_err(|error| format!("{url}: {error}"))?
            .to_bytes();
        Ok(Reply { status, body })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{url}: timed out"))?
}

/// GETs `url` and returns the body of a 2xx answer.
pub async fn get(client: &HttpClient, url: &str) -> Result<Bytes, String> {
    let request = Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::default())
        .map_err(|_| format!("bad URL {url:?}"))?;
    let reply = send(client, request).await?;
    if !reply.status.is_success() {
        return Err(format!("{url}: HTTP {}", reply.status));
    }
    Ok(reply.body)
}

/// `application/x-www-form-urlencoded` text of `fields`.
pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but unreserved characters (valid in queries and forms).
pub fn encode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_encode_everything_but_unreserved_characters() {
        assert_eq!(
            form(&[("a b", "x&y=z"), ("code_verifier", "A-b_c.d~e")]),
            "a%20b=x%26y%3Dz&code_verifier=A-b_c.d~e"
        );
    }
}
