//! Activity reports: sessions used on this node (and those holding a WebSocket open) are
//! reported to the control plane in one batch per interval, so a sliding inactivity timeout
//! costs no write per request. Sessions the control plane says have ended are ended here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::state::NodeState;

/// Most records one `Touch` carries.
const BATCH: usize = 5_000;

pub async fn report_forever(state: Arc<NodeState>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        report_once(&state).await;
    }
}

pub async fn report_once(state: &NodeState) {
    let mut activity = state.cache.take_activity();
    let now = SystemTime::now();
    for handle in state.sockets.sessions() {
        activity.push((handle, now));
    }
    let distinct: std::collections::HashSet<&str> =
        activity.iter().map(|(handle, _)| handle.as_str()).collect();
    state.metrics.active_sessions(distinct.len());
    for batch in activity.chunks(BATCH) {
        match state.control.touch(batch).await {
            Ok(ended) => {
                for handle in ended {
                    let closed = state.end_session(&handle);
                    tracing::debug!(
                        websockets_closed = closed,
                        "session ended (expired or deleted)"
                    );
                }
            }
            // Kept for the next report, so an outage shortens nobody's session.
            Err(error) => {
                tracing::warn!(%error, "cannot report activity; will retry with the next report");
                state.cache.restore_activity(batch);
            }
        }
    }
}
