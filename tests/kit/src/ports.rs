//! Loopback addresses on ports nobody listens on yet, and servers started on them.
//!
//! A port is picked by binding port 0 and closing the socket again, so the server can bind it
//! by number. Between the two, any process on the machine (another test's server, a client's
//! ephemeral port) can take it, and the server then exits. Under load on a shared CI machine
//! this happens: [`start_on_free_ports`] starts such a server again on new ports instead of
//! failing the run.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};

use anyhow::{Result, bail};

use crate::process::Exited;

/// How many times a server whose port was taken is started on new ports. Each loss takes a
/// stranger binding that very port in a few milliseconds: losing five in a row means
/// something else is wrong.
const ATTEMPTS: usize = 5;

/// A loopback port nobody listens on right now. Another process could take it before the
/// child binds it: start servers with [`start_on_free_ports`].
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `count` different loopback ports nobody listens on right now (two calls of
/// [`free_port`] can give the same port, since each socket is closed before the next).
pub fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts a server that listens on `count` ports: `start` is given free ports, spawns the
/// server on them and waits until it is ready. When it fails because the server exited
/// saying a port was already in use (an [`Exited`] whose
/// [`port_taken`](Exited::port_taken)), it is called again with new ports, up to five
/// times; any other failure is returned at once.
pub async fn start_on_free_ports<T, F, Fut>(count: usize, mut start: F) -> Result<T>
where
    F: FnMut(Vec<u16>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut lost = Vec::new();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let ports = free_ports(count)?;
        match start(ports.clone()).await {
            Ok(server) => return Ok(server),
            Err(error) if port_taken(&error) => {
                lost.push(ports);
                last = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    let last = last.map(|error| format!("{error:#}")).unwrap_or_default();
    bail!(
        "another process took the ports of every attempt to start this server ({lost:?}), or \
         a port it was given besides these is in use; the last attempt: {last}"
    )
}

/// Whether `error` is (or was caused by) a server exiting because a port was taken.
pub fn port_taken(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<Exited>()
            .is_some_and(Exited::port_taken)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use anyhow::Context as _;
    use tokio::process::Command;

    use super::*;
    use crate::process::Process;

    /// One `redis-server` on `port`, ready when it answers PING from its own socket.
    async fn redis_on(port: u16) -> Result<Process> {
        let mut process = spawn_redis(port, &[])?;
        answers_ping(&mut process, port)
            .await
            .context("start redis-server")?;
        Ok(process)
    }

    async fn ping(port: u16) -> bool {
        crate::redis_server::ping(&format!("redis://127.0.0.1:{port}/")).await
    }

    /// Waits until `process` listens on `port` itself and PING is answered there.
    async fn answers_ping(process: &mut Process, port: u16) -> Result<()> {
        process
            .wait_ready(
                "redis-server to answer PING",
                &[port],
                Duration::from_secs(10),
                || ping(port),
            )
            .await
    }

    fn spawn_redis(port: u16, extra: &[&str]) -> Result<Process> {
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        command
            .args(["--save", "", "--appendonly", "no"])
            .args(extra);
        Process::spawn("redis-server", &mut command, Vec::new())
    }

    #[test]
    fn free_ports_are_all_different() {
        let ports = free_ports(50).unwrap();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 50, "{ports:?}");
    }

    #[tokio::test]
    async fn a_server_whose_port_was_taken_before_it_bound_it_is_started_on_another() {
        // The race, provoked: between picking the port and the server's bind, another process
        // takes it (here the test itself, listening on it for the whole first attempt).
        let mut squatters = Vec::new();
        let mut attempts = Vec::new();
        let (port, server) = start_on_free_ports(1, |ports| {
            let port = ports[0];
            if attempts.is_empty() {
                squatters.push(TcpListener::bind(loopback(port)).unwrap());
            }
            attempts.push(port);
            async move { Ok((port, redis_on(port).await?)) }
        })
        .await
        .expect("the second attempt starts");
        assert_eq!(attempts.len(), 2, "ports tried: {attempts:?}");
        assert_ne!(port, attempts[0]);
        assert!(ping(port).await);
        assert!(server.listens_on(port));
    }

    #[tokio::test]
    async fn a_server_whose_every_port_is_taken_fails_after_five_attempts() {
        let mut squatters = Vec::new();
        let error = start_on_free_ports(1, |ports| {
            squatters.push(TcpListener::bind(loopback(ports[0])).unwrap());
            async move { redis_on(ports[0]).await }
        })
        .await
        .expect_err("no attempt can start");
        assert_eq!(squatters.len(), 5);
        assert!(
            format!("{error:#}").contains("took the ports of every attempt"),
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn a_server_that_fails_for_another_reason_is_not_started_again() {
        let mut attempts = 0;
        let error = start_on_free_ports(1, |ports| {
            attempts += 1;
            async move {
                let mut process = spawn_redis(ports[0], &["--no-such-option", "yes"])?;
                process
                    .wait_ready("redis-server", &ports, Duration::from_secs(10), || {
                        ping(ports[0])
                    })
                    .await?;
                Ok(process)
            }
        })
        .await
        .expect_err("a bad option is not a taken port");
        assert_eq!(attempts, 1);
        assert!(format!("{error:#}").contains("no-such-option"), "{error:#}");
    }

    #[tokio::test]
    async fn redis_server_and_sentinel_on_a_taken_port_say_it_was_taken() {
        let port = free_port().unwrap();
        let _squatter = TcpListener::bind(loopback(port)).unwrap();
        let server = spawn_redis(port, &[]).unwrap();
        let config = crate::process::scratch_file("sentinel", "conf");
        std::fs::write(
            &config,
            format!("port {port}\nbind 127.0.0.1\nsentinel monitor m 127.0.0.1 1 2\n"),
        )
        .unwrap();
        let mut command = Command::new("redis-sentinel");
        command.arg(&config);
        let sentinel = Process::spawn("redis-sentinel", &mut command, vec![config]).unwrap();
        for mut process in [server, sentinel] {
            let error = process
                .wait_ready("never", &[port], Duration::from_secs(10), || async {
                    false
                })
                .await
                .expect_err("it exits");
            assert!(port_taken(&error), "{error:#}");
        }
    }

    #[tokio::test]
    async fn a_server_on_a_taken_port_is_not_ready_for_the_answer_of_the_one_that_took_it() {
        let port = free_port().unwrap();
        let _first = redis_on(port).await.unwrap();
        let mut second = spawn_redis(port, &[]).unwrap();
        let error = answers_ping(&mut second, port)
            .await
            .expect_err("the second server exits, though PING is answered on its port");
        assert!(port_taken(&error), "{error:#}");
    }
}
