//! JWT bearer authentication: a token signed by a configured key logs in through a node, once
//! (one session however often and wherever it is presented), and every kind of bad token is
//! refused with a short reason and no session. Keys are made by `openssl` for each test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_proto::v1 as pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::browser::fixtures::{
    AppProxy, COOKIE, PROPAGATION, delete_session, qlik_user, rejected, seen_header, with_cookie,
};
use crate::harness::client::get;
use crate::harness::eventually::eventually;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "gatehouse";

/// An RSA key pair made by `openssl` in `dir`.
pub(crate) struct RsaKey {
    private_pem: Vec<u8>,
    private_path: PathBuf,
    pub(crate) public_path: PathBuf,
    public_pem: Vec<u8>,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

pub(crate) fn rsa_key(dir: &Path, name: &str) -> RsaKey {
    let private_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    let private = private_path.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private,
    ]);
    openssl(&[
        "pkey",
        "-in",
        private,
        "-pubout",
        "-out",
        public_path.to_str().unwrap(),
    ]);
    RsaKey {
        private_pem: std::fs::read(&private_path).unwrap(),
        public_pem: std::fs::read(&public_path).unwrap(),
        private_path,
        public_path,
    }
}

/// The public half of `key` as a JWK with `kid`.
fn jwk(key: &RsaKey, kid: &str) -> Value {
    let out = openssl(&[
        "rsa",
        "-in",
        key.private_path.to_str().unwrap(),
        "-noout",
        "-modulus",
    ]);
    let text = String::from_utf8(out).unwrap();
    let hex = text.trim().trim_start_matches("Modulus=");
    let modulus: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect();
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(modulus),
        "e": "AQAB",
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a good token for `sub` in directory CORP.
pub(crate) fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "ud": "CORP",
        "groups": ["analysts", "admins"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "nbf": now() - 10,
        "exp": now() + 600,
    })
}

pub(crate) fn sign(key: &RsaKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&key.private_pem).unwrap(),
    )
    .unwrap()
}

pub(crate) fn jwt_table(extra: &str) -> String {
    format!(
        "[virtual_proxies.jwt]\nissuers = [\"{ISSUER}\"]\naudiences = [\"{AUDIENCE}\"]\n\
         user_directory_claim = \"ud\"\nuser_directory = \"JWT\"\nleeway = \"5s\"\n\
         attributes = {{ Group = \"groups\" }}\n{extra}"
    )
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn sessions_of(control_plane: &ControlPlane, id: &str) -> Vec<pb::Session> {
    control_plane
        .sessions()
        .list_user_sessions(pb::ListUserSessionsRequest {
            user_directory: "CORP".into(),
            user_id: id.into(),
            virtual_proxy: Some("app".into()),
        })
        .await
        .expect("ListUserSessions")
        .into_inner()
        .sessions
}

async fn start_with_pem(dir: &TempDir, key: &RsaKey) -> (EchoUpstream, ControlPlane) {
    let _ = dir;
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&jwt_table(&format!(
        "public_keys = [{:?}]",
        key.public_path.to_str().unwrap()
    )));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    (upstream, control_plane)
}

