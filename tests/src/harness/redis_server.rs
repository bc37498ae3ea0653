//! A private `redis-server` per test: ephemeral port, killed on drop. No persistence, unless
//! started with [`RedisServer::start_persistent`] (append-only file in a private directory).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::eventually::eventually;

/// A running `redis-server` that belongs to one test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// With persistence: the data directory, kept across restarts, removed on drop.
    data_dir: Option<DataDir>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING.
    pub async fn start() -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            child: None,
            data_dir: None,
        };
        server.restart().await;
        server
    }

    /// As [`start`](Self::start), with every write made durable before it is acknowledged
    /// (`appendonly yes`, `appendfsync always`) in a private data directory, so a restart
    /// (even after [`kill`](Self::kill)) finds everything that was written.
    pub async fn start_persistent() -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            child: None,
            data_dir: Some(DataDir::new(port)),
        };
        server.restart().await;
        server
    }

    /// `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and waits for the process to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered, as with
    /// a hung or swapping server. [`resume`](Self::resume) thaws it.
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    /// Thaws a server frozen by [`pause`](Self::pause) (SIGCONT).
    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again on the same port: empty without persistence, with everything
    /// written before when started with [`start_persistent`](Self::start_persistent).
    pub async fn restart(&mut self) {
        self.kill().await;
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string()]).args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.data_dir {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(&dir.0),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let url = self.url();
        eventually(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move { ping(&url).await.then_some(()) }
            },
        )
        .await;
    }

    /// A plain connection for asserting what Redis holds.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis-server")
    }
}

/// A data directory of its own, removed when the server is dropped.
#[derive(Debug)]
struct DataDir(PathBuf);

impl DataDir {
    fn new(port: u16) -> Self {
        let path =
            std::env::temp_dir().join(format!("gatehouse-redis-{}-{port}", std::process::id()));
        // A leftover of an earlier run with the same pid and port would be replayed.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the redis data directory");
        Self(path)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .is_ok()
}

/// A loopback port nobody listens on right now. Another process could take it before
/// redis-server binds it; on this single-tenant machine that has not been seen to happen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral loopback port")
}
