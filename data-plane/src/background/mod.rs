//! The node's background tasks that keep it in step with the control plane: following the
//! `Watch` stream (snapshots and revocations) and reporting session activity. They use the
//! control client and the node's state, so they live above both.

pub mod activity;
pub mod watch;
