//! The revocation log in memory: a bounded queue of events with sequence numbers, and a
//! notification that wakes whoever waits for the next one.

use std::time::Duration;

use async_trait::async_trait;

use super::MemoryStore;
use crate::domain::{Revocation, RevocationReason, Revocations};
use crate::store::{REVOCATION_BATCH, RevocationLog, StoreError};

#[async_trait]
impl RevocationLog for MemoryStore {
    async fn announce_created(&self, virtual_proxy: &str, digest: &str) -> Result<(), StoreError> {
        let (mut state, _) = self.state();
        state.announce(
            Revocation {
                cursor: String::new(),
                handle: digest.to_owned(),
                virtual_proxy: virtual_proxy.to_owned(),
                reason: RevocationReason::Created,
            },
            self.revocations_kept,
        );
        drop(state);
        self.revoked.notify_waiters();
        Ok(())
    }

    async fn revocations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Revocations, StoreError> {
        let after = match cursor {
            Some(text) => sequence_of(text)?,
            None => 0,
        };
        let (state, _) = self.state();
        Ok(Revocations {
            events: state
                .revocations
                .iter()
                .filter(|(sequence, _)| *sequence > after)
                .take(limit)
                .map(|(_, revocation)| revocation.clone())
                .collect(),
            trimmed: cursor.is_some() && after < state.last_trimmed,
        })
    }

    async fn revocation_head(&self) -> Result<Option<String>, StoreError> {
        let (state, _) = self.state();
        Ok(state
            .revocations
            .back()
            .map(|(sequence, _)| cursor_of(*sequence)))
    }

    async fn wait_for_revocations(
        &self,
        cursor: Option<&str>,
        wait: Duration,
    ) -> Result<Revocations, StoreError> {
        // Register interest before looking, so an event between the look and the wait is
        // not missed.
        let notified = self.revoked.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let revocations = self.revocations_after(cursor, REVOCATION_BATCH).await?;
        if !revocations.events.is_empty() || revocations.trimmed {
            return Ok(revocations);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.revocations_after(cursor, REVOCATION_BATCH).await
    }
}

/// Cursors look like Redis stream ids, so nodes handle one format.
pub(super) fn cursor_of(sequence: u64) -> String {
    format!("0-{sequence}")
}

fn sequence_of(cursor: &str) -> Result<u64, StoreError> {
    cursor
        .strip_prefix("0-")
        .and_then(|sequence| sequence.parse().ok())
        .ok_or(StoreError::InvalidCursor)
}
