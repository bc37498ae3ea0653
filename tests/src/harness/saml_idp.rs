//! A real SAML 2.0 identity provider for the SAML tests: `tests/saml-idp/idp.py` (pysaml2)
//! as a child process on an ephemeral loopback port, with a signing key made for the run
//! (and a second key, for signatures by someone else). Its metadata file is written before
//! the control plane starts; it reads the service provider's metadata from the node at the
//! first login.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use super::client;
use super::kdc::tool;
use super::redis_server::free_port;

/// How long Python may take to load pysaml2 and write the metadata.
const STARTUP: Duration = Duration::from_secs(30);

const INSTALL: &str = "SAML tests need python3 with pysaml2 7.5.5 (pip) and xmlsec1 and openssl \
                       (Debian packages xmlsec1, openssl)";

/// A running identity provider; killed when dropped.
#[derive(Debug)]
pub struct SamlIdp {
    base: String,
    dir: TempDir,
    child: Child,
}

impl SamlIdp {
    /// Starts the identity provider for a service provider whose metadata is at
    /// `sp_metadata_url`. `None` (the test is skipped) when pysaml2, xmlsec1 or openssl are
    /// missing outside CI; in CI that is a failure.
    pub async fn start(sp_metadata_url: &str) -> Option<Self> {
        Self::start_with(sp_metadata_url, &[]).await
    }

    /// [`start`](Self::start) with more of `idp.py`'s options (`--slo-binding post`,
    /// `--want-signed-logout`).
    pub async fn start_with(sp_metadata_url: &str, options: &[&str]) -> Option<Self> {
        let python = tool("python3");
        let ready = python.as_ref().is_some_and(|python| {
            std::process::Command::new(python)
                .args(["-c", "import saml2"])
                .output()
                .is_ok_and(|output| output.status.success())
        }) && tool("xmlsec1").is_some()
            && tool("openssl").is_some();
        let Some(python) = python.filter(|_| ready) else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{INSTALL}");
            eprintln!("SKIPPED: {INSTALL}");
            return None;
        };
        let dir = TempDir::new().expect("a temporary directory");
        for name in ["idp", "other"] {
            make_key(dir.path(), name);
        }
        let port = free_port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("saml-idp/idp.py");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let mut child = Command::new(python)
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(["--key", &path("idp.key"), "--cert", &path("idp.crt")])
            .args(["--other-key", &path("other.key")])
            .args(["--other-cert", &path("other.crt")])
            .args(["--sp-metadata-url", sp_metadata_url])
            .args(["--metadata-out", &path("idp-metadata.xml")])
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start python3 idp.py");
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.contains("CryptographyDeprecationWarning") {
                        eprintln!("saml-idp: {line}");
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("the identity provider's stdout");
        let mut lines = BufReader::new(stdout).lines();
        match tokio::time::timeout(STARTUP, lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => {}
            other => panic!("the identity provider did not start: {other:?}; its errors are above"),
        }
        Some(Self {
            base: format!("http://127.0.0.1:{port}"),
            dir,
            child,
        })
    }

    /// The identity provider's metadata file, for `idp_metadata_file`.
    pub fn metadata_file(&self) -> PathBuf {
        self.dir.path().join("idp-metadata.xml")
    }

    /// Its metadata as it reads once the identity provider has rolled its signing key over
    /// to the other key (the one `sign` uses with `other_key`).
    pub fn metadata_after_rollover(&self) -> String {
        let body = |name: &str| -> String {
            let pem = std::fs::read_to_string(self.dir.path().join(format!("{name}.crt")))
                .expect("a certificate");
            pem.lines()
                .filter(|line| !line.starts_with("-----"))
                .collect()
        };
        let metadata = std::fs::read_to_string(self.metadata_file()).expect("the metadata");
        assert!(metadata.contains(&body("idp")), "{metadata}");
        metadata.replace(&body("idp"), &body("other"))
    }

    /// Its origin, as a browser names it in `Origin` when the identity provider's page posts
    /// the Response.
    pub fn origin(&self) -> &str {
        &self.base
    }

    /// Its entity id.
    pub fn entity_id(&self) -> String {
        format!("{}/metadata", self.base)
    }

    /// Its HTTP-Redirect SingleSignOnService.
    pub fn sso_url(&self) -> String {
        format!("{}/sso/redirect", self.base)
    }

    /// `response_xml` signed as the identity provider signs: `what` is `assertion`,
    /// `response` or `both`; with `other_key`, by a key the service provider does not know.
    pub async fn sign(&self, response_xml: &str, what: &str, other_key: bool) -> String {
        let key = if other_key { "&key=other" } else { "" };
        let url = format!("{}/sign?what={what}{key}", self.base);
        let signed = client::post(&url, &[("content-type", "application/xml")], response_xml).await;
        assert_eq!(signed.status, 200, "signing: {}", signed.text());
        signed.text()
    }
}

impl Drop for SamlIdp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A self-signed RSA key and certificate, `{name}.key` and `{name}.crt` in `dir`.
pub fn make_key(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let output = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN=gatehouse-test-{name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
