//! A real, certified OpenID provider for the OpenID Connect tests: `tests/oidc-provider/
//! provider.js` (panva's oidc-provider under Node.js) as a child process on an ephemeral
//! loopback port. It starts unconfigured, so the issuer URL is known before the control plane
//! and nodes start; [`OidcProvider::configure`] then registers clients whose URLs point at
//! those nodes, and accounts that sign in by name on the provider's login page.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::client;
use super::kdc::tool;

/// How long Node.js may take to load the provider or to configure it.
const STARTUP: Duration = Duration::from_secs(30);

/// How to get what the provider needs, for SKIPPED lines and CI failures.
const INSTALL: &str = "OpenID Connect tests need Node.js 20.19 or later on PATH and the provider's \
                       packages: npm ci --prefix tests/oidc-provider";

/// The oldest Node.js the provider runs on (its package's `engines`).
const NODE_AT_LEAST: (u32, u32) = (20, 19);

/// Whether `node --version` (`v20.20.2`) is at least [`NODE_AT_LEAST`]: Debian 12's own
/// Node.js (18) would start the provider and fail every test instead of skipping them.
fn recent_enough(node: &std::path::Path) -> bool {
    let Ok(output) = std::process::Command::new(node).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts.next().and_then(|part| part.parse::<u32>().ok());
    let minor = parts.next().and_then(|part| part.parse::<u32>().ok());
    matches!((major, minor), (Some(major), Some(minor)) if (major, minor) >= NODE_AT_LEAST)
}

/// The directory of `provider.js` and its `node_modules`.
fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc-provider")
}

/// Metadata of a confidential web client (`client_secret_basic`, code flow) whose callback,
/// post-logout and back-channel logout URLs are given, as the tests register it.
pub fn web_client(
    client_id: &str,
    secret: &str,
    callback: &str,
    signed_out: &str,
    backchannel_logout: &str,
) -> Value {
    json!({
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [callback],
        "post_logout_redirect_uris": [signed_out],
        "backchannel_logout_uri": backchannel_logout,
        "backchannel_logout_session_required": true,
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    })
}

/// The provider's users: alice (groups sales and admins) and bob (no group).
pub fn accounts() -> Value {
    json!({
        "alice": {
            "email": "alice@example.test",
            "name": "Alice",
            "groups": ["sales", "admins"],
        },
        "bob": { "email": "bob@example.test", "name": "Bob", "groups": [] },
    })
}

/// A running provider; killed when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    issuer: String,
    /// The provider's signing key (`kid`, PKCS#1 PEM), for tests that sign as it does.
    signing_kid: String,
    signing_pem: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl OidcProvider {
    /// Starts the provider and reads its issuer URL. `None` (the test is skipped) when Node.js
    /// or the provider's packages are missing outside CI; in CI that is a failure.
    pub async fn start() -> Option<Self> {
        let dir = provider_dir();
        let node = tool("node").filter(|node| recent_enough(node));
        let installed = dir.join("node_modules/oidc-provider").is_dir();
        let Some(node) = node.filter(|_| installed) else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{INSTALL}");
            eprintln!("SKIPPED: {INSTALL}");
            return None;
        };
        let mut child = Command::new(node)
            .arg("provider.js")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node provider.js");
        // The provider's errors end up in the test's output, shown when the test fails.
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("oidc-provider: {line}");
                }
            });
        }
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("the provider's stdout is piped");
        let mut provider = Self {
            issuer: String::new(),
            signing_kid: String::new(),
            signing_pem: String::new(),
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        };
        let line = provider.next_line("its issuer line").await;
        let announced: Value = serde_json::from_str(&line).unwrap_or_else(|error| {
            panic!("the provider's first line is not JSON ({error}): {line}")
        });
        provider.issuer = announced["issuer"]
            .as_str()
            .unwrap_or_else(|| panic!("no issuer in the provider's first line: {line}"))
            .to_owned();
        let key = &announced["signing_key"];
        provider.signing_kid = key["kid"].as_str().unwrap_or_default().to_owned();
        provider.signing_pem = key["pem"].as_str().unwrap_or_default().to_owned();
        assert!(
            !provider.signing_kid.is_empty() && !provider.signing_pem.is_empty(),
            "no signing key in the provider's first line: {line}"
        );
        Some(provider)
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The provider's signing key: its `kid` and the private key (RS256, PKCS#1 PEM), for
    /// tests that sign tokens as the provider does.
    pub fn signing_key(&self) -> (&str, &str) {
        (&self.signing_kid, &self.signing_pem)
    }

    /// Registers `clients` (oidc-provider client metadata, e.g. `client_id`, `client_secret`,
    /// `redirect_uris`, `backchannel_logout_uri`) and `accounts` (`{"alice": {"email": ...,
    /// "name": ..., "groups": [...]}}`), then waits until the provider serves. Call once.
    pub async fn configure(&mut self, clients: Value, accounts: Value) {
        let line = format!("{}\n", json!({ "clients": clients, "accounts": accounts }));
        let stdin = self
            .stdin
            .as_mut()
            .expect("the provider's stdin is open until it is dropped");
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("write the configuration to the provider");
        stdin.flush().await.expect("flush the provider's stdin");
        let answer = self.next_line("\"ready\"").await;
        assert_eq!(
            answer, "ready",
            "the provider did not accept its configuration"
        );
    }

    /// The provider's discovery document.
    pub async fn discovery(&self) -> Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let response = client::get(&url, &[]).await;
        assert_eq!(response.status, 200, "{url}: {}", response.text());
        response.json()
    }

    /// One endpoint from discovery, e.g. `"end_session_endpoint"`.
    pub async fn endpoint(&self, name: &str) -> String {
        self.discovery().await[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in the provider's discovery document"))
            .to_owned()
    }

    /// The provider's public signing keys (its JWKS).
    pub async fn jwks(&self) -> Value {
        let url = self.endpoint("jwks_uri").await;
        let response = client::get(&url, &[]).await;
        assert_eq!(response.status, 200, "{url}: {}", response.text());
        response.json()
    }

    async fn next_line(&mut self, what: &str) -> String {
        match tokio::time::timeout(STARTUP, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "the provider exited ({status:?}) before printing {what}; its errors are above"
                )
            }
            Ok(Err(error)) => panic!("reading the provider's stdout for {what}: {error}"),
            Err(_) => panic!("the provider printed no {what} within {STARTUP:?}"),
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // Closing stdin alone would end it too, but not at once.
        let _ = self.child.start_kill();
    }
}
