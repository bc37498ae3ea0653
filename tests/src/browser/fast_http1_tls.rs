//! The node's own HTTP/1.1 engine on a TLS listener: the differential corpus of
//! `fast_http1.rs` sent over TLS connections (the client offering only `http/1.1`) to a node
//! with the engine and to one without reaches the upstream as the same bytes and comes back
//! as the same answers; a client that chooses `h2` in the handshake goes straight to hyper.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::fast_http1::{RecordingUpstream, compare_on_corpus, metric, send_and_read};
use crate::api::tls::{dev_certificates, install_crypto_provider};
use crate::browser::fixtures::{AppProxy, COOKIE};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::{ControlPlane, DataPlaneNode};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `address` offering the ALPN protocols `alpn`.
async fn connect(address: SocketAddr, certs: &Path, alpn: &[&[u8]]) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("the dev CA") {
        roots
            .add(certificate.expect("a CA certificate"))
            .expect("a root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let tcp = TcpStream::connect(address).await.expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
        .expect("TLS handshake with the node")
}

/// Sends `bytes` over a new HTTP/1.1 TLS connection and reads until the node closes it or
/// stays silent for 400 ms; whether it closed.
async fn exchange(address: SocketAddr, certs: &Path, bytes: &[u8]) -> (Vec<u8>, bool) {
    let stream = connect(address, certs, &[b"http/1.1"]).await;
    send_and_read(stream, bytes).await
}

/// A node of `control_plane` serving TLS with the dev CA's data-plane certificate.
async fn tls_node(control_plane: &ControlPlane, certs: &Path, fast_http1: bool) -> DataPlaneNode {
    let toml = format!(
        "fast_http1 = {fast_http1}\n\
         [cache]\nttl = \"300s\"\ntouch_interval = \"600s\"\ngrace = \"600s\"\n\
         [tls]\n[[tls.certificates]]\ncert_file = \"{dir}/data-plane.pem\"\n\
         key_file = \"{dir}/data-plane-key.pem\"\n",
        dir = certs.display()
    );
    DataPlaneNode::start_with(control_plane, &toml).await
}

#[tokio::test]
async fn over_tls_the_engine_forwards_and_answers_every_input_as_hyper_does() {
    install_crypto_provider();
    let certs = dev_certificates("engine-tls");
    let upstream = RecordingUpstream::start().await;
    let proxy = AppProxy::new([upstream.address.to_string()])
        .key(r#"public_origins = ["https://gatehouse.test"]"#);
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let engine = tls_node(&control_plane, &certs, true).await;
    let hyper_only = tls_node(&control_plane, &certs, false).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    for node in [&engine, &hyper_only] {
        let warm =
            format!("GET /app/hub HTTP/1.1\r\nHost: gatehouse.test\r\nCookie: {cookie}\r\n\r\n");
        let (answer, _) = exchange(node.address(), &certs, warm.as_bytes()).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "a session is served over TLS: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let served_before = metric(&engine, "gatehouse_fast_http1_requests_total").await;
    assert!(served_before >= 1.0, "the engine serves TLS connections");
    upstream.take();

    let nodes = (engine.address(), hyper_only.address());
    let certs = &certs;
    let forwarded = compare_on_corpus(&upstream, &cookie, nodes, |address, bytes| async move {
        exchange(address, certs, &bytes).await
    })
    .await;
    assert!(
        forwarded >= 20,
        "the corpus reaches the upstream: {forwarded}"
    );
    let served = metric(&engine, "gatehouse_fast_http1_requests_total").await;
    assert!(
        served >= served_before + 20.0,
        "the engine served the corpus: {served}"
    );
    assert_eq!(
        metric(&hyper_only, "gatehouse_fast_http1_requests_total").await,
        0.0
    );

    // A client that chose HTTP/2 in the handshake is hyper's from the start.
    let handed = metric(&engine, "gatehouse_fast_http1_handovers_total").await;
    let stream = connect(engine.address(), certs, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get("https://gatehouse.test/app/hub")
        .header("cookie", &cookie)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a request");
    let response = sender
        .send_request(request)
        .await
        .expect("an answer over h2");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    assert_eq!(
        metric(&engine, "gatehouse_fast_http1_handovers_total").await,
        handed,
        "an h2 connection is not handed over: the engine never saw it"
    );
    assert_eq!(
        metric(&engine, "gatehouse_fast_http1_requests_total").await,
        served
    );
}
