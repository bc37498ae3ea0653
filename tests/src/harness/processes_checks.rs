//! The real binaries the harness starts, checked on their own: a `control-plane` or
//! `data-plane` process whose port another process took between `free_port` and its bind
//! exits saying so, and is started again on new ports instead of failing the test.

use std::net::{SocketAddr, TcpListener};

use gatehouse_testkit::ports::start_on_free_ports;
use gatehouse_testkit::{ControlPlaneProcess, DataPlaneProcess, loopback};

use super::ControlPlane;
use super::control_plane::NODE_SECRET;
use super::processes::binary;

const CONFIG: &str = "[[virtual_proxies]]\nprefix = \"app\"\n";

/// Ports tried by each attempt, the first attempt's `which` port (0 or 1) taken by the test
/// before the process could bind it, as another test's server would.
#[derive(Debug, Default)]
struct Race {
    attempts: Vec<(SocketAddr, SocketAddr)>,
    squatters: Vec<TcpListener>,
}

impl Race {
    fn attempt(&mut self, ports: &[u16], which: usize) -> (SocketAddr, SocketAddr) {
        let addresses = (loopback(ports[0]), loopback(ports[1]));
        if self.attempts.is_empty() {
            let taken = TcpListener::bind(loopback(ports[which])).expect("take the port");
            self.squatters.push(taken);
        }
        self.attempts.push(addresses);
        addresses
    }
}

#[tokio::test]
async fn a_control_plane_process_whose_port_was_taken_is_started_again_on_new_ports() {
    let binary = binary("control-plane");
    let mut race = Race::default();
    let started = start_on_free_ports(2, |ports| {
        let (address, admin) = race.attempt(&ports, 0);
        ControlPlaneProcess::start_on(&binary, CONFIG, NODE_SECRET, &[], address, admin)
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}"));
    assert_eq!(race.attempts.len(), 2, "{:?}", race.attempts);
    assert_ne!(started.address, race.attempts[0].0);
    assert!(started.process.listens_on(started.address.port()));
}

#[tokio::test]
async fn a_node_process_whose_admin_port_was_taken_is_started_again_on_new_ports() {
    let control_plane = ControlPlane::start(CONFIG).await;
    let endpoint = format!("http://{}", control_plane.address());
    let binary = binary("data-plane");
    let mut race = Race::default();
    let started = start_on_free_ports(2, |ports| {
        let (address, admin) = race.attempt(&ports, 1);
        let no_settings: &[&str] = &[];
        DataPlaneProcess::start_on(
            &binary,
            &endpoint,
            NODE_SECRET,
            "node-a",
            no_settings,
            address,
            admin,
        )
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}"));
    assert_eq!(race.attempts.len(), 2, "{:?}", race.attempts);
    assert_ne!(started.admin, race.attempts[0].1);
    assert!(started.process.listens_on(started.admin.port()));
}
