//! A private `redis-server`: ephemeral loopback port, killed on drop. No persistence, unless
//! started with [`RedisServer::start_persistent`] (append-only file in a private directory).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::process::Command;

use crate::ports::start_on_free_ports;
use crate::process::Process;

/// How long a fresh `redis-server` may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A running `redis-server` that belongs to one test or benchmark run.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    process: Option<Process>,
    /// With persistence: the data directory, kept across restarts, removed on drop.
    data_dir: Option<DataDir>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING (on other
    /// ports while another process takes the one picked first).
    pub async fn start() -> Result<Self> {
        start_on_free_ports(1, |ports| async move {
            let mut server = Self {
                port: ports[0],
                process: None,
                data_dir: None,
            };
            server.restart().await?;
            Ok(server)
        })
        .await
    }

    /// As [`start`](Self::start), with every write made durable before it is acknowledged
    /// (`appendonly yes`, `appendfsync always`) in a private data directory, so a restart
    /// (even after [`kill`](Self::kill)) finds everything that was written.
    pub async fn start_persistent() -> Result<Self> {
        start_on_free_ports(1, |ports| async move {
            let port = ports[0];
            let mut server = Self {
                port,
                process: None,
                data_dir: Some(DataDir::new(port)?),
            };
            server.restart().await?;
            Ok(server)
        })
        .await
    }

    /// `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running process; `None` after [`kill`](Self::kill).
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// Kills the server (as a crash would) and waits for the process to be gone.
    pub async fn kill(&mut self) -> Result<()> {
        match self.process.take() {
            Some(mut process) => process.kill().await,
            None => Ok(()),
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered, as with
    /// a hung or swapping server. [`resume`](Self::resume) thaws it.
    pub async fn pause(&self) -> Result<()> {
        self.running()?.signal("-STOP").await
    }

    /// Thaws a server frozen by [`pause`](Self::pause) (SIGCONT).
    pub async fn resume(&self) -> Result<()> {
        self.running()?.signal("-CONT").await
    }

    fn running(&self) -> Result<&Process> {
        self.process.as_ref().context("redis-server is not running")
    }

    /// Starts the server again on the same port: empty without persistence, with everything
    /// written before when started with [`start_persistent`](Self::start_persistent). Should
    /// another process have taken the port meanwhile, this fails: clients expect this port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
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
        let mut process = Process::spawn("redis-server", &mut command, Vec::new())
            .context("redis-server must be installed (apt-get install redis-server)")?;
        let url = self.url();
        process
            .wait_ready(
                "redis-server to answer PING",
                &[self.port],
                START_DEADLINE,
                || ping(&url),
            )
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// A plain connection, for looking at what Redis holds.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connect to redis-server at {}", self.url()))
    }
}

/// A data directory of its own, removed when the server is dropped.
#[derive(Debug)]
struct DataDir(PathBuf);

impl DataDir {
    fn new(port: u16) -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("gatehouse-redis-{}-{port}", std::process::id()));
        // A leftover of an earlier run with the same pid and port would be replayed.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("create the redis data directory {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) async fn ping(url: &str) -> bool {
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
