//! Audit events, read from what a real control-plane process writes: a ticket login and a
//! refused one, a logout, an eviction by the per-user cap, sessions an administrator made
//! and ended (named by the certificate that made the call over mutual TLS), and no token,
//! ticket or cookie in any of it.

use gatehouse_proto::v1 as pb;
use serde_json::Value;
use tonic::transport::Channel;

use crate::api::tls::{channel, dev_certificates, install_crypto_provider, tls_table};
use crate::browser::fixtures::{AppProxy, COOKIE};
use crate::harness::EchoUpstream;
use crate::harness::audit::{self, assert_fields};
use crate::harness::client::get;
use crate::harness::processes::{ControlPlaneProcess, DataPlaneProcess};

/// The audit records in what `control_plane` wrote so far.
pub(super) fn audit_records(control_plane: &ControlPlaneProcess) -> Vec<Value> {
    audit::records_of(&control_plane.process)
}

/// The first record of kind `event` that `matches`, waiting until it is written.
pub(super) async fn audit_record(
    control_plane: &ControlPlaneProcess,
    event: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    audit::written_record(&control_plane.process, event, matches).await
}

pub(super) fn user(id: &str) -> Option<pb::User> {
    Some(pb::User {
        user_directory: "CORP".into(),
        user_id: id.into(),
        attributes: vec![],
    })
}

pub(super) async fn ticket(control_plane: &ControlPlaneProcess, id: &str, proxy: &str) -> String {
    control_plane
        .authentication()
        .request_ticket(pb::RequestTicketRequest {
            virtual_proxy: proxy.into(),
            user: user(id),
            target_id: None,
        })
        .await
        .expect("a ticket")
        .into_inner()
        .ticket
}

/// Redeems `ticket` at `node` as a browser does; the session cookie `name=value` when it
/// worked.
pub(super) async fn browse_with_ticket(
    node: &DataPlaneProcess,
    prefix: &str,
    ticket: &str,
) -> Option<String> {
    let response = get(
        &node.url(&format!("/{prefix}/hub?qlikTicket={ticket}")),
        &[],
    )
    .await;
    let cookie = format!("X-Qlik-Session-{prefix}");
    response.cookie_pair(&cookie)
}

pub(super) async fn handle_of(
    control_plane: &ControlPlaneProcess,
    id: &str,
    proxy: &str,
) -> Vec<String> {
    control_plane
        .sessions()
        .list_user_sessions(pb::ListUserSessionsRequest {
            user_directory: "CORP".into(),
            user_id: id.into(),
            virtual_proxy: Some(proxy.into()),
        })
        .await
        .expect("list the user's sessions")
        .into_inner()
        .sessions
        .into_iter()
        .map(|session| session.handle)
        .collect()
}

pub(super) fn personal(
    control_plane: &ControlPlaneProcess,
) -> pb::personal_service_client::PersonalServiceClient<Channel> {
    let channel = Channel::from_shared(control_plane.endpoint())
        .expect("valid endpoint")
        .connect_lazy();
    pb::personal_service_client::PersonalServiceClient::new(channel)
}

/// Asserts that no secret of the run appears anywhere in the control plane's output.
pub(super) fn assert_no_secret_logged(control_plane: &ControlPlaneProcess, secrets: &[String]) {
    let output = control_plane
        .process
        .output()
        .expect("the control plane's output");
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !output.contains(secret.as_str()),
            "a token or ticket ({secret}) was written:\n{output}"
        );
    }
}

