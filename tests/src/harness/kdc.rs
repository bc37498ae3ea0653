//! A throw-away MIT Kerberos realm on loopback: its own krb5.conf, kdc.conf and database in a
//! temporary directory, `krb5kdc` on an ephemeral port. Every Kerberos tool runs as a child
//! process with `KRB5_CONFIG` and friends pointing at those files, so the test process's own
//! environment is never changed.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gatehouse_testkit::Process;
use gatehouse_testkit::ports::start_on_free_ports;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::redis_server::free_port;

/// The Debian packages the realm needs (krb5-kdc, krb5-admin-server, krb5-user) and curl.
const TOOLS: &[&str] = &["krb5kdc", "kdb5_util", "kadmin.local", "kinit", "curl"];

/// The path of `tool` on PATH or in the sbin directories, where Debian puts the KDC.
pub fn tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// The tools that are missing, for a SKIPPED line.
pub fn missing_tools() -> Vec<&'static str> {
    TOOLS
        .iter()
        .copied()
        .filter(|name| tool(name).is_none())
        .collect()
}

/// A running KDC of one realm; stopped and deleted when dropped.
#[derive(Debug)]
pub struct Kdc {
    pub realm: String,
    dir: tempfile::TempDir,
    /// `krb5kdc`, killed on drop; `None` only while the database is being made.
    kdc: Option<Process>,
}

impl Kdc {
    /// Creates the realm's database (master key stashed) and starts its KDC, on another port
    /// if the one picked is taken (TCP or UDP) before the KDC binds it.
    pub async fn start(realm: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the realm");
        std::fs::write(dir.path().join("kadm5.acl"), "").expect("write kadm5.acl");
        let mut kdc = Self {
            realm: realm.to_owned(),
            dir,
            kdc: None,
        };
        // The database does not depend on the port: it is made once.
        kdc.configure(free_port());
        kdc.run(
            "kdb5_util",
            &["-r", realm, "create", "-s", "-P", "throw-away-master-key"],
            None,
        )
        .await;
        let started = start_on_free_ports(1, |ports| {
            kdc.configure(ports[0]);
            let mut command = kdc.command("krb5kdc");
            command.args(["-n", "-r", realm]);
            async move {
                let mut process = Process::spawn("krb5kdc", &mut command, Vec::new())?;
                process
                    .wait_ready(
                        "the KDC to listen",
                        &ports,
                        Duration::from_secs(20),
                        || async { true },
                    )
                    .await?;
                Ok(process)
            }
        })
        .await;
        kdc.kdc = Some(started.unwrap_or_else(|error| panic!("start krb5kdc: {error:#}")));
        kdc
    }

    /// krb5.conf and kdc.conf for a KDC on `port` (TCP and UDP). The KDC logs to stderr, which
    /// the kit keeps: a port found taken says so there.
    fn configure(&self, port: u16) {
        let realm = &self.realm;
        let base = self.dir.path().display().to_string();
        std::fs::write(
            self.path("krb5.conf"),
            format!(
                "[libdefaults]\n default_realm = {realm}\n dns_lookup_kdc = false\n \
                 dns_lookup_realm = false\n dns_canonicalize_hostname = false\n rdns = false\n \
                 udp_preference_limit = 1\n\n[realms]\n {realm} = {{\n  kdc = 127.0.0.1:{port}\n }}\n\n\
                 [domain_realm]\n localhost = {realm}\n .test = {realm}\n"
            ),
        )
        .expect("write krb5.conf");
        std::fs::write(
            self.path("kdc.conf"),
            format!(
                "[kdcdefaults]\n kdc_listen = 127.0.0.1:{port}\n kdc_tcp_listen = 127.0.0.1:{port}\n\n\
                 [realms]\n {realm} = {{\n  database_name = {base}/principal\n  \
                 key_stash_file = {base}/stash\n  acl_file = {base}/kadm5.acl\n  \
                 kdc_listen = 127.0.0.1:{port}\n  kdc_tcp_listen = 127.0.0.1:{port}\n  \
                 max_life = 1h\n }}\n\n[logging]\n kdc = STDERR\n"
            ),
        )
        .expect("write kdc.conf");
    }