#[tokio::test]
async fn a_bearer_token_logs_in_once_and_then_the_cookie_or_the_token_works() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "signer");
    let (upstream, control_plane) = start_with_pem(&dir, &key).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let token = sign(&key, None, &claims("alice"));
    let authorization = bearer(&token);

    let first = get(
        &node.url("/app/hub"),
        &[("authorization", authorization.as_str())],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        seen_header(&first.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    let set_cookie = first.set_cookie(COOKIE).expect("the login sets the cookie");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = first.cookie_pair(COOKIE).unwrap();
    // Node and control plane derive the same session token from the JWT.
    let derived = gatehouse_control_plane::jwt::session_token("app", &token);
    assert_eq!(cookie, format!("{COOKIE}={derived}"));
    assert_eq!(
        gatehouse_data_plane::auth::jwt::session_token("app", &token),
        derived
    );

    let sessions = sessions_of(&control_plane, "alice").await;
    assert_eq!(sessions.len(), 1);
    let user = sessions[0].user.as_ref().unwrap();
    let groups: Vec<&str> = user
        .attributes
        .iter()
        .filter(|attribute| attribute.name == "Group")
        .map(|attribute| attribute.value.as_str())
        .collect();
    assert_eq!(groups, ["analysts", "admins"]);
    let absolute = SystemTime::try_from(sessions[0].absolute_expiry.unwrap()).unwrap();
    assert!(
        absolute <= UNIX_EPOCH + Duration::from_secs(now() + 601),
        "the session ends with the token"
    );

    // Later: the cookie alone, the token alone, the token at another node.
    let by_cookie = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(by_cookie.status, 200);
    assert!(by_cookie.set_cookie(COOKIE).is_none());
    for _ in 0..3 {
        let by_token = get(
            &node.url("/app/hub"),
            &[("authorization", authorization.as_str())],
        )
        .await;
        assert_eq!(by_token.status, 200);
    }
    let other_node = DataPlaneNode::start(&control_plane).await;
    let elsewhere = get(
        &other_node.url("/app/hub"),
        &[("authorization", authorization.as_str())],
    )
    .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text());
    assert_eq!(
        seen_header(&elsewhere.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert_eq!(
        sessions_of(&control_plane, "alice").await.len(),
        1,
        "one token, one session"
    );
    assert_eq!(upstream.requests().len(), 6);
}

/// AUTH-JWT.md's example accepts RS256 and ES256: a token of either family must log in,
/// whatever other families the list names.
#[tokio::test]
async fn a_token_logs_in_when_algorithms_of_several_key_families_are_accepted() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "signer");
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&jwt_table(&format!(
        "public_keys = [{:?}]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]",
        key.public_path.to_str().unwrap()
    )));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let authorization = bearer(&sign(&key, None, &claims("alice")));
    let response = get(
        &node.url("/app/hub"),
        &[("authorization", authorization.as_str())],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        seen_header(&response.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_reason_and_no_session() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "signer");
    let stranger = rsa_key(dir.path(), "stranger");
    let (upstream, control_plane) = start_with_pem(&dir, &key).await;
    let node = DataPlaneNode::start(&control_plane).await;

    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims("mallory");
        change(&mut claims);
        claims
    };
    let encode = |json: &Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            sign(
                &key,
                None,
                &with(&|c| c["exp"] = json!(now().saturating_sub(3600))),
            ),
            "expired",
        ),
        (
            "not yet valid",
            sign(&key, None, &with(&|c| c["nbf"] = json!(now() + 3600))),
            "not valid yet",
        ),
        (
            "forged signature",
            sign(&stranger, None, &claims("mallory")),
            "signature",
        ),
        (
            "wrong audience",
            sign(&key, None, &with(&|c| c["aud"] = json!("someone-else"))),
            "audience",
        ),
        (
            "wrong issuer",
            sign(
                &key,
                None,
                &with(&|c| c["iss"] = json!("https://evil.test")),
            ),
            "issuer",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                encode(&json!({"alg": "none", "typ": "JWT"})),
                encode(&claims("mallory"))
            ),
            "algorithm",
        ),
        (
            "alg confusion",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims("mallory"),
                &EncodingKey::from_secret(&key.public_pem).unwrap(),
            )
            .unwrap(),
            "algorithm",
        ),
        (
            "unknown kid",
            sign(&stranger, Some("not-configured"), &claims("mallory")),
            "unknown key",
        ),
        ("garbage", "not-a-jwt".to_owned(), "not a JWT"),
    ];
    for (what, token, reason) in cases {
        let authorization = bearer(&token);
        let response = get(
            &node.url("/app/hub"),
            &[("authorization", authorization.as_str())],
        )
        .await;
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        assert!(
            response.text().contains(reason),
            "{what}: {}",
            response.text()
        );
        assert!(response.header("www-authenticate").is_some(), "{what}");
        assert!(response.set_cookie(COOKIE).is_none(), "{what}");
    }
    assert!(sessions_of(&control_plane, "mallory").await.is_empty());
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_rotated_jwks_key_is_found_by_re_reading_the_file() {
    let dir = TempDir::new().unwrap();
    let first = rsa_key(dir.path(), "first");
    let second = rsa_key(dir.path(), "second");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [jwk(&first, "k1")] }).to_string()).unwrap();
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&jwt_table(&format!(
        "jwks_file = {:?}\njwks_min_refresh = \"0s\"",
        jwks.to_str().unwrap()
    )));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let login = |token: String| {
        let url = node.url("/app/hub");
        async move {
            let authorization = bearer(&token);
            get(&url, &[("authorization", authorization.as_str())]).await
        }
    };

    let before = login(sign(&first, Some("k1"), &claims("alice"))).await;
    assert_eq!(before.status, 200, "{}", before.text());
    let early = login(sign(&second, Some("k2"), &claims("bob"))).await;
    assert_eq!(early.status, 401, "k2 is not published yet");
    assert!(early.text().contains("unknown key"), "{}", early.text());

    // The issuer rotates: k2 is published, k1 retired.
    std::fs::write(&jwks, json!({ "keys": [jwk(&second, "k2")] }).to_string()).unwrap();
    let after = login(sign(&second, Some("k2"), &claims("bob"))).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(
        seen_header(&after.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "bob").as_str())
    );
    // A key id signed by a key that is not k2 still fails.
    let wrong = login(sign(&first, Some("k2"), &claims("carol"))).await;
    assert_eq!(wrong.status, 401);
    assert!(sessions_of(&control_plane, "carol").await.is_empty());
}

