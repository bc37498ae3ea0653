//! The checks OpenID Connect adds to a verified token's claims. Signature, `alg`, `iss`,
//! `aud`, `exp` and `nbf` are checked before (by [`crate::jwt::Verifier`]); these are the
//! rules of the ID token (Core 1.0, section 3.1.3.7) and of the logout token (Back-Channel
//! Logout 1.0, section 2.6). Errors are short reasons for the log.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// The event a logout token must carry.
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Checks an ID token's claims for this client and this login's nonce.
pub fn check_id_token(
    claims: &Map<String, Value>,
    client_id: &str,
    nonce: &str,
    now: SystemTime,
    leeway: Duration,
) -> Result<(), &'static str> {
    text(claims, "sub").ok_or("the ID token has no sub")?;
    // With several audiences, the token must say it was issued to this client.
    let audiences = match claims.get("aud") {
        Some(Value::Array(audiences)) => audiences.len(),
        _ => 1,
    };
    match text(claims, "azp") {
        Some(azp) if azp != client_id => return Err("the ID token was issued to another client"),
        None if audiences > 1 => return Err("the ID token has several audiences and no azp"),
        _ => {}
    }
    let issued = time(claims, "iat").ok_or("the ID token has no iat")?;
    if issued > now + leeway {
        return Err("the ID token was issued in the future");
    }
    // The nonce ties the token to the login this browser started: a token obtained
    // elsewhere cannot be injected.
    if text(claims, "nonce") != Some(nonce) {
        return Err("the ID token's nonce does not match the login");
    }
    Ok(())
}

/// Whom a logout token logs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTarget {
    /// The subject: with no `sid`, all of its sessions.
    pub sub: Option<String>,
    /// One provider session: the Gatehouse sessions started from it.
    pub sid: Option<String>,
    /// The token's id, remembered until `expires` so that the token works once.
    pub jti: String,
    pub expires: SystemTime,
}

/// Checks a logout token's claims.
pub fn check_logout_token(
    claims: &Map<String, Value>,
    now: SystemTime,
    leeway: Duration,
) -> Result<LogoutTarget, &'static str> {
    let issued = time(claims, "iat").ok_or("the logout token has no iat")?;
    if issued > now + leeway {
        return Err("the logout token was issued in the future");
    }
    let expires = time(claims, "exp").ok_or("the logout token has no exp")?;
    let is_logout = claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|events| {
            events
                .get(BACKCHANNEL_LOGOUT_EVENT)
                .is_some_and(Value::is_object)
        });
    if !is_logout {
        return Err("the token carries no back-channel logout event");
    }
    // An ID token has a nonce; a logout token must not, so one cannot pass for the other.
    if claims.contains_key("nonce") {
        return Err("the logout token has a nonce");
    }
    // Required (2.4): without an id, a captured token could be replayed until it expires.
    let jti = text(claims, "jti").ok_or("the logout token has no jti")?;
    let target = LogoutTarget {
        sub: text(claims, "sub").map(str::to_owned),
        sid: text(claims, "sid").map(str::to_owned),
        jti: jti.to_owned(),
        expires,
    };
    if target.sub.is_none() && target.sid.is_none() {
        return Err("the logout token names neither sub nor sid");
    }
    Ok(target)
}

/// A NumericDate claim (seconds, possibly fractional); `None` when absent, negative or out of
/// range.
fn time(claims: &Map<String, Value>, name: &str) -> Option<SystemTime> {
    let seconds = claims.get(name).and_then(Value::as_f64)?;
    let seconds = Duration::try_from_secs_f64(seconds.floor()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(seconds)
}

fn text<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CLIENT: &str = "gatehouse";
    const NONCE: &str = "n-0S6_WzA2Mj";

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// `base` with `changes` applied: a null removes the claim.
    fn changed(base: Value, changes: Value) -> Map<String, Value> {
        let mut claims = base.as_object().unwrap().clone();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
        claims
    }

    fn id_token(changes: Value) -> Map<String, Value> {
        let base = json!({
            "iss": "https://idp.example.com", "sub": "alice", "aud": CLIENT,
            "iat": 1_800_000_000u64 - 5, "exp": 1_800_000_000u64 + 300, "nonce": NONCE,
        });
        changed(base, changes)
    }

    fn check(claims: &Map<String, Value>) -> Result<(), &'static str> {
        check_id_token(claims, CLIENT, NONCE, now(), Duration::from_secs(60))
    }

    #[test]
    fn a_fitting_id_token_passes() {
        check(&id_token(json!({}))).unwrap();
        check(&id_token(json!({"aud": [CLIENT, "api"], "azp": CLIENT}))).unwrap();
        // NumericDates may be fractional.
        check(&id_token(json!({"iat": 1_799_999_990.5}))).unwrap();
    }

    #[test]
    fn id_token_mismatches_are_refused() {
        let refused = |extra: Value| check(&id_token(extra)).unwrap_err();
        assert!(refused(json!({"nonce": "other"})).contains("nonce"));
        assert!(refused(json!({"nonce": null})).contains("nonce"));
        assert!(refused(json!({"sub": null})).contains("sub"));
        assert!(refused(json!({"azp": "another-client"})).contains("another client"));
        assert!(refused(json!({"aud": [CLIENT, "api"]})).contains("azp"));
        assert!(refused(json!({"iat": null})).contains("iat"));
        assert!(refused(json!({"iat": 1_800_000_000u64 + 3600})).contains("future"));
    }

    fn logout_token(changes: Value) -> Map<String, Value> {
        let base = json!({
            "iss": "https://idp.example.com", "aud": CLIENT, "iat": 1_800_000_000u64,
            "exp": 1_800_000_120u64,
            "jti": "bWJq", "sid": "08a5019c", "sub": "alice",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        });
        changed(base, changes)
    }

    #[test]
    fn a_logout_token_names_its_target() {
        let target =
            check_logout_token(&logout_token(json!({})), now(), Duration::from_secs(60)).unwrap();
        assert_eq!(target.sid.as_deref(), Some("08a5019c"));
        assert_eq!(target.jti, "bWJq");
        assert_eq!(
            target.expires,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_120)
        );
        assert_eq!(target.sub.as_deref(), Some("alice"));
        let by_subject = check_logout_token(
            &logout_token(json!({"sid": null})),
            now(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(by_subject.sid, None);
    }

    #[test]
    fn tokens_that_are_not_logout_tokens_are_refused() {
        let refused = |extra: Value| {
            check_logout_token(&logout_token(extra), now(), Duration::from_secs(60)).unwrap_err()
        };
        assert!(refused(json!({"events": null})).contains("event"));
        assert!(refused(json!({"events": {"other": {}}})).contains("event"));
        assert!(refused(json!({"nonce": NONCE})).contains("nonce"));
        assert!(refused(json!({"sub": null, "sid": null})).contains("neither"));
        assert!(refused(json!({"iat": null})).contains("iat"));
        assert!(refused(json!({"iat": 1_800_000_000u64 + 3600})).contains("future"));
        assert!(refused(json!({"exp": null})).contains("exp"));
        assert!(refused(json!({"iat": u64::MAX})).contains("iat"));
        assert!(refused(json!({"iat": -5})).contains("iat"));
        assert!(refused(json!({"jti": null})).contains("jti"));
        assert!(refused(json!({"jti": ""})).contains("jti"));
    }
}
