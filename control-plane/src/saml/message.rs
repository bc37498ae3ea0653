//! The XML of Single Logout messages: reading a LogoutRequest or LogoutResponse (after its
//! signature has been checked, from what the signature covers) and writing ours. `samael`
//! reads `SessionIndex` as an attribute of `LogoutRequest`, where the schema has elements,
//! so the few fields needed are read here with `quick-xml`, namespaces resolved.

use std::time::SystemTime;

use quick_xml::escape::escape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use super::{ASSERTION_NS, SamlSubject};
use crate::error::Error;

const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const NOT_VALID: &str = "the SAML logout message is not valid";

/// What both kinds of message carry.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub issuer: Option<String>,
    pub destination: Option<String>,
    pub issue_instant: Option<SystemTime>,
    pub not_on_or_after: Option<SystemTime>,
}

/// A logout message's fields.
#[derive(Debug, Clone)]
pub enum LogoutXml {
    Request {
        common: Common,
        id: Option<String>,
        name_id: Option<String>,
        session_indexes: Vec<String>,
        encrypted_id: bool,
    },
    Response {
        common: Common,
        in_response_to: Option<String>,
        success: bool,
    },
}

impl LogoutXml {
    pub fn common(&self) -> &Common {
        match self {
            Self::Request { common, .. } | Self::Response { common, .. } => common,
        }
    }
}

/// Which child of the root a text belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Issuer,
    NameId,
    SessionIndex,
    Other,
}

