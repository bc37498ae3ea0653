//! The status a caller gets for each kind of failure: INVALID_ARGUMENT for bad input,
//! NOT_FOUND for what does not exist, UNAUTHENTICATED, RESOURCE_EXHAUSTED, ALREADY_EXISTS, and
//! UNAVAILABLE (never NOT_FOUND) while Redis is down, with recovery once it is back; and no
//! error message ever repeats a token or ticket the caller sent.

use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::node_service_client::NodeServiceClient;
use tonic::{Code, Status};

use crate::harness::eventually;
use crate::harness::fixtures::{
    Backend, Env, bearer, by_handle, by_token, expect_code, proxy, random_token, session_of, user,
    user_with, with_cookie,
};

/// Users no API accepts, and why.
fn bad_users() -> Vec<(&'static str, Option<pb::User>)> {
    vec![
        ("missing user", None),
        ("blank user id", Some(user("corp", "   "))),
        ("empty user id", Some(user("corp", ""))),
        ("blank user directory", Some(user(" ", "alice"))),
        (
            "backslash in the user directory",
            Some(user("CORP\\sub", "alice")),
        ),
        (
            "backslash in the user id",
            Some(user("corp", "CORP\\alice")),
        ),
        (
            "control character in the user id",
            Some(user("corp", "ali\nce")),
        ),
        (
            "user id over 256 bytes",
            Some(user("corp", &"a".repeat(257))),
        ),
        (
            "user id of 129 two-byte characters",
            Some(user("corp", &"\u{e9}".repeat(129))),
        ),
        (
            "user directory over 256 bytes",
            Some(user(&"d".repeat(257), "alice")),
        ),
        (
            "blank attribute name",
            Some(user_with("corp", "alice", &[("group", "a"), ("  ", "b")])),
        ),
        (
            "empty attribute name",
            Some(user_with("corp", "alice", &[("", "b")])),
        ),
    ]
}

#[tokio::test]
async fn invalid_argument_for_a_bad_user() {
    let env = Env::redis("").await;
    for (what, bad) in bad_users() {
        let created = env
            .sessions()
            .create_session(pb::CreateSessionRequest {
                virtual_proxy: String::new(),
                user: bad.clone(),
                session_token: None,
            })
            .await;
        expect_code(
            created,
            Code::InvalidArgument,
            &format!("CreateSession, {what}"),
        );
        let ticket = env
            .authentication()
            .request_ticket(pb::RequestTicketRequest {
                virtual_proxy: String::new(),
                user: bad,
                target_id: None,
            })
            .await;
        expect_code(
            ticket,
            Code::InvalidArgument,
            &format!("RequestTicket, {what}"),
        );
    }
    // Nothing was stored.
    let listed = env
        .sessions()
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("ListSessions")
        .into_inner();
    assert!(listed.sessions.is_empty());

    // The limits are inclusive, and surrounding blanks are trimmed before they are checked.
    let longest = format!("  {}  ", "a".repeat(256));
    let created = env
        .create_session("", user(&"d".repeat(256), &longest))
        .await;
    assert_eq!(
        session_of(created.session).user,
        Some(user(&"d".repeat(256), &"a".repeat(256)))
    );
}

#[tokio::test]
async fn invalid_argument_for_a_bad_user_key() {
    let env = Env::redis("").await;
    let keys = [
        ("blank user id", "corp", " "),
        ("blank user directory", "", "alice"),
        ("backslash", "corp", "corp\\alice"),
        ("user id over 256 bytes", "corp", &"a".repeat(257) as &str),
    ];
    for (what, directory, id) in keys {
        for virtual_proxy in [None, Some(String::new())] {
            let listed = env
                .sessions()
                .list_user_sessions(pb::ListUserSessionsRequest {
                    user_directory: directory.to_owned(),
                    user_id: id.to_owned(),
                    virtual_proxy: virtual_proxy.clone(),
                })
                .await;
            expect_code(
                listed,
                Code::InvalidArgument,
                &format!("ListUserSessions, {what}"),
            );
            let deleted = env
                .sessions()
                .delete_user_sessions(pb::DeleteUserSessionsRequest {
                    user_directory: directory.to_owned(),
                    user_id: id.to_owned(),
                    virtual_proxy,
                })
                .await;
            expect_code(
                deleted,
                Code::InvalidArgument,
                &format!("DeleteUserSessions, {what}"),
            );
        }
    }
}

