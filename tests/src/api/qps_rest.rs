//! The QPS-compatible REST surface, called the way existing QPS authentication modules and
//! portals call it: plain HTTP JSON over mutual TLS with an Xrfkey, at the `proxyRestUri` a
//! data-plane node's login redirect names. It shares one implementation with the gRPC API,
//! so both show the same sessions, and deletions reach the nodes.

use std::hash::{BuildHasher as _, Hasher as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_proto::v1 as pb;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::api::tls::{channel, dev_certificates, install_crypto_provider, tls_table};
use crate::browser::fixtures::{
    AppProxy, COOKIE, logout, qlik_user, resolve, seen_header, with_cookie,
};
use crate::harness::client::{self, get, query_param};
use crate::harness::redis_server::RedisServer;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, eventually};

/// A well-formed anti-CSRF key.
const XRFKEY: &str = "0123456789abcdEF";

/// An answer of the REST surface.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Redis, an upstream, a control plane with TLS, client-certificate roles and the REST
/// surface on, and a node that reaches the control plane over mutual TLS.
struct Env {
    certs: PathBuf,
    _redis: RedisServer,
    upstream: EchoUpstream,
    control: ControlPlane,
    node: DataPlaneNode,
    admin: Channel,
}

impl Env {
    async fn start(name: &str) -> Self {
        Self::start_with(name, AppProxy::new(Vec::<String>::new())).await
    }

    /// As [`start`](Self::start), with the "app" proxy's settings from `app` (its upstream is
    /// the environment's own).
    async fn start_with(name: &str, app: AppProxy) -> Self {
        Self::start_configured(name, app, "").await
    }

    /// As [`start_with`](Self::start_with), with more `[rest]` keys in `rest` (and tables
    /// after them, such as `[tickets]`).
    async fn start_configured(name: &str, app: AppProxy, rest: &str) -> Self {
        install_crypto_provider();
        let certs = dev_certificates(&format!("rest-{name}"));
        let redis = RedisServer::start().await;
        let upstream = EchoUpstream::start("engine").await;
        let config = format!(
            r#"{tls}
            [rest]
            listen = "127.0.0.1:0"
            {rest}
            {proxies}
            [[virtual_proxies]]
            prefix = ""
            "#,
            tls = tls_table(&certs),
            proxies = app.with_node(upstream.node()).on_redis(&redis),
        );
        let control = ControlPlane::start(&config).await;
        let node = DataPlaneNode::start_with(
            &control,
            &format!(
                r#"
                [control_plane]
                endpoints = ["https://localhost:{port}"]
                ca_file = "{dir}/ca.pem"
                cert_file = "{dir}/node.pem"
                key_file = "{dir}/node-key.pem"
                "#,
                port = control.address().port(),
                dir = certs.display(),
            ),
        )
        .await;
        let admin = channel(control.address(), &certs, Some("admin")).await;
        Self {
            certs,
            _redis: redis,
            upstream,
            control,
            node,
            admin,
        }
    }

    fn rest_url(&self, path_and_query: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path_and_query}",
            self.control.rest_address().port()
        )
    }

    /// A session of CORP\\`user` in "app", created over gRPC.
    async fn grpc_session(&self, user: &str) -> pb::CreateSessionResponse {
        self.sessions()
            .create_session(pb::CreateSessionRequest {
                virtual_proxy: "app".into(),
                user: Some(pb::User {
                    user_directory: "CORP".into(),
                    user_id: user.into(),
                    attributes: vec![],
                }),
                session_token: None,
            })
            .await
            .expect("CreateSession")
            .into_inner()
    }

    /// `POST /qps/app/ticket` for CORP\\`user`, for `target_id` if given.
    async fn ticket(&self, user: &str, target_id: Option<&str>) -> Reply {
        let mut body = json!({"UserDirectory": "CORP", "UserId": user});
        if let Some(id) = target_id {
            body["TargetId"] = id.into();
        }
        self.qps(Method::POST, "/qps/app/ticket", body).await
    }

    /// Waits until the node refuses `cookie` (a revocation reached it).
    async fn await_refused(&self, cookie: &str, what: &str) {
        let url = self.node.url("/app/hub");
        eventually(
            &format!("the node to refuse {what}"),
            Duration::from_secs(10),
            || {
                let (url, cookie) = (url.clone(), cookie.to_owned());
                async move { (get(&url, &with_cookie(&cookie)).await.status != 200).then_some(()) }
            },
        )
        .await;
    }

    /// The `targetId` of the login redirect the node sends a browser at `path` to.
    async fn login_target(&self, path: &str) -> String {
        let first = get(&self.node.url(path), &[]).await;
        let module_url = first.location().expect("a login redirect").to_owned();
        query_param(&module_url, "targetId").expect("targetId")
    }

    /// A call as a QPS client makes it: admin certificate, equal Xrfkey in query and header.
    async fn qps(&self, method: Method, path: &str, body: Value) -> Reply {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = self.rest_url(&format!("{path}{separator}xrfkey={XRFKEY}"));
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        call(
            &self.certs,
            Some("admin"),
            method,
            &url,
            &[("X-Qlik-Xrfkey", XRFKEY)],
            &body,
        )
        .await
    }

    fn sessions(&self) -> pb::session_service_client::SessionServiceClient<Channel> {
        pb::session_service_client::SessionServiceClient::new(self.admin.clone())
    }
}

