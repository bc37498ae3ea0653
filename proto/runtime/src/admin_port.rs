//! What both admin ports answer in the same words, before their own routes: the refusals of
//! [`admin_access`](crate::admin_access) (a foreign `Host`, a change without the token) and
//! `/log-level` (GET the filter in force, PUT a new one with the admin token). One rendering,
//! so the data plane's and the control plane's ports cannot drift apart.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};

use crate::admin_access::{self, AdminRefusal, AdminToken, HostRule};
use crate::logging::LogControl;

/// An answer this module writes.
pub type AdminResponse = Response<Full<Bytes>>;

/// Largest `PUT /log-level` body read.
const MAX_DIRECTIVES: usize = 4096;

/// What `/log-level` needs: the process's log control, and the token that unlocks changes.
#[derive(Debug, Clone, Default)]
pub struct LogLevel {
    pub logs: Option<LogControl>,
    pub token: Option<AdminToken>,
}

/// A request after [`screen`]: answered here, or left to the port's own routes.
#[derive(Debug)]
pub enum Screened<B> {
    Answered(AdminResponse),
    PassedOn(Request<B>),
}

/// Refuses a request naming a host DNS rebinding could send, answers `/log-level`, and passes
/// anything else on.
pub async fn screen<B>(log_level: &LogLevel, peer: SocketAddr, request: Request<B>) -> Screened<B>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(refusal) = admin_access::check_host(
        HostRule::LoopbackOrAddress,
        request.uri(),
        request.headers(),
        &[],
    ) {
        return Screened::Answered(refuse(refusal));
    }
    if request.uri().path() == "/log-level" {
        return Screened::Answered(log_level_endpoint(log_level, peer, request).await);
    }
    Screened::PassedOn(request)
}

/// The one rendering of an [`AdminRefusal`]: its status, its reason, and on a 401 the
/// challenge.
pub fn refuse(refusal: AdminRefusal) -> AdminResponse {
    let mut response = text(refusal.status(), refusal.reason());
    if let Some(challenge) = refusal.challenge() {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// `reason` as one line of plain text; never cached.
pub fn text(status: StatusCode, reason: &str) -> AdminResponse {
    build(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{reason}\n")),
    )
}

/// `value` as JSON; never cached.
pub fn json(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
    build(status, "application/json", Bytes::from(value.to_string()))
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> AdminResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /log-level` shows the filter in force; `PUT /log-level` with `tracing` directives in
/// the body and the admin token replaces it (400 for directives that do not parse).
async fn log_level_endpoint<B>(
    log_level: &LogLevel,
    peer: SocketAddr,
    request: Request<B>,
) -> AdminResponse
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if request.method() == Method::PUT
        && let Err(refusal) =
            admin_access::authorize_change(log_level.token.as_ref(), request.headers())
    {
        tracing::warn!(%peer, reason = refusal.reason(), "log filter change refused");
        return refuse(refusal);
    }
    let Some(logs) = &log_level.logs else {
        return text(StatusCode::NOT_FOUND, "log control is not installed");
    };
    let filter = |logs: &LogControl| serde_json::json!({ "filter": logs.current() });
    match *request.method() {
        Method::GET => json(StatusCode::OK, &filter(logs)),
        Method::PUT => {
            let Ok(body) = Limited::new(request.into_body(), MAX_DIRECTIVES)
                .collect()
                .await
            else {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "directives are limited to 4 KiB",
                );
            };
            let directives = String::from_utf8_lossy(&body.to_bytes()).into_owned();
            match logs.set(&directives, peer) {
                Ok(()) => json(StatusCode::OK, &filter(logs)),
                Err(reason) => text(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid filter: {reason}"),
                ),
            }
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT"),
    }
}
