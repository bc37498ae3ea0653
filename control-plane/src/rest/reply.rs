//! HTTP answers of the REST surface, and the one mapping from domain errors to statuses
//! (the counterpart of `impl From<Error> for tonic::Status`). Internal detail goes to the log,
//! never into a body.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;

use crate::error::{Error, StoreError};

pub(super) type Response = http::Response<Full<Bytes>>;

/// A JSON answer. Bodies may hold tickets and session ids: never cached.
pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    build(status, "application/json; charset=utf-8", Bytes::from(body))
}

/// A refusal with a short reason in plain text.
pub(super) fn refuse(status: StatusCode, reason: &str) -> Response {
    build(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{reason}\n")),
    )
}

pub(super) fn no_content() -> Response {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The status the gRPC API's code maps to under the usual gRPC ⇄ HTTP correspondence.
pub(super) fn error(error: Error) -> Response {
    match error {
        Error::InvalidArgument(message) => refuse(StatusCode::BAD_REQUEST, &message),
        Error::NotFound(message) => refuse(StatusCode::NOT_FOUND, &message),
        Error::Unauthenticated(message) => refuse(StatusCode::UNAUTHORIZED, message),
        Error::AlreadyExists(message) => refuse(StatusCode::CONFLICT, message),
        Error::PermissionDenied(message) => refuse(StatusCode::FORBIDDEN, message),
        Error::ProviderUnavailable(message) => refuse(StatusCode::SERVICE_UNAVAILABLE, message),
        // QPS refuses a sixth session; RESOURCE_EXHAUSTED in gRPC, 429 here.
        error @ Error::SessionCapReached(_) => {
            refuse(StatusCode::TOO_MANY_REQUESTS, &error.to_string())
        }
        Error::Store(error @ (StoreError::InvalidPageToken | StoreError::InvalidCursor)) => {
            refuse(StatusCode::BAD_REQUEST, &error.to_string())
        }
        Error::Store(StoreError::Unavailable(detail)) => {
            tracing::warn!(%detail, "session store unavailable");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "session store unavailable; retry later",
            )
        }
        Error::Store(error @ (StoreError::Corrupt(_) | StoreError::Rejected(_))) => {
            tracing::error!(%error, "session store failure");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