    /// A file in the realm's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The environment every Kerberos client of this realm needs.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("KRB5_CONFIG", self.path("krb5.conf").into_os_string()),
            ("KRB5_KDC_PROFILE", self.path("kdc.conf").into_os_string()),
            // The acceptor's replay cache, away from /var/tmp and other test runs.
            ("KRB5RCACHEDIR", self.dir.path().as_os_str().to_owned()),
            ("KRB5_TRACE", self.path("trace.log").into_os_string()),
        ]
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(tool(name).unwrap_or_else(|| PathBuf::from(name)));
        command.env_remove("KRB5CCNAME").env_remove("KRB5_KTNAME");
        for (name, value) in self.env() {
            command.env(name, value);
        }
        command
    }

    /// Runs a tool of the realm, feeding `stdin`; panics with its output if it fails.
    async fn run(&self, name: &str, args: &[&str], stdin: Option<&str>) -> String {
        self.run_with(name, args, stdin, &[]).await
    }

    async fn run_with(
        &self,
        name: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &OsStr)],
    ) -> String {
        let mut command = self.command(name);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("start {name}: {error}"));
        if let Some(mut input) = child.stdin.take() {
            if let Some(text) = stdin {
                input
                    .write_all(text.as_bytes())
                    .await
                    .expect("write to the tool's stdin");
            }
            drop(input);
        }
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{name} {args:?} did not finish"))
            .expect("wait for the tool");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{name} {args:?} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// A service principal with a random key, its keys written to `keytab`.
    pub async fn add_service(&self, principal: &str, keytab: &Path) {
        let keytab = keytab.display().to_string();
        self.kadmin(&format!("addprinc -randkey {principal}")).await;
        self.kadmin(&format!("ktadd -k {keytab} {principal}")).await;
    }

    /// A user principal with a password.
    pub async fn add_user(&self, principal: &str, password: &str) {
        self.kadmin(&format!("addprinc -pw {password} {principal}"))
            .await;
    }

    async fn kadmin(&self, query: &str) {
        self.run("kadmin.local", &["-r", &self.realm, "-q", query], None)
            .await;
    }

    /// Obtains a ticket-granting ticket for `principal` into the credential cache `ccache`
    /// (password on stdin, as a user types it).
    pub async fn kinit(&self, principal: &str, password: &str, ccache: &Path) {
        let cache = OsString::from(format!("FILE:{}", ccache.display()));
        self.run_with(
            "kinit",
            &[principal],
            Some(&format!("{password}\n")),
            &[("KRB5CCNAME", &cache)],
        )
        .await;
    }

    /// `curl --negotiate -u :` with the tickets of `ccache`: the status of the last response,
    /// every response header block, and the last body. `host` is resolved to 127.0.0.1, so
    /// the service principal curl asks for is `HTTP/<host>`.
    pub async fn curl_negotiate(
        &self,
        ccache: &Path,
        host: &str,
        port: u16,
        path: &str,
        user_agent: &str,
    ) -> CurlResponse {
        let cache = OsString::from(format!("FILE:{}", ccache.display()));
        let headers = tempfile::NamedTempFile::new().expect("a file for the headers");
        let verbose = tempfile::NamedTempFile::new().expect("a file for curl's trace");
        let verbose_file = verbose.path().display().to_string();
        let url = format!("http://{host}:{port}{path}");
        let resolve = format!("{host}:{port}:127.0.0.1");
        let header_file = headers.path().display().to_string();
        let body = self
            .run_with(
                "curl",
                &[
                    "--silent",
                    "--negotiate",
                    "-u",
                    ":",
                    "--resolve",
                    &resolve,
                    "-A",
                    user_agent,
                    "-D",
                    &header_file,
                    "--verbose",
                    "--stderr",
                    &verbose_file,
                    &url,
                ],
                None,
                &[("KRB5CCNAME", &cache)],
            )
            .await;
        let headers = std::fs::read_to_string(headers.path()).expect("read curl's header dump");
        let status = headers
            .lines()
            .rfind(|line| line.starts_with("HTTP/"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        // curl's verbose trace shows what it sent: "> Authorization: Negotiate <token>".
        let trace = std::fs::read_to_string(verbose.path()).unwrap_or_default();
        let sent_token = trace.lines().find_map(|line| {
            let (name, value) = line.strip_prefix("> ")?.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().strip_prefix("Negotiate "))
                .flatten()
                .map(str::to_owned)
        });
        CurlResponse {
            status,
            headers,
            body,
            sent_token,
        }
    }
}

/// What curl saw.
#[derive(Debug)]
pub struct CurlResponse {
    pub status: u16,
    /// Every response's header block, as received.
    pub headers: String,
    pub body: String,
    /// The Negotiate token curl sent, base64 (for replaying it).
    pub sent_token: Option<String>,
}

impl CurlResponse {
    /// The value of the last `name` header of the last response.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers_named(name).pop()
    }

    /// Every value of header `name` in the final response, in order.
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        let Some(last_block) = self.headers.rsplit("HTTP/").next() else {
            return Vec::new();
        };
        last_block
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }
}
