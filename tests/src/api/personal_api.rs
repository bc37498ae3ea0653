//! The Personal API as a logged-in user sees it: the session token, sent as a bearer token or
//! in the virtual proxy's cookie, shows the caller their own session and logs out that session
//! only; anything else is UNAUTHENTICATED, and no answer repeats the token.

use gatehouse_proto::v1 as pb;
use tonic::{Code, Request, Status};

use crate::harness::fixtures::{
    Backend, Env, bearer, by_handle, by_token, expect_code, proxy, session_of, user, with_cookie,
};

/// The default proxy, "sales" (conventional cookie name) and "hr" (a cookie name of its own).
fn proxies() -> String {
    format!(
        "{}{}{}",
        proxy("", ""),
        proxy("sales", ""),
        proxy("hr", "cookie_name = \"HR-Session\"")
    )
}

fn current(virtual_proxy: Option<&str>) -> pb::GetCurrentUserRequest {
    pb::GetCurrentUserRequest {
        virtual_proxy: virtual_proxy.map(str::to_owned),
    }
}

fn logout(virtual_proxy: Option<&str>) -> pb::LogoutRequest {
    pb::LogoutRequest {
        virtual_proxy: virtual_proxy.map(str::to_owned),
    }
}

async fn get_current_user(
    env: &Env,
    request: Request<pb::GetCurrentUserRequest>,
) -> Result<pb::Session, Status> {
    env.personal()
        .get_current_user(request)
        .await
        .map(|response| session_of(response.into_inner().session))
}

async fn log_out(env: &Env, request: Request<pb::LogoutRequest>) -> Result<pb::Session, Status> {
    env.personal()
        .logout(request)
        .await
        .map(|response| session_of(response.into_inner().session))
}

async fn bearer_token_shows_the_callers_own_session(backend: Backend) {
    let env = Env::start(backend, &proxies()).await;
    let bob = env.create_session("", user("corp", "bob")).await;
    let alice = env.create_session("sales", user("corp", "alice")).await;
    let alice_session = session_of(alice.session);
    let bob_session = session_of(bob.session);

    // No virtual proxy named: a bearer token of any virtual proxy.
    let own = get_current_user(&env, bearer(current(None), &alice.session_token))
        .await
        .expect("GetCurrentUser with a bearer token");
    assert_eq!(own.handle, alice_session.handle);
    assert_eq!(own.user, Some(user("corp", "alice")));
    assert_eq!(own.virtual_proxy, "sales");
    assert_eq!(own.created, alice_session.created);
    // Its own virtual proxy named.
    let own = get_current_user(&env, bearer(current(Some("sales")), &alice.session_token))
        .await
        .expect("GetCurrentUser naming the session's virtual proxy");
    assert_eq!(own.handle, alice_session.handle);
    // The scheme is case-insensitive.
    let mut lower = Request::new(current(None));
    lower.metadata_mut().insert(
        "authorization",
        format!("bearer {}", bob.session_token)
            .parse()
            .expect("ASCII"),
    );
    let own = get_current_user(&env, lower)
        .await
        .expect("lowercase bearer");
    assert_eq!(own.handle, bob_session.handle);
}

#[tokio::test]
async fn bearer_token_shows_the_callers_own_session_on_redis() {
    bearer_token_shows_the_callers_own_session(Backend::Redis).await;
}

#[tokio::test]
async fn bearer_token_shows_the_callers_own_session_on_memory() {
    bearer_token_shows_the_callers_own_session(Backend::Memory).await;
}

#[tokio::test]
async fn bearer_token_shows_the_callers_own_session_on_redis_cluster() {
    bearer_token_shows_the_callers_own_session(Backend::RedisCluster).await;
}

#[tokio::test]
async fn bearer_token_shows_the_callers_own_session_on_redis_sentinel() {
    bearer_token_shows_the_callers_own_session(Backend::RedisSentinel).await;
}

async fn default_proxy_cookie_authenticates(backend: Backend) {
    let env = Env::start(backend, &proxies()).await;
    let alice = env.create_session("", user("corp", "alice")).await;
    let handle = session_of(alice.session).handle;
    let cookie = format!(
        "theme=dark; X-Qlik-Session={}; X-Qlik-Session-sales=other",
        alice.session_token
    );

    for virtual_proxy in [None, Some("")] {
        let own = get_current_user(&env, with_cookie(current(virtual_proxy), &cookie))
            .await
            .unwrap_or_else(|status| {
                panic!("cookie with virtual_proxy {virtual_proxy:?}: {status:?}")
            });
        assert_eq!(own.handle, handle);
    }
}