#[tokio::test]
async fn the_csrf_token_endpoint_logs_a_bearer_in() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "signer");
    let (_upstream, control_plane) = start_with_pem(&dir, &key).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let authorization = bearer(&sign(&key, None, &claims("alice")));

    let response = get(
        &node.url("/app/qps/csrftoken"),
        &[("authorization", authorization.as_str())],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let csrf = response
        .header("qlik-csrf-token")
        .expect("the CSRF token")
        .to_owned();
    let cookie = response.cookie_pair(COOKIE).expect("the cookie");

    // The cookie alone gets the same CSRF token.
    let again = get(&node.url("/app/qps/csrftoken"), &with_cookie(&cookie)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("qlik-csrf-token"), Some(csrf.as_str()));
    assert_eq!(sessions_of(&control_plane, "alice").await.len(), 1);

    let refused = get(
        &node.url("/app/qps/csrftoken"),
        &[("authorization", "Bearer not-a-jwt")],
    )
    .await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn a_deleted_session_stays_ended_for_its_token() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "signer");
    let (_upstream, control_plane) = start_with_pem(&dir, &key).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let authorization = bearer(&sign(&key, None, &claims("alice")));
    let headers = [("authorization", authorization.as_str())];

    let login = get(&node.url("/app/hub"), &headers).await;
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login.cookie_pair(COOKIE).unwrap();
    let sessions = sessions_of(&control_plane, "alice").await;
    assert_eq!(sessions.len(), 1);
    delete_session(&control_plane, &sessions[0].handle).await;

    let url = node.url("/app/hub");
    eventually("the node refuses the cookie", PROPAGATION, || {
        let url = url.clone();
        let cookie = cookie.clone();
        async move { rejected(&url, &cookie).await.then_some(()) }
    })
    .await;
    let again = get(&node.url("/app/hub"), &headers).await;
    assert_eq!(again.status, 401, "{}", again.text());
    assert!(again.text().contains("ended"), "{}", again.text());
    assert!(sessions_of(&control_plane, "alice").await.is_empty());

    // A new token from the issuer logs in again.
    let mut fresh = claims("alice");
    fresh["jti"] = json!("second");
    let fresh = bearer(&sign(&key, None, &fresh));
    let relogin = get(&node.url("/app/hub"), &[("authorization", fresh.as_str())]).await;
    assert_eq!(relogin.status, 200, "{}", relogin.text());
}

