//! Windows authentication (Kerberos / SPNEGO) against a real MIT KDC: a throw-away realm on
//! loopback, a ticket from `kinit`, and `curl --negotiate` logging in through a data-plane
//! node. The control plane alone holds the keytab. Failures (a keytab without the service's
//! key, a ticket for another service, an unmapped realm, NTLM, a browser the method does not
//! apply to) end with no session. A login and a refused one are audit events.

use std::ffi::OsString;
use std::path::PathBuf;

use gatehouse_proto::v1 as pb;

use crate::browser::fixtures::{AppProxy, COOKIE, MODULE, qlik_user, seen_header};
use crate::harness::audit;
use crate::harness::client::get;
use crate::harness::kdc::{self, Kdc};
use crate::harness::processes::{ControlPlaneProcess, DataPlaneProcess};
use crate::harness::{EchoUpstream, RedisServer};

const REALM: &str = "GATEHOUSE.TEST";
const PASSWORD: &str = "alice-password-1";
/// A User-Agent of a Windows browser: the method applies to it.
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/140.0";

/// The realm with `HTTP/localhost` (in `service.keytab`), `HTTP/other.test` (in
/// `other.keytab`) and user alice with a ticket in `alice.cc`. `None` (test skipped) when the
/// KDC tools are missing outside CI; in CI that is a failure.
async fn realm() -> Option<(Kdc, PathBuf)> {
    let missing = kdc::missing_tools();
    if !missing.is_empty() {
        let message = format!(
            "Kerberos tests need {} (Debian: apt-get install -y krb5-kdc krb5-admin-server krb5-user curl)",
            missing.join(", ")
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("SKIPPED: {message}");
        return None;
    }
    let kdc = Kdc::start(REALM).await;
    kdc.add_service("HTTP/localhost", &kdc.path("service.keytab"))
        .await;
    kdc.add_service("HTTP/other.test", &kdc.path("other.keytab"))
        .await;
    kdc.add_user("alice", PASSWORD).await;
    let ccache = kdc.path("alice.cc");
    kdc.kinit(&format!("alice@{REALM}"), PASSWORD, &ccache)
        .await;
    Some((kdc, ccache))
}

/// Virtual proxy "app" (realm GATEHOUSE.TEST is directory CORP) and "unmapped" (only
/// OTHER.TEST is accepted there).
fn config(upstream: &EchoUpstream) -> String {
    config_with(upstream, AppProxy::new([upstream.node()]))
}

/// As [`config`], with "app" set up as `app` says.
fn config_with(upstream: &EchoUpstream, app: AppProxy) -> String {
    let app = app
        .table(&format!(
            "[virtual_proxies.kerberos]\nrealms = {{ \"{REALM}\" = \"CORP\" }}"
        ))
        .toml();
    format!(
        "{app}\n[[virtual_proxies]]\nprefix = \"unmapped\"\nauthentication_module_uri = \"{MODULE}\"\n\
         [virtual_proxies.upstream]\nnodes = [{:?}]\n\
         [virtual_proxies.kerberos]\nrealms = {{ \"OTHER.TEST\" = \"OTHER\" }}\n",
        upstream.node()
    )
}

/// A control plane whose acceptor uses `keytab`, and one node in front of it.
async fn planes(
    kdc: &Kdc,
    upstream: &EchoUpstream,
    keytab: &str,
) -> (ControlPlaneProcess, DataPlaneProcess) {
    planes_with(kdc, keytab, &config(upstream)).await
}

/// As [`planes`], with the control plane's configuration `config`.
async fn planes_with(
    kdc: &Kdc,
    keytab: &str,
    config: &str,
) -> (ControlPlaneProcess, DataPlaneProcess) {
    let mut env = kdc.env();
    env.push((
        "KRB5_KTNAME",
        OsString::from(format!("FILE:{}", kdc.path(keytab).display())),
    ));
    let env: Vec<(&str, &std::ffi::OsStr)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_os_str()))
        .collect();
    let control_plane = ControlPlaneProcess::start_with_env(config, &env).await;
    let node = DataPlaneProcess::start(&control_plane, "kerberos-node", &[]).await;
    (control_plane, node)
}

async fn sessions(control_plane: &ControlPlaneProcess) -> Vec<pb::Session> {
    control_plane
        .sessions()
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("list sessions")
        .into_inner()
        .sessions
}

