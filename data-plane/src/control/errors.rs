//! What a failed call to the control plane means for the answer a node gives. The control
//! plane speaks gRPC status codes; they are read here, once, into [`ControlError`], so that
//! the rest of the node decides on meanings (unavailable, not accepted, denied, ...) and
//! never on codes.

use tonic::{Code, Status};

/// Why a call to the control plane did not give an answer to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Not reachable, or did not answer in time, or its store is down: a reason for 503,
    /// never for 401.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// Every replica that answered said its store is unreachable: also a 503, but the
    /// control plane itself is up, so there is no reason to stop asking it.
    #[error("session store unavailable: {0}")]
    StoreUnavailable(String),
    /// The credential (a token, a Windows sign-in, a login's state) was not accepted. The
    /// control plane's reason is a short fixed text meant for the client.
    #[error("not accepted: {0}")]
    NotAccepted(String),
    /// The user is known but not let in here (a realm that is not accepted, say).
    #[error("denied: {0}")]
    Denied(String),
    /// The request was malformed or names something that is not valid (a login target
    /// outside the public origins, a user that cannot exist).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The user has as many sessions as allowed.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// An identity provider behind the control plane (a JWKS, an OpenID provider) could not
    /// be reached: not the client's fault, a 503 with the control plane's reason.
    #[error("identity provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// Any other refusal: the control plane's own failure. `code` is for the log only.
    #[error("control plane failed ({code}): {message}")]
    Failed { code: String, message: String },
}

/// Whether a call that ended with `code` got no answer to act on: not reachable, timed out,
/// or the replica cannot reach its store. Such a call is tried on the next replica.
pub(super) fn unanswered(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

/// Whether a call that got no answer timed out (rather than failing at once).
pub(super) fn timed_out(code: Code) -> bool {
    matches!(code, Code::Cancelled | Code::DeadlineExceeded)
}

/// Whether a replica answered that its store cannot be reached (it is alive itself).
pub(super) fn is_store_unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status
            .metadata()
            .contains_key(gatehouse_proto::STORE_UNAVAILABLE_KEY)
}

/// Whether the control plane answered "no such thing" (an unknown session token, a used
/// ticket): an answer, not an error.
pub(super) fn is_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

/// Whether the control plane refused the credential itself.
pub(super) fn is_not_accepted(status: &Status) -> bool {
    status.code() == Code::Unauthenticated
}

/// Whether the control plane found the request's argument invalid.
pub(super) fn is_invalid(status: &Status) -> bool {
    status.code() == Code::InvalidArgument
}

impl From<Status> for ControlError {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            _ if is_store_unavailable(&status) => Self::StoreUnavailable(message),
            code if unanswered(code) => Self::Unavailable(message),
            Code::Unauthenticated => Self::NotAccepted(message),
            Code::PermissionDenied => Self::Denied(message),
            Code::InvalidArgument => Self::Invalid(message),
            Code::ResourceExhausted => Self::LimitReached(message),
            Code::FailedPrecondition => Self::ProviderUnavailable(message),
            code => Self::Failed {
                code: format!("{code:?}"),
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_become_meanings() {
        let meaning = |code| ControlError::from(Status::new(code, "why"));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Unknown,
            Code::Cancelled,
            Code::Aborted,
        ] {
            assert_eq!(meaning(code), ControlError::Unavailable("why".into()));
        }
        let mut store_down = Status::unavailable("why");
        store_down.metadata_mut().insert(
            gatehouse_proto::STORE_UNAVAILABLE_KEY,
            tonic::metadata::MetadataValue::from_static("unavailable"),
        );
        assert_eq!(
            ControlError::from(store_down),
            ControlError::StoreUnavailable("why".into())
        );
        assert_eq!(
            meaning(Code::Unauthenticated),
            ControlError::NotAccepted("why".into())
        );
        assert_eq!(
            meaning(Code::PermissionDenied),
            ControlError::Denied("why".into())
        );
        assert_eq!(
            meaning(Code::InvalidArgument),
            ControlError::Invalid("why".into())
        );
        assert_eq!(
            meaning(Code::ResourceExhausted),
            ControlError::LimitReached("why".into())
        );
        assert_eq!(
            meaning(Code::FailedPrecondition),
            ControlError::ProviderUnavailable("why".into())
        );
        assert_eq!(
            meaning(Code::Internal),
            ControlError::Failed {
                code: "Internal".into(),
                message: "why".into()
            }
        );
    }
}
