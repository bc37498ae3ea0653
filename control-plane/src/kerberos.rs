//! The Kerberos / SPNEGO acceptor behind Windows authentication. Only the control plane holds
//! the keytab: nodes forward the client's token and get back a principal (or a refusal), so
//! the edge holds no long-term secret.
//!
//! The keytab is MIT Kerberos's default one: `KRB5_KTNAME` in the control plane's environment
//! (else `default_keytab_name` in krb5.conf). The acceptor takes any key in it, so the host
//! name the browser used does not matter as long as its service key is there.

#[cfg(feature = "kerberos")]
use libgssapi::context::{SecurityContext, ServerCtx};
#[cfg(feature = "kerberos")]
use libgssapi::credential::{Cred, CredUsage};

/// How long an accepted token is remembered so it cannot be used again on any replica: an
/// authenticator is good within the allowed clock skew on either side (MIT's default is 5
/// minutes), so 10 minutes outlives it.
pub const AUTHENTICATOR_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

/// Longest token accepted; real SPNEGO tokens with a PAC stay well below this.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// A client the keytab vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `user@REALM`, as the KDC named the client.
    pub principal: String,
    /// The reply token for mutual authentication; empty when the mechanism has none.
    pub output_token: Vec<u8>,
}

/// Why a token was not accepted: for the log, never for the client.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("the token is empty or longer than {MAX_TOKEN_LEN} bytes")]
    Size,
    #[error("GSSAPI refused the token: {0}")]
    Gssapi(String),
    #[error("the mechanism wants another round trip, which is not supported")]
    Incomplete,
    #[error("the acceptor task failed: {0}")]
    Task(String),
    #[error("this control plane was built without Kerberos support (feature `kerberos`)")]
    Unsupported,
}

/// Accepts one SPNEGO or raw Kerberos token. GSSAPI blocks (keytab reads, replay cache), so
/// it runs on the blocking pool.
pub async fn accept(token: Vec<u8>) -> Result<Accepted, Rejected> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Rejected::Size);
    }
    tokio::task::spawn_blocking(move || accept_blocking(&token))
        .await
        .map_err(|error| Rejected::Task(error.to_string()))?
}

#[cfg(not(feature = "kerberos"))]
fn accept_blocking(_token: &[u8]) -> Result<Accepted, Rejected> {
    Err(Rejected::Unsupported)
}

#[cfg(feature = "kerberos")]
fn accept_blocking(token: &[u8]) -> Result<Accepted, Rejected> {
    // No credential: GSS_C_NO_CREDENTIAL, i.e. any service key of the default keytab.
    let mut context = ServerCtx::new(None);
    let output = context
        .step(token, None)
        .map_err(|error| Rejected::Gssapi(error.to_string()))?;
    if !context.is_complete() {
        return Err(Rejected::Incomplete);
    }
    let principal = context
        .source_name()
        .map_err(|error| Rejected::Gssapi(error.to_string()))?
        .to_string();
    Ok(Accepted {
        principal,
        output_token: output.map(|buffer| buffer.to_vec()).unwrap_or_default(),
    })
}

/// Without Kerberos support every Windows login fails: say so at start.
#[cfg(not(feature = "kerberos"))]
pub async fn warn_without_keytab() {
    tracing::warn!(
        "Windows authentication is configured but this control plane was built without Kerberos support (feature `kerberos`); every Kerberos login will fail"
    );
}

/// Logs a warning when no acceptor credential can be had (no keytab, an unreadable or an
/// empty one): every Windows login would fail. Not fatal, since the keytab may be installed
/// after start (it is read on each login).
#[cfg(feature = "kerberos")]
pub async fn warn_without_keytab() {
    let check =
        tokio::task::spawn_blocking(|| Cred::acquire(None, None, CredUsage::Accept, None)).await;
    match check {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(
            %error,
            keytab = std::env::var("KRB5_KTNAME").unwrap_or_default(),
            "Windows authentication is configured but no Kerberos keytab is usable (set KRB5_KTNAME); every Kerberos login will fail"
        ),
        Err(error) => tracing::warn!(%error, "the Kerberos keytab check failed"),
    }
}

/// Splits `user@REALM` at its last unescaped `@`; `None` without a realm or a user.
pub fn split_principal(principal: &str) -> Option<(&str, &str)> {
    let at = principal
        .char_indices()
        .filter(|&(index, c)| c == '@' && !principal[..index].ends_with('\\'))
        .map(|(index, _)| index)
        .next_back()?;
    let (user, realm) = (&principal[..at], &principal[at + 1..]);
    (!user.is_empty() && !realm.is_empty()).then_some((user, realm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_split_at_the_realm() {
        assert_eq!(
            split_principal("alice@CORP.EXAMPLE"),
            Some(("alice", "CORP.EXAMPLE"))
        );
        assert_eq!(
            split_principal("a\\@b@CORP.EXAMPLE"),
            Some(("a\\@b", "CORP.EXAMPLE"))
        );
        assert_eq!(split_principal("alice"), None);
        assert_eq!(split_principal("@CORP"), None);
        assert_eq!(split_principal("alice@"), None);
    }

    #[tokio::test]
    async fn garbage_and_empty_tokens_are_rejected_without_panic() {
        assert!(matches!(accept(Vec::new()).await, Err(Rejected::Size)));
        assert!(accept(b"not a token".to_vec()).await.is_err());
        assert!(accept(vec![0x60, 0x82, 0xff, 0xff, 0x06]).await.is_err());
    }
}