#[tokio::test]
async fn logins_logouts_evictions_and_admin_calls_are_audited_with_who_how_and_from_where() {
    let upstream = EchoUpstream::start("engine").await;
    let config = format!(
        "{}\n[[virtual_proxies]]\nprefix = \"capped\"\nauthentication_module_uri = \"http://login.test/auth\"\n\
         max_sessions_per_user = 1\nsession_cap_policy = \"evict-oldest\"\n\
         [virtual_proxies.upstream]\nnodes = [{:?}]\n",
        AppProxy::new([upstream.node()]).toml(),
        upstream.node()
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    let node = DataPlaneProcess::start(&control_plane, "audit-node", &[]).await;
    let mut secrets = Vec::new();

    // A ticket login: who, how, where from and which session.
    let alice_ticket = ticket(&control_plane, "alice", "app").await;
    secrets.push(alice_ticket.clone());
    let cookie = browse_with_ticket(&node, "app", &alice_ticket)
        .await
        .expect("the ticket logs the browser in");
    let token = cookie
        .strip_prefix(&format!("{COOKIE}="))
        .expect("the cookie's value")
        .to_owned();
    secrets.push(token.clone());
    let alice = handle_of(&control_plane, "alice", "app").await;
    assert_eq!(alice.len(), 1);
    let login = audit_record(&control_plane, "login_succeeded", |r| {
        r["user_id"] == "alice"
    })
    .await;
    assert_fields(
        &login,
        &[
            ("method", "ticket"),
            ("virtual_proxy", "app"),
            ("user_directory", "CORP"),
            ("user_id", "alice"),
            ("client_address", "127.0.0.1"),
            ("session", &alice[0]),
        ],
    );
    assert!(
        login.get("actor").is_none() && login.get("reason").is_none(),
        "{login:#}"
    );

    // The same ticket again: refused, and audited with the reason.
    assert!(
        browse_with_ticket(&node, "app", &alice_ticket)
            .await
            .is_none()
    );
    let failed = audit_record(&control_plane, "login_failed", |_| true).await;
    assert_fields(
        &failed,
        &[
            ("method", "ticket"),
            ("virtual_proxy", "app"),
            ("client_address", "127.0.0.1"),
        ],
    );
    let reason = failed["reason"].as_str().expect("a reason");
    assert!(reason.contains("ticket is unknown"), "{failed:#}");
    assert!(failed.get("session").is_none() && failed.get("user_id").is_none());

    // A logout through the Personal API: the user themself.
    let mut logout = tonic::Request::new(pb::LogoutRequest {
        virtual_proxy: Some("app".into()),
    });
    logout
        .metadata_mut()
        .insert("cookie", cookie.parse().expect("a metadata value"));
    personal(&control_plane)
        .logout(logout)
        .await
        .expect("the Personal API logs the caller out");
    let ended = audit_record(&control_plane, "logout", |_| true).await;
    assert_fields(
        &ended,
        &[
            ("virtual_proxy", "app"),
            ("user_id", "alice"),
            ("session", &alice[0]),
            ("actor", "self"),
            ("reason", "logout"),
            ("client_address", "127.0.0.1"),
        ],
    );

    // The per-user cap of one: the second login evicts the first session.
    let first = ticket(&control_plane, "bob", "capped").await;
    let second = ticket(&control_plane, "bob", "capped").await;
    secrets.extend([first.clone(), second.clone()]);
    let first_cookie = browse_with_ticket(&node, "capped", &first)
        .await
        .expect("logged in");
    let evicted = handle_of(&control_plane, "bob", "capped").await;
    let second_cookie = browse_with_ticket(&node, "capped", &second)
        .await
        .expect("logged in");
    for pair in [first_cookie, second_cookie] {
        secrets.push(pair.split_once('=').expect("name=value").1.to_owned());
    }
    let eviction = audit_record(&control_plane, "session_revoked", |r| {
        r["actor"] == "eviction"
    })
    .await;
    assert_fields(
        &eviction,
        &[
            ("virtual_proxy", "capped"),
            ("user_id", "bob"),
            ("session", &evicted[0]),
            ("reason", "evicted"),
        ],
    );

    // Without TLS (loopback development) the Session API has no certificate to name.
    let created = control_plane
        .sessions()
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".into(),
            user: user("carol"),
            session_token: None,
        })
        .await
        .expect("a session")
        .into_inner();
    secrets.push(created.session_token.clone());
    let handle = created.session.expect("the session").handle;
    let record = audit_record(&control_plane, "session_created", |_| true).await;
    assert_fields(
        &record,
        &[
            ("method", "session_api"),
            ("actor", "admin:no-tls"),
            ("virtual_proxy", "app"),
            ("user_id", "carol"),
            ("session", &handle),
        ],
    );
    assert!(record.get("client_address").is_none(), "{record:#}");

    assert_no_secret_logged(&control_plane, &secrets);
    let records = audit_records(&control_plane);
    assert!(
        records
            .iter()
            .all(|record| !record.to_string().contains(&token)),
        "{records:#?}"
    );
}

#[tokio::test]
async fn admin_calls_over_mutual_tls_are_attributed_to_the_certificate_that_made_them() {
    install_crypto_provider();
    let certs = dev_certificates("audit");
    let config = format!(
        "{}\n[[virtual_proxies]]\nprefix = \"app\"\n",
        tls_table(&certs)
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    let admin = channel(control_plane.address(), &certs, Some("admin")).await;
    let mut sessions = pb::session_service_client::SessionServiceClient::new(admin);

    let created = sessions
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".into(),
            user: user("dave"),
            session_token: None,
        })
        .await
        .expect("a session")
        .into_inner();
    let handle = created.session.expect("the session").handle;
    let record = audit_record(&control_plane, "session_created", |_| true).await;
    assert_fields(
        &record,
        &[
            ("method", "session_api"),
            ("actor", "admin:admin.gatehouse"),
            ("virtual_proxy", "app"),
            ("user_directory", "CORP"),
            ("user_id", "dave"),
            ("session", &handle),
        ],
    );

    sessions
        .delete_session(pb::DeleteSessionRequest {
            session: Some(pb::SessionSelector {
                by: Some(pb::session_selector::By::Handle(handle.clone())),
            }),
        })
        .await
        .expect("the session is deleted");
    let revoked = audit_record(&control_plane, "session_revoked", |_| true).await;
    assert_fields(
        &revoked,
        &[
            ("actor", "admin:admin.gatehouse"),
            ("reason", "deleted"),
            ("virtual_proxy", "app"),
            ("user_id", "dave"),
            ("session", &handle),
        ],
    );

    // Logging a user out everywhere: one record per session ended.
    let again = sessions
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".into(),
            user: user("dave"),
            session_token: None,
        })
        .await
        .expect("a session")
        .into_inner();
    let second = again.session.expect("the session").handle;
    sessions
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "CORP".into(),
            user_id: "dave".into(),
            virtual_proxy: None,
        })
        .await
        .expect("the user is logged out");
    let logged_out = audit_record(&control_plane, "session_revoked", |r| {
        r["reason"] == "user-logged-out"
    })
    .await;
    assert_fields(
        &logged_out,
        &[("actor", "admin:admin.gatehouse"), ("session", &second)],
    );

    assert_no_secret_logged(
        &control_plane,
        &[created.session_token, again.session_token],
    );
}
