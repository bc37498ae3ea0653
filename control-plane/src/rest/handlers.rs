//! One function per endpoint: JSON in, a call to the [`Authority`] (the same one the gRPC
//! services call), JSON out.

use bytes::Bytes;
use http::StatusCode;

use super::json;
use super::reply::{self, Response};
use super::routes::Route;
use crate::audit::AdminCall;
use crate::authority::{Authority, SessionSelector};
use crate::domain::UserKey;
use crate::error::Error;

/// Longest `/qps/error` report written to the log.
const MAX_ERROR_REPORT: usize = 8 * 1024;

/// `delete`: the request is a DELETE (the session and user endpoints take GET and DELETE).
pub(super) async fn dispatch(
    authority: &Authority,
    caller: &AdminCall,
    route: Route,
    delete: bool,
    body: Bytes,
) -> Response {
    let result = match route {
        Route::Ticket { prefix } => ticket(authority, &prefix, &body).await,
        Route::CreateSession { prefix } => create_session(authority, caller, &prefix, &body).await,
        Route::Session { prefix, id } => session(authority, caller, &prefix, &id, delete).await,
        Route::User {
            prefix,
            directory,
            user,
        } => user_sessions(authority, caller, &prefix, &directory, &user, delete).await,
        Route::Error => Ok(error_report(&body)),
    };
    result.unwrap_or_else(reply::error)
}

async fn ticket(authority: &Authority, prefix: &str, body: &[u8]) -> Result<Response, Error> {
    let request = json::ticket_request(body)?;
    let issued = authority
        .request_ticket(prefix, request.user, request.target_id.as_deref())
        .await?;
    Ok(reply::json(StatusCode::CREATED, &json::ticket(issued)))
}

async fn create_session(
    authority: &Authority,
    caller: &AdminCall,
    prefix: &str,
    body: &[u8],
) -> Result<Response, Error> {
    let request = json::session_request(body)?;
    let issued = authority
        .create_session(prefix, request.user, request.session_id, caller)
        .await?;
    Ok(reply::json(
        StatusCode::CREATED,
        &json::session(&issued.session, Some(&issued.token)),
    ))
}

async fn session(
    authority: &Authority,
    caller: &AdminCall,
    prefix: &str,
    id: &str,
    delete: bool,
) -> Result<Response, Error> {
    let selector = SessionSelector::TokenOrHandle(id.to_owned());
    let session = if delete {
        authority
            .delete_session(&selector, Some(prefix), caller)
            .await?
    } else {
        authority.get_session(&selector, Some(prefix)).await?
    };
    // Named by its id (the cookie value), the session shows it back, as QPS does: it
    // reveals nothing the caller did not send. Named by its handle, it shows the handle.
    let shown_id = (session.handle != id).then_some(id);
    Ok(reply::json(
        StatusCode::OK,
        &json::session(&session, shown_id),
    ))
}

async fn user_sessions(
    authority: &Authority,
    caller: &AdminCall,
    prefix: &str,
    directory: &str,
    user: &str,
    delete: bool,
) -> Result<Response, Error> {
    let user = UserKey::new(directory, user)?;
    let sessions = if delete {
        authority
            .delete_user_sessions(&user, Some(prefix), caller)
            .await?
    } else {
        authority.list_user_sessions(&user, Some(prefix)).await?
    };
    Ok(reply::json(StatusCode::OK, &json::sessions(&sessions)))
}

/// Authentication modules report their failures here; QPS writes them to its log.
fn error_report(body: &[u8]) -> Response {
    let shown = &body[..body.len().min(MAX_ERROR_REPORT)];
    tracing::warn!(
        report = %String::from_utf8_lossy(shown),
        truncated = body.len() > MAX_ERROR_REPORT,
        "error reported by a client of the REST surface"
    );
    reply::no_content()
}
