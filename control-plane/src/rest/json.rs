//! QPS's JSON shapes. In: property names matched case-insensitively (modules send
//! `UserDirectory`, `userDirectory` and `USERDIRECTORY`), attributes as a list of one-key
//! objects whose keys may repeat. Out: PascalCase, as QPS answers.

use serde_json::{Map, Value, json};

use crate::authority::IssuedTicket;
use crate::domain::{Attribute, Session, User};
use crate::error::Error;

/// `POST /qps/{prefix}/ticket`.
#[derive(Debug)]
pub struct TicketRequest {
    pub user: User,
    pub target_id: Option<String>,
}

/// `POST /qps/{prefix}/session`.
#[derive(Debug)]
pub struct SessionRequest {
    pub user: User,
    pub session_id: Option<String>,
}

/// Reads a ticket request's body; the error is the 400's reason.
pub fn ticket_request(body: &[u8]) -> Result<TicketRequest, Error> {
    let object = Object::parse(body)?;
    Ok(TicketRequest {
        user: object.user()?,
        target_id: object.string("TargetId")?,
    })
}

/// Reads a session request's body; the error is the 400's reason.
pub fn session_request(body: &[u8]) -> Result<SessionRequest, Error> {
    let object = Object::parse(body)?;
    Ok(SessionRequest {
        user: object.user()?,
        session_id: object.string("SessionId")?,
    })
}

/// The answer to a ticket request; `TargetUri` only when the target id was known.
pub(super) fn ticket(issued: IssuedTicket) -> Value {
    let mut out = Map::new();
    out.insert("UserDirectory".into(), issued.user.directory.into());
    out.insert("UserId".into(), issued.user.id.into());
    out.insert("Attributes".into(), attributes(&issued.user.attributes));
    out.insert("Ticket".into(), issued.ticket.into());
    if let Some(uri) = issued.target_uri {
        out.insert("TargetUri".into(), uri.into());
    }
    Value::Object(out)
}

/// A session as QPS shows it, plus what Gatehouse adds: `Handle` (the public id listings and
/// the gRPC API use) and `VirtualProxy`. `SessionId` is the id the caller knows the session
/// by: the cookie value when the caller gave or just received it, else the handle (the store
/// keeps only a hash of the cookie value). Either works in `session/{SessionId}`.
pub(super) fn session(session: &Session, cookie_value: Option<&str>) -> Value {
    json!({
        "UserDirectory": session.user.directory,
        "UserId": session.user.id,
        "Attributes": attributes(&session.user.attributes),
        "SessionId": cookie_value.unwrap_or(&session.handle),
        "Handle": session.handle,
        "VirtualProxy": session.virtual_proxy,
    })
}

pub(super) fn sessions(sessions: &[Session]) -> Value {
    Value::Array(sessions.iter().map(|s| session(s, None)).collect())
}

fn attributes(attributes: &[Attribute]) -> Value {
    Value::Array(
        attributes
            .iter()
            .map(|attribute| json!({ attribute.name.clone(): attribute.value }))
            .collect(),
    )
}

/// A request body: one JSON object.
struct Object(Map<String, Value>);

impl Object {
    fn parse(body: &[u8]) -> Result<Self, Error> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(Error::invalid("the body must be a JSON object")),
            Err(_) => Err(Error::invalid("the body is not valid JSON")),
        }
    }

    /// The property named `name` in any letter case; null counts as absent.
    fn get(&self, name: &'static str) -> Result<Option<&Value>, Error> {
        let mut found = self
            .0
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value);
        let value = found.next();
        if found.next().is_some() {
            return Err(Error::invalid(format!("{name} is given more than once")));
        }
        Ok(value.filter(|value| !value.is_null()))
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, Error> {
        match self.get(name)? {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(Error::invalid(format!("{name} must be a string"))),
        }
    }

    fn required(&self, name: &'static str) -> Result<String, Error> {
        self.string(name)?
            .ok_or_else(|| Error::invalid(format!("{name} is required")))
    }

    /// The user, checked by the same rule as the gRPC API's (trimmed, not blank, no
    /// backslash, bounded).
    fn user(&self) -> Result<User, Error> {
        let directory = self.required("UserDirectory")?;
        let id = self.required("UserId")?;
        let attributes = match self.get("Attributes")? {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().map(attribute).collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(Error::invalid("Attributes must be a list")),
        };
        Ok(User::new(&directory, &id, attributes)?)
    }
}

/// `{"Group": "Sales"}`: one key, a string value.
fn attribute(item: &Value) -> Result<Attribute, Error> {
    let shape = || Error::invalid("each attribute must be an object with one string property");
    let object = item.as_object().ok_or_else(shape)?;
    let mut pairs = object.iter();
    let (Some((name, Value::String(value))), None) = (pairs.next(), pairs.next()) else {
        return Err(shape());
    };
    Ok(Attribute {
        name: name.clone(),
        value: value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_names_match_in_any_case() {
        for body in [
            r#"{"UserDirectory":"CORP","UserId":"alice","TargetId":"t"}"#,
            r#"{"userDirectory":"CORP","userId":"alice","targetId":"t"}"#,
            r#"{"USERDIRECTORY":"CORP","USERID":"alice","TARGETID":"t"}"#,
        ] {
            let request = ticket_request(body.as_bytes()).unwrap();
            assert_eq!(request.user.directory, "CORP");
            assert_eq!(request.user.id, "alice");
            assert_eq!(request.target_id.as_deref(), Some("t"));
        }
    }

    #[test]
    fn attributes_keep_order_and_repeats() {
        let body = r#"{"UserDirectory":"C","UserId":"a","Attributes":[{"Group":"x"},{"email":"e"},{"Group":"y"}]}"#;
        let user = ticket_request(body.as_bytes()).unwrap().user;
        let names: Vec<_> = user
            .attributes
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(names, [("Group", "x"), ("email", "e"), ("Group", "y")]);
    }

    #[test]
    fn bad_bodies_are_invalid() {
        for body in [
            "",
            "not json",
            "[]",
            r#"{"UserId":"a"}"#,
            r#"{"UserDirectory":"C","UserId":5}"#,
            r#"{"UserDirectory":"C","userid":"a","UserId":"b"}"#,
            r#"{"UserDirectory":"C","UserId":"a","Attributes":{"Group":"x"}}"#,
            r#"{"UserDirectory":"C","UserId":"a","Attributes":[{"Group":"x","b":"y"}]}"#,
            r#"{"UserDirectory":"C","UserId":"a","Attributes":[{"Group":1}]}"#,
            r#"{"UserDirectory":"C\\D","UserId":"a"}"#,
        ] {
            assert!(
                matches!(
                    ticket_request(body.as_bytes()),
                    Err(Error::InvalidArgument(_))
                ),
                "{body}"
            );
        }
    }
}
