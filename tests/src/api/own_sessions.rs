//! Where am I logged in: a user who logged in from two browsers sees both sessions, with the
//! address and browser each login came from and the calling one marked, over the Personal
//! API (gRPC) and on a node (`/app/qps/user/sessions`), and ends the other one by its handle:
//! it needs a login again and its WebSocket closes. Another user's handle, or one of another
//! virtual proxy, is NOT_FOUND, the same answer as a handle of no session, and that session
//! lives on.

use gatehouse_proto::v1 as pb;
use tonic::Code;

use crate::browser::fixtures::{AppProxy, COOKIE, PROPAGATION, open_socket, rejected, with_cookie};
use crate::harness::auth_module::{issue_ticket, session_cookie, user};
use crate::harness::client::{self, expect_close};
use crate::harness::fixtures::{bearer, by_handle, proxy, session_of};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};

const LAPTOP: (&str, &str) = (
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "198.51.100.7",
);
const PHONE: (&str, &str) = ("Mozilla/5.0 (iPhone) Mobile Safari/604.1", "2001:db8::9");

struct System {
    _upstream: EchoUpstream,
    control_plane: ControlPlane,
    node: DataPlaneNode,
    _redis: Option<RedisServer>,
}

/// Virtual proxy "app" and a second one, "other", on a node that believes the
/// `X-Forwarded-For` of loopback peers (a load balancer in front of it).
async fn start(on_redis: bool) -> System {
    let upstream = EchoUpstream::start("engine").await;
    let app = AppProxy::new([upstream.node()]);
    let redis = if on_redis {
        Some(RedisServer::start().await)
    } else {
        None
    };
    let config = match &redis {
        Some(redis) => app.on_redis(redis),
        None => app.toml(),
    };
    let control_plane = ControlPlane::start(&format!("{config}{}", proxy("other", ""))).await;
    let node =
        DataPlaneNode::start_with(&control_plane, "trusted_proxies = [\"127.0.0.0/8\"]").await;
    System {
        _upstream: upstream,
        control_plane,
        node,
        _redis: redis,
    }
}

/// A ticket login through the node from a browser (`user agent`, `address` as the load
/// balancer forwards it); the session cookie's `name=value`, and the token.
async fn login_from(
    system: &System,
    who: &str,
    (agent, address): (&str, &str),
) -> (String, String) {
    let headers = [("user-agent", agent), ("x-forwarded-for", address)];
    let first = client::get(&system.node.url("/app/hub"), &headers).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let module = first.location().expect("a login redirect");
    let redirect = issue_ticket(&system.control_plane, module, user("CORP", who)).await;
    let landed = client::get(&redirect.url, &headers).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    let cookie = landed.cookie_pair(COOKIE).expect("a session cookie");
    let token = cookie
        .split_once('=')
        .map(|(_, token)| token.to_owned())
        .expect("name=value");
    (cookie, token)
}

async fn own_sessions(system: &System, token: &str) -> pb::ListMySessionsResponse {
    system
        .control_plane
        .personal()
        .list_my_sessions(bearer(
            pb::ListMySessionsRequest {
                virtual_proxy: None,
            },
            token,
        ))
        .await
        .expect("ListMySessions")
        .into_inner()
}

async fn end_own_session(
    system: &System,
    token: &str,
    handle: &str,
) -> Result<pb::Session, tonic::Status> {
    system
        .control_plane
        .personal()
        .end_my_session(bearer(
            pb::EndMySessionRequest {
                virtual_proxy: None,
                handle: handle.to_owned(),
            },
            token,
        ))
        .await
        .map(|answer| session_of(answer.into_inner().session))
}

async fn session_lives(system: &System, handle: &str) -> bool {
    system
        .control_plane
        .sessions()
        .get_session(pb::GetSessionRequest {
            session: Some(by_handle(handle)),
        })
        .await
        .is_ok()
}

/// The handle of the session whose `token` this is.
async fn handle_of(system: &System, token: &str) -> String {
    let listed = own_sessions(system, token).await;
    listed.current_handle
}

