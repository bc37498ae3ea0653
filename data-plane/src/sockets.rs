//! Open WebSockets by session, so that a revocation closes them at once, and so that a
//! session, and the node, hold no more of them than the limits allow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct WebSocketRegistry {
    next_id: AtomicU64,
    open: Mutex<Open>,
    /// Cancelled when the node shuts down: every WebSocket is told to go away.
    shutting_down: CancellationToken,
}

#[derive(Debug, Default)]
struct Open {
    /// The sockets a revocation would close, by session handle.
    by_session: HashMap<String, HashMap<u64, CancellationToken>>,
    /// Every socket still relaying, closed by a revocation or not: what the node holds.
    total: usize,
}

/// Why a WebSocket was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebSocketRefusal {
    #[error("too many WebSockets for this session")]
    SessionLimit,
    #[error("too many WebSockets on this node")]
    NodeLimit,
}

/// How many WebSockets may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketLimits {
    pub per_session: usize,
    pub per_node: usize,
}

/// One open WebSocket; unregisters itself when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<WebSocketRegistry>,
    handle: String,
    id: u64,
    /// Cancelled when the session ends.
    pub ended: CancellationToken,
    /// Cancelled when the node shuts down.
    pub shutting_down: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(sockets) = open.by_session.get_mut(&self.handle) {
            sockets.remove(&self.id);
            if sockets.is_empty() {
                open.by_session.remove(&self.handle);
            }
        }
    }
}

impl WebSocketRegistry {
    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more WebSocket of session `handle`, unless that session or the node
    /// already holds as many as `limits` allow.
    pub fn register(
        self: &Arc<Self>,
        handle: &str,
        limits: WebSocketLimits,
    ) -> Result<Registration, WebSocketRefusal> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ended = CancellationToken::new();
        {
            let mut open = self.lock();
            if open.total >= limits.per_node {
                return Err(WebSocketRefusal::NodeLimit);
            }
            let sockets = open.by_session.entry(handle.to_owned()).or_default();
            if sockets.len() >= limits.per_session {
                return Err(WebSocketRefusal::SessionLimit);
            }
            sockets.insert(id, ended.clone());
            open.total += 1;
        }
        Ok(Registration {
            registry: self.clone(),
            handle: handle.to_owned(),
            id,
            ended,
            shutting_down: self.shutting_down.clone(),
        })
    }

    /// Ends every WebSocket of a session; returns how many there were.
    pub fn close_session(&self, handle: &str) -> usize {
        let sockets = self.lock().by_session.remove(handle).unwrap_or_default();
        for ended in sockets.values() {
            ended.cancel();
        }
        sockets.len()
    }

    /// Ends every WebSocket (revocations were missed, so none can be trusted).
    pub fn close_all(&self) -> usize {
        let all = std::mem::take(&mut self.lock().by_session);
        all.values()
            .flat_map(HashMap::values)
            .for_each(CancellationToken::cancel);
        all.values().map(HashMap::len).sum()
    }

    /// Tells every WebSocket the node is going away (close code 1001).
    pub fn shut_down(&self) {
        self.shutting_down.cancel();
    }

    /// Sessions with an open WebSocket: active by definition.
    pub fn sessions(&self) -> Vec<String> {
        self.lock().by_session.keys().cloned().collect()
    }

    /// WebSockets still relaying, including those closing after a revocation.
    pub fn count(&self) -> usize {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WebSocketLimits = WebSocketLimits {
        per_session: 2,
        per_node: 3,
    };

    #[test]
    fn a_session_and_the_node_hold_no_more_sockets_than_allowed() {
        let registry = Arc::new(WebSocketRegistry::default());
        let first = registry.register("alice", LIMITS).unwrap();
        let _second = registry.register("alice", LIMITS).unwrap();
        assert_eq!(
            registry.register("alice", LIMITS).unwrap_err(),
            WebSocketRefusal::SessionLimit
        );
        let _bob = registry.register("bob", LIMITS).unwrap();
        assert_eq!(
            registry.register("carol", LIMITS).unwrap_err(),
            WebSocketRefusal::NodeLimit
        );
        drop(first);
        assert!(
            registry.register("alice", LIMITS).is_ok(),
            "a closed socket frees its place"
        );
    }

    #[test]
    fn a_revoked_socket_counts_until_it_has_closed() {
        let registry = Arc::new(WebSocketRegistry::default());
        let socket = registry.register("alice", LIMITS).unwrap();
        assert_eq!(registry.close_session("alice"), 1);
        assert!(socket.ended.is_cancelled());
        assert_eq!(registry.count(), 1, "still relaying its close frames");
        drop(socket);
        assert_eq!(registry.count(), 0);
    }
}