#[tokio::test]
async fn a_windows_client_logs_in_with_kerberos_and_gets_a_normal_session() {
    let Some((kdc, ccache)) = realm().await else {
        return;
    };
    let upstream = EchoUpstream::start("engine").await;
    let (control_plane, node) = planes(&kdc, &upstream, "service.keytab").await;
    let port = node.address().port();

    let response = kdc
        .curl_negotiate(&ccache, "localhost", port, "/app/hub", WINDOWS)
        .await;
    assert_eq!(
        response.status, 200,
        "{}\n{}",
        response.headers, response.body
    );
    let seen: serde_json::Value = serde_json::from_str(&response.body).expect("the echo's JSON");
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert!(
        seen_header(&seen, "authorization").is_none(),
        "the Negotiate token is not passed upstream"
    );
    // The session cookie, beside its seal.
    let cookies = response.headers_named("set-cookie");
    let cookie = cookies
        .iter()
        .find(|cookie| cookie.starts_with(&format!("{COOKIE}=")))
        .unwrap_or_else(|| panic!("the session cookie is set: {cookies:?}"));
    let mutual = response
        .header("www-authenticate")
        .expect("the mutual-authentication token comes back");
    assert!(mutual.starts_with("Negotiate "), "{mutual}");

    let listed = sessions(&control_plane).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let user = listed[0].user.as_ref().expect("the session's user");
    assert_eq!(
        (
            user.user_directory.as_str(),
            user.user_id.as_str(),
            listed[0].virtual_proxy.as_str()
        ),
        ("CORP", "alice", "app")
    );

    // The cookie alone is enough from now on, as after any other login.
    let token = cookie.split(';').next().expect("name=value");
    let again = get(&node.url("/app/hub"), &[("cookie", token)]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        again.json()["headers"]["x-qlik-user"],
        qlik_user("CORP", "alice")
    );
    assert_eq!(sessions(&control_plane).await.len(), 1);

    // Audited as a Kerberos login, with the session it started and where it came from.
    let login = audit::written_record(&control_plane.process, "login_succeeded", |_| true).await;
    audit::assert_fields(
        &login,
        &[
            ("method", "kerberos"),
            ("virtual_proxy", "app"),
            ("user_directory", "CORP"),
            ("user_id", "alice"),
            ("session", &listed[0].handle),
            ("client_address", "127.0.0.1"),
        ],
    );
    let session_token = token.split_once('=').expect("name=value").1;
    let output = control_plane.process.output().expect("the output");
    assert!(!output.contains(session_token) && !output.contains(&mutual[10..]));
}

#[tokio::test]
async fn tokens_the_keytab_cannot_accept_get_401_and_no_session() {
    let Some((kdc, ccache)) = realm().await else {
        return;
    };
    let upstream = EchoUpstream::start("engine").await;

    // A ticket for another service (HTTP/other.test): this keytab has no key for it. The
    // browser names other.test, which the proxy is served at (on whatever port the node got).
    let served_as_other = AppProxy::new([upstream.node()])
        .key("public_origins = [\"http://other.test\"]")
        .key("unknown_host = \"first-origin\"");
    let (control_plane, node) = planes_with(
        &kdc,
        "service.keytab",
        &config_with(&upstream, served_as_other),
    )
    .await;
    let other = kdc
        .curl_negotiate(
            &ccache,
            "other.test",
            node.address().port(),
            "/app/hub",
            WINDOWS,
        )
        .await;
    assert_eq!(other.status, 401, "{}\n{}", other.headers, other.body);
    assert!(other.body.contains("not accepted"), "{}", other.body);
    assert!(other.header("set-cookie").is_none());
    assert!(sessions(&control_plane).await.is_empty());
    drop((node, control_plane));

    // A keytab holding only another principal's key: the right service name is no help.
    let (control_plane, node) = planes(&kdc, &upstream, "other.keytab").await;
    let wrong = kdc
        .curl_negotiate(
            &ccache,
            "localhost",
            node.address().port(),
            "/app/hub",
            WINDOWS,
        )
        .await;
    assert_eq!(wrong.status, 401, "{}\n{}", wrong.headers, wrong.body);
    assert!(wrong.body.contains("not accepted"), "{}", wrong.body);
    assert!(wrong.header("set-cookie").is_none());
    assert!(sessions(&control_plane).await.is_empty());
    assert!(
        upstream.requests().is_empty(),
        "nobody reached the upstream"
    );
}

#[tokio::test]
async fn a_principal_of_an_unmapped_realm_is_refused() {
    let Some((kdc, ccache)) = realm().await else {
        return;
    };
    let upstream = EchoUpstream::start("engine").await;
    let (control_plane, node) = planes(&kdc, &upstream, "service.keytab").await;
    let response = kdc
        .curl_negotiate(
            &ccache,
            "localhost",
            node.address().port(),
            "/unmapped/hub",
            WINDOWS,
        )
        .await;
    assert_eq!(
        response.status, 403,
        "{}\n{}",
        response.headers, response.body
    );
    assert!(response.body.contains("realm"), "{}", response.body);
    assert!(response.header("set-cookie").is_none());
    assert!(sessions(&control_plane).await.is_empty());
    assert!(upstream.requests().is_empty());
    // Audited as a refused Kerberos login, with the reason its client was told.
    let failed = audit::written_record(&control_plane.process, "login_failed", |_| true).await;
    audit::assert_fields(
        &failed,
        &[
            ("method", "kerberos"),
            ("virtual_proxy", "unmapped"),
            ("client_address", "127.0.0.1"),
        ],
    );
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("realm")),
        "{failed:#}"
    );
    assert!(failed.get("session").is_none(), "{failed:#}");
}

