//! A browser for load tests: unlike [`client`](super::client), which opens a connection per
//! request, it keeps its connections alive between requests (as a browser does) and holds
//! one session cookie. Dropping it closes its connections. Failures are `Err` with a short
//! description, so a load test can count them instead of stopping at the first.

use std::time::Duration;

use bytes::Bytes;
use http::header::{COOKIE, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::client::{HttpResponse, send_on};

/// Longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `name=value` of the session cookie, once there is one.
    pub cookie: Option<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookie: None,
        }
    }

    /// Sends a request with the session cookie (if any) and reads the whole response.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<HttpResponse, String> {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        if let Some(cookie) = &self.cookie {
            builder = builder.header(COOKIE, cookie);
        }
        for (name, value) in headers {
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
                HeaderValue::from_str(value).map_err(|e| e.to_string())?,
            );
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        send_on(&self.client, request, REQUEST_TIMEOUT)
            .await
            .map_err(|error| format!("{method} {url}: {error}"))
    }

    pub async fn get(&self, url: &str) -> Result<HttpResponse, String> {
        self.send(Method::GET, url, &[], "").await
    }
}
