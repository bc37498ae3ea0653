//! Following the control plane's `Watch` stream: snapshots replace the routing table,
//! revocations end sessions (cache entry and WebSockets) within milliseconds. On a broken
//! stream the node reconnects with its last cursor, so nothing revoked meanwhile is missed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_proto::v1 as pb;
use rand::Rng as _;

use crate::flood::negative::UnknownKey;
use crate::router::ProxyTable;
use crate::state::NodeState;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Follows the stream until the process ends.
pub async fn follow(state: Arc<NodeState>) {
    let mut cursor: Option<String> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let request = pb::WatchRequest {
            node_id: state.control.node_id().to_owned(),
            cursor: cursor.clone(),
        };
        match state.control.watch(request).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        backoff = MIN_BACKOFF;
                        apply(&state, event, &mut cursor);
                    }
                    Ok(None) => {
                        tracing::warn!("control plane ended the watch stream; reconnecting");
                        break;
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "watch stream broke; reconnecting");
                        break;
                    }
                }
            },
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot watch the control plane");
            }
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::select! {
            () = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
            // A validation or login just got through after failures (a partition healed, a
            // replica came back): reconnect now, so the revocations missed meanwhile do not
            // wait for a backoff that has grown to its maximum, and close the WebSockets of
            // revoked sessions seconds sooner.
            () = state.control.reachable_again() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn apply(state: &NodeState, event: pb::WatchEvent, cursor: &mut Option<String>) {
    match event.event {
        Some(pb::watch_event::Event::Snapshot(snapshot)) => {
            let table =
                ProxyTable::from_snapshot(&snapshot, &state.table.load(), &state.upstream_tls);
            tracing::info!(
                virtual_proxies = table.all().len(),
                flush = snapshot.flush_cache,
                "configuration snapshot applied"
            );
            state.table.store(Arc::new(table));
            if snapshot.flush_cache {
                // Revocations were missed: no cached session and no open WebSocket can be
                // trusted any more.
                state.cache.flush();
                let closed = state.sockets.close_all();
                tracing::warn!(
                    closed,
                    "revocations were missed; cache flushed and WebSockets closed"
                );
            }
            state.mark_ready();
        }
        // Not an end: a session now exists for a token this node may hold as unknown.
        Some(pb::watch_event::Event::Revocation(created)) if created.reason == "created" => {
            if let Some(key) = UnknownKey::from_hex(&created.handle) {
                state.flood.negative.forget(&key);
            }
        }
        Some(pb::watch_event::Event::Revocation(revocation)) => {
            let closed = state.end_session(&revocation.handle);
            let delay = propagation_delay_ms(&event.cursor);
            state.metrics.revocation(delay.map(|ms| ms as f64 / 1000.0));
            tracing::debug!(
                reason = %revocation.reason,
                websockets_closed = closed,
                delay_ms = delay,
                "session revoked"
            );
        }
        None => {}
    }
    if !event.cursor.is_empty() {
        *cursor = Some(event.cursor);
    }
}

/// Stream cursors start with the time the revocation was recorded (Redis stream ids).
fn propagation_delay_ms(cursor: &str) -> Option<u64> {
    let recorded: u64 = cursor.split_once('-')?.0.parse().ok()?;
    if recorded == 0 {
        return None;
    }
    let now = u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_millis(),
    )
    .ok()?;
    now.checked_sub(recorded)
}
