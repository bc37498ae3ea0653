//! The gRPC surface: one module per service, each only translating proto ⇄ domain and calling
//! the [`Authority`](crate::authority::Authority).

pub mod access;
pub mod authentication;
pub mod node;
pub mod personal;
pub mod session;

use gatehouse_proto::v1 as pb;
use tonic::Status;

use crate::authority::SessionSelector;
use crate::domain::{Attribute, ClientInfo, Session, User, UserKey};
use crate::error::{Error, StoreError};

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(message) => Status::invalid_argument(message),
            Error::NotFound(message) => Status::not_found(message),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            // Not UNAVAILABLE: a node would take that for this replica being down and pass
            // it over for every request, when only logins through this provider fail.
            Error::ProviderUnavailable(message) => Status::failed_precondition(message),
            error @ Error::SessionCapReached(_) => Status::resource_exhausted(error.to_string()),
            Error::Store(error @ (StoreError::InvalidPageToken | StoreError::InvalidCursor)) => {
                Status::invalid_argument(error.to_string())
            }
            Error::Store(StoreError::Unavailable(detail)) => {
                tracing::warn!(%detail, "session store unavailable");
                Status::unavailable("session store unavailable; retry later")
            }
            // Internal detail goes to the log, never to the caller.
            Error::Store(error @ (StoreError::Corrupt(_) | StoreError::Rejected(_))) => {
                tracing::error!(%error, "session store failure");
                Status::internal("internal error")
            }
        }
    }
}

pub(crate) fn user_from_proto(user: Option<pb::User>) -> Result<User, Error> {
    let user = user.ok_or_else(|| Error::invalid("user is required"))?;
    let attributes = user
        .attributes
        .into_iter()
        .map(|attribute| Attribute {
            name: attribute.name,
            value: attribute.value,
        })
        .collect();
    Ok(User::new(&user.user_directory, &user.user_id, attributes)?)
}

pub(crate) fn user_key_from_proto(directory: &str, id: &str) -> Result<UserKey, Error> {
    Ok(UserKey::new(directory, id)?)
}

pub(crate) fn user_to_proto(user: User) -> pb::User {
    pb::User {
        user_directory: user.directory,
        user_id: user.id,
        attributes: user
            .attributes
            .into_iter()
            .map(|attribute| pb::Attribute {
                name: attribute.name,
                value: attribute.value,
            })
            .collect(),
    }
}

pub(crate) fn session_to_proto(session: Session) -> pb::Session {
    let inactivity_expiry = session.inactivity_expiry();
    pb::Session {
        handle: session.handle,
        virtual_proxy: session.virtual_proxy,
        user: Some(user_to_proto(session.user)),
        created: Some(session.created.into()),
        last_active: Some(session.last_active.into()),
        inactivity_expiry: Some(inactivity_expiry.into()),
        absolute_expiry: Some(session.absolute_expiry.into()),
        client_address: session.client.address,
        user_agent: session.client.user_agent,
    }
}

/// What a node reports of a login's client, bounded (absent: nothing recorded).
pub(crate) fn client_from_proto(client: Option<pb::ClientInfo>) -> ClientInfo {
    client.map_or_else(ClientInfo::default, |client| {
        ClientInfo::new(&client.address, &client.user_agent)
    })
}

pub(crate) fn sessions_to_proto(sessions: Vec<Session>) -> Vec<pb::Session> {
    sessions.into_iter().map(session_to_proto).collect()
}

pub(crate) fn selector_from_proto(
    selector: Option<pb::SessionSelector>,
) -> Result<SessionSelector, Error> {
    match selector.and_then(|selector| selector.by) {
        Some(pb::session_selector::By::SessionToken(token)) if !token.is_empty() => {
            Ok(SessionSelector::Token(token))
        }
        Some(pb::session_selector::By::Handle(handle)) if !handle.is_empty() => {
            Ok(SessionSelector::Handle(handle))
        }
        _ => Err(Error::invalid(
            "session must name a session_token or a handle",
        )),
    }
}
