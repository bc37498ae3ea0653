//! The answers the node writes itself, whole: a line of text, a page, JSON, a redirect. The
//! request path's refusals become responses through these (`refusal.rs` alone decides
//! which); the node's own endpoints answer with them.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};

/// A plain-text answer: the status and one line saying what was wrong.
pub fn text(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(format!("{reason}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A 503 is always "not now" (control plane or store unreachable, connection limit, no
    // upstream): say when to come back. After a failed check the node itself waits a second
    // before asking the control plane again, so retrying sooner gets the same answer.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A page the node writes itself.
pub fn html(status: StatusCode, page: &str) -> Response<ProxyBody> {
    let mut response = text(status, "");
    *response.body_mut() = body::full(page.to_owned());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A 302 to `location`, setting or clearing cookies; 400 when `location` cannot be a
/// header value.
pub fn redirect(
    location: &str,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response<ProxyBody> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the redirect target is not a valid URL",
        );
    };
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
    response
}