#[tokio::test]
async fn only_matching_clients_are_challenged_and_ntlm_is_refused() {
    let Some((kdc, ccache)) = realm().await else {
        return;
    };
    let upstream = EchoUpstream::start("engine").await;
    let (control_plane, node) = planes(&kdc, &upstream, "service.keytab").await;
    let port = node.address().port();

    // Not a Windows client: the ticket flow, even with a Kerberos ticket at hand.
    let curl = kdc
        .curl_negotiate(&ccache, "localhost", port, "/app/hub", "curl/8 (Linux)")
        .await;
    assert_eq!(curl.status, 302, "{}", curl.headers);
    let location = curl.header("location").expect("a login redirect");
    assert!(location.starts_with(MODULE), "{location}");

    // A Windows client without a token: the challenge, with the ticket login as fallback.
    let challenged = get(&node.url("/app/hub"), &[("user-agent", WINDOWS)]).await;
    assert_eq!(challenged.status, 401);
    assert_eq!(challenged.headers["www-authenticate"], "Negotiate");
    let page = challenged.text();
    assert!(
        page.contains(&format!("href=\"{MODULE}?proxyRestUri=")),
        "{page}"
    );

    // NTLM (what Windows falls back to without a service principal): a clear refusal.
    let ntlm = get(
        &node.url("/app/hub"),
        &[
            ("user-agent", WINDOWS),
            (
                "authorization",
                "Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==",
            ),
        ],
    )
    .await;
    assert_eq!(ntlm.status, 401);
    assert!(
        ntlm.text().contains("NTLM is not supported"),
        "{}",
        ntlm.text()
    );
    assert!(!ntlm.headers.contains_key("www-authenticate"));

    // Garbage in the header is a 401 too, never a crash.
    let garbage = get(
        &node.url("/app/hub"),
        &[
            ("user-agent", WINDOWS),
            ("authorization", "Negotiate YIIBAAAA"),
        ],
    )
    .await;
    assert_eq!(garbage.status, 401, "{}", garbage.text());
    let malformed = get(
        &node.url("/app/hub"),
        &[("user-agent", WINDOWS), ("authorization", "Negotiate !!!")],
    )
    .await;
    assert_eq!(malformed.status, 401, "{}", malformed.text());

    assert!(sessions(&control_plane).await.is_empty());
    assert!(upstream.requests().is_empty());
}

/// Two control-plane replicas as on two hosts (each with its own GSSAPI replay cache) sharing
/// Redis, each with a node: a Negotiate token one accepted is refused by the other, so a
/// captured token cannot be replayed through another replica within its lifetime.
#[tokio::test]
async fn a_token_replayed_to_another_replica_is_refused() {
    let Some((kdc, ccache)) = realm().await else {
        return;
    };
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n\n{}",
        redis.url(),
        config(&upstream)
    );
    let replica_env = |host: &str| {
        let replay_cache = kdc.path(host);
        std::fs::create_dir_all(&replay_cache).expect("a replay-cache directory");
        let mut env: Vec<(&'static str, OsString)> = kdc
            .env()
            .into_iter()
            .filter(|(name, _)| *name != "KRB5RCACHEDIR")
            .collect();
        env.push(("KRB5RCACHEDIR", replay_cache.into_os_string()));
        env.push((
            "KRB5_KTNAME",
            OsString::from(format!("FILE:{}", kdc.path("service.keytab").display())),
        ));
        env
    };
    let start = |env: Vec<(&'static str, OsString)>| {
        let config = config.clone();
        async move {
            let env: Vec<(&str, &std::ffi::OsStr)> = env
                .iter()
                .map(|(name, value)| (*name, value.as_os_str()))
                .collect();
            ControlPlaneProcess::start_with_env(&config, &env).await
        }
    };
    let replica_a = start(replica_env("host-a")).await;
    let replica_b = start(replica_env("host-b")).await;
    let node_a = DataPlaneProcess::start(&replica_a, "kerberos-a", &[]).await;
    let node_b = DataPlaneProcess::start(&replica_b, "kerberos-b", &[]).await;

    let first = kdc
        .curl_negotiate(
            &ccache,
            "localhost",
            node_a.address().port(),
            "/app/hub",
            WINDOWS,
        )
        .await;
    assert_eq!(first.status, 200, "{}\n{}", first.headers, first.body);
    let token = first.sent_token.expect("curl sent a Negotiate token");

    let replayed = get(
        &format!("http://{}/app/hub", node_b.address()),
        &[
            ("authorization", &format!("Negotiate {token}")),
            ("user-agent", WINDOWS),
        ],
    )
    .await;
    assert_eq!(replayed.status, 401, "{}", replayed.text());
    assert!(replayed.set_cookie(COOKIE).is_none());
    assert_eq!(
        sessions(&replica_b).await.len(),
        1,
        "only the first login made a session"
    );
}