#[tokio::test]
async fn invalid_argument_for_a_missing_selector() {
    let env = Env::redis("").await;
    let created = env.create_session("", user("corp", "alice")).await;
    let selectors = [
        ("no selector", None),
        ("empty selector", Some(pb::SessionSelector { by: None })),
        ("empty token", Some(by_token(""))),
        ("empty handle", Some(by_handle(""))),
    ];
    for (what, selector) in selectors {
        let got = env
            .sessions()
            .get_session(pb::GetSessionRequest {
                session: selector.clone(),
            })
            .await;
        expect_code(got, Code::InvalidArgument, &format!("GetSession, {what}"));
        let deleted = env
            .sessions()
            .delete_session(pb::DeleteSessionRequest { session: selector })
            .await;
        expect_code(
            deleted,
            Code::InvalidArgument,
            &format!("DeleteSession, {what}"),
        );
    }
    env.get_session(by_token(&created.session_token))
        .await
        .expect("nothing was deleted");
}

#[tokio::test]
async fn invalid_argument_for_a_malformed_ticket() {
    let env = Env::redis("").await;
    expect_code(
        env.redeem_ticket("", "").await,
        Code::InvalidArgument,
        "empty ticket",
    );
    let long = "t".repeat(257);
    let status = expect_code(
        env.redeem_ticket("", &long).await,
        Code::InvalidArgument,
        "overlong ticket",
    );
    assert!(!status.message().contains(&long));
}

