//! Assertion-signing keys in memory: a map by id.

use async_trait::async_trait;

use super::MemoryStore;
use crate::domain::AssertionKey;
use crate::store::{AssertionKeys, StoreError};

#[async_trait]
impl AssertionKeys for MemoryStore {
    async fn assertion_keys(&self) -> Result<Vec<AssertionKey>, StoreError> {
        let (state, _) = self.state();
        Ok(state.assertion_keys.values().cloned().collect())
    }

    async fn add_assertion_key(&self, key: &AssertionKey) -> Result<(), StoreError> {
        let (mut state, _) = self.state();
        state
            .assertion_keys
            .entry(key.id.clone())
            .or_insert_with(|| key.clone());
        Ok(())
    }

    async fn remove_assertion_key(&self, id: &str) -> Result<(), StoreError> {
        let (mut state, _) = self.state();
        state.assertion_keys.remove(id);
        Ok(())
    }
}
