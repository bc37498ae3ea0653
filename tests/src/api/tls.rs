//! TLS and mutual TLS, with certificates made by `deploy/dev-ca.sh`: who may call which
//! control-plane service, the data plane's TLS termination (ALPN h2, certificate rotation
//! without a restart, Secure cookies), and nodes reaching the control plane over mTLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use gatehouse_data_plane::BoundNode;
use gatehouse_proto::v1 as pb;
use http_body_util::{BodyExt as _, Empty};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::harness::{ControlPlane, eventually};

pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A fresh dev CA and certificates from the documented script.
pub(crate) fn dev_certificates(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-tls-{}-{name}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-ca.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run deploy/dev-ca.sh (needs openssl)");
    assert!(status.success(), "deploy/dev-ca.sh failed");
    dir
}

/// The control plane's `[tls]` table with the dev CA's certificates and roles.
pub(crate) fn tls_table(certs: &Path) -> String {
    format!(
        r#"
        [tls]
        cert_file = "{dir}/control-plane.pem"
        key_file = "{dir}/control-plane-key.pem"
        client_ca_file = "{dir}/ca.pem"
        [tls.roles]
        admin = ["admin.gatehouse"]
        node = ["node.gatehouse"]
        "#,
        dir = certs.display()
    )
}

fn control_plane_toml(certs: &Path) -> String {
    format!(
        r#"{tls}
        [[virtual_proxies]]
        prefix = ""
        anonymous = "always"
        [[virtual_proxies]]
        prefix = "app"
        "#,
        tls = tls_table(certs)
    )
}

