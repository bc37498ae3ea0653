//! `[outage]`: how sessions keep working while the store cannot be reached.

use std::time::Duration;

use serde::Deserialize;

/// How sessions keep working while the store cannot be reached (see `crate::outage`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutageConfig {
    /// How long after the store became unreachable a session is still served from its
    /// sealed claims; zero turns sealing off (no seal cookie is set).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// A seal older than this is renewed the next time a node checks the session.
    #[serde(with = "humantime_serde")]
    pub seal_refresh: Duration,
    /// How often a new sealing key is made; a key is kept for two periods.
    #[serde(with = "humantime_serde")]
    pub key_rotation: Duration,
    /// Most recent revocations remembered to refuse ended sessions' seals.
    pub max_revocations: usize,
}

impl Default for OutageConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(15 * 60),
            seal_refresh: Duration::from_secs(2 * 60),
            key_rotation: Duration::from_secs(24 * 3600),
            max_revocations: 200_000,
        }
    }
}

impl OutageConfig {
    pub fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if self.seal_refresh.is_zero() {
            return Err("outage.seal_refresh must be greater than zero".to_owned());
        }
        let day = Duration::from_secs(24 * 3600);
        if self.grace > day * 30 || self.seal_refresh > day || self.key_rotation > day * 365 {
            return Err(
                "outage: grace at most 30 days, seal_refresh at most 1 day, key_rotation at most 365 days"
                    .to_owned(),
            );
        }
        if self.key_rotation < Duration::from_secs(3600) {
            return Err("outage.key_rotation must be at least 1h".to_owned());
        }
        if self.key_rotation < self.grace + self.seal_refresh {
            return Err(
                "outage.key_rotation must be at least outage.grace + outage.seal_refresh"
                    .to_owned(),
            );
        }
        if self.max_revocations == 0 {
            return Err("outage.max_revocations must be greater than zero".to_owned());
        }
        Ok(())
    }

    /// A key is removed about a rotation after it last sealed: a seal made then must still
    /// open for as long as it can be used (the session's inactivity timeout, then a whole
    /// outage grace).
    pub(super) fn validate_keys_outlive(&self, longest_inactivity: Duration) -> Result<(), String> {
        if self.enabled()
            && self.key_rotation < longest_inactivity + self.grace + Duration::from_secs(120)
        {
            return Err(
                "outage.key_rotation must be at least the longest inactivity_timeout + outage.grace + 2m"
                    .to_owned(),
            );
        }
        Ok(())
    }
}
