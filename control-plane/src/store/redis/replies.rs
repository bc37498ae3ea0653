//! Decoding what Redis answers: lists, text, field maps (RESP2 and RESP3), and a session's
//! hash into a session.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use super::keys::SessionAddress;
use crate::clock::from_millis;
use crate::domain::{ClientInfo, Session, User};
use crate::store::StoreError;

/// A session as read from Redis, with the hash of its token (to remove the token's pointer).
pub(super) struct StoredSession {
    pub(super) session: Session,
    pub(super) token_hash: String,
}

pub(super) fn stored_session(
    address: &SessionAddress,
    fields: &HashMap<String, String>,
) -> Result<StoredSession, StoreError> {
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| corrupt(&format!("session without {name}")))
    };
    let number = |name: &str| {
        field(name)?
            .parse::<u64>()
            .map_err(|_| corrupt(&format!("session {name} is not a number")))
    };
    let user: User = serde_json::from_str(field("user")?).map_err(|_| corrupt("session user"))?;
    Ok(StoredSession {
        session: Session {
            handle: address.handle(),
            virtual_proxy: field("vp")?.clone(),
            user,
            created: from_millis(number("created")?),
            last_active: from_millis(number("last")?),
            inactivity_timeout: Duration::from_millis(number("idle")?),
            absolute_expiry: from_millis(number("abs")?),
            // Sessions written before logins were recorded have neither field.
            client: ClientInfo {
                address: fields.get("addr").cloned().unwrap_or_default(),
                user_agent: fields.get("ua").cloned().unwrap_or_default(),
            },
        },
        token_hash: field("th")?.clone(),
    })
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub(super) fn array(value: &Value) -> Result<&[Value], StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        _ => Err(corrupt("expected a list from Redis")),
    }
}

pub(super) fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| corrupt("non-UTF-8 text"))
        }
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(number) => Ok(number.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        _ => Err(corrupt("expected text from Redis")),
    }
}

/// A flat name/value list (RESP2) or a map (RESP3), with values kept as they are.
pub(super) fn field_values(value: &Value) -> Result<HashMap<String, &Value>, StoreError> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(name, value)| Ok((text(name)?, value)))
            .collect(),
        other => array(other)?
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => Ok((text(name)?, value)),
                _ => Err(corrupt("odd-length field list")),
            })
            .collect(),
    }
}

pub(super) fn field_map(value: &Value) -> Result<HashMap<String, String>, StoreError> {
    field_values(value)?
        .into_iter()
        .map(|(name, value)| Ok((name, text(value)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_written_before_logins_were_recorded_reads_with_no_client() {
        let address = SessionAddress::new("{t}".to_owned(), "id".to_owned());
        let mut fields: HashMap<String, String> = [
            ("vp", "sales"),
            (
                "user",
                r#"{"directory":"CORP","id":"alice","attributes":[]}"#,
            ),
            ("th", "hash"),
            ("created", "1000"),
            ("last", "2000"),
            ("idle", "60000"),
            ("abs", "90000"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        let old = stored_session(&address, &fields).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.session.client, ClientInfo::default());
        fields.insert("addr".into(), "192.0.2.7".into());
        fields.insert("ua".into(), "Firefox".into());
        let new = stored_session(&address, &fields).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(new.session.client.address, "192.0.2.7");
        assert_eq!(new.session.client.user_agent, "Firefox");
    }
}