/// A channel to the control plane over TLS, with a client certificate when `client` names one.
pub(crate) async fn channel(address: SocketAddr, certs: &Path, client: Option<&str>) -> Channel {
    let read = |file: &str| std::fs::read(certs.join(file)).expect("read certificate");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if let Some(name) = client {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{name}.pem")),
            read(&format!("{name}-key.pem")),
        ));
    }
    Endpoint::from_shared(format!("https://localhost:{}", address.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection to the control plane")
}

fn user(id: &str) -> Option<pb::User> {
    Some(pb::User {
        user_directory: "CORP".into(),
        user_id: id.into(),
        attributes: vec![],
    })
}

#[tokio::test]
async fn each_service_admits_only_its_role() {
    install_crypto_provider();
    let certs = dev_certificates("roles");
    let control = ControlPlane::start(&control_plane_toml(&certs)).await;
    let address = control.address();
    let list = pb::ListSessionsRequest::default();

    // No client certificate: the admin APIs refuse.
    let anonymous = channel(address, &certs, None).await;
    let mut sessions = pb::session_service_client::SessionServiceClient::new(anonymous.clone());
    let status = sessions.list_sessions(list.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut tickets =
        pb::authentication_service_client::AuthenticationServiceClient::new(anonymous.clone());
    let request = pb::RequestTicketRequest {
        virtual_proxy: "app".into(),
        user: user("alice"),
        target_id: None,
    };
    assert_eq!(
        tickets
            .request_ticket(request.clone())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // A node certificate: the node API yes, the admin APIs no.
    let node = channel(address, &certs, Some("node")).await;
    let status = pb::session_service_client::SessionServiceClient::new(node.clone())
        .list_sessions(list.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let target = pb::CreateTargetRequest {
        virtual_proxy: "app".into(),
        target_uri: "https://localhost/app/hub".into(),
    };
    pb::node_service_client::NodeServiceClient::new(node.clone())
        .create_target(target.clone())
        .await
        .expect("a node certificate may call the node API");

    // An admin certificate: the admin APIs yes, the node API no.
    let admin = channel(address, &certs, Some("admin")).await;
    let mut sessions = pb::session_service_client::SessionServiceClient::new(admin.clone());
    let created = sessions
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".into(),
            user: user("alice"),
            session_token: None,
        })
        .await
        .expect("an admin certificate may create sessions")
        .into_inner();
    pb::authentication_service_client::AuthenticationServiceClient::new(admin.clone())
        .request_ticket(request)
        .await
        .expect("an admin certificate may request tickets");
    let status = pb::node_service_client::NodeServiceClient::new(admin.clone())
        .create_target(target)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The Personal API needs no certificate, only the session's token.
    let mut personal = pb::personal_service_client::PersonalServiceClient::new(anonymous);
    let mut who = tonic::Request::new(pb::GetCurrentUserRequest::default());
    who.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", created.session_token).parse().unwrap(),
    );
    let me = personal
        .get_current_user(who)
        .await
        .expect("Personal API with a token")
        .into_inner();
    assert_eq!(me.session.unwrap().user.unwrap().user_id, "alice");
    control.stop().await;
}

#[tokio::test]
async fn plain_grpc_to_a_tls_control_plane_fails() {
    install_crypto_provider();
    let certs = dev_certificates("plain");
    let control = ControlPlane::start(&control_plane_toml(&certs)).await;
    let mut sessions = pb::session_service_client::SessionServiceClient::new(control.channel());
    assert!(
        sessions
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .is_err()
    );
    control.stop().await;
}

/// A data-plane node terminating TLS with a copy of the dev certificate (so the test can
/// rotate it), talking to the control plane over mutual TLS.
struct TlsNode {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    served: PathBuf,
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_node(control: &ControlPlane, certs: &Path) -> TlsNode {
    let served = certs.join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::copy(certs.join("data-plane.pem"), served.join("cert.pem")).unwrap();
    std::fs::copy(certs.join("data-plane-key.pem"), served.join("key.pem")).unwrap();
    let config = gatehouse_data_plane::Config::from_toml_str(&format!(
        r#"
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [control_plane]
        endpoints = ["https://localhost:{port}"]
        ca_file = "{dir}/ca.pem"
        cert_file = "{dir}/node.pem"
        key_file = "{dir}/node-key.pem"
        [tls]
        reload_interval = "100ms"
        [[tls.certificates]]
        cert_file = "{served}/cert.pem"
        key_file = "{served}/key.pem"
        "#,
        port = control.address().port(),
        dir = certs.display(),
        served = served.display(),
    ))
    .expect("node configuration");
    let node = BoundNode::bind(config).await.expect("node binds");
    let address = node.local_addr().unwrap();
    let state = node.state();
    let task = tokio::spawn(node.serve(std::future::pending()));
    eventually(
        "the node to receive its configuration over mTLS",
        Duration::from_secs(10),
        || {
            let ready = state.is_ready();
            async move { ready.then_some(()) }
        },
    )
    .await;
    TlsNode {
        address,
        task,
        served,
    }
}

/// A TLS connection to the node offering `h2` and `http/1.1`.
async fn tls_connect(
    address: SocketAddr,
    certs: &Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the node")
}

/// The certificate the node presented (DER): a reissued certificate differs.
fn presented(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn the_node_negotiates_h2_and_serves_rotated_certificates_without_restart() {
    install_crypto_provider();
    let certs = dev_certificates("rotation");
    let control = ControlPlane::start(&control_plane_toml(&certs)).await;
    let node = tls_node(&control, &certs).await;

    let first = tls_connect(node.address, &certs).await;
    assert_eq!(first.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let before = presented(&first);

    reissue_server_certificate(&certs, &node.served);

    let rotated = eventually(
        "the node to serve the new certificate",
        Duration::from_secs(10),
        || {
            let (address, certs, before) = (node.address, certs.clone(), before.clone());
            async move {
                let stream = tls_connect(address, &certs).await;
                let now = presented(&stream);
                (now != before).then_some(now)
            }
        },
    )
    .await;
    assert_ne!(rotated, before);
    control.stop().await;
}

/// Signs a new data-plane certificate with the existing CA and writes it over the served one.
fn reissue_server_certificate(certs: &Path, served: &Path) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(certs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "renewed-key.pem",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "renewed-key.pem",
        "-subj",
        "/CN=renewed",
        "-out",
        "renewed.csr",
    ]);
    std::fs::write(
        certs.join("renewed.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "renewed.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "renewed.ext",
        "-out",
        "renewed.pem",
    ]);
    // Key first, then certificate: a reload between the two copies fails and is retried.
    std::fs::copy(certs.join("renewed-key.pem"), served.join("key.pem")).unwrap();
    std::fs::copy(certs.join("renewed.pem"), served.join("cert.pem")).unwrap();
}

#[tokio::test]
async fn cookies_are_secure_over_tls() {
    install_crypto_provider();
    let certs = dev_certificates("cookies");
    let control = ControlPlane::start(&control_plane_toml(&certs)).await;
    let node = tls_node(&control, &certs).await;

    // The default proxy admits everyone anonymously: the first request creates a session.
    let response = tls_get(node.address, &certs, "/").await;
    let cookie = response
        .headers()
        .get("set-cookie")
        .expect("an anonymous session is set")
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.into_body().collect().await;
    assert!(cookie.starts_with("X-Qlik-Session="), "{cookie}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    control.stop().await;
}

/// GET `path` from the node over TLS (h2 or HTTP/1.1, whichever it picks), as `localhost`.
async fn tls_get(
    address: SocketAddr,
    certs: &Path,
    path: &str,
) -> http::Response<hyper::body::Incoming> {
    let stream = tls_connect(address, certs).await;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
    let io = hyper_util::rt::TokioIo::new(stream);
    if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(format!("https://localhost{path}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", "localhost")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    }
}

/// Over TLS the OpenID login-binding cookie has the `__Host-` prefix and `Secure`, so that no
/// sibling subdomain and no plain-HTTP page can plant one.
#[tokio::test]
async fn the_openid_binding_cookie_is_host_prefixed_and_secure_over_tls() {
    let Some(mut provider) = crate::harness::oidc_provider::OidcProvider::start().await else {
        return;
    };
    install_crypto_provider();
    let certs = dev_certificates("oidc-binding");
    let control = ControlPlane::start(&format!(
        "{}\n[[virtual_proxies]]\nprefix = \"sso\"\n[virtual_proxies.oidc]\n\
         issuer = \"{}\"\nclient_id = \"gatehouse\"\nuser_directory = \"IDP\"\n",
        tls_table(&certs),
        provider.issuer()
    ))
    .await;
    let node = tls_node(&control, &certs).await;
    provider
        .configure(
            serde_json::json!([{
                "client_id": "gatehouse",
                "token_endpoint_auth_method": "none",
                "redirect_uris": [format!("https://localhost:{}/sso/oidc/callback", node.address.port())],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            }]),
            crate::harness::oidc_provider::accounts(),
        )
        .await;

    let response = tls_get(node.address, &certs, "/sso/hub").await;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(provider.issuer()), "{location}");
    assert!(
        location.contains(&crate::harness::client::encode(
            "https://localhost/sso/oidc/callback"
        )),
        "the callback is the https address the browser used: {location}"
    );
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("__Host-X-Qlik-Session-sso-oidc="),
        "{cookie}"
    );
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    control.stop().await;
}

/// A redis-server that speaks only TLS and wants a password, listening.
struct TlsRedis {
    port: u16,
    _process: gatehouse_testkit::Process,
}

async fn tls_redis(certs: &Path, password: &str) -> TlsRedis {
    let started = gatehouse_testkit::ports::start_on_free_ports(1, |ports| {
        let port = ports[0];
        let mut command = tokio::process::Command::new("redis-server");
        command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(certs.join("control-plane.pem"))
            .arg("--tls-key-file")
            .arg(certs.join("control-plane-key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(certs.join("ca.pem"))
            .args(["--tls-auth-clients", "no", "--requirepass", password])
            .args(["--save", "", "--appendonly", "no"]);
        async move {
            let mut process =
                gatehouse_testkit::Process::spawn("redis-server", &mut command, Vec::new())?;
            process
                .wait_ready(
                    "redis-server to listen for TLS",
                    &ports,
                    Duration::from_secs(10),
                    || async { true },
                )
                .await?;
            Ok(TlsRedis {
                port,
                _process: process,
            })
        }
    })
    .await;
    started.unwrap_or_else(|error| panic!("redis-server with TLS support: {error:#}"))
}

fn redis_store_toml(certs: &Path, port: u16, password_file: &Path) -> String {
    format!(
        r#"
        [store]
        backend = "redis"
        redis_url = "rediss://127.0.0.1:{port}/"
        tls_ca_file = "{dir}/ca.pem"
        password_file = "{password}"
        "#,
        dir = certs.display(),
        password = password_file.display(),
    )
}

#[tokio::test]
async fn redis_over_tls_with_a_password_file() {
    install_crypto_provider();
    let certs = dev_certificates("redis");
    let redis = tls_redis(&certs, "correct-horse-battery-staple").await;
    let right = certs.join("redis-password");
    std::fs::write(&right, "correct-horse-battery-staple\n").unwrap();
    let control = ControlPlane::start(&redis_store_toml(&certs, redis.port, &right)).await;
    let create = pb::CreateSessionRequest {
        virtual_proxy: String::new(),
        user: user("alice"),
        session_token: None,
    };
    let mut sessions = control.sessions();
    eventually(
        "a session stored in Redis over TLS",
        Duration::from_secs(10),
        || {
            let (mut sessions, create) = (sessions.clone(), create.clone());
            async move { sessions.create_session(create).await.ok() }
        },
    )
    .await;
    sessions
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap();
    control.stop().await;

    // A wrong password is a store that cannot be used: UNAVAILABLE, never NOT_FOUND.
    let wrong = certs.join("wrong-password");
    std::fs::write(&wrong, "guess").unwrap();
    let control = ControlPlane::start(&redis_store_toml(&certs, redis.port, &wrong)).await;
    let status = control.sessions().create_session(create).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("guess"));
    control.stop().await;
}

/// An upstream that speaks only TLS and requires a client certificate from the dev CA; it
/// answers with the name in the client's certificate.
async fn mtls_upstream(certs: &Path) -> SocketAddr {
    use rustls::pki_types::PrivateKeyDer;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("data-plane.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("data-plane-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|chain| chain.len())
                    .unwrap_or(0);
                let service = hyper::service::service_fn(move |_request| async move {
                    let body = format!("client certificates: {client}");
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn upstreams_can_be_reached_over_mutual_tls() {
    install_crypto_provider();
    let certs = dev_certificates("upstream");
    let upstream = mtls_upstream(&certs).await;
    let control = ControlPlane::start(&format!(
        "[[virtual_proxies]]\nprefix = \"app\"\n[virtual_proxies.upstream]\nnodes = [\"{upstream}\"]\ntls = true\n"
    ))
    .await;
    let node = crate::harness::DataPlaneNode::start_with(
        &control,
        &format!(
            "[upstream_tls]\nca_file = \"{dir}/ca.pem\"\ncert_file = \"{dir}/node.pem\"\nkey_file = \"{dir}/node-key.pem\"",
            dir = certs.display()
        ),
    )
    .await;
    let (cookie, _) = crate::harness::auth_module::session_cookie(
        &control,
        "app",
        "X-Qlik-Session-app",
        crate::harness::auth_module::user("CORP", "alice"),
    )
    .await;
    let response = crate::harness::client::get(&node.url("/app/hub"), &[("cookie", &cookie)]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "client certificates: 1");

    // A node that trusts only the system's roots does not trust this upstream: 502.
    let untrusting = crate::harness::DataPlaneNode::start(&control).await;
    let response =
        crate::harness::client::get(&untrusting.url("/app/hub"), &[("cookie", &cookie)]).await;
    assert_eq!(response.status, 502);
}
