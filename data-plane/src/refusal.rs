//! Why a request gets an answer from the node instead of from an upstream, as a value: every
//! phase of the request path returns a [`Refusal`], and this module alone turns one into a
//! response. A status and a short reason for the client (never internal detail), the
//! headers that belong with it (`Retry-After`, `WWW-Authenticate`, `Allow`, cookies), and
//! nothing else.

use std::borrow::Cow;

use http::header::{ALLOW, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::respond::{html, json, redirect, text};

/// The short text a client is shown.
pub type Reason = Cow<'static, str>;

/// What a request gets instead of reaching the upstream.
#[derive(Debug)]
pub enum Refusal {
    /// 400: the request cannot be served as written.
    BadRequest(Reason),
    /// 400 with an OAuth error body (`invalid_request`), for requests from an identity
    /// provider (OpenID Back-Channel Logout 1.0, section 2.8).
    InvalidOAuthRequest(Reason),
    /// 404.
    NotFound(Reason),
    /// 405, with the methods that are allowed.
    MethodNotAllowed { reason: Reason, allow: &'static str },
    /// 414: the request target is over the node's limit.
    UriTooLong,
    /// 431: one header line is over the node's limit.
    HeaderLineTooLong,
    /// 302 elsewhere first: to log in, or to the same page without its login ticket. The
    /// cookies (a new session's, an OpenID login's binding cookie) go with it.
    Redirect {
        location: String,
        cookies: Vec<HeaderValue>,
    },
    /// 401 `WWW-Authenticate: Negotiate` (Windows sign-in). Browsers that cannot negotiate
    /// show the page, which links to the other login when there is one.
    Negotiate {
        other_login: Option<String>,
        cookies: Vec<HeaderValue>,
    },
    /// 401, with the challenge for the credential the client should send, if any.
    Unauthorized {
        reason: Reason,
        challenge: Option<HeaderValue>,
    },
    /// 403.
    Forbidden(Reason),
    /// 429: the client's own limit is reached.
    TooMany(Reason),
    /// 429 with `Retry-After` in seconds: a flood limit (per client address or per virtual
    /// proxy) is reached, and lifts by then.
    Limited { reason: Reason, retry_after: u64 },
    /// 503 with `Retry-After`: not now (control plane or store unreachable, a limit of this
    /// node, no upstream); another try, or another node, may succeed.
    Unavailable(Reason),
    /// The upstream gave no answer.
    Upstream(UpstreamFailure),
}

/// How an upstream failed a request, as the client is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// 503: no node of the pool can take requests.
    NoNodes,
    /// 504.
    Timeout,
    /// 502.
    Unreachable,
}

impl Refusal {
    pub fn bad_request(reason: impl Into<Reason>) -> Self {
        Self::BadRequest(reason.into())
    }

    pub fn forbidden(reason: impl Into<Reason>) -> Self {
        Self::Forbidden(reason.into())
    }

    pub fn unavailable(reason: impl Into<Reason>) -> Self {
        Self::Unavailable(reason.into())
    }

    /// 401 without a challenge.
    pub fn unauthorized(reason: impl Into<Reason>) -> Self {
        Self::Unauthorized {
            reason: reason.into(),
            challenge: None,
        }
    }

    /// 405 saying which methods to use.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::MethodNotAllowed {
            reason: format!("use {allow}").into(),
            allow,
        }
    }

    /// 302 to `location`, with a cookie if one is given.
    pub fn redirect(location: impl Into<String>, cookie: Option<HeaderValue>) -> Self {
        Self::Redirect {
            location: location.into(),
            cookies: cookie.into_iter().collect(),
        }
    }

    /// The status the client will see.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::InvalidOAuthRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeaderLineTooLong => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Redirect { .. } => StatusCode::FOUND,
            Self::Negotiate { .. } | Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooMany(_) | Self::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Upstream(UpstreamFailure::NoNodes) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Upstream(UpstreamFailure::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(UpstreamFailure::Unreachable) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The response: the one place a refusal becomes one.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        match self {
            Self::BadRequest(reason)
            | Self::NotFound(reason)
            | Self::Forbidden(reason)
            | Self::TooMany(reason)
            | Self::Unavailable(reason) => text(status, &reason),
            Self::InvalidOAuthRequest(description) => json(
                status,
                &serde_json::json!({
                    "error": "invalid_request",
                    "error_description": description,
                }),
            ),
            Self::MethodNotAllowed { reason, allow } => {
                let mut response = text(status, &reason);
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                response
            }
            Self::Limited {
                reason,
                retry_after,
            } => {
                let mut response = text(status, &reason);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after));
                response
            }
            Self::UriTooLong => text(status, "the request URI is too long"),
            Self::HeaderLineTooLong => text(status, "a request header line is too long"),
            Self::Redirect { location, cookies } => redirect(&location, cookies),
            Self::Negotiate {
                other_login,
                cookies,
            } => {
                let mut response = html(status, &negotiate_page(other_login.as_deref()));
                let headers = response.headers_mut();
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Negotiate"));
                for cookie in cookies {
                    headers.append(SET_COOKIE, cookie);
                }
                response
            }
            Self::Unauthorized { reason, challenge } => {
                let mut response = text(status, &reason);
                if let Some(challenge) = challenge {
                    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
                }
                response
            }
            Self::Upstream(failure) => text(
                status,
                match failure {
                    UpstreamFailure::NoNodes => "no upstream is available",
                    UpstreamFailure::Timeout => "the upstream did not answer in time",
                    UpstreamFailure::Unreachable => "the upstream could not be reached",
                },
            ),
        }
    }
}

