//! Redis as production runs it, for one test: a master with a replica watched by three
//! sentinels, or a three-master Redis Cluster. Real processes on ephemeral loopback ports, in
//! a private temporary directory, killed on drop.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use gatehouse_testkit::ports::start_on_free_ports;
use tokio::process::Command;

use super::eventually::eventually;

/// The name the sentinels know the master by.
pub const SENTINEL_MASTER: &str = "gatehouse";

/// How long a fresh Redis process may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// One Redis process (a data node or a sentinel) that belongs to a test.
#[derive(Debug)]
struct RedisProcess {
    port: u16,
    /// `None` once killed.
    process: Option<gatehouse_testkit::Process>,
}

impl RedisProcess {
    /// `program` with the arguments `args` makes of `ports` (the first is where it answers
    /// PING), answering PING. A port another process takes before this one binds it makes
    /// it exit; it is then started again on new ports.
    async fn start(
        program: &str,
        ports: usize,
        mut args: impl FnMut(&[u16]) -> Vec<String>,
    ) -> Self {
        let started = start_on_free_ports(ports, |ports| {
            let mut command = Command::new(program);
            command.args(args(&ports));
            async move {
                let mut process =
                    gatehouse_testkit::Process::spawn(program, &mut command, Vec::new()).map_err(
                        |error| error.context("redis-server and redis-sentinel must be installed"),
                    )?;
                let url = format!("redis://127.0.0.1:{}/", ports[0]);
                process
                    .wait_ready(&format!("{program} to answer PING"), &ports, START_DEADLINE, || {
                        let url = url.clone();
                        async move { query::<String>(&url, &redis::cmd("PING")).await.is_some() }
                    })
                    .await?;
                Ok(Self {
                    port: ports[0],
                    process: Some(process),
                })
            }
        })
        .await;
        started.unwrap_or_else(|error| panic!("start {program}: {error:#}"))
    }

    async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill().await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

async fn connection(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()
}

async fn query<T: redis::FromRedisValue>(url: &str, command: &redis::Cmd) -> Option<T> {
    let mut connection = connection(url).await?;
    command.query_async(&mut connection).await.ok()
}

/// A data node's arguments: loopback, no persistence, files in `dir`.
fn data_node_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A master, one replica and three sentinels (quorum 2) that fail over after one second
/// without an answer from the master.
#[derive(Debug)]
pub struct SentinelGroup {
    master: RedisProcess,
    replica: RedisProcess,
    sentinels: Vec<RedisProcess>,
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// Starts the master, then the replica and the sentinels, which are told its port.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let master_dir = dir.path().join("master");
        let replica_dir = dir.path().join("replica");
        std::fs::create_dir_all(&master_dir).expect("master directory");
        std::fs::create_dir_all(&replica_dir).expect("replica directory");
        let master = RedisProcess::start("redis-server", 1, |ports| {
            data_node_args(ports[0], &master_dir)
        })
        .await;
        let master_port = master.port.to_string();
        let replica = RedisProcess::start("redis-server", 1, |ports| {
            let mut args = data_node_args(ports[0], &replica_dir);
            args.extend(["--replicaof", "127.0.0.1", &master_port].map(str::to_owned));
            args
        })
        .await;
        let mut sentinels = Vec::new();
        for index in 0..3 {
            // A sentinel rewrites its configuration file as it learns: each has its own,
            // written afresh for each attempt.
            let config = dir.path().join(format!("sentinel-{index}.conf"));
            let sentinel = RedisProcess::start("redis-sentinel", 1, |ports| {
                std::fs::write(
                    &config,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                        port = ports[0],
                        dir = dir.path().display(),
                    ),
                )
                .expect("sentinel configuration");
                vec![config.display().to_string()]
            })
            .await;
            sentinels.push(sentinel);
        }
        let group = Self {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        group.wait_until_master_known().await;
        group
    }

    /// Until every sentinel names the master (asked at once, from their configuration).
    async fn wait_until_master_known(&self) {
        for sentinel in &self.sentinels {
            let url = sentinel.url();
            eventually(
                "a sentinel to name the master",
                Duration::from_secs(10),
                || {
                    let url = url.clone();
                    async move {
                        let _: (String, String) = query(
                            &url,
                            redis::cmd("SENTINEL")
                                .arg("GET-MASTER-ADDR-BY-NAME")
                                .arg(SENTINEL_MASTER),
                        )
                        .await?;
                        Some(())
                    }
                },
            )
            .await;
        }
    }

    /// Until the replica is in sync and every sentinel knows it, so that a failover can
    /// happen. Sentinels learn of replicas from the master's INFO, every 10 s at first.
    pub async fn wait_until_failover_possible(&self) {
        let replica = self.replica.url();
        eventually("the replica to sync", Duration::from_secs(15), || {
            let replica = replica.clone();
            async move {
                let info: String = query(&replica, redis::cmd("INFO").arg("replication")).await?;
                info.contains("master_link_status:up").then_some(())
            }
        })
        .await;
        for sentinel in &self.sentinels {
            let url = sentinel.url();
            eventually(
                "a sentinel to see the replica",
                Duration::from_secs(15),
                || {
                    let url = url.clone();
                    async move {
                        let replicas: Vec<redis::Value> = query(
                            &url,
                            redis::cmd("SENTINEL").arg("REPLICAS").arg(SENTINEL_MASTER),
                        )
                        .await?;
                        (!replicas.is_empty()).then_some(())
                    }
                },
            )
            .await;
        }
    }