#[tokio::test]
async fn not_found_for_an_unknown_virtual_proxy_on_every_rpc() {
    let env = Env::redis(&format!("{}{}", proxy("", ""), proxy("sales", ""))).await;
    let alice = env.create_session("", user("corp", "alice")).await;
    let unknown = "nosuchproxy";
    let missing = |status: Status, what: &str| {
        assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
        assert!(
            status.message().contains(unknown),
            "{what} names the prefix: {status:?}"
        );
    };

    missing(
        env.request_ticket(unknown, user("corp", "alice"), None)
            .await
            .expect_err("RequestTicket"),
        "RequestTicket",
    );
    missing(
        env.redeem_ticket(unknown, &random_token()[..32])
            .await
            .expect_err("RedeemTicket"),
        "RedeemTicket",
    );
    missing(
        env.node()
            .create_target(pb::CreateTargetRequest {
                virtual_proxy: unknown.into(),
                target_uri: "https://portal.example.com/".into(),
            })
            .await
            .expect_err("CreateTarget"),
        "CreateTarget",
    );
    missing(
        env.try_create_session(unknown, user("corp", "alice"), None)
            .await
            .expect_err("CreateSession"),
        "CreateSession",
    );
    missing(
        env.sessions()
            .list_user_sessions(pb::ListUserSessionsRequest {
                user_directory: "corp".into(),
                user_id: "alice".into(),
                virtual_proxy: Some(unknown.into()),
            })
            .await
            .expect_err("ListUserSessions"),
        "ListUserSessions",
    );
    missing(
        env.sessions()
            .delete_user_sessions(pb::DeleteUserSessionsRequest {
                user_directory: "corp".into(),
                user_id: "alice".into(),
                virtual_proxy: Some(unknown.into()),
            })
            .await
            .expect_err("DeleteUserSessions"),
        "DeleteUserSessions",
    );
    missing(
        env.sessions()
            .list_sessions(pb::ListSessionsRequest {
                virtual_proxy: Some(unknown.into()),
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .expect_err("ListSessions"),
        "ListSessions",
    );
    missing(
        env.personal()
            .get_current_user(bearer(
                pb::GetCurrentUserRequest {
                    virtual_proxy: Some(unknown.into()),
                },
                &alice.session_token,
            ))
            .await
            .expect_err("GetCurrentUser"),
        "GetCurrentUser",
    );
    missing(
        env.personal()
            .logout(bearer(
                pb::LogoutRequest {
                    virtual_proxy: Some(unknown.into()),
                },
                &alice.session_token,
            ))
            .await
            .expect_err("Logout"),
        "Logout",
    );
    missing(
        env.node()
            .validate_session(pb::ValidateSessionRequest {
                virtual_proxy: unknown.into(),
                session_token: alice.session_token.clone(),
                seal: String::new(),
                renew_seal: false,
            })
            .await
            .expect_err("ValidateSession"),
        "ValidateSession",
    );
    missing(
        env.node()
            .header_login(pb::HeaderLoginRequest {
                virtual_proxy: unknown.into(),
                user: Some(user("corp", "alice")),
                client: None,
            })
            .await
            .expect_err("HeaderLogin"),
        "HeaderLogin",
    );
    missing(
        env.node()
            .anonymous_login(pb::AnonymousLoginRequest {
                virtual_proxy: unknown.into(),
                client: None,
            })
            .await
            .expect_err("AnonymousLogin"),
        "AnonymousLogin",
    );
    // Prefixes are exact: no case folding, no trimming.
    for near in ["SALES", " sales", "sales/"] {
        expect_code(
            env.try_create_session(near, user("corp", "alice"), None)
                .await,
            Code::NotFound,
            &format!("CreateSession in {near:?}"),
        );
    }
    // None of this touched alice's session or created anything.
    env.get_session(by_token(&alice.session_token))
        .await
        .expect("alice's session survives");
    assert_eq!(env.user_handles("corp", "alice", None).await.len(), 1);
}

async fn not_found_for_unknown_and_malformed_sessions(backend: Backend) {
    let env = Env::start(backend, "").await;
    let gone = env.create_session("", user("corp", "alice")).await;
    let gone_handle = session_of(gone.session).handle;
    env.delete_session(by_handle(&gone_handle))
        .await
        .expect("DeleteSession");
    let live = env.create_session("", user("corp", "bob")).await;
    let live_handle = session_of(live.session).handle;

    let mut handles = vec![
        gone_handle.clone(),
        "x".to_owned(),
        ".".to_owned(),
        "a.b".to_owned(),
        "*".to_owned(),
        "../../etc/passwd".to_owned(),
        "{tag}.id".to_owned(),
        format!("{live_handle}x"),
        "h".repeat(10_000),
        "\u{0}".to_owned(),
    ];
    // A handle of the right shape that was never issued: the live one with its last letter
    // changed.
    let (stem, last) = live_handle.split_at(live_handle.len() - 1);
    handles.push(format!("{stem}{}", if last == "A" { "B" } else { "A" }));
    for handle in handles {
        let shown = handle.chars().take(40).collect::<String>();
        expect_code(
            env.get_session(by_handle(&handle)).await,
            Code::NotFound,
            &format!("GetSession by handle {shown:?}"),
        );
        expect_code(
            env.delete_session(by_handle(&handle)).await,
            Code::NotFound,
            &format!("DeleteSession by handle {shown:?}"),
        );
    }
    for token in [gone.session_token.clone(), random_token(), "t".to_owned()] {
        expect_code(
            env.get_session(by_token(&token)).await,
            Code::NotFound,
            "GetSession by token",
        );
        expect_code(
            env.delete_session(by_token(&token)).await,
            Code::NotFound,
            "DeleteSession by token",
        );
    }
    env.get_session(by_handle(&live_handle))
        .await
        .expect("the live session is untouched");
}

#[tokio::test]
async fn not_found_for_unknown_and_malformed_sessions_on_redis() {
    not_found_for_unknown_and_malformed_sessions(Backend::Redis).await;
}

#[tokio::test]
async fn not_found_for_unknown_and_malformed_sessions_on_memory() {
    not_found_for_unknown_and_malformed_sessions(Backend::Memory).await;
}

#[tokio::test]
async fn unauthenticated_without_a_valid_session_token() {
    let env = Env::redis("").await;
    let alice = env.create_session("", user("corp", "alice")).await;
    let no_token = env
        .personal()
        .get_current_user(pb::GetCurrentUserRequest {
            virtual_proxy: None,
        })
        .await;
    expect_code(no_token, Code::Unauthenticated, "no token");
    let forged = random_token();
    let unknown = env
        .personal()
        .get_current_user(bearer(
            pb::GetCurrentUserRequest {
                virtual_proxy: None,
            },
            &forged,
        ))
        .await;
    expect_code(unknown, Code::Unauthenticated, "an unknown token");
    let unknown_cookie = env
        .personal()
        .logout(with_cookie(
            pb::LogoutRequest {
                virtual_proxy: None,
            },
            &format!("X-Qlik-Session={forged}"),
        ))
        .await;
    expect_code(unknown_cookie, Code::Unauthenticated, "an unknown cookie");
    env.delete_session(by_token(&alice.session_token))
        .await
        .expect("DeleteSession");
    let deleted = env.current_user(&alice.session_token, None).await;
    expect_code(
        deleted,
        Code::Unauthenticated,
        "the token of a deleted session",
    );

    // The node API wants the node credential, and says nothing of a wrong one.
    let issued = env
        .request_ticket("", user("corp", "alice"), None)
        .await
        .expect("RequestTicket");
    let wrong_secret = random_token();
    for (what, authorization) in [
        ("no node credential", None),
        (
            "a wrong node credential",
            Some(format!("Bearer {wrong_secret}")),
        ),
        (
            "a session token as node credential",
            Some(format!("Bearer {forged}")),
        ),
    ] {
        let mut request = tonic::Request::new(pb::RedeemTicketRequest {
            virtual_proxy: String::new(),
            ticket: issued.ticket.clone(),
            client: None,
        });
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ASCII"));
        }
        let mut node = NodeServiceClient::new(env.channel());
        let status = expect_code(
            node.redeem_ticket(request).await,
            Code::Unauthenticated,
            what,
        );
        let shown = format!("{status:?}");
        assert!(
            !shown.contains(&wrong_secret) && !shown.contains(&issued.ticket),
            "{what}: {shown}"
        );
    }
    env.redeem_ticket("", &issued.ticket)
        .await
        .expect("refused node calls did not use the ticket up");
}

#[tokio::test]
async fn resource_exhausted_beyond_the_session_cap() {
    let env = Env::redis(&proxy("", "max_sessions_per_user = 1")).await;
    env.create_session("", user("corp", "alice")).await;
    let status = expect_code(
        env.try_create_session("", user("corp", "alice"), None)
            .await,
        Code::ResourceExhausted,
        "CreateSession beyond the cap",
    );
    assert!(status.message().contains("maximum of 1"), "{status:?}");
    // A ticket login beyond the cap is refused the same way.
    let ticket = env
        .request_ticket("", user("corp", "alice"), None)
        .await
        .expect("RequestTicket");
    expect_code(
        env.redeem_ticket("", &ticket.ticket).await,
        Code::ResourceExhausted,
        "RedeemTicket beyond the cap",
    );
    assert_eq!(env.user_handles("corp", "alice", None).await.len(), 1);
}

#[tokio::test]
async fn already_exists_for_a_live_caller_token() {
    let env = Env::redis("").await;
    let token = random_token();
    env.try_create_session("", user("corp", "alice"), Some(token.clone()))
        .await
        .expect("first use");
    let status = expect_code(
        env.try_create_session("", user("corp", "mallory"), Some(token.clone()))
            .await,
        Code::AlreadyExists,
        "second use",
    );
    assert!(!format!("{status:?}").contains(&token));
    let holder = env
        .get_session(by_token(&token))
        .await
        .expect("still alice's");
    assert_eq!(holder.user, Some(user("corp", "alice")));
}

/// Every call that needs Redis, with what it sends; all must fail UNAVAILABLE while it is down.
async fn calls_needing_the_store(
    env: &Env,
    token: &str,
    handle: &str,
    ticket: &str,
) -> Vec<(&'static str, Status)> {
    let mut failures = Vec::new();
    let mut record = |what: &'static str, result: Result<(), Status>| match result {
        Ok(()) => panic!("{what} succeeded while Redis is down"),
        Err(status) => failures.push((what, status)),
    };
    record(
        "GetSession by token",
        env.get_session(by_token(token)).await.map(drop),
    );
    record(
        "GetSession by handle",
        env.get_session(by_handle(handle)).await.map(drop),
    );
    record(
        "CreateSession",
        env.try_create_session("", user("corp", "bob"), None)
            .await
            .map(drop),
    );
    record(
        "CreateSession with a caller token",
        env.try_create_session("", user("corp", "bob"), Some(random_token()))
            .await
            .map(drop),
    );
    record(
        "RequestTicket",
        env.request_ticket("", user("corp", "bob"), None)
            .await
            .map(drop),
    );
    record(
        "RequestTicket with a target",
        env.request_ticket("", user("corp", "bob"), Some("sometargetid"))
            .await
            .map(drop),
    );
    record(
        "RedeemTicket",
        env.redeem_ticket("", ticket).await.map(drop),
    );
    record(
        "CreateTarget",
        env.node()
            .create_target(pb::CreateTargetRequest {
                virtual_proxy: String::new(),
                target_uri: "https://localhost/".into(),
            })
            .await
            .map(drop),
    );
    record(
        "DeleteSession",
        env.delete_session(by_token(token)).await.map(drop),
    );
    record(
        "ListUserSessions",
        env.sessions()
            .list_user_sessions(pb::ListUserSessionsRequest {
                user_directory: "corp".into(),
                user_id: "alice".into(),
                virtual_proxy: None,
            })
            .await
            .map(drop),
    );
    record(
        "DeleteUserSessions",
        env.sessions()
            .delete_user_sessions(pb::DeleteUserSessionsRequest {
                user_directory: "corp".into(),
                user_id: "alice".into(),
                virtual_proxy: None,
            })
            .await
            .map(drop),
    );
    record(
        "ListSessions",
        env.sessions()
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .map(drop),
    );
    record(
        "GetCurrentUser",
        env.current_user(token, None).await.map(drop),
    );
    record(
        "Logout",
        env.personal()
            .logout(bearer(
                pb::LogoutRequest {
                    virtual_proxy: None,
                },
                token,
            ))
            .await
            .map(drop),
    );
    record(
        "ListMySessions",
        env.personal()
            .list_my_sessions(bearer(
                pb::ListMySessionsRequest {
                    virtual_proxy: None,
                },
                token,
            ))
            .await
            .map(drop),
    );
    record(
        "EndMySession",
        env.personal()
            .end_my_session(bearer(
                pb::EndMySessionRequest {
                    virtual_proxy: None,
                    handle: handle.to_owned(),
                },
                token,
            ))
            .await
            .map(drop),
    );
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_while_redis_is_down_then_recovers() {
    let mut env = Env::redis("").await;
    let alice = env.create_session("", user("corp", "alice")).await;
    let handle = session_of(alice.session).handle;
    let ticket = env
        .request_ticket("", user("corp", "alice"), None)
        .await
        .expect("RequestTicket")
        .ticket;

    env.redis_server_mut().kill().await;
    let started = Instant::now();
    let failures = calls_needing_the_store(&env, &alice.session_token, &handle, &ticket).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{} calls took {:?}",
        failures.len(),
        started.elapsed()
    );
    for (what, status) in &failures {
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{what} while Redis is down: {status:?}"
        );
        let shown = format!("{status:?}");
        assert!(
            !shown.contains(&alice.session_token) && !shown.contains(&ticket),
            "{what} echoes a secret"
        );
        assert!(
            !shown.contains("127.0.0.1"),
            "{what} shows where Redis is: {shown}"
        );
    }
    // Each answer comes quickly: nobody waits long for a dead store.
    let one = Instant::now();
    expect_code(
        env.get_session(by_token(&alice.session_token)).await,
        Code::Unavailable,
        "again",
    );
    assert!(
        one.elapsed() < Duration::from_secs(3),
        "one call took {:?}",
        one.elapsed()
    );

    // Back: calls succeed again without restarting the control plane. (This Redis kept no data,
    // so the old session is gone: NOT_FOUND is now the truth.)
    env.redis_server_mut().restart().await;
    let created = eventually(
        "CreateSession to succeed after Redis returns",
        Duration::from_secs(10),
        || {
            let env = &env;
            async move {
                env.try_create_session("", user("corp", "bob"), None)
                    .await
                    .ok()
            }
        },
    )
    .await;
    env.get_session(by_token(&created.session_token))
        .await
        .expect("GetSession after recovery");
    let issued = env
        .request_ticket("", user("corp", "carol"), None)
        .await
        .expect("RequestTicket after recovery");
    env.redeem_ticket("", &issued.ticket)
        .await
        .expect("RedeemTicket after recovery (scripts are reloaded)");
    expect_code(
        env.get_session(by_token(&alice.session_token)).await,
        Code::NotFound,
        "a session the restarted Redis never held",
    );
}

