//! What a call's answer looks like on stdout: aligned text for people, or JSON with the proto
//! field names and RFC 3339 timestamps for programs.

use gatehouse_proto::v1 as pb;
use serde_json::{Value, json};

fn timestamp(value: Option<&prost_types::Timestamp>) -> Value {
    value.map_or(Value::Null, |at| Value::String(at.to_string()))
}

fn text(value: Option<&prost_types::Timestamp>) -> String {
    value.map_or_else(|| "-".to_owned(), ToString::to_string)
}

pub fn user_json(user: Option<&pb::User>) -> Value {
    let Some(user) = user else {
        return Value::Null;
    };
    json!({
        "user_directory": user.user_directory,
        "user_id": user.user_id,
        "attributes": user
            .attributes
            .iter()
            .map(|attribute| json!({"name": attribute.name, "value": attribute.value}))
            .collect::<Vec<_>>(),
    })
}

pub fn session_json(session: Option<&pb::Session>) -> Value {
    let Some(session) = session else {
        return Value::Null;
    };
    json!({
        "handle": session.handle,
        "virtual_proxy": session.virtual_proxy,
        "user": user_json(session.user.as_ref()),
        "created": timestamp(session.created.as_ref()),
        "last_active": timestamp(session.last_active.as_ref()),
        "inactivity_expiry": timestamp(session.inactivity_expiry.as_ref()),
        "absolute_expiry": timestamp(session.absolute_expiry.as_ref()),
        "client_address": session.client_address,
        "user_agent": session.user_agent,
    })
}

/// The caller's sessions, each with whether it is the calling one.
pub fn own_sessions_json(own: &pb::ListMySessionsResponse) -> Value {
    let sessions = own
        .sessions
        .iter()
        .map(|session| {
            let mut value = session_json(Some(session));
            value["current"] = Value::Bool(session.handle == own.current_handle);
            value
        })
        .collect();
    json!({ "sessions": Value::Array(sessions), "current_handle": own.current_handle })
}

pub fn sessions_json(sessions: &[pb::Session]) -> Value {
    Value::Array(
        sessions
            .iter()
            .map(|session| session_json(Some(session)))
            .collect(),
    )
}

pub fn ticket_json(ticket: &pb::RequestTicketResponse) -> Value {
    json!({
        "ticket": ticket.ticket,
        "target_uri": ticket.target_uri,
        "user": user_json(ticket.user.as_ref()),
        "expires": timestamp(ticket.expires.as_ref()),
    })
}

/// `CORP\alice`, as QPS writes a user.
fn user_name(user: Option<&pb::User>) -> String {
    user.map_or_else(
        || "-".to_owned(),
        |user| format!("{}\\{}", user.user_directory, user.user_id),
    )
}

fn attributes(user: Option<&pb::User>) -> String {
    let list: Vec<String> = user
        .map(|user| {
            user.attributes
                .iter()
                .map(|attribute| format!("{}={}", attribute.name, attribute.value))
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(", ")
    }
}

fn proxy(prefix: &str) -> String {
    if prefix.is_empty() {
        "\"\" (default)".to_owned()
    } else {
        prefix.to_owned()
    }
}

/// Labelled lines, the labels padded to one width.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(label, value)| format!("{:width$} {value}\n", format!("{label}:")))
        .collect()
}

pub fn session_text(session: Option<&pb::Session>) -> String {
    let Some(session) = session else {
        return "no session\n".to_owned();
    };
    fields(&[
        ("handle", session.handle.clone()),
        ("virtual proxy", proxy(&session.virtual_proxy)),
        ("user", user_name(session.user.as_ref())),
        ("attributes", attributes(session.user.as_ref())),
        ("created", text(session.created.as_ref())),
        ("last active", text(session.last_active.as_ref())),
        (
            "inactivity expiry",
            text(session.inactivity_expiry.as_ref()),
        ),
        ("absolute expiry", text(session.absolute_expiry.as_ref())),
        ("client address", or_dash(&session.client_address)),
        ("user agent", or_dash(&session.user_agent)),
    ])
}

fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

