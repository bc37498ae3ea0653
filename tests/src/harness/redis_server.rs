//! A private `redis-server` per test: the kit's
//! [`RedisServer`](gatehouse_testkit::RedisServer), where a failure to start, stop or connect
//! fails the test.

/// A running `redis-server` that belongs to one test; killed on drop.
#[derive(Debug)]
pub struct RedisServer(gatehouse_testkit::RedisServer);

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING (on another
    /// port if one picked is taken before the server binds it).
    pub async fn start() -> Self {
        Self(
            gatehouse_testkit::RedisServer::start()
                .await
                .expect("start redis-server"),
        )
    }

    /// As [`start`](Self::start), with every write made durable before it is acknowledged,
    /// so a restart (even after [`kill`](Self::kill)) finds everything that was written.
    pub async fn start_persistent() -> Self {
        let server = gatehouse_testkit::RedisServer::start_persistent().await;
        Self(server.expect("start a persistent redis-server"))
    }

    /// `redis://` URL of this server.
    pub fn url(&self) -> String {
        self.0.url()
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// Kills the server (as a crash would) and waits for the process to be gone.
    pub async fn kill(&mut self) {
        self.0.kill().await.expect("kill redis-server");
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered, as with
    /// a hung or swapping server. [`resume`](Self::resume) thaws it.
    pub async fn pause(&self) {
        self.0.pause().await.expect("pause redis-server");
    }

    /// Thaws a server frozen by [`pause`](Self::pause) (SIGCONT).
    pub async fn resume(&self) {
        self.0.resume().await.expect("resume redis-server");
    }

    /// Starts the server again on the same port: empty without persistence, with everything
    /// written before when started with [`start_persistent`](Self::start_persistent).
    pub async fn restart(&mut self) {
        self.0.restart().await.expect("restart redis-server");
    }

    /// A plain connection for asserting what Redis holds.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.0
            .connection()
            .await
            .expect("connect to test redis-server")
    }
}

/// A loopback port nobody listens on right now. Another process could take it before a
/// server binds it: the harness's servers are started with
/// [`start_on_free_ports`](gatehouse_testkit::ports::start_on_free_ports), which tries new
/// ports then; a test that gives a port to a server of its own takes that chance.
pub fn free_port() -> u16 {
    gatehouse_testkit::free_port().expect("bind an ephemeral loopback port")
}