#[tokio::test]
async fn error_messages_never_echo_a_token_or_ticket() {
    let env = Env::redis(&format!(
        "{}{}",
        proxy("", "max_sessions_per_user = 1"),
        proxy("sales", "")
    ))
    .await;
    let alice = env.create_session("", user("corp", "alice")).await;
    let token = alice.session_token.clone();
    let ticket = env
        .request_ticket("sales", user("corp", "alice"), None)
        .await
        .expect("RequestTicket")
        .ticket;
    let forged = random_token();

    let mut failures: Vec<(&str, &str, Status)> = vec![
        (
            "RedeemTicket at the wrong proxy",
            ticket.as_str(),
            env.redeem_ticket("", &ticket).await.expect_err("refused"),
        ),
        (
            "RedeemTicket of an unknown ticket",
            forged.as_str(),
            env.redeem_ticket("", &forged).await.expect_err("refused"),
        ),
        (
            "GetSession by an unknown token",
            forged.as_str(),
            env.get_session(by_token(&forged))
                .await
                .expect_err("refused"),
        ),
        (
            "GetSession with a token as the handle",
            token.as_str(),
            env.get_session(by_handle(&token))
                .await
                .expect_err("refused"),
        ),
        (
            "DeleteSession by an unknown token",
            forged.as_str(),
            env.delete_session(by_token(&forged))
                .await
                .expect_err("refused"),
        ),
        (
            "CreateSession reusing a live token",
            token.as_str(),
            env.try_create_session("sales", user("corp", "bob"), Some(token.clone()))
                .await
                .expect_err("refused"),
        ),
        (
            "CreateSession beyond the cap with a caller token",
            forged.as_str(),
            env.try_create_session("", user("corp", "alice"), Some(forged.clone()))
                .await
                .expect_err("refused"),
        ),
        (
            "GetCurrentUser with a forged token",
            forged.as_str(),
            env.current_user(&forged, None).await.expect_err("refused"),
        ),
        (
            "GetCurrentUser naming another proxy",
            token.as_str(),
            env.current_user(&token, Some("sales"))
                .await
                .expect_err("refused"),
        ),
        (
            "RequestTicket with a token as the target id",
            token.as_str(),
            env.request_ticket("nosuchproxy", user("corp", "alice"), Some(&token))
                .await
                .expect_err("refused"),
        ),
    ];
    let weak = format!("{};{}", &forged[..20], &forged[20..]);
    failures.push((
        "CreateSession with a token of a bad alphabet",
        &weak,
        env.try_create_session("sales", user("corp", "bob"), Some(weak.clone()))
            .await
            .expect_err("refused"),
    ));
    let low = "Ab1-".repeat(10);
    failures.push((
        "CreateSession with a low-entropy token",
        &low,
        env.try_create_session("sales", user("corp", "bob"), Some(low.clone()))
            .await
            .expect_err("refused"),
    ));
    for (what, secret, status) in failures {
        let shown = format!("{status:?}");
        assert!(
            !shown.contains(secret),
            "{what}: the error repeats the secret: {shown}"
        );
        assert!(
            !status.message().is_empty(),
            "{what}: the error explains itself"
        );
    }
}
