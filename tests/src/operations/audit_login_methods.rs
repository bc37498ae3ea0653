//! Audit events of the other ways in and out, field by field, from a real control-plane
//! process: header, anonymous and JWT logins through a node (and the refused header and JWT
//! logins), a logout at the node's `/qps/user`, a session its own user ended from another session, and sessions an administrator
//! made and ended through the QPS-compatible REST surface. No token, JWT or caller-chosen
//! session id is in the output.

use gatehouse_proto::v1 as pb;
use hyper::Method;
use serde_json::json;
use tempfile::TempDir;

use super::audit_events::{
    assert_no_secret_logged, audit_record, audit_records, handle_of, personal, user,
};
use crate::auth_methods::jwt::{bearer, claims, jwt_table, rsa_key, sign};
use crate::browser::fixtures::AppProxy;
use crate::harness::audit::assert_fields;
use crate::harness::client::{self, get};
use crate::harness::processes::{ControlPlaneProcess, DataPlaneProcess};
use crate::harness::redis_server::free_port;
use crate::harness::{EchoUpstream, eventually};

const XRFKEY: &str = "0123456789abcdef";

#[tokio::test]
async fn header_anonymous_and_jwt_logins_are_audited_with_method_user_and_client() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "signer");
    let stranger = rsa_key(dir.path(), "stranger");
    let upstream = EchoUpstream::start("engine").await;
    let nodes = format!("[{:?}]", upstream.node());
    let config = format!(
        "{}\n[[virtual_proxies]]\nprefix = \"hdr\"\nmax_sessions_per_user = 1\n\
         [virtual_proxies.header_authentication]\nheader = \"X-Remote-User\"\n\
         user_directory = \"CORP\"\ntrusted_networks = [\"127.0.0.0/8\"]\n\
         [virtual_proxies.upstream]\nnodes = {nodes}\n\
         [[virtual_proxies]]\nprefix = \"anon\"\nanonymous = \"always\"\n\
         [virtual_proxies.upstream]\nnodes = {nodes}\n",
        AppProxy::new([upstream.node()])
            .table(&jwt_table(&format!(
                "public_keys = [{:?}]",
                key.public_path.to_str().unwrap()
            )))
            .toml(),
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    let node = DataPlaneProcess::start(&control_plane, "audit-methods-node", &[]).await;
    let mut secrets = Vec::new();

    // Header: a login, then a second one the per-user cap of one refuses.
    let first = get(&node.url("/hdr/hub"), &[("x-remote-user", "erin")]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let cookie = first.cookie_pair("X-Qlik-Session-hdr").expect("a session");
    secrets.push(cookie.split_once('=').expect("name=value").1.to_owned());
    let erin = handle_of(&control_plane, "erin", "hdr").await;
    let login = audit_record(&control_plane, "login_succeeded", |r| {
        r["method"] == "header"
    })
    .await;
    assert_fields(
        &login,
        &[
            ("method", "header"),
            ("virtual_proxy", "hdr"),
            ("user_directory", "CORP"),
            ("user_id", "erin"),
            ("client_address", "127.0.0.1"),
            ("session", &erin[0]),
        ],
    );
    let refused = get(&node.url("/hdr/hub"), &[("x-remote-user", "erin")]).await;
    assert_ne!(refused.status, 200, "{}", refused.text());
    let failed = audit_record(&control_plane, "login_failed", |r| r["method"] == "header").await;
    assert_fields(
        &failed,
        &[
            ("method", "header"),
            ("virtual_proxy", "hdr"),
            ("user_directory", "CORP"),
            ("user_id", "erin"),
            ("client_address", "127.0.0.1"),
            (
                "reason",
                "user already has the maximum of 1 sessions in this virtual proxy",
            ),
        ],
    );
    assert!(failed.get("session").is_none(), "{failed:#}");
    // Logging out at the node (`DELETE /hdr/qps/user`): a logout by the user.
    let origin = format!("http://{}", node.address());
    let ended = client::delete(
        &node.url("/hdr/qps/user"),
        &[("cookie", cookie.as_str()), ("origin", origin.as_str())],
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    let logout = audit_record(&control_plane, "logout", |_| true).await;
    assert_fields(
        &logout,
        &[
            ("actor", "self"),
            ("reason", "logout"),
            ("virtual_proxy", "hdr"),
            ("user_directory", "CORP"),
            ("user_id", "erin"),
            ("session", &erin[0]),
            ("client_address", "127.0.0.1"),
        ],
    );

    // Anonymous: a session for a user of the control plane's making.
    let anonymous = get(&node.url("/anon/hub"), &[]).await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    let cookie = anonymous
        .cookie_pair("X-Qlik-Session-anon")
        .expect("a session");
    secrets.push(cookie.split_once('=').expect("name=value").1.to_owned());
    let login = audit_record(&control_plane, "login_succeeded", |r| {
        r["method"] == "anonymous"
    })
    .await;
    assert_fields(
        &login,
        &[
            ("method", "anonymous"),
            ("virtual_proxy", "anon"),
            ("client_address", "127.0.0.1"),
        ],
    );
    let listed = control_plane
        .sessions()
        .list_sessions(pb::ListSessionsRequest {
            virtual_proxy: Some("anon".into()),
            ..Default::default()
        })
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 1);
    let anonymous_user = listed[0].user.as_ref().expect("a user");
    assert_eq!(login["session"], listed[0].handle.as_str());
    assert_eq!(login["user_id"], anonymous_user.user_id.as_str());
    assert_eq!(
        login["user_directory"],
        anonymous_user.user_directory.as_str()
    );

    // JWT: a token signed by the configured key, and one by a stranger's.
    let token = sign(&key, None, &claims("frank"));
    let forged = sign(&stranger, None, &claims("frank"));
    secrets.extend([token.clone(), forged.clone()]);
    let accepted = get(&node.url("/app/hub"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    let frank = handle_of(&control_plane, "frank", "app").await;
    let login = audit_record(&control_plane, "login_succeeded", |r| r["method"] == "jwt").await;
    assert_fields(
        &login,
        &[
            ("method", "jwt"),
            ("virtual_proxy", "app"),
            ("user_directory", "CORP"),
            ("user_id", "frank"),
            ("client_address", "127.0.0.1"),
            ("session", &frank[0]),
        ],
    );
    let refused = get(
        &node.url("/app/hub"),
        &[("authorization", &bearer(&forged))],
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let failed = audit_record(&control_plane, "login_failed", |r| r["method"] == "jwt").await;
    assert_fields(
        &failed,
        &[
            ("method", "jwt"),
            ("virtual_proxy", "app"),
            ("client_address", "127.0.0.1"),
        ],
    );
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|reason| !reason.is_empty()),
        "{failed:#}"
    );
    assert!(
        failed.get("user_id").is_none() && failed.get("session").is_none(),
        "the control plane never learnt who it was: {failed:#}"
    );
    // The same token again finds its session: no second login event.
    let again = get(&node.url("/app/hub"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    let jwt_logins = audit_records(&control_plane)
        .into_iter()
        .filter(|r| r["event"] == "login_succeeded" && r["method"] == "jwt")
        .count();
    assert_eq!(jwt_logins, 1);

    assert_no_secret_logged(&control_plane, &secrets);
}

async fn rest(
    address: std::net::SocketAddr,
    method: Method,
    path: &str,
    body: String,
) -> client::HttpResponse {
    client::request(
        method,
        &format!("http://{address}{path}?xrfkey={XRFKEY}"),
        &[("X-Qlik-Xrfkey", XRFKEY)],
        body,
    )
    .await
}

#[tokio::test]
async fn own_sessions_ended_and_rest_sessions_are_audited_with_their_actor() {
    let rest_port = free_port();
    let config = format!(
        "[rest]\nlisten = \"127.0.0.1:{rest_port}\"\n[[virtual_proxies]]\nprefix = \"app\"\n"
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    let rest_address = std::net::SocketAddr::from(([127, 0, 0, 1], rest_port));

    // Two sessions of one user; from the first, the user ends the second.
    let mut sessions = control_plane.sessions();
    let mut created = Vec::new();
    for _ in 0..2 {
        created.push(
            sessions
                .create_session(pb::CreateSessionRequest {
                    virtual_proxy: "app".into(),
                    user: user("gina"),
                    session_token: None,
                })
                .await
                .expect("a session")
                .into_inner(),
        );
    }
    let other = created[1]
        .session
        .as_ref()
        .expect("the session")
        .handle
        .clone();
    let mut end = tonic::Request::new(pb::EndMySessionRequest {
        virtual_proxy: Some("app".into()),
        handle: other.clone(),
    });
    let authorization = format!("Bearer {}", created[0].session_token);
    end.metadata_mut().insert(
        "authorization",
        authorization.parse().expect("a metadata value"),
    );
    personal(&control_plane)
        .end_my_session(end)
        .await
        .expect("the user ends their other session");
    let revoked = audit_record(&control_plane, "session_revoked", |r| r["actor"] == "self").await;
    assert_fields(
        &revoked,
        &[
            ("actor", "self"),
            ("reason", "logout"),
            ("virtual_proxy", "app"),
            ("user_directory", "CORP"),
            ("user_id", "gina"),
            ("session", &other),
        ],
    );

    // The REST surface, with a session id the caller chose: an administrator's call (TLS is
    // off on loopback, so no certificate names it).
    let session_id = random_session_id();
    let made = rest(
        rest_address,
        Method::POST,
        "/qps/app/session",
        json!({"UserDirectory": "CORP", "UserId": "hank", "SessionId": session_id}).to_string(),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let handle = made.json()["Handle"].as_str().expect("a handle").to_owned();
    let record = audit_record(&control_plane, "session_created", |r| r["method"] == "rest").await;
    assert_fields(
        &record,
        &[
            ("method", "rest"),
            ("actor", "admin:no-tls"),
            ("virtual_proxy", "app"),
            ("user_directory", "CORP"),
            ("user_id", "hank"),
            ("session", &handle),
        ],
    );
    let deleted = rest(
        rest_address,
        Method::DELETE,
        &format!("/qps/app/session/{session_id}"),
        String::new(),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let revoked = audit_record(&control_plane, "session_revoked", |r| {
        r["session"] == handle.as_str()
    })
    .await;
    assert_fields(
        &revoked,
        &[
            ("actor", "admin:no-tls"),
            ("reason", "deleted"),
            ("user_id", "hank"),
            ("session", &handle),
        ],
    );
    eventually(
        "every event written",
        std::time::Duration::from_secs(5),
        || {
            let count = audit_records(&control_plane).len();
            async move { (count == 5).then_some(()) }
        },
    )
    .await;
    assert_no_secret_logged(
        &control_plane,
        &[
            created[0].session_token.clone(),
            created[1].session_token.clone(),
            session_id,
        ],
    );
}

/// A caller-chosen session id with plenty of entropy: 64 hex digits from std's random keys.
fn random_session_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    (0..4)
        .map(|i| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(i);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}