#[tokio::test]
async fn a_certificate_names_the_key_and_sessions_live_in_redis() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "signer");
    let certificate = dir.path().join("signer.crt");
    openssl(&[
        "req",
        "-x509",
        "-key",
        key.private_path.to_str().unwrap(),
        "-subj",
        "/CN=idp.test",
        "-days",
        "1",
        "-out",
        certificate.to_str().unwrap(),
    ]);
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&jwt_table(&format!(
        "public_keys = [{:?}]",
        certificate.to_str().unwrap()
    )));
    let control_plane = ControlPlane::start(&proxy.on_redis(&redis)).await;
    let first = DataPlaneNode::start(&control_plane).await;
    let second = DataPlaneNode::start(&control_plane).await;
    let authorization = bearer(&sign(&key, None, &claims("alice")));

    for node in [&first, &second, &first] {
        let response = get(
            &node.url("/app/hub"),
            &[("authorization", authorization.as_str())],
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            seen_header(&response.json(), "x-qlik-user"),
            Some(qlik_user("CORP", "alice").as_str())
        );
        assert!(
            seen_header(&response.json(), "authorization").is_none(),
            "the token is not forwarded"
        );
    }
    assert_eq!(sessions_of(&control_plane, "alice").await.len(), 1);
    let mut connection = redis.connection().await;
    let jwt_markers: Vec<String> = redis::cmd("KEYS")
        .arg("*:jwt:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(jwt_markers.len(), 1, "the token's session is remembered");
}

/// A JWKS endpoint on a loopback socket: answers every request with the current document and
/// counts the requests.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

/// Reads one request's head and answers it with the current document.
async fn answer(
    mut socket: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    served: &Mutex<String>,
    counted: &AtomicUsize,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    counted.fetch_add(1, Ordering::SeqCst);
    let body = served.lock().unwrap().clone();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

impl JwksServer {
    async fn start(document: Value) -> Self {
        Self::serve(document, None).await
    }

    /// The same over https, as `localhost`, with the dev CA's certificate in `certs`.
    async fn start_tls(document: Value, certs: &Path) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(certs.join("data-plane.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(certs.join("data-plane-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::serve(
            document,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn serve(document: Value, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/jwks.json"),
            None => format!("http://127.0.0.1:{port}/jwks.json"),
        };
        let document = Arc::new(Mutex::new(document.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (served, counted, tls) = (served.clone(), counted.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(socket).await {
                                answer(stream, &served, &counted).await;
                            }
                        }
                        None => answer(socket, &served, &counted).await,
                    }
                });
            }
        });
        Self {
            url,
            document,
            fetches,
        }
    }

    fn publish(&self, document: Value) {
        *self.document.lock().unwrap() = document.to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_re_fetched_at_a_limited_rate_on_an_unknown_kid() {
    let dir = TempDir::new().unwrap();
    let first = rsa_key(dir.path(), "first");
    let second = rsa_key(dir.path(), "second");
    let jwks = JwksServer::start(json!({ "keys": [jwk(&first, "k1")] })).await;
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(&jwt_table(&format!(
        "jwks_url = \"{}\"\njwks_min_refresh = \"2s\"",
        jwks.url
    )));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let url = node.url("/app/hub");
    let login = |token: String| {
        let url = url.clone();
        async move {
            let authorization = bearer(&token);
            get(&url, &[("authorization", authorization.as_str())]).await
        }
    };

    let before = login(sign(&first, Some("k1"), &claims("alice"))).await;
    assert_eq!(before.status, 200, "{}", before.text());
    assert_eq!(jwks.fetches(), 1);

    // Unknown key ids in a burst cost at most one more fetch per jwks_min_refresh.
    jwks.publish(json!({ "keys": [jwk(&second, "k2")] }));
    for attempt in 0..5 {
        let unknown = login(sign(
            &second,
            Some(&format!("random-{attempt}")),
            &claims("eve"),
        ))
        .await;
        assert_eq!(unknown.status, 401);
        assert!(unknown.text().contains("unknown key"), "{}", unknown.text());
    }
    assert!(jwks.fetches() <= 2, "{} fetches", jwks.fetches());

    // The rotated key is found once the JWKS is re-fetched.
    let token = sign(&second, Some("k2"), &claims("bob"));
    let after = eventually("the rotated key is fetched", PROPAGATION, || {
        let attempt = login(token.clone());
        async move {
            let response = attempt.await;
            (response.status == 200).then_some(response)
        }
    })
    .await;
    assert_eq!(
        seen_header(&after.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "bob").as_str())
    );
    assert!(jwks.fetches() <= 6, "{} fetches", jwks.fetches());
}

