//! Responses the node writes itself: errors with a status and a short reason (never internal
//! detail), redirects, and JSON.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};

/// A plain-text error: the status and one line saying what was wrong.
pub fn error(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(format!("{reason}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A 503 is always "not now" (control plane or store unreachable, connection limit, no
    // upstream): say when to come back. After a failed check the node itself waits a second
    // before asking the control plane again, so retrying sooner gets the same answer.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A 302 to `location`, optionally setting or clearing the session cookie.
pub fn redirect(location: &str, cookie: Option<HeaderValue>) -> Response<ProxyBody> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the redirect target is not a valid URL",
        );
    };
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
