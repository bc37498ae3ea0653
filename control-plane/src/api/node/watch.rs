//! One `Watch` stream: a snapshot, the revocations a reconnecting node missed, then live
//! revocations from the process's feed.

use std::sync::Arc;

use gatehouse_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::virtual_proxy::virtual_proxy_to_proto;
use crate::domain::Revocation;
use crate::error::Error;
use crate::events::{FeedEvent, RevocationFeed, cursor_position};
use crate::store::{REVOCATION_BATCH, Store};

/// Events queued per node before the stream applies back-pressure.
const QUEUE: usize = 1024;

pub(super) type WatchSender = mpsc::Sender<Result<pb::WatchEvent, Status>>;

/// Everything a watch stream needs, shared by all of them.
#[derive(Debug, Clone)]
pub(crate) struct WatchSource {
    pub store: Arc<dyn Store>,
    pub feed: Arc<RevocationFeed>,
    /// Where the virtual proxies in force are read at each snapshot.
    pub authority: crate::authority::Authority,
    /// Cancelled when the server shuts down: streams end, so connections can drain.
    pub stopping: CancellationToken,
}

impl WatchSource {
    /// Opens a stream for a node that last saw `cursor`.
    pub async fn open(
        &self,
        node: String,
        cursor: Option<String>,
    ) -> Result<mpsc::Receiver<Result<pb::WatchEvent, Status>>, Status> {
        let cursor = cursor.filter(|cursor| !cursor.is_empty());
        if cursor
            .as_deref()
            .is_some_and(|c| cursor_position(c).is_none())
        {
            return Err(Status::invalid_argument("cursor is not valid"));
        }
        // Subscribe before reading the backlog, so nothing falls between the two.
        let live = self.feed.subscribe();
        let (mut flush, backlog, resume_from) = match cursor {
            Some(cursor) => {
                let (backlog, trimmed) = self.catch_up(&cursor).await?;
                if trimmed {
                    (
                        true,
                        Vec::new(),
                        Some(
                            self.current_head()
                                .await?
                                .unwrap_or_else(|| "0-0".to_owned()),
                        ),
                    )
                } else {
                    (false, backlog, Some(cursor))
                }
            }
            // A node always gets a concrete cursor, "0-0" before the first event ever, so
            // that on reconnect it can be given exactly what it missed.
            None => (
                false,
                Vec::new(),
                Some(
                    self.current_head()
                        .await
                        .unwrap_or_else(|_| self.feed.head())
                        .unwrap_or_else(|| "0-0".to_owned()),
                ),
            ),
        };
        let (sender, receiver) = mpsc::channel(QUEUE);
        let source = self.clone();
        tokio::spawn(async move {
            tracing::info!(%node, flush, "node watching");
            let snapshot = source.snapshot(std::mem::take(&mut flush), resume_from.clone());
            if sender.send(Ok(snapshot)).await.is_err() {
                return;
            }
            source.stream(&sender, backlog, live, resume_from).await;
            tracing::info!(%node, "node stopped watching");
        });
        Ok(receiver)
    }

    fn snapshot(&self, flush_cache: bool, cursor: Option<String>) -> pb::WatchEvent {
        let keys = self.authority.signing_keys();
        pb::WatchEvent {
            cursor: cursor.unwrap_or_default(),
            event: Some(pb::watch_event::Event::Snapshot(pb::ConfigSnapshot {
                virtual_proxies: self
                    .authority
                    .virtual_proxies()
                    .all()
                    .iter()
                    .map(|proxy| {
                        let mut proto = virtual_proxy_to_proto(
                            proxy,
                            self.authority.proxy_rest_uri(&proxy.prefix),
                        );
                        if let Some(assertion) = &mut proto.identity_assertion {
                            keys.issuer().clone_into(&mut assertion.issuer);
                        }
                        proto
                    })
                    .collect(),
                flush_cache,
                assertion_keys: keys.to_proto(),
            })),
        }
    }

    async fn current_head(&self) -> Result<Option<String>, Status> {
        self.store
            .revocation_head()
            .await
            .map_err(|error| Status::from(Error::from(error)))
    }

    /// Every revocation after `cursor`; `true` when some were trimmed away.
    async fn catch_up(&self, cursor: &str) -> Result<(Vec<Revocation>, bool), Status> {
        let mut events = Vec::new();
        let mut from = cursor.to_owned();
        loop {
            let batch = self
                .store
                .revocations_after(Some(&from), REVOCATION_BATCH)
                .await
                .map_err(|error| Status::from(Error::from(error)))?;
            if batch.trimmed {
                return Ok((Vec::new(), true));
            }
            let Some(last) = batch.events.last() else {
                return Ok((events, false));
            };
            from.clone_from(&last.cursor);
            events.extend(batch.events);
        }
    }

    async fn stream(
        &self,
        sender: &WatchSender,
        backlog: Vec<Revocation>,
        mut live: broadcast::Receiver<FeedEvent>,
        mut last: Option<String>,
    ) {
        for event in backlog {
            if !send_revocation(sender, event, &mut last).await {
                return;
            }
        }
        loop {
            let received = tokio::select! {
                () = self.stopping.cancelled() => {
                    let _ = sender.send(Err(Status::unavailable("control plane shutting down"))).await;
                    return;
                }
                received = live.recv() => received,
            };
            match received {
                Ok(FeedEvent::Revoked(event)) => {
                    if !send_revocation(sender, event, &mut last).await {
                        return;
                    }
                }
                Ok(FeedEvent::Configuration) => {
                    // New virtual proxies: a snapshot that flushes nothing.
                    if sender
                        .send(Ok(self.snapshot(false, last.clone())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(FeedEvent::Flush) => {
                    let head = self.feed.head();
                    last.clone_from(&head);
                    if sender.send(Ok(self.snapshot(true, head))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // This node fell behind the feed: read what it missed from the store.
                    let Some(from) = last.clone() else { continue };
                    match self.catch_up(&from).await {
                        Ok((events, false)) => {
                            for event in events {
                                if !send_revocation(sender, event, &mut last).await {
                                    return;
                                }
                            }
                        }
                        Ok((_, true)) => {
                            let head = self.current_head().await.ok().flatten();
                            last.clone_from(&head);
                            if sender.send(Ok(self.snapshot(true, head))).await.is_err() {
                                return;
                            }
                        }
                        // The node reconnects and catches up from its cursor.
                        Err(status) => {
                            let _ = sender.send(Err(status)).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = sender
                        .send(Err(Status::unavailable("control plane shutting down")))
                        .await;
                    return;
                }
            }
        }
    }
}

/// Sends an event unless the node has it already; `false` once the node is gone.
async fn send_revocation(
    sender: &WatchSender,
    event: Revocation,
    last: &mut Option<String>,
) -> bool {
    let seen = last
        .as_deref()
        .and_then(cursor_position)
        .zip(cursor_position(&event.cursor))
        .is_some_and(|(last, this)| this <= last);
    if seen {
        return true;
    }
    *last = Some(event.cursor.clone());
    let message = pb::WatchEvent {
        cursor: event.cursor,
        event: Some(pb::watch_event::Event::Revocation(pb::Revocation {
            handle: event.handle,
            virtual_proxy: event.virtual_proxy,
            reason: event.reason.as_str().to_owned(),
        })),
    };
    sender.send(Ok(message)).await.is_ok()
}
