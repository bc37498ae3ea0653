//! Where a virtual proxy's identity provider is described, and the service provider built
//! from it: a metadata file, read with the configuration and read again when it changes
//! (its modification time and length, looked at every `metadata_refresh`), or a metadata
//! URL, read at the first login and again every `metadata_refresh`. Either way a read that
//! fails keeps what was read before.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Sp;
use crate::config::SamlConfig;
use crate::error::Error;
use crate::virtual_proxies::PerProxy;

/// The service providers, one per virtual proxy, rebuilt when its `saml` table (or the
/// metadata file read with it) changes.
#[derive(Debug, Default)]
pub struct SamlProviders(PerProxy<SamlConfig, SamlSource>);

impl SamlProviders {
    pub fn provider(&self, prefix: &str, config: &SamlConfig) -> Result<Arc<SamlSource>, Error> {
        self.0.get(prefix, config, |config| {
            SamlSource::new(config).map_err(|detail| {
                tracing::error!(prefix, %detail, "SAML service provider cannot be set up");
                Error::ProviderUnavailable("SAML login is not available right now")
            })
        })
    }
}

/// After a failed read of the metadata URL, how long logins use what was read before (or
/// get 503) without asking again: an unreachable provider costs one wait, not one per login.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// Longest one read of the metadata URL may take, under the node's 5 s call timeout.
const METADATA_BUDGET: Duration = Duration::from_secs(4);

const METADATA_UNAVAILABLE: &str =
    "the SAML identity provider's metadata cannot be read right now; try again shortly";

/// Where a virtual proxy's identity provider is described: a file (read with the
/// configuration, and again once changed) or a URL, read at the first login and every
/// `metadata_refresh` after.
pub struct SamlSource {
    config: SamlConfig,
    /// Only for a metadata URL.
    client: Option<crate::outbound::HttpClient>,
    state: std::sync::Mutex<SourceState>,
    /// Held while reading the URL or the file, so concurrent logins read it once.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SourceState {
    /// The service provider, and when its metadata was read (from a file: last looked at).
    current: Option<(Arc<Sp>, Instant)>,
    failed_at: Option<Instant>,
    /// The metadata file as it was when read last; none before the first look, so that a
    /// change between the configuration's read and this source is not missed.
    file_read: Option<FileStamp>,
}

/// What tells a changed file: its modification time and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    len: u64,
}

impl std::fmt::Debug for SamlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlSource")
            .field("entity_id", &self.config.entity_id)
            .finish_non_exhaustive()
    }
}

impl SamlSource {
    fn new(config: SamlConfig) -> Result<Self, String> {
        let mut state = SourceState::default();
        let client = if config.idp_metadata_url.is_some() {
            Some(crate::outbound::client(None)?)
        } else {
            let sp = Sp::new(config.clone(), &config.idp_metadata)?;
            state.current = Some((Arc::new(sp), Instant::now()));
            None
        };
        Ok(Self {
            config,
            client,
            state: std::sync::Mutex::new(state),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &SamlConfig {
        &self.config
    }

    /// The service provider with the identity provider's current metadata. From a URL, a
    /// read that fails keeps the metadata read before; with none, `ProviderUnavailable`
    /// (503 at the node, never 401).
    pub async fn sp(&self) -> Result<Arc<Sp>, Error> {
        let unavailable = || Error::ProviderUnavailable(METADATA_UNAVAILABLE);
        let (Some(client), Some(url)) = (&self.client, &self.config.idp_metadata_url) else {
            if let Some(file) = &self.config.idp_metadata_file {
                self.look_at_file(file).await;
            }
            return self.current(None).ok_or_else(unavailable);
        };
        let refresh = Some(self.config.metadata_refresh);
        if let Some(sp) = self.current(refresh) {
            return Ok(sp);
        }
        let _reading = self.refreshing.lock().await;
        if let Some(sp) = self.current(refresh) {
            return Ok(sp);
        }
        let recently_failed = self
            .lock()
            .failed_at
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE);
        if !recently_failed {
            let read = tokio::time::timeout(METADATA_BUDGET, crate::outbound::get(client, url))
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()))
                .and_then(|body| String::from_utf8(body.to_vec()).map_err(|e| e.to_string()))
                .and_then(|xml| Sp::new(self.config.clone(), &xml));
            let mut state = self.lock();
            match read {
                Ok(sp) => {
                    let sp = Arc::new(sp);
                    state.current = Some((sp.clone(), Instant::now()));
                    state.failed_at = None;
                    return Ok(sp);
                }
                Err(detail) => {
                    tracing::warn!(url, %detail, "cannot read the SAML identity provider's metadata");
                    state.failed_at = Some(Instant::now());
                }
            }
        }
        // What was read before, however old, rather than no login at all.
        self.current(None).ok_or_else(unavailable)
    }

    /// Once `metadata_refresh` has passed since the last look: the file read again if it
    /// changed. A file that cannot be read or used is logged and leaves the service provider
    /// as it was (it is looked at again after `metadata_refresh`).
    async fn look_at_file(&self, file: &Path) {
        let refresh = Some(self.config.metadata_refresh);
        if self.current(refresh).is_some() {
            return;
        }
        let _reading = self.refreshing.lock().await;
        if self.current(refresh).is_some() {
            return;
        }
        let known = self.lock().file_read;
        let (path, config) = (file.to_path_buf(), self.config.clone());
        let read = tokio::task::spawn_blocking(move || read_if_changed(&path, known, &config))
            .await
            .unwrap_or_else(|error| Err(error.to_string()));
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some((sp, looked_at)) = state.current.as_mut() else {
            return;
        };
        *looked_at = Instant::now();
        match read {
            Ok((stamp, None)) => state.file_read = Some(stamp),
            Ok((stamp, Some(new))) => {
                tracing::info!(file = %file.display(), "SAML identity provider's metadata file read again");
                *sp = Arc::new(new);
                state.file_read = Some(stamp);
            }
            Err(detail) => tracing::warn!(
                file = %file.display(),
                %detail,
                "cannot use the SAML identity provider's metadata file; keeping the metadata read before"
            ),
        }
    }

    /// The service provider if its metadata was read within `max_age` (`None`: any age).
    fn current(&self, max_age: Option<Duration>) -> Option<Arc<Sp>> {
        let state = self.lock();
        let (sp, read_at) = state.current.as_ref()?;
        max_age
            .is_none_or(|age| read_at.elapsed() < age)
            .then(|| sp.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The metadata file at `path` as it is now, and the service provider of its metadata if
/// that changed: since `known`, or (at the first look) since the configuration read it.
/// Blocking (the file system).
fn read_if_changed(
    path: &Path,
    known: Option<FileStamp>,
    config: &SamlConfig,
) -> Result<(FileStamp, Option<Sp>), String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    let stamp = FileStamp {
        modified: metadata.modified().map_err(|error| error.to_string())?,
        len: metadata.len(),
    };
    if known == Some(stamp) {
        return Ok((stamp, None));
    }
    let xml = crate::config::read_idp_metadata(path)?;
    if known.is_none() && xml == config.idp_metadata {
        return Ok((stamp, None));
    }
    let sp = Sp::new(config.clone(), &xml)?;
    // As at start: Single Logout needs the provider's SingleLogoutService.
    if config.single_logout && !sp.single_logout() {
        return Err("the metadata has no SingleLogoutService".to_owned());
    }
    Ok((stamp, Some(sp)))
}
