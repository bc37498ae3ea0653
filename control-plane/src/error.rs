//! What can go wrong in the control plane, and who is to blame.

use crate::domain::UserError;
use crate::tokens::TokenError;

/// A failure of a store operation. Never "not found": absence is `Ok(None)`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time; the caller may retry.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something this version cannot read.
    #[error("session store holds unreadable data: {0}")]
    Corrupt(String),
    /// Redis answered a command with an error that is not about reaching it.
    #[error("session store rejected a command: {0}")]
    Rejected(String),
    /// A revocation cursor this store did not issue.
    #[error("cursor is not valid")]
    InvalidCursor,
    /// A listing was asked to resume from a token this store did not issue.
    #[error("page_token is not valid")]
    InvalidPageToken,
}

/// Failure of a control-plane operation, in the caller's words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    AlreadyExists(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// An identity provider the operation needs cannot be reached or is too slow.
    #[error("{0}")]
    ProviderUnavailable(&'static str),
    #[error("user already has the maximum of {0} sessions in this virtual proxy")]
    SessionCapReached(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UserError> for Error {
    fn from(error: UserError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl From<TokenError> for Error {
    fn from(error: TokenError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    pub fn unknown_virtual_proxy(prefix: &str) -> Self {
        Self::NotFound(format!("no virtual proxy has the prefix {prefix:?}"))
    }
}
