//! A fake authentication module, as a customer would write one: the data plane redirects a
//! browser to it with `proxyRestUri` and `targetId`; it "authenticates" the user (the test
//! says who), asks the control plane for a ticket for that target, and sends the browser back
//! to the target with `qlikTicket` appended.

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::authentication_service_client::AuthenticationServiceClient;
use tonic::transport::Channel;

use super::client::{self, HttpResponse};
use super::control_plane::ControlPlane;

/// What the module hands back to the browser.
#[derive(Debug, Clone)]
pub struct TicketRedirect {
    /// The URL the browser first asked for, as the control plane remembered it.
    pub target_uri: String,
    pub ticket: String,
    /// `target_uri` with `qlikTicket=<ticket>` appended: where the browser goes next.
    pub url: String,
}

/// A user of directory `directory`.
pub fn user(directory: &str, id: &str) -> pb::User {
    pb::User {
        user_directory: directory.to_owned(),
        user_id: id.to_owned(),
        attributes: Vec::new(),
    }
}

/// Handles the browser's visit to the module: `module_url` is the `Location` of the data
/// plane's login redirect.
pub async fn issue_ticket(
    control_plane: &ControlPlane,
    module_url: &str,
    user: pb::User,
) -> TicketRedirect {
    issue_ticket_with(control_plane.authentication(), module_url, user).await
}

/// As [`issue_ticket`], through any Authentication API client (e.g. of a control plane that
/// runs as a process of its own).
pub async fn issue_ticket_with(
    mut authentication: AuthenticationServiceClient<Channel>,
    module_url: &str,
    user: pb::User,
) -> TicketRedirect {
    let target_id = client::query_param(module_url, "targetId")
        .unwrap_or_else(|| panic!("no targetId in {module_url}"));
    let rest = client::query_param(module_url, "proxyRestUri")
        .unwrap_or_else(|| panic!("no proxyRestUri in {module_url}"));
    // QPS modules take the virtual proxy from the REST address, `.../qps/{prefix}/`: what
    // follows `/qps/`, which is empty for the default proxy (`/qps/` or `/qps//`).
    let virtual_proxy = rest
        .rsplit_once("/qps/")
        .map(|(_, prefix)| prefix.trim_matches('/'))
        .unwrap_or_default()
        .to_owned();
    let issued = authentication
        .request_ticket(pb::RequestTicketRequest {
            virtual_proxy,
            user: Some(user),
            target_id: Some(target_id),
        })
        .await
        .expect("RequestTicket succeeds")
        .into_inner();
    let target_uri = issued.target_uri.expect("a ticket for a target names it");
    let separator = if target_uri.contains('?') { '&' } else { '?' };
    let url = format!(
        "{target_uri}{separator}qlikTicket={}",
        client::encode(&issued.ticket)
    );
    TicketRedirect {
        target_uri,
        ticket: issued.ticket,
        url,
    }
}

/// The whole browser login: GET `url` without a cookie (a 302 to the module), the module's
/// ticket, then the ticket URL (a 302 that sets the cookie). Returns the last response and
/// the `name=value` cookie pair to send from now on.
pub async fn browser_login(
    control_plane: &ControlPlane,
    url: &str,
    cookie_name: &str,
    user: pb::User,
) -> (HttpResponse, String) {
    let first = client::get(url, &[]).await;
    assert_eq!(
        first.status,
        302,
        "{url} without a session: {}",
        first.text()
    );
    let module_url = first.location().expect("a login redirect has a Location");
    let redirect = issue_ticket(control_plane, module_url, user).await;
    let landed = client::get(&redirect.url, &[]).await;
    assert_eq!(
        landed.status,
        302,
        "the ticket URL answers with a redirect: {}",
        landed.text()
    );
    let cookie = landed
        .cookie_pair(cookie_name)
        .unwrap_or_else(|| panic!("no {cookie_name} cookie in {:?}", landed.set_cookies()));
    (landed, cookie)
}

/// A session created directly over the Session API (a native client's handover), as the
/// `name=value` cookie pair a browser would send.
pub async fn session_cookie(
    control_plane: &ControlPlane,
    virtual_proxy: &str,
    cookie_name: &str,
    user: pb::User,
) -> (String, pb::Session) {
    let created = control_plane
        .sessions()
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            user: Some(user),
            session_token: None,
        })
        .await
        .expect("CreateSession succeeds")
        .into_inner();
    (
        format!("{cookie_name}={}", created.session_token),
        created.session.expect("a created session is returned"),
    )
}
