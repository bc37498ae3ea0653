//! Faults injected under load: a control-plane replica lost, a node killed, a control plane
//! down or cut off, Redis stopped, frozen or failed over, thousands of sessions soaking, and
//! hostile clients at scale. `tests/reliability.sh` runs this folder alone, in release.

mod control_plane_down;
mod control_plane_replica_lost;
mod data_plane_node_killed;
pub(crate) mod fixtures;
mod hostile_clients_at_scale;
mod partition;
mod redis_outage;
mod redis_topologies;
mod sealed_sessions;
mod soak;