#[tokio::test]
async fn default_proxy_cookie_authenticates_on_redis() {
    default_proxy_cookie_authenticates(Backend::Redis).await;
}

#[tokio::test]
async fn default_proxy_cookie_authenticates_on_memory() {
    default_proxy_cookie_authenticates(Backend::Memory).await;
}

#[tokio::test]
async fn default_proxy_cookie_authenticates_on_redis_cluster() {
    default_proxy_cookie_authenticates(Backend::RedisCluster).await;
}

#[tokio::test]
async fn default_proxy_cookie_authenticates_on_redis_sentinel() {
    default_proxy_cookie_authenticates(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn named_proxy_cookie_authenticates_when_that_proxy_is_named() {
    let env = Env::redis(&proxies()).await;
    let sales = env.create_session("sales", user("corp", "alice")).await;
    let hr = env.create_session("hr", user("corp", "alice")).await;
    let sales_cookie = format!("X-Qlik-Session-sales={}", sales.session_token);
    let hr_cookie = format!("a=b; HR-Session={}", hr.session_token);

    let own = get_current_user(&env, with_cookie(current(Some("sales")), &sales_cookie))
        .await
        .expect("the sales cookie for sales");
    assert_eq!(own.handle, session_of(sales.session.clone()).handle);
    let own = get_current_user(&env, with_cookie(current(Some("hr")), &hr_cookie))
        .await
        .expect("a configured cookie name");
    assert_eq!(own.handle, session_of(hr.session).handle);

    // Without naming the proxy, the default proxy's cookie is read, and there is none.
    expect_code(
        get_current_user(&env, with_cookie(current(None), &sales_cookie)).await,
        Code::Unauthenticated,
        "the sales cookie without naming sales",
    );
    // Another proxy's cookie name does not count.
    expect_code(
        get_current_user(&env, with_cookie(current(Some("hr")), &sales_cookie)).await,
        Code::Unauthenticated,
        "the sales cookie naming hr",
    );
    // The right cookie name carrying another proxy's session does not count either.
    let mismatched = format!("HR-Session={}", sales.session_token);
    expect_code(
        get_current_user(&env, with_cookie(current(Some("hr")), &mismatched)).await,
        Code::Unauthenticated,
        "hr's cookie holding a sales session",
    );
    // Logout through the cookie ends the session.
    let ended = log_out(&env, with_cookie(logout(Some("sales")), &sales_cookie))
        .await
        .expect("Logout with the sales cookie");
    assert_eq!(ended.handle, session_of(sales.session).handle);
    expect_code(
        env.get_session(by_token(&sales.session_token)).await,
        Code::NotFound,
        "after logout",
    );
}

/// The default proxy's cookie should carry a default-proxy session: with no virtual proxy
/// named, only a bearer token may belong to any virtual proxy (personal.proto).
#[tokio::test]
async fn default_proxy_cookie_holding_another_proxys_session_is_refused() {
    let env = Env::redis(&proxies()).await;
    let sales = env.create_session("sales", user("corp", "alice")).await;
    let cookie = format!("X-Qlik-Session={}", sales.session_token);
    expect_code(
        get_current_user(&env, with_cookie(current(None), &cookie)).await,
        Code::Unauthenticated,
        "the default proxy's cookie holding a sales session",
    );
}

async fn bearer_token_of_another_proxy_is_unauthenticated(backend: Backend) {
    let env = Env::start(backend, &proxies()).await;
    let sales = env.create_session("sales", user("corp", "alice")).await;

    for other in ["", "hr"] {
        let status = expect_code(
            get_current_user(&env, bearer(current(Some(other)), &sales.session_token)).await,
            Code::Unauthenticated,
            &format!("a sales token naming {other:?}"),
        );
        assert!(!status.message().contains(&sales.session_token));
        expect_code(
            log_out(&env, bearer(logout(Some(other)), &sales.session_token)).await,
            Code::Unauthenticated,
            &format!("Logout of a sales token naming {other:?}"),
        );
    }
    env.get_session(by_token(&sales.session_token))
        .await
        .expect("a refused logout ends nothing");
}

#[tokio::test]
async fn bearer_token_of_another_proxy_is_unauthenticated_on_redis() {
    bearer_token_of_another_proxy_is_unauthenticated(Backend::Redis).await;
}

#[tokio::test]
async fn bearer_token_of_another_proxy_is_unauthenticated_on_memory() {
    bearer_token_of_another_proxy_is_unauthenticated(Backend::Memory).await;
}

#[tokio::test]
async fn bearer_token_of_another_proxy_is_unauthenticated_on_redis_cluster() {
    bearer_token_of_another_proxy_is_unauthenticated(Backend::RedisCluster).await;
}

#[tokio::test]
async fn bearer_token_of_another_proxy_is_unauthenticated_on_redis_sentinel() {
    bearer_token_of_another_proxy_is_unauthenticated(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn no_credential_is_unauthenticated() {
    let env = Env::redis(&proxies()).await;
    let alice = env.create_session("", user("corp", "alice")).await;

    let mut attempts: Vec<(&str, Request<()>)> = vec![("no metadata", Request::new(()))];
    let headers: [(&str, &'static str, String); 5] = [
        (
            "basic credentials",
            "authorization",
            "Basic YWxpY2U6c2VjcmV0".to_owned(),
        ),
        ("empty bearer", "authorization", "Bearer ".to_owned()),
        (
            "token without scheme",
            "authorization",
            alice.session_token.clone(),
        ),
        (
            "other cookies only",
            "cookie",
            "theme=dark; lang=en".to_owned(),
        ),
        (
            "empty session cookie",
            "cookie",
            "X-Qlik-Session=".to_owned(),
        ),
    ];
    for (what, name, value) in headers {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(name, value.parse().expect("ASCII"));
        attempts.push((what, request));
    }
    for (what, request) in attempts {
        let metadata = request.metadata().clone();
        for virtual_proxy in [None, Some("sales")] {
            let mut get = Request::new(current(virtual_proxy));
            *get.metadata_mut() = metadata.clone();
            let status = expect_code(
                get_current_user(&env, get).await,
                Code::Unauthenticated,
                &format!("GetCurrentUser, {what}, {virtual_proxy:?}"),
            );
            assert!(!status.message().contains(&alice.session_token));
            let mut out = Request::new(logout(virtual_proxy));
            *out.metadata_mut() = metadata.clone();
            expect_code(
                log_out(&env, out).await,
                Code::Unauthenticated,
                &format!("Logout, {what}, {virtual_proxy:?}"),
            );
        }
    }
    env.get_session(by_token(&alice.session_token))
        .await
        .expect("nothing was logged out");
}

async fn unknown_token_is_unauthenticated(backend: Backend) {
    let env = Env::start(backend, &proxies()).await;
    env.create_session("", user("corp", "alice")).await;
    let unknown = crate::harness::fixtures::random_token();

    let attempts = [
        ("bearer", bearer(current(None), &unknown)),
        (
            "bearer naming the proxy",
            bearer(current(Some("")), &unknown),
        ),
        (
            "cookie",
            with_cookie(current(None), &format!("X-Qlik-Session={unknown}")),
        ),
        (
            "sales cookie",
            with_cookie(
                current(Some("sales")),
                &format!("X-Qlik-Session-sales={unknown}"),
            ),
        ),
    ];
    for (what, request) in attempts {
        let status = expect_code(
            get_current_user(&env, request).await,
            Code::Unauthenticated,
            what,
        );
        assert!(
            !status.message().contains(&unknown),
            "{what}: the message echoes the token"
        );
    }
    let status = expect_code(
        log_out(&env, bearer(logout(None), &unknown)).await,
        Code::Unauthenticated,
        "Logout with an unknown token",
    );
    assert!(!status.message().contains(&unknown));
}

#[tokio::test]
async fn unknown_token_is_unauthenticated_on_redis() {
    unknown_token_is_unauthenticated(Backend::Redis).await;
}

#[tokio::test]
async fn unknown_token_is_unauthenticated_on_memory() {
    unknown_token_is_unauthenticated(Backend::Memory).await;
}

#[tokio::test]
async fn unknown_token_is_unauthenticated_on_redis_cluster() {
    unknown_token_is_unauthenticated(Backend::RedisCluster).await;
}

#[tokio::test]
async fn unknown_token_is_unauthenticated_on_redis_sentinel() {
    unknown_token_is_unauthenticated(Backend::RedisSentinel).await;
}

async fn logout_ends_only_the_callers_session(backend: Backend) {
    let env = Env::start(backend, &proxies()).await;
    let mine = env.create_session("", user("corp", "alice")).await;
    let my_other = env.create_session("", user("corp", "alice")).await;
    let my_sales = env.create_session("sales", user("corp", "alice")).await;
    let mine_session = session_of(mine.session);

    let ended = log_out(&env, bearer(logout(None), &mine.session_token))
        .await
        .expect("Logout");
    assert_eq!(ended.handle, mine_session.handle);
    assert_eq!(ended.user, Some(user("corp", "alice")));

    expect_code(
        env.get_session(by_handle(&mine_session.handle)).await,
        Code::NotFound,
        "ended session",
    );
    expect_code(
        get_current_user(&env, bearer(current(None), &mine.session_token)).await,
        Code::Unauthenticated,
        "the ended session's token",
    );
    for survivor in [&my_other, &my_sales] {
        env.get_session(by_token(&survivor.session_token))
            .await
            .expect("the user's other sessions survive");
        get_current_user(&env, bearer(current(None), &survivor.session_token))
            .await
            .expect("and still work");
    }
    assert_eq!(env.user_handles("corp", "alice", None).await.len(), 2);

    let status = expect_code(
        log_out(&env, bearer(logout(None), &mine.session_token)).await,
        Code::Unauthenticated,
        "a second Logout",
    );
    assert!(!status.message().contains(&mine.session_token));

    // Through the cookie as well.
    let cookie = format!("X-Qlik-Session={}", my_other.session_token);
    let ended = log_out(&env, with_cookie(logout(None), &cookie))
        .await
        .expect("Logout with the cookie");
    assert_eq!(ended.handle, session_of(my_other.session).handle);
    expect_code(
        log_out(&env, with_cookie(logout(None), &cookie)).await,
        Code::Unauthenticated,
        "a second Logout with the cookie",
    );
    env.get_session(by_token(&my_sales.session_token))
        .await
        .expect("the sales session survives");
}

#[tokio::test]
async fn logout_ends_only_the_callers_session_on_redis() {
    logout_ends_only_the_callers_session(Backend::Redis).await;
}

#[tokio::test]
async fn logout_ends_only_the_callers_session_on_memory() {
    logout_ends_only_the_callers_session(Backend::Memory).await;
}

#[tokio::test]
async fn logout_ends_only_the_callers_session_on_redis_cluster() {
    logout_ends_only_the_callers_session(Backend::RedisCluster).await;
}

#[tokio::test]
async fn logout_ends_only_the_callers_session_on_redis_sentinel() {
    logout_ends_only_the_callers_session(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn answers_never_contain_the_token() {
    let env = Env::redis(&proxies()).await;
    let alice = env.create_session("sales", user("corp", "alice")).await;
    let token = alice.session_token.clone();

    // Successes: the session, never its token.
    let got = env
        .personal()
        .get_current_user(bearer(current(None), &token))
        .await
        .expect("GetCurrentUser");
    assert!(!format!("{got:?}").contains(&token));

    // Failures, whatever their cause.
    let failures = [
        get_current_user(&env, bearer(current(Some("")), &token)).await,
        get_current_user(
            &env,
            with_cookie(current(Some("")), &format!("X-Qlik-Session={token}")),
        )
        .await,
        get_current_user(
            &env,
            with_cookie(current(Some("hr")), &format!("HR-Session={token}")),
        )
        .await,
        get_current_user(&env, bearer(current(Some("nosuchproxy")), &token)).await,
        get_current_user(
            &env,
            with_cookie(
                current(Some("nosuchproxy")),
                &format!("X-Qlik-Session-nosuchproxy={token}"),
            ),
        )
        .await,
        get_current_user(&env, bearer(current(None), &format!("{token}x"))).await,
    ];
    for failure in failures {
        let status = failure.expect_err("refused");
        assert!(!format!("{status:?}").contains(&token), "{status:?}");
    }

    let out = env
        .personal()
        .logout(bearer(logout(None), &token))
        .await
        .expect("Logout");
    assert!(!format!("{out:?}").contains(&token));
    let status = log_out(&env, bearer(logout(None), &token))
        .await
        .expect_err("second Logout");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!format!("{status:?}").contains(&token));
}
