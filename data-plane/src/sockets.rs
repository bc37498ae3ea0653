//! Open WebSockets by session, so that a revocation closes them at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct WebSocketRegistry {
    next_id: AtomicU64,
    open: Mutex<HashMap<String, HashMap<u64, CancellationToken>>>,
    /// Cancelled when the node shuts down: every WebSocket is told to go away.
    shutting_down: CancellationToken,
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
        if let Some(sockets) = open.get_mut(&self.handle) {
            sockets.remove(&self.id);
            if sockets.is_empty() {
                open.remove(&self.handle);
            }
        }
    }
}

impl WebSocketRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<u64, CancellationToken>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register(self: &Arc<Self>, handle: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ended = CancellationToken::new();
        self.lock()
            .entry(handle.to_owned())
            .or_default()
            .insert(id, ended.clone());
        Registration {
            registry: self.clone(),
            handle: handle.to_owned(),
            id,
            ended,
            shutting_down: self.shutting_down.clone(),
        }
    }

    /// Ends every WebSocket of a session; returns how many there were.
    pub fn close_session(&self, handle: &str) -> usize {
        let sockets = self.lock().remove(handle).unwrap_or_default();
        for ended in sockets.values() {
            ended.cancel();
        }
        sockets.len()
    }

    /// Ends every WebSocket (revocations were missed, so none can be trusted).
    pub fn close_all(&self) -> usize {
        let all = std::mem::take(&mut *self.lock());
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
        self.lock().keys().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
}