async fn two_browsers_over_grpc(on_redis: bool) {
    let system = start(on_redis).await;
    let (_, laptop) = login_from(&system, "alice", LAPTOP).await;
    let (phone_cookie, phone) = login_from(&system, "alice", PHONE).await;
    let (_, bob) = login_from(&system, "bob", LAPTOP).await;
    let bobs_handle = handle_of(&system, &bob).await;
    let (_, elsewhere) = session_cookie(
        &system.control_plane,
        "other",
        "X-Qlik-Session-other",
        user("CORP", "alice"),
    )
    .await;

    let listed = own_sessions(&system, &laptop).await;
    assert_eq!(listed.sessions.len(), 2, "{listed:?}");
    let laptop_handle = listed.current_handle.clone();
    let by_agent = |agent: &str| {
        listed
            .sessions
            .iter()
            .find(|session| session.user_agent == agent)
            .unwrap_or_else(|| panic!("no session from {agent}: {listed:?}"))
            .clone()
    };
    let (laptop_session, phone_session) = (by_agent(LAPTOP.0), by_agent(PHONE.0));
    assert_eq!(laptop_session.handle, laptop_handle);
    assert_eq!(laptop_session.client_address, LAPTOP.1);
    assert_eq!(phone_session.client_address, PHONE.1);
    for session in &listed.sessions {
        assert_eq!(
            session.user.as_ref().map(|u| u.user_id.as_str()),
            Some("alice")
        );
        assert_eq!(session.virtual_proxy, "app");
        assert!(session.created.is_some() && session.last_active.is_some());
    }
    let shown = format!("{listed:?}");
    assert!(
        !shown.contains(&laptop) && !shown.contains(&phone),
        "no answer holds a token"
    );

    // Another user's handle, one of another virtual proxy and one of no session: one answer.
    let mut messages = Vec::new();
    for foreign in [
        bobs_handle.as_str(),
        elsewhere.handle.as_str(),
        "no-such-handle",
    ] {
        let refused = end_own_session(&system, &laptop, foreign)
            .await
            .expect_err("not the caller's session");
        assert_eq!(refused.code(), Code::NotFound, "{foreign}: {refused:?}");
        messages.push(refused.message().to_owned());
    }
    assert!(
        messages.windows(2).all(|pair| pair[0] == pair[1]),
        "{messages:?}"
    );
    assert!(session_lives(&system, &bobs_handle).await);
    assert!(session_lives(&system, &elsewhere.handle).await);

    // The phone's session ends: its WebSocket closes, its next page needs a login.
    let mut socket = open_socket(&system.node, &phone_cookie).await;
    let ended = end_own_session(&system, &laptop, &phone_session.handle)
        .await
        .expect("EndMySession");
    assert_eq!(ended.handle, phone_session.handle);
    assert!(
        expect_close(&mut socket, PROPAGATION).await.is_some(),
        "the WebSocket closes"
    );
    assert!(rejected(&system.node.url("/app/hub"), &phone_cookie).await);
    let again = end_own_session(&system, &laptop, &phone_session.handle).await;
    assert_eq!(
        again.map_err(|status| status.code()).err(),
        Some(Code::NotFound)
    );
    let left = own_sessions(&system, &laptop).await;
    assert_eq!(left.sessions.len(), 1, "{left:?}");
    assert_eq!(left.sessions[0].handle, laptop_handle);

    // A blank handle is an error of the request; an unknown token is UNAUTHENTICATED.
    let blank = end_own_session(&system, &laptop, " ")
        .await
        .expect_err("blank");
    assert_eq!(blank.code(), Code::InvalidArgument);
    let stranger = end_own_session(&system, &phone, &laptop_handle)
        .await
        .expect_err("an ended session's token");
    assert_eq!(stranger.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_user_lists_sessions_from_two_browsers_and_ends_the_other_one_on_memory() {
    two_browsers_over_grpc(false).await;
}

#[tokio::test]
async fn a_user_lists_sessions_from_two_browsers_and_ends_the_other_one_on_redis() {
    two_browsers_over_grpc(true).await;
}

#[tokio::test]
async fn the_node_lists_and_ends_the_users_own_sessions_under_qps_user_sessions() {
    let system = start(false).await;
    let node = &system.node;
    let (laptop_cookie, laptop) = login_from(&system, "alice", LAPTOP).await;
    let (phone_cookie, phone) = login_from(&system, "alice", PHONE).await;
    let (_, bob) = login_from(&system, "bob", LAPTOP).await;
    let bobs_handle = handle_of(&system, &bob).await;
    let phone_handle = handle_of(&system, &phone).await;
    let laptop_handle = handle_of(&system, &laptop).await;
    let origin = format!("http://{}", node.address());

    let listed = client::get(
        &node.url("/app/qps/user/sessions"),
        &with_cookie(&laptop_cookie),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(!listed.text().contains(&laptop) && !listed.text().contains(&phone));
    let listed = listed.json();
    let sessions = listed["sessions"].as_array().expect("a list");
    assert_eq!(sessions.len(), 2, "{listed}");
    for session in sessions {
        let current = session["handle"] == laptop_handle.as_str();
        assert_eq!(session["current"], current, "{session}");
        let (agent, address) = if current { LAPTOP } else { PHONE };
        assert_eq!(session["userAgent"], agent, "{session}");
        assert_eq!(session["clientAddress"], address, "{session}");
        assert!(
            session["created"]
                .as_str()
                .is_some_and(|at| at.ends_with('Z')),
            "{session}"
        );
        assert!(session["lastActive"].as_str().is_some(), "{session}");
    }

    let nobody = client::get(&node.url("/app/qps/user/sessions"), &[]).await;
    assert_eq!(nobody.status, 401);

    let phone_url = node.url(&format!("/app/qps/user/sessions/{phone_handle}"));
    // A cross-site page cannot end the user's sessions.
    let cross_site = client::delete(
        &phone_url,
        &[("cookie", &laptop_cookie), ("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(cross_site.status, 403, "{}", cross_site.text());
    assert!(session_lives(&system, &phone_handle).await);

    // Another user's handle: 404, as for no session at all; bob's session lives on.
    for foreign in [bobs_handle.as_str(), "no-such-handle"] {
        let refused = client::delete(
            &node.url(&format!("/app/qps/user/sessions/{foreign}")),
            &[("cookie", &laptop_cookie), ("origin", &origin)],
        )
        .await;
        assert_eq!(refused.status, 404, "{foreign}: {}", refused.text());
    }
    assert!(session_lives(&system, &bobs_handle).await);

    let mut socket = open_socket(node, &phone_cookie).await;
    let ended = client::delete(
        &phone_url,
        &[("cookie", &laptop_cookie), ("origin", &origin)],
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert_eq!(ended.json()["session"], "ended");
    assert_eq!(ended.json()["current"], false);
    assert!(
        ended.set_cookie(COOKIE).is_none(),
        "the caller's own cookie stays"
    );
    assert!(
        expect_close(&mut socket, PROPAGATION).await.is_some(),
        "the WebSocket closes"
    );
    eventually("the phone's session is refused", PROPAGATION, || async {
        rejected(&node.url("/app/hub"), &phone_cookie)
            .await
            .then_some(())
    })
    .await;
    assert!(!rejected(&node.url("/app/hub"), &laptop_cookie).await);

    // Ending the calling session itself clears its cookie, as logging out does.
    let own_url = node.url(&format!("/app/qps/user/sessions/{laptop_handle}"));
    let own = client::delete(&own_url, &[("cookie", &laptop_cookie), ("origin", &origin)]).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["current"], true);
    assert!(
        own.set_cookie(COOKIE)
            .is_some_and(|cleared| cleared.contains("Max-Age=0"))
    );
    let wrong_method = client::post(&node.url("/app/qps/user/sessions"), &[], "").await;
    assert_eq!(wrong_method.status, 405);
}

/// A user id that only case-folds into another user's (`K`, the Kelvin sign, lower-cases
/// to an ASCII `k`) names another user: the look-alike sees none of that user's sessions
/// and cannot end them. Directories compare ASCII letters regardless of case, but a
/// character that folds into ASCII is kept as it is written.
async fn a_look_alike_user_id_is_another_user(on_redis: bool) {
    let system = start(on_redis).await;
    let (_, kate) = login_from(&system, "kate", LAPTOP).await;
    let kates_handle = handle_of(&system, &kate).await;
    let (_, look_alike) = login_from(&system, "\u{212A}ate", PHONE).await;

    let listed = own_sessions(&system, &look_alike).await;
    assert_eq!(listed.sessions.len(), 1, "{listed:?}");
    assert_eq!(listed.sessions[0].handle, listed.current_handle);
    let refused = end_own_session(&system, &look_alike, &kates_handle)
        .await
        .expect_err("another user's session");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert!(session_lives(&system, &kates_handle).await);

    // Upper and lower case of the same letters are still one user.
    let (_, shouting) = login_from(&system, "KATE", PHONE).await;
    assert_eq!(own_sessions(&system, &shouting).await.sessions.len(), 2);
}

#[tokio::test]
async fn a_look_alike_user_id_is_another_user_on_memory() {
    a_look_alike_user_id_is_another_user(false).await;
}

#[tokio::test]
async fn a_look_alike_user_id_is_another_user_on_redis() {
    a_look_alike_user_id_is_another_user(true).await;
}