#[tokio::test]
async fn a_jwks_url_over_https_is_trusted_through_the_ca_file() {
    crate::api::tls::install_crypto_provider();
    let certs = crate::api::tls::dev_certificates("jwks");
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "issuer");
    let jwks = JwksServer::start_tls(json!({ "keys": [jwk(&key, "k1")] }), &certs).await;
    let upstream = EchoUpstream::start("engine").await;
    let login = |node: DataPlaneNode| {
        let token = sign(&key, Some("k1"), &claims("alice"));
        async move {
            let authorization = bearer(&token);
            get(
                &node.url("/app/hub"),
                &[("authorization", authorization.as_str())],
            )
            .await
        }
    };

    // The dev CA is not among the system's roots: without ca_file the keys cannot be read.
    let untrusted =
        AppProxy::new([upstream.node()]).table(&jwt_table(&format!("jwks_url = \"{}\"", jwks.url)));
    let control_plane = ControlPlane::start(&untrusted.toml()).await;
    let refused = login(DataPlaneNode::start(&control_plane).await).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("keys cannot be read"),
        "{}",
        refused.text()
    );
    assert_eq!(
        jwks.fetches(),
        0,
        "the TLS handshake failed before any request"
    );

    let trusted = AppProxy::new([upstream.node()]).table(&jwt_table(&format!(
        "jwks_url = \"{}\"\nca_file = \"{}\"",
        jwks.url,
        certs.join("ca.pem").display()
    )));
    let control_plane = ControlPlane::start(&trusted.toml()).await;
    let accepted = login(DataPlaneNode::start(&control_plane).await).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(jwks.fetches(), 1);
}

#[tokio::test]
async fn a_jwks_url_that_cannot_be_read_is_503_not_a_refused_token() {
    let dir = TempDir::new().unwrap();
    let key = rsa_key(dir.path(), "issuer");
    let upstream = EchoUpstream::start("engine").await;
    let closed = format!(
        "http://127.0.0.1:{}/jwks.json",
        crate::harness::redis_server::free_port()
    );
    let proxy =
        AppProxy::new([upstream.node()]).table(&jwt_table(&format!("jwks_url = \"{closed}\"")));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let token = sign(&key, Some("k1"), &claims("alice"));
    let authorization = bearer(&token);
    let response = get(
        &node.url("/app/hub"),
        &[("authorization", authorization.as_str())],
    )
    .await;
    // The token may be perfectly good: a 401 would make the client throw it away.
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(
        response.text().contains("keys cannot be read"),
        "{}",
        response.text()
    );
    assert!(upstream.requests().is_empty());
    let sessions = control_plane
        .sessions()
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(sessions.is_empty());
}