/// One HTTPS request on a fresh connection, with the client certificate `client` if given.
async fn call(
    certs: &Path,
    client: Option<&str>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let uri: http::Uri = url.parse().expect("a URL");
    let port = uri.port_u16().expect("a port");
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(certs.join(format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(certs.join(format!("{name}-key.pem"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect to the REST surface");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the REST surface");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", format!("localhost:{port}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply { status, body }
}

/// A caller-chosen session id with plenty of entropy: 64 hex digits from std's random keys.
fn random_session_id() -> String {
    (0..4)
        .map(|i| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(i);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

/// Property names of a JSON object, to check the casing of answers.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_qps_module_gets_a_ticket_at_proxy_rest_uri_and_the_browser_logs_in() {
    let env = Env::start("ticket-flow").await;
    let url = env.node.url("/app/hub/stream?view=list");

    // The node sends the browser to the module, naming the REST surface as proxyRestUri.
    let first = get(&url, &[]).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let module_url = first.location().expect("Location").to_owned();
    let rest_uri = query_param(&module_url, "proxyRestUri").expect("proxyRestUri");
    assert_eq!(rest_uri, env.rest_url("/qps/app/"));
    let target_id = query_param(&module_url, "targetId").expect("targetId");

    // The module posts to proxyRestUri + "ticket", in camelCase as some modules do.
    let answer = call(
        &env.certs,
        Some("admin"),
        Method::POST,
        &format!("{rest_uri}ticket?xrfkey={XRFKEY}"),
        &[("X-Qlik-Xrfkey", XRFKEY)],
        &json!({
            "userDirectory": "CORP",
            "userId": "alice",
            "attributes": [{"Group": "Sales"}, {"email": "a@example.com"}, {"Group": "EMEA"}],
            "targetId": target_id,
        })
        .to_string(),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let ticket = answer.json();
    assert_eq!(
        keys(&ticket),
        [
            "Attributes",
            "TargetUri",
            "Ticket",
            "UserDirectory",
            "UserId"
        ],
        "PascalCase out"
    );
    assert_eq!(ticket["UserDirectory"], "CORP");
    assert_eq!(ticket["UserId"], "alice");
    assert_eq!(
        ticket["Attributes"],
        json!([{"Group": "Sales"}, {"email": "a@example.com"}, {"Group": "EMEA"}]),
        "attributes keep their order and repeats"
    );
    assert_eq!(ticket["TargetUri"], url.as_str());

    // The browser follows TargetUri with the ticket, gets the cookie, and is served as alice.
    let target = ticket["TargetUri"].as_str().unwrap();
    let separator = if target.contains('?') { '&' } else { '?' };
    let ticket_text = ticket["Ticket"].as_str().unwrap();
    let landed = get(
        &format!(
            "{target}{separator}qlikTicket={}",
            client::encode(ticket_text)
        ),
        &[],
    )
    .await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(resolve(&url, landed.location().unwrap()), url);
    let cookie = landed.cookie_pair(COOKIE).expect("the session cookie");
    let page = get(&url, &with_cookie(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        seen_header(&page.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert_eq!(env.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_missing_wrong_or_malformed_xrfkey_is_refused() {
    let env = Env::start("xrfkey").await;
    let body = json!({"UserDirectory": "CORP", "UserId": "alice"}).to_string();
    let path = "/qps/app/ticket";
    let cases: [(String, Vec<(&str, &str)>); 6] = [
        (path.to_owned(), vec![("X-Qlik-Xrfkey", XRFKEY)]),
        (format!("{path}?xrfkey={XRFKEY}"), vec![]),
        (
            format!("{path}?xrfkey={XRFKEY}"),
            vec![("X-Qlik-Xrfkey", "0123456789abcdEG")],
        ),
        (
            format!("{path}?xrfkey=0123456789abcde"),
            vec![("X-Qlik-Xrfkey", "0123456789abcde")],
        ),
        (
            format!("{path}?xrfkey=0123456789abcd-F"),
            vec![("X-Qlik-Xrfkey", "0123456789abcd-F")],
        ),
        (
            format!("{path}?xrfkey={XRFKEY}&Xrfkey={XRFKEY}"),
            vec![("X-Qlik-Xrfkey", XRFKEY)],
        ),
    ];
    for (path, headers) in cases {
        let reply = call(
            &env.certs,
            Some("admin"),
            Method::POST,
            &env.rest_url(&path),
            &headers,
            &body,
        )
        .await;
        assert_eq!(reply.status, 403, "{path} {headers:?}: {}", reply.text());
        assert!(
            reply.text().to_lowercase().contains("xrfkey"),
            "{}",
            reply.text()
        );
    }
    // The parameter's name in any case; the default virtual proxy has no prefix.
    let reply = call(
        &env.certs,
        Some("admin"),
        Method::POST,
        &env.rest_url(&format!("/qps/ticket?XrfKey={XRFKEY}")),
        &[("x-qlik-xrfkey", XRFKEY)],
        &body,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert!(reply.json().get("TargetUri").is_none(), "no target, no URI");
}

#[tokio::test]
async fn only_admin_certificates_may_call() {
    let env = Env::start("roles").await;
    let body = json!({"UserDirectory": "CORP", "UserId": "alice"}).to_string();
    let url = env.rest_url(&format!("/qps/app/ticket?xrfkey={XRFKEY}"));
    let headers = [("X-Qlik-Xrfkey", XRFKEY)];
    for (client, expected) in [(None, 403), (Some("node"), 403), (Some("admin"), 201)] {
        let reply = call(&env.certs, client, Method::POST, &url, &headers, &body).await;
        assert_eq!(reply.status, expected, "{client:?}: {}", reply.text());
        if expected == 403 {
            assert!(reply.text().contains("certificate"), "{}", reply.text());
        }
    }
}

#[tokio::test]
async fn rest_and_grpc_show_the_same_sessions_and_rest_deletes_reach_the_node() {
    let env = Env::start("views").await;
    let mut grpc = env.sessions();

    // REST create with a caller-chosen id (a portal setting the cookie itself).
    let session_id = random_session_id();
    let created = env
        .qps(
            Method::POST,
            "/qps/app/session",
            json!({"userdirectory": "CORP", "userid": "bob",
                   "attributes": [{"Group": "Ops"}], "sessionId": session_id}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    assert_eq!(
        keys(&created),
        [
            "Attributes",
            "Handle",
            "SessionId",
            "UserDirectory",
            "UserId",
            "VirtualProxy"
        ]
    );
    assert_eq!(created["SessionId"], session_id.as_str());
    let handle = created["Handle"].as_str().unwrap().to_owned();

    // gRPC sees the same session, by token and in the user's list.
    let by_token = grpc
        .get_session(pb::GetSessionRequest {
            session: Some(pb::SessionSelector {
                by: Some(pb::session_selector::By::SessionToken(session_id.clone())),
            }),
        })
        .await
        .expect("GetSession")
        .into_inner()
        .session
        .unwrap();
    assert_eq!(by_token.handle, handle);
    assert_eq!(by_token.virtual_proxy, "app");
    let user = by_token.user.unwrap();
    assert_eq!(
        (user.user_directory.as_str(), user.user_id.as_str()),
        ("CORP", "bob")
    );
    assert_eq!(user.attributes.len(), 1);
    assert_eq!(
        (
            user.attributes[0].name.as_str(),
            user.attributes[0].value.as_str()
        ),
        ("Group", "Ops")
    );
    let listed = grpc
        .list_user_sessions(pb::ListUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "BOB".into(),
            virtual_proxy: Some("app".into()),
        })
        .await
        .expect("ListUserSessions")
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].handle, handle);

    // The reverse: created over gRPC, seen over REST by token, by handle and in the list.
    let other = env.grpc_session("bob").await;
    let other_handle = other.session.unwrap().handle;
    let seen = env
        .qps(
            Method::GET,
            &format!("/qps/app/session/{}", other.session_token),
            Value::Null,
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.json()["Handle"], other_handle.as_str());
    assert_eq!(seen.json()["UserId"], "bob");
    let seen = env
        .qps(
            Method::GET,
            &format!("/qps/app/session/{other_handle}"),
            Value::Null,
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(
        seen.json()["SessionId"],
        other_handle.as_str(),
        "named by its handle, a session shows the handle as its SessionId, never the token"
    );
    let list = env
        .qps(Method::GET, "/qps/app/user/CORP/bob", Value::Null)
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let mut handles: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Handle"].as_str().unwrap().to_owned())
        .collect();
    handles.sort();
    let mut expected = vec![handle.clone(), other_handle.clone()];
    expected.sort();
    assert_eq!(handles, expected);

    // The node accepts the caller-chosen id as a cookie; a REST delete makes it refuse it.
    let cookie = format!("{COOKIE}={session_id}");
    let page = get(&env.node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let deleted = env
        .qps(
            Method::DELETE,
            &format!("/qps/app/session/{session_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["Handle"], handle.as_str());
    let url = env.node.url("/app/hub");
    eventually(
        "the node to refuse the deleted session",
        Duration::from_secs(10),
        || {
            let (url, cookie) = (url.clone(), cookie.clone());
            async move { (get(&url, &with_cookie(&cookie)).await.status != 200).then_some(()) }
        },
    )
    .await;
    let gone = env
        .qps(
            Method::GET,
            &format!("/qps/app/session/{session_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(gone.status, 404, "{}", gone.text());
}

#[tokio::test]
async fn session_and_user_endpoints_answer_clearly() {
    let env = Env::start("endpoints").await;

    // Unknown sessions and virtual proxies: 404.
    for (method, path) in [
        (
            Method::GET,
            "/qps/app/session/nosuchsession0000000000000000000000",
        ),
        (
            Method::DELETE,
            "/qps/app/session/nosuchsession0000000000000000000000",
        ),
        (Method::GET, "/qps/app/session/AAAAAAAAAAAAAAAAAAAAAA"),
        (Method::GET, "/qps/nope/user/CORP/alice"),
        (Method::POST, "/qps/app/nothing"),
    ] {
        let reply = env.qps(method.clone(), path, Value::Null).await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text());
    }
    let reply = env
        .qps(
            Method::POST,
            "/qps/nope/ticket",
            json!({"UserDirectory": "C", "UserId": "a"}),
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());

    // Bad input: 400 with a reason; a wrong method: 405.
    for body in [
        json!("just a string"),
        json!({"UserId": "a"}),
        json!({"UserDirectory": "C\\D", "UserId": "a"}),
    ] {
        let reply = env.qps(Method::POST, "/qps/app/ticket", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert!(!reply.text().trim().is_empty());
    }
    let weak = env
        .qps(
            Method::POST,
            "/qps/app/session",
            json!({"UserDirectory": "C", "UserId": "a", "SessionId": "a".repeat(40)}),
        )
        .await;
    assert_eq!(weak.status, 400, "{}", weak.text());
    assert!(weak.text().contains("random"), "{}", weak.text());
    let reply = env.qps(Method::GET, "/qps/app/ticket", Value::Null).await;
    assert_eq!(reply.status, 405, "{}", reply.text());

    // A user with two sessions: listed, then logged out everywhere in the proxy.
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let created = env
            .qps(
                Method::POST,
                "/qps/app/session",
                json!({"UserDirectory": "CORP", "UserId": "carol"}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        cookies.push(format!(
            "{COOKIE}={}",
            created.json()["SessionId"].as_str().unwrap()
        ));
    }
    let listed = env
        .qps(Method::GET, "/qps/app/user/CORP/carol", Value::Null)
        .await;
    assert_eq!(
        listed.json().as_array().map(Vec::len),
        Some(2),
        "{}",
        listed.text()
    );
    for cookie in &cookies {
        assert_eq!(
            get(&env.node.url("/app/x"), &with_cookie(cookie))
                .await
                .status,
            200
        );
    }
    let logged_out = env
        .qps(Method::DELETE, "/qps/app/user/corp/CAROL", Value::Null)
        .await;
    assert_eq!(logged_out.status, 200, "{}", logged_out.text());
    assert_eq!(logged_out.json().as_array().map(Vec::len), Some(2));
    for cookie in &cookies {
        env.await_refused(cookie, "a logged-out session").await;
    }
    let listed = env
        .qps(Method::GET, "/qps/app/user/CORP/carol", Value::Null)
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), json!([]));

    // Error reports are accepted (and logged).
    let reply = env
        .qps(
            Method::POST,
            "/qps/error",
            json!({"message": "module failed"}),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
}

/// A plain-HTTP call to a REST surface without TLS, with a valid Xrfkey.
async fn plain_qps(address: SocketAddr, method: Method, path: &str, body: Value) -> Reply {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let reply = client::request(
        method,
        &format!("http://{address}{path}?xrfkey={XRFKEY}"),
        &[("X-Qlik-Xrfkey", XRFKEY)],
        body,
    )
    .await;
    Reply {
        status: reply.status,
        body: reply.body,
    }
}

#[tokio::test]
async fn on_loopback_without_tls_the_surface_is_open_and_caps_and_conflicts_map_to_http() {
    let upstream = EchoUpstream::start("engine").await;
    let config = format!(
        "[rest]\nlisten = \"127.0.0.1:0\"\n{}\n[[virtual_proxies]]\nprefix = \"capped\"\nmax_sessions_per_user = 1\n",
        AppProxy::new([upstream.node()]).toml()
    );
    let control = ControlPlane::start(&config).await;
    let node = DataPlaneNode::start(&control).await;
    let rest = control.rest_address();

    // Nodes name the plain-HTTP surface in their login redirects.
    let first = get(&node.url("/app/hub"), &[]).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let module_url = first.location().expect("Location");
    assert_eq!(
        query_param(module_url, "proxyRestUri").as_deref(),
        Some(format!("http://{rest}/qps/app/").as_str())
    );

    // No certificate needed in development; the Xrfkey still is.
    let user = json!({"UserDirectory": "CORP", "UserId": "dave"});
    let reply = plain_qps(rest, Method::POST, "/qps/capped/session", user.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let refused = client::post(
        &format!("http://{rest}/qps/capped/ticket"),
        &[],
        &user.to_string(),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    // One session per user here: the second is refused, as QPS refuses a sixth.
    let reply = plain_qps(rest, Method::POST, "/qps/capped/session", user.clone()).await;
    assert_eq!(reply.status, 429, "{}", reply.text());

    // A session id a live session holds is a conflict.
    let id = random_session_id();
    let with_id = json!({"UserDirectory": "CORP", "UserId": "erin", "SessionId": id});
    let reply = plain_qps(rest, Method::POST, "/qps/app/session", with_id.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = plain_qps(rest, Method::POST, "/qps/app/session", with_id).await;
    assert_eq!(reply.status, 409, "{}", reply.text());

    // Over-large bodies are refused before they are parsed.
    let huge = json!({"UserDirectory": "CORP", "UserId": "x".repeat(300 * 1024)});
    let reply = plain_qps(rest, Method::POST, "/qps/app/ticket", huge).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
}

/// Whether `text` is a GUID as QPS writes them: `8-4-4-4-12` hex digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|group| group.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The JSON type of every field of `value`, all the way down: `"string"`, a list of its items'
/// shapes, an object of its fields' shapes. What the QPS documentation's shapes are compared
/// with, field by field.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, field)| (name.clone(), shape(field)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "boolean".into(),
        Value::Null => "null".into(),
    }
}

/// The attributes sent with every request of the comparison, in QPS's form: a list of
/// one-key objects, a key repeated.
fn sent_attributes() -> Value {
    json!([{"Group": "Sales"}, {"email": "d@example.com"}, {"Group": "EMEA"}])
}

/// A ticket as the QPS documentation lists it: `{UserDirectory, UserId, Attributes, Ticket,
/// TargetUri}`, `TargetUri` only for a known target. Gatehouse adds nothing.
fn qps_ticket_shape(with_target: bool) -> Value {
    let mut expected = json!({
        "UserDirectory": "string",
        "UserId": "string",
        "Attributes": shape(&sent_attributes()),
        "Ticket": "string",
    });
    if with_target {
        expected["TargetUri"] = "string".into();
    }
    expected
}

/// A session as the QPS documentation lists it, `{UserDirectory, UserId, Attributes,
/// SessionId}`, plus the two fields Gatehouse adds (API.md, "The QPS-compatible REST API",
/// names them): `Handle` and `VirtualProxy`.
fn qps_session_shape() -> Value {
    let mut expected = json!({
        "UserDirectory": "string",
        "UserId": "string",
        "Attributes": shape(&sent_attributes()),
        "SessionId": "string",
    });
    expected["Handle"] = "string".into();
    expected["VirtualProxy"] = "string".into();
    expected
}

/// Checks one answer against its documented shape and the user it is about.
fn assert_shaped(answer: &Value, expected: &Value, what: &str) {
    assert_eq!(shape(answer), *expected, "{what}: {answer}");
    assert_eq!(answer["UserDirectory"], "CORP", "{what}");
    assert_eq!(answer["UserId"], "dana", "{what}");
}

#[tokio::test]
async fn every_rest_answer_has_the_fields_the_qps_documentation_lists() {
    let env = Env::start("shapes").await;
    let dana = |extra: Value| {
        let mut body =
            json!({"UserDirectory": "CORP", "UserId": "dana", "Attributes": sent_attributes()});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };

    // POST ticket, for a known target and for none.
    let target_id = env.login_target("/app/hub").await;
    let ticket = env
        .qps(
            Method::POST,
            "/qps/app/ticket",
            dana(json!({"TargetId": target_id})),
        )
        .await;
    assert_eq!(ticket.status, 201, "{}", ticket.text());
    assert_shaped(&ticket.json(), &qps_ticket_shape(true), "ticket");
    assert_eq!(ticket.json()["Attributes"], sent_attributes());
    let untargeted = env
        .qps(Method::POST, "/qps/app/ticket", dana(json!({})))
        .await;
    assert_shaped(
        &untargeted.json(),
        &qps_ticket_shape(false),
        "ticket without a target",
    );

    // POST session with a caller-chosen SessionId, then GET and DELETE it by that id.
    let chosen = random_session_id();
    let created = env
        .qps(
            Method::POST,
            "/qps/app/session",
            dana(json!({"SessionId": chosen})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let session_shape = qps_session_shape();
    assert_shaped(&created.json(), &session_shape, "POST session");
    assert_eq!(created.json()["SessionId"], chosen.as_str());
    assert_eq!(created.json()["Attributes"], sent_attributes());
    let path = format!("/qps/app/session/{chosen}");
    let shown = env.qps(Method::GET, &path, Value::Null).await;
    assert_shaped(&shown.json(), &session_shape, "GET session");
    assert_eq!(shown.json()["SessionId"], chosen.as_str());

    // GET user lists it by its handle.
    let listed = env
        .qps(Method::GET, "/qps/app/user/CORP/dana", Value::Null)
        .await;
    assert_eq!(shape(&listed.json()), json!([session_shape]), "GET user");
    assert_eq!(listed.json()[0]["SessionId"], listed.json()[0]["Handle"]);
    assert_eq!(listed.json()[0]["VirtualProxy"], "app");

    let deleted = env.qps(Method::DELETE, &path, Value::Null).await;
    assert_shaped(&deleted.json(), &session_shape, "DELETE session");

    // A generated SessionId, then DELETE user.
    let generated = env
        .qps(Method::POST, "/qps/app/session", dana(json!({})))
        .await;
    assert_shaped(
        &generated.json(),
        &session_shape,
        "POST session, id generated",
    );
    let logged_out = env
        .qps(Method::DELETE, "/qps/app/user/CORP/dana", Value::Null)
        .await;
    assert_eq!(
        shape(&logged_out.json()),
        json!([session_shape]),
        "DELETE user"
    );

    // POST error: no body, as QPS.
    let reported = env
        .qps(
            Method::POST,
            "/qps/error",
            json!({"message": "module failed"}),
        )
        .await;
    assert_eq!(reported.status, 204);
    assert!(reported.body.is_empty());

    // The Personal API on the node: QPS's camelCase shapes.
    let inactive = get(&env.node.url("/app/qps/user"), &[]).await;
    assert_eq!(inactive.json(), json!({"session": "inactive"}));
    let hub = env.node.url("/app/hub");
    let with_target = get(
        &env.node
            .url(&format!("/app/qps/user?targetUri={}", client::encode(&hub))),
        &[],
    )
    .await;
    assert_eq!(
        shape(&with_target.json()),
        json!({"session": "string", "loginUri": "string"})
    );
    let session = env.grpc_session("dana").await;
    let cookie = format!("{COOKIE}={}", session.session_token);
    let me = get(&env.node.url("/app/qps/user"), &with_cookie(&cookie)).await;
    assert_eq!(
        shape(&me.json()),
        json!({"userDirectory": "string", "userId": "string", "userName": "string", "logoutUri": "string"})
    );
    assert_eq!(me.json()["userDirectory"], "CORP");
    assert_eq!(me.json()["userId"], "dana");
    // QPS documents no body for the logout; Gatehouse says whose session ended.
    let ended = logout(&env.node, &cookie).await;
    assert_eq!(
        ended.json(),
        json!({"session": "ended", "userDirectory": "CORP", "userId": "dana"})
    );
}

#[tokio::test]
async fn listed_sessions_are_deleted_by_their_session_id_as_qlik_cli_does() {
    let env = Env::start("session-ids").await;
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let created = env.grpc_session("carol").await;
        cookies.push((
            format!("{COOKIE}={}", created.session_token),
            created.session_token,
        ));
    }
    // Get-QlikSession | Remove-QlikSession: list, then delete each by its SessionId.
    let listed = env
        .qps(Method::GET, "/qps/app/user/CORP/carol", Value::Null)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2);
    for session in listed {
        let id = session["SessionId"].as_str().expect("SessionId");
        assert_eq!(
            session["Handle"], id,
            "a listing's SessionId is the public handle"
        );
        assert!(
            cookies.iter().all(|(_, token)| token != id),
            "a listing never shows a session token"
        );
        let deleted = env
            .qps(
                Method::DELETE,
                &format!("/qps/app/session/{id}"),
                Value::Null,
            )
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        assert_eq!(deleted.json()["SessionId"], id);
    }
    for (cookie, _) in &cookies {
        env.await_refused(cookie, "a deleted session").await;
    }
    let empty = env
        .qps(Method::GET, "/qps/app/user/CORP/carol", Value::Null)
        .await;
    assert_eq!(empty.json(), json!([]));
}

#[tokio::test]
async fn target_ids_are_guids_and_tickets_are_letters_and_digits() {
    let env = Env::start("id-shapes").await;
    let mut tickets = std::collections::HashSet::new();
    for _ in 0..5 {
        let target_id = env.login_target("/app/hub").await;
        assert!(is_guid(&target_id), "{target_id}");
        let answer = env.ticket("erin", Some(&target_id)).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let ticket = answer.json()["Ticket"].as_str().unwrap().to_owned();
        assert!(
            ticket.len() == 32 && ticket.bytes().all(|byte| byte.is_ascii_alphanumeric()),
            "{ticket}"
        );
        // A module that parsed the GUID and wrote it back in capitals names the same target.
        let shouted = env
            .ticket("erin", Some(&target_id.to_ascii_uppercase()))
            .await;
        assert_eq!(
            shouted.json()["TargetUri"],
            env.node.url("/app/hub").as_str(),
            "{}",
            shouted.text()
        );
        // Still a working ticket.
        let target = answer.json()["TargetUri"].as_str().unwrap().to_owned();
        let landed = get(&format!("{target}?qlikTicket={ticket}"), &[]).await;
        assert_eq!(landed.status, 302, "{}", landed.text());
        assert!(landed.cookie_pair(COOKIE).is_some());
        tickets.insert(ticket);
    }
    assert_eq!(tickets.len(), 5);
}

#[tokio::test]
async fn a_ticket_for_an_unknown_or_missing_target_lands_on_the_default_uri() {
    let landing = "http://127.0.0.1/app/hub/landing";
    let env = Env::start_with(
        "default-target",
        AppProxy::new(Vec::<String>::new()).key(&format!("default_target_uri = \"{landing}\"")),
    )
    .await;
    let unknown = "0b0c2f41-6a55-4c1e-9a5d-3f4b7d8e9c10";
    for body in [
        json!({"UserDirectory": "CORP", "UserId": "fay", "TargetId": unknown}),
        json!({"UserDirectory": "CORP", "UserId": "fay"}),
    ] {
        let answer = env.qps(Method::POST, "/qps/app/ticket", body.clone()).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        assert_eq!(answer.json()["TargetUri"], landing, "{body}");
    }
    // A known target still wins.
    let target_id = env.login_target("/app/hub/sheet").await;
    let answer = env.ticket("fay", Some(&target_id)).await;
    assert_eq!(
        answer.json()["TargetUri"],
        env.node.url("/app/hub/sheet").as_str()
    );
    // The module lands the browser on the default with the ticket, and it logs in there.
    let fresh = env.ticket("fay", Some(unknown)).await.json();
    let ticket = fresh["Ticket"].as_str().unwrap();
    let landed = get(
        &env.node
            .url(&format!("/app/hub/landing?qlikTicket={ticket}")),
        &[],
    )
    .await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(landed.location(), Some("/app/hub/landing"));
    let cookie = landed.cookie_pair(COOKIE).expect("the session cookie");
    let page = get(&env.node.url("/app/hub/landing"), &with_cookie(&cookie)).await;
    assert_eq!(
        seen_header(&page.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "fay").as_str())
    );
    // Without a default, QPS's answer: no TargetUri.
    let plain = Env::start("no-default-target").await;
    let answer = plain.ticket("fay", Some(unknown)).await;
    assert!(
        answer.json().get("TargetUri").is_none(),
        "{}",
        answer.text()
    );
}

#[tokio::test]
async fn a_ticket_for_an_expired_target_lands_on_the_default_uri() {
    let landing = "http://127.0.0.1/app/hub/landing";
    let env = Env::start_configured(
        "expired-target",
        AppProxy::new(Vec::<String>::new()).key(&format!("default_target_uri = \"{landing}\"")),
        "[tickets]\ntarget_ttl = \"1s\"",
    )
    .await;
    let target_id = env.login_target("/app/hub/sheet").await;
    // Fresh, the target is where the browser goes; once Redis has expired it, the default.
    let fresh = env.ticket("gil", Some(&target_id)).await;
    assert_eq!(
        fresh.json()["TargetUri"],
        env.node.url("/app/hub/sheet").as_str()
    );
    let expired = eventually("the target to expire", Duration::from_secs(5), || async {
        let answer = env.ticket("gil", Some(&target_id)).await.json();
        (answer["TargetUri"] != env.node.url("/app/hub/sheet").as_str()).then_some(answer)
    })
    .await;
    assert_eq!(expired["TargetUri"], landing, "{expired}");
}

#[tokio::test]
async fn proxy_rest_uri_names_the_rest_surface_where_modules_reach_it() {
    // As behind the Kubernetes Service control-plane-qps, port 4243.
    let env = Env::start_configured(
        "public-url",
        AppProxy::new(Vec::<String>::new()),
        "public_url = \"https://control-plane-qps:4243\"",
    )
    .await;
    let first = get(&env.node.url("/app/hub"), &[]).await;
    let module_url = first.location().expect("a login redirect").to_owned();
    assert_eq!(
        query_param(&module_url, "proxyRestUri").as_deref(),
        Some("https://control-plane-qps:4243/qps/app/")
    );
    // The surface itself still answers where it listens.
    let answer = env
        .qps(
            Method::POST,
            "/qps/app/ticket",
            json!({"UserDirectory": "CORP", "UserId": "gus"}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
}

#[tokio::test]
async fn rest_on_the_grpc_port_is_a_configuration_error_naming_both_keys() {
    let binary = crate::harness::processes::binary("control-plane");
    let check = |text: &str, name: &str| {
        let file = std::env::temp_dir().join(format!(
            "gatehouse-rest-port-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&file, text).expect("write the configuration");
        let output = std::process::Command::new(&binary)
            .arg("--config")
            .arg(&file)
            .arg("--check-config")
            .env_remove("GATEHOUSE_LISTEN")
            .output()
            .expect("run the control plane");
        let _ = std::fs::remove_file(&file);
        output
    };
    // gRPC's default address is 127.0.0.1:4243, where QPS modules look for REST.
    let clash = check("[rest]\nlisten = \"127.0.0.1:4243\"\n", "clash");
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert_eq!(clash.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("listen (127.0.0.1:4243) and rest.listen (127.0.0.1:4243)")
            && stderr.contains("move gRPC"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    // With gRPC moved, REST may have 4243.
    let moved = check(
        "listen = \"127.0.0.1:4250\"\n[rest]\nlisten = \"127.0.0.1:4243\"\n",
        "moved",
    );
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
}