impl From<Refusal> for Response<ProxyBody> {
    fn from(refusal: Refusal) -> Self {
        refusal.into_response()
    }
}

fn negotiate_page(other_login: Option<&str>) -> String {
    let fallback = match other_login {
        Some(uri) => format!(
            "<p>Windows sign-in is not available in this browser. <a href=\"{}\">Sign in another way</a>.</p>",
            html_escape(uri)
        ),
        None => "<p>Windows sign-in is not available in this browser.</p>".to_owned(),
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in</title></head>\
         <body><h1>Authentication required</h1>{fallback}</body></html>\n"
    )
}

pub fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_link_is_escaped() {
        assert_eq!(
            html_escape("/a?b=1&c=\"<x>\""),
            "/a?b=1&amp;c=&quot;&lt;x&gt;&quot;"
        );
    }

    #[test]
    fn each_refusal_carries_the_headers_that_belong_with_it() {
        let unavailable = Refusal::unavailable("not now").into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[http::header::RETRY_AFTER], "1");
        let no_nodes = Refusal::Upstream(UpstreamFailure::NoNodes).into_response();
        assert_eq!(no_nodes.headers()[http::header::RETRY_AFTER], "1");
        let method = Refusal::method_not_allowed("GET, POST").into_response();
        assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(method.headers()[ALLOW], "GET, POST");
        let challenge = Refusal::Negotiate {
            other_login: Some("/login?a=1&b=2".into()),
            cookies: vec![HeaderValue::from_static("binding=1")],
        }
        .into_response();
        assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.headers()[WWW_AUTHENTICATE], "Negotiate");
        assert_eq!(challenge.headers()[SET_COOKIE], "binding=1");
        let redirect = Refusal::redirect("/somewhere", None).into_response();
        assert_eq!(redirect.status(), StatusCode::FOUND);
        assert_eq!(redirect.headers()[http::header::LOCATION], "/somewhere");
        let bad_location = Refusal::redirect("/a\nb", None).into_response();
        assert_eq!(bad_location.status(), StatusCode::BAD_REQUEST);
        for refusal in [
            Refusal::bad_request("x"),
            Refusal::forbidden("x"),
            Refusal::unauthorized("x"),
            Refusal::UriTooLong,
        ] {
            let status = refusal.status();
            assert_eq!(refusal.into_response().status(), status);
        }
    }
}