/// The caller's sessions, one line each, the calling one marked `*`.
pub fn own_sessions_text(own: &pb::ListMySessionsResponse) -> String {
    if own.sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let rows: Vec<[String; 5]> = own
        .sessions
        .iter()
        .map(|session| {
            let mark = if session.handle == own.current_handle {
                "* "
            } else {
                "  "
            };
            [
                format!("{mark}{}", session.handle),
                text(session.created.as_ref()),
                text(session.last_active.as_ref()),
                or_dash(&session.client_address),
                or_dash(&session.user_agent),
            ]
        })
        .collect();
    table(
        [
            "  HANDLE",
            "CREATED",
            "LAST ACTIVE",
            "CLIENT ADDRESS",
            "USER AGENT",
        ],
        &rows,
    )
}

/// One line per session under a header; a count when there are none.
pub fn sessions_text(sessions: &[pb::Session]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let rows: Vec<[String; 5]> = sessions
        .iter()
        .map(|session| {
            [
                session.handle.clone(),
                if session.virtual_proxy.is_empty() {
                    "\"\"".to_owned()
                } else {
                    session.virtual_proxy.clone()
                },
                user_name(session.user.as_ref()),
                text(session.last_active.as_ref()),
                text(session.inactivity_expiry.as_ref()),
            ]
        })
        .collect();
    let header = [
        "HANDLE",
        "VIRTUAL PROXY",
        "USER",
        "LAST ACTIVE",
        "INACTIVITY EXPIRY",
    ];
    table(header, &rows)
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: [&str; 5], rows: &[[String; 5]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:width$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&header);
    for row in rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

pub fn ticket_text(ticket: &pb::RequestTicketResponse) -> String {
    let mut rows = vec![
        ("ticket", ticket.ticket.clone()),
        ("user", user_name(ticket.user.as_ref())),
        ("expires", text(ticket.expires.as_ref())),
    ];
    if let Some(target) = &ticket.target_uri {
        rows.push(("target uri", target.clone()));
        let separator = if target.contains('?') { '&' } else { '?' };
        rows.push((
            "redirect to",
            format!("{target}{separator}qlikTicket={}", ticket.ticket),
        ));
    }
    fields(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(handle: &str, proxy: &str, id: &str) -> pb::Session {
        pb::Session {
            handle: handle.to_owned(),
            virtual_proxy: proxy.to_owned(),
            user: Some(pb::User {
                user_directory: "CORP".to_owned(),
                user_id: id.to_owned(),
                attributes: vec![pb::Attribute {
                    name: "group".to_owned(),
                    value: "sales".to_owned(),
                }],
            }),
            created: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_table_lines_up_its_columns() {
        let text = sessions_text(&[session("h1", "", "bob"), session("handle-2", "sales", "al")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let column = lines[0].find("VIRTUAL PROXY").unwrap();
        assert_eq!(lines[1].find("\"\""), Some(column), "{text}");
        assert_eq!(lines[2].find("sales"), Some(column), "{text}");
        assert_eq!(sessions_text(&[]), "no sessions\n");
    }

    #[test]
    fn json_uses_proto_names_and_rfc3339() {
        let value = session_json(Some(&session("h1", "", "bob")));
        assert_eq!(value["user"]["user_directory"], "CORP");
        assert_eq!(value["user"]["attributes"][0]["name"], "group");
        assert_eq!(value["created"], "1970-01-01T00:00:00Z");
        assert_eq!(value["last_active"], Value::Null);
    }

    #[test]
    fn the_calling_session_is_marked_among_the_users_sessions() {
        let mut other = session("h2", "app", "alice");
        other.user_agent = "Firefox".to_owned();
        other.client_address = "192.0.2.7".to_owned();
        let own = pb::ListMySessionsResponse {
            sessions: vec![session("h1", "app", "alice"), other],
            current_handle: "h1".to_owned(),
        };
        let text = own_sessions_text(&own);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("* h1"), "{text}");
        assert!(lines[2].starts_with("  h2"), "{text}");
        assert!(
            lines[2].contains("192.0.2.7") && lines[2].ends_with("Firefox"),
            "{text}"
        );
        let value = own_sessions_json(&own);
        assert_eq!(value["sessions"][0]["current"], true);
        assert_eq!(value["sessions"][1]["current"], false);
        assert_eq!(value["sessions"][1]["user_agent"], "Firefox");
    }

    #[test]
    fn a_ticket_for_a_target_says_where_to_send_the_browser() {
        let ticket = pb::RequestTicketResponse {
            ticket: "T1".to_owned(),
            target_uri: Some("https://h/app/hub?x=1".to_owned()),
            user: None,
            expires: None,
        };
        assert!(ticket_text(&ticket).contains("https://h/app/hub?x=1&qlikTicket=T1"));
    }
}