    /// URLs of the three sentinels.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisProcess::url).collect()
    }

    /// The `[store]` table of a control plane on this group.
    pub fn store_toml(&self) -> String {
        format!(
            "[store]\nbackend = \"redis\"\ntopology = \"sentinel\"\nsentinel_master = \"{SENTINEL_MASTER}\"\nsentinel_urls = {:?}\n",
            self.sentinel_urls()
        )
    }

    /// Port of the server that is master when this is called (as the sentinels say).
    pub async fn master_port(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let address: Option<(String, String)> = query(
                &sentinel.url(),
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(SENTINEL_MASTER),
            )
            .await;
            if let Some((_, port)) = address {
                return port.parse().ok();
            }
        }
        None
    }

    /// The original master's URL.
    pub fn first_master_url(&self) -> String {
        self.master.url()
    }

    /// Kills the original master (as a crash would) and waits until the sentinels have
    /// promoted the replica. Returns how long the failover took, from the kill.
    pub async fn kill_master_and_wait_for_failover(&mut self) -> Duration {
        let started = std::time::Instant::now();
        self.master.kill().await;
        let replica_port = self.replica.port;
        let replica = self.replica.url();
        eventually("the sentinels to promote the replica", Duration::from_secs(30), || {
            let replica = replica.clone();
            let sentinels = &*self;
            async move {
                let role: Vec<redis::Value> = query(&replica, &redis::cmd("ROLE")).await?;
                let is_master = matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master");
                (is_master && sentinels.master_port().await == Some(replica_port)).then_some(())
            }
        })
        .await;
        started.elapsed()
    }

    /// A connection to whichever server is master now.
    pub async fn master_connection(&self) -> redis::aio::MultiplexedConnection {
        let port = self
            .master_port()
            .await
            .expect("the sentinels name a master");
        connection(&format!("redis://127.0.0.1:{port}/"))
            .await
            .expect("connect to the master")
    }

    /// Waits until the replica has every write the master acknowledged so far, so that a
    /// failover from here on loses nothing written before this call.
    pub async fn wait_for_replication(&self) {
        let master = self.master.url();
        let replica = self.replica.url();
        eventually("the replica to catch up", Duration::from_secs(10), || {
            let (master, replica) = (master.clone(), replica.clone());
            async move {
                let offset = |info: String, field: &str| {
                    info.lines()
                        .find_map(|line| line.strip_prefix(field))
                        .and_then(|value| value.trim().parse::<u64>().ok())
                };
                let master_info: String =
                    query(&master, redis::cmd("INFO").arg("replication")).await?;
                let replica_info: String =
                    query(&replica, redis::cmd("INFO").arg("replication")).await?;
                let written = offset(master_info, "master_repl_offset:")?;
                let copied = offset(replica_info, "slave_repl_offset:")?;
                (copied >= written).then_some(())
            }
        })
        .await;
    }
}

/// A Redis Cluster of three masters (no replicas), made with `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisProcess>,
    _dir: tempfile::TempDir,
}

/// One cluster node in `node_dir`, answering PING. The cluster bus port is set explicitly:
/// the default (port + 10000) can fall outside the port range for an ephemeral port.
async fn start_cluster_node(node_dir: &Path) -> RedisProcess {
    std::fs::create_dir_all(node_dir).expect("node directory");
    let nodes_conf = node_dir.join("nodes.conf");
    RedisProcess::start("redis-server", 2, |ports| {
        // What an attempt that lost its port wrote is not this node's.
        let _ = std::fs::remove_file(&nodes_conf);
        let mut args = data_node_args(ports[0], node_dir);
        args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &ports[1].to_string(),
                "--cluster-config-file",
                &nodes_conf.display().to_string(),
                "--cluster-node-timeout",
                "2000",
            ]
            .map(str::to_owned),
        );
        args
    })
    .await
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut nodes = Vec::new();
        for index in 0..3 {
            nodes.push(start_cluster_node(&dir.path().join(format!("node-{index}"))).await);
        }
        let mut create = std::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        for node in &nodes {
            let url = node.url();
            eventually("the cluster to be ready", Duration::from_secs(15), || {
                let url = url.clone();
                async move {
                    let info: String = query(&url, redis::cmd("CLUSTER").arg("INFO")).await?;
                    info.contains("cluster_state:ok").then_some(())
                }
            })
            .await;
        }
        Self { nodes, _dir: dir }
    }

    /// URLs of every node (any of them finds the rest).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProcess::url).collect()
    }

    /// The `[store]` table of a control plane on this cluster.
    pub fn store_toml(&self) -> String {
        format!(
            "[store]\nbackend = \"redis\"\ntopology = \"cluster\"\ncluster_urls = {:?}\n",
            self.urls()
        )
    }

    /// How many keys each master holds, in node order.
    pub async fn keys_per_node(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            counts.push(
                query::<u64>(&node.url(), &redis::cmd("DBSIZE"))
                    .await
                    .expect("DBSIZE"),
            );
        }
        counts
    }
}