/// Reads a `samlp:LogoutRequest` or `samlp:LogoutResponse` document.
pub fn read_logout_xml(xml: &str) -> Result<LogoutXml, Error> {
    let not_valid = || Error::invalid(NOT_VALID);
    let mut reader = quick_xml::NsReader::from_str(xml);
    let mut depth = 0usize;
    let mut root: Option<(bool, Vec<(String, String)>)> = None;
    let mut field = Field::Other;
    let (mut issuer, mut name_id, mut indexes) = (None, None, Vec::new());
    let (mut encrypted_id, mut status) = (false, None);
    let mut status_depth = None;
    let mut text_buffer = String::new();
    loop {
        let (namespace, event) = reader.read_resolved_event().map_err(|_| not_valid())?;
        let in_ns =
            |ns: &[u8]| matches!(namespace, ResolveResult::Bound(bound) if bound.as_ref() == ns);
        match event {
            Event::DocType(_) => return Err(not_valid()),
            Event::Start(ref element) | Event::Empty(ref element) => {
                let empty = matches!(event, Event::Empty(_));
                let local = element.local_name();
                let local = local.as_ref();
                if depth == 0 {
                    let request = match local {
                        b"LogoutRequest" => true,
                        b"LogoutResponse" => false,
                        _ => return Err(not_valid()),
                    };
                    if !in_ns(PROTOCOL_NS) {
                        return Err(not_valid());
                    }
                    root = Some((request, attributes(element)?));
                } else if depth == 1 {
                    field = match local {
                        b"Issuer" if in_ns(ASSERTION_NS) => Field::Issuer,
                        b"NameID" if in_ns(ASSERTION_NS) => Field::NameId,
                        b"SessionIndex" if in_ns(PROTOCOL_NS) => Field::SessionIndex,
                        b"EncryptedID" if in_ns(ASSERTION_NS) => {
                            encrypted_id = true;
                            Field::Other
                        }
                        b"Status" if in_ns(PROTOCOL_NS) => {
                            status_depth = Some(1);
                            Field::Other
                        }
                        _ => Field::Other,
                    };
                } else if depth == 2
                    && status_depth == Some(1)
                    && local == b"StatusCode"
                    && in_ns(PROTOCOL_NS)
                    && status.is_none()
                {
                    status = attributes(element)?
                        .into_iter()
                        .find(|(key, _)| key == "Value")
                        .map(|(_, value)| value);
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::Text(text) if depth == 2 => {
                text_buffer.push_str(&text.decode().map_err(|_| not_valid())?);
            }
            Event::GeneralRef(reference) if depth == 2 => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(char)) => char.to_string(),
                    _ => {
                        let name = reference.decode().map_err(|_| not_valid())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(not_valid)?
                            .to_owned()
                    }
                };
                text_buffer.push_str(&resolved);
            }
            Event::End(_) => {
                if depth == 2 {
                    let text = std::mem::take(&mut text_buffer).trim().to_owned();
                    match field {
                        Field::Issuer => issuer = Some(text),
                        Field::NameId if name_id.is_none() => name_id = Some(text),
                        Field::SessionIndex => indexes.push(text),
                        _ => {}
                    }
                }
                depth = depth.saturating_sub(1);
                if depth <= 1 {
                    field = Field::Other;
                }
                if depth == 1 {
                    status_depth = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let (request, attributes) = root.ok_or_else(not_valid)?;
    let attribute = |name: &str| {
        attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let time = |name: &str| -> Result<Option<SystemTime>, Error> {
        attribute(name)
            .map(|value| {
                chrono::DateTime::parse_from_rfc3339(&value)
                    .map(SystemTime::from)
                    .map_err(|_| not_valid())
            })
            .transpose()
    };
    let common = Common {
        issuer,
        destination: attribute("Destination"),
        issue_instant: time("IssueInstant")?,
        not_on_or_after: time("NotOnOrAfter")?,
    };
    Ok(if request {
        LogoutXml::Request {
            common,
            id: attribute("ID"),
            name_id: name_id.filter(|value| !value.is_empty()),
            session_indexes: indexes.into_iter().filter(|i| !i.is_empty()).collect(),
            encrypted_id,
        }
    } else {
        LogoutXml::Response {
            common,
            in_response_to: attribute("InResponseTo"),
            success: status.as_deref() == Some(SUCCESS),
        }
    })
}

fn attributes(element: &BytesStart<'_>) -> Result<Vec<(String, String)>, Error> {
    element
        .attributes()
        .map(|attribute| {
            let attribute = attribute.map_err(|_| Error::invalid(NOT_VALID))?;
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|_| Error::invalid(NOT_VALID))?;
            Ok((
                String::from_utf8_lossy(attribute.key.local_name().as_ref()).into_owned(),
                value.into_owned(),
            ))
        })
        .collect()
}

fn instant(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What our messages start with. `signature` is an XML signature template
/// ([`super::xml_signature::template`]), placed after the `Issuer` as the schema wants it.
pub struct Head<'a> {
    pub id: &'a str,
    pub issuer: &'a str,
    pub destination: &'a str,
    pub issued: SystemTime,
    pub signature: Option<&'a str>,
}

impl Head<'_> {
    /// The root's attributes after the namespaces, up to its `Issuer` (and signature).
    fn write(&self, root: &str, more_attributes: &str) -> String {
        format!(
            "<samlp:{root} xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
             xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{}\" Version=\"2.0\" \
             IssueInstant=\"{}\" Destination=\"{}\"{more_attributes}>\
             <saml:Issuer>{}</saml:Issuer>{}",
            escape(self.id),
            instant(self.issued),
            escape(self.destination),
            escape(self.issuer),
            self.signature.unwrap_or_default(),
        )
    }
}

/// Our LogoutRequest for `subject`, to the provider's SingleLogoutService (`head.destination`).
pub fn logout_request_xml(head: &Head<'_>, subject: &SamlSubject) -> String {
    let format = subject
        .format
        .as_deref()
        .map(|format| format!(" Format=\"{}\"", escape(format)))
        .unwrap_or_default();
    let index = subject
        .session_index
        .as_deref()
        .map(|index| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(index)))
        .unwrap_or_default();
    format!(
        "{}<saml:NameID{format}>{}</saml:NameID>{index}</samlp:LogoutRequest>",
        head.write("LogoutRequest", ""),
        escape(&subject.name_id),
    )
}

/// Our LogoutResponse (Success) to the provider's LogoutRequest `in_response_to`.
pub fn logout_response_xml(head: &Head<'_>, in_response_to: &str) -> String {
    let answers = format!(" InResponseTo=\"{}\"", escape(in_response_to));
    format!(
        "{}<samlp:Status><samlp:StatusCode Value=\"{SUCCESS}\"/></samlp:Status>\
         </samlp:LogoutResponse>",
        head.write("LogoutResponse", &answers),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_logout_request_reads_back_with_its_subject() {
        let subject = SamlSubject {
            name_id: "alice <&>".to_owned(),
            format: Some("urn:f".to_owned()),
            session_index: Some("_s1".to_owned()),
        };
        let head = Head {
            id: "_r",
            issuer: "urn:sp",
            destination: "https://idp/slo",
            issued: SystemTime::now(),
            signature: None,
        };
        let xml = logout_request_xml(&head, &subject);
        let LogoutXml::Request {
            common,
            id,
            name_id,
            session_indexes,
            encrypted_id,
        } = read_logout_xml(&xml).expect("reads")
        else {
            panic!("a request");
        };
        assert_eq!(common.issuer.as_deref(), Some("urn:sp"));
        assert_eq!(common.destination.as_deref(), Some("https://idp/slo"));
        assert!(common.issue_instant.is_some());
        assert_eq!(id.as_deref(), Some("_r"));
        assert_eq!(name_id.as_deref(), Some("alice <&>"));
        assert_eq!(session_indexes, vec!["_s1".to_owned()]);
        assert!(!encrypted_id);
    }

    #[test]
    fn a_logout_response_says_whether_it_succeeded() {
        let head = Head {
            id: "_a",
            issuer: "urn:idp",
            destination: "https://sp/slo",
            issued: SystemTime::now(),
            signature: Some("<x:Signature xmlns:x=\"urn:x\"/>"),
        };
        let xml = logout_response_xml(&head, "_r");
        assert!(
            xml.contains("</saml:Issuer><x:Signature"),
            "after the Issuer: {xml}"
        );
        let read = read_logout_xml(&xml).expect("reads");
        assert!(matches!(
            read,
            LogoutXml::Response { in_response_to: Some(ref id), success: true, .. } if id == "_r"
        ));
        let failed = xml.replace(SUCCESS, "urn:oasis:names:tc:SAML:2.0:status:Requester");
        assert!(matches!(
            read_logout_xml(&failed),
            Ok(LogoutXml::Response { success: false, .. })
        ));
        assert!(
            read_logout_xml(
                "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"/>"
            )
            .is_err()
        );
        assert!(read_logout_xml("<!DOCTYPE x []><x/>").is_err());
    }
}
