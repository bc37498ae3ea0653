//! Where a cached session keeps its signed identity assertion (`crate::assertion` signs it):
//! one atomic pointer, so a cache hit reads it without a lock. A cache, not part of the
//! session: a copy of a session starts empty, and every slot compares equal.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

/// An assertion signed for one session.
#[derive(Debug)]
pub struct SignedAssertion {
    /// The settings and keys it was signed under (`ProxyAssertion`'s generation).
    pub generation: u64,
    /// When to sign a new one.
    pub refresh_at: SystemTime,
    pub value: HeaderValue,
}

#[derive(Debug, Default)]
pub struct AssertionSlot(ArcSwapOption<SignedAssertion>);

impl AssertionSlot {
    /// The value held, if it was signed under `generation` and is not due for renewal at `now`.
    pub fn current(&self, generation: u64, now: SystemTime) -> Option<HeaderValue> {
        let held = self.0.load();
        held.as_ref()
            .filter(|signed| signed.generation == generation && now < signed.refresh_at)
            .map(|signed| signed.value.clone())
    }

    pub fn store(&self, signed: SignedAssertion) {
        self.0.store(Some(Arc::new(signed)));
    }

    /// Takes over what `other` holds (the same session, validated again).
    pub fn adopt(&self, other: &AssertionSlot) {
        self.0.store(other.0.load_full());
    }
}

impl Clone for AssertionSlot {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for AssertionSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AssertionSlot {}
