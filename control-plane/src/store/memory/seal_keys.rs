//! Seal keys in memory: a map by id.

use async_trait::async_trait;

use super::MemoryStore;
use crate::domain::SealKey;
use crate::store::{SealKeys, StoreError};

#[async_trait]
impl SealKeys for MemoryStore {
    async fn seal_keys(&self) -> Result<Vec<SealKey>, StoreError> {
        let (state, _) = self.state();
        Ok(state.seal_keys.values().cloned().collect())
    }

    async fn add_seal_key(&self, key: &SealKey) -> Result<(), StoreError> {
        let (mut state, _) = self.state();
        state
            .seal_keys
            .entry(key.id.clone())
            .or_insert_with(|| key.clone());
        Ok(())
    }

    async fn remove_seal_key(&self, id: &str) -> Result<(), StoreError> {
        let (mut state, _) = self.state();
        state.seal_keys.remove(id);
        Ok(())
    }
}
