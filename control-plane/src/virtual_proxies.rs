//! The configured virtual proxies, looked up by prefix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::VirtualProxyConfig;
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct VirtualProxies {
    all: Vec<VirtualProxyConfig>,
    by_prefix: HashMap<String, VirtualProxyConfig>,
}

impl VirtualProxies {
    pub fn new(proxies: &[VirtualProxyConfig]) -> Self {
        Self {
            all: proxies.to_vec(),
            by_prefix: proxies
                .iter()
                .map(|proxy| (proxy.prefix.clone(), proxy.clone()))
                .collect(),
        }
    }

    /// The virtual proxy with this prefix, or `NotFound`.
    pub fn get(&self, prefix: &str) -> Result<&VirtualProxyConfig, Error> {
        self.by_prefix
            .get(prefix)
            .ok_or_else(|| Error::unknown_virtual_proxy(prefix))
    }

    /// Every virtual proxy, in configuration order.
    /// The longest inactivity timeout of any virtual proxy (zero without any).
    pub fn longest_inactivity_timeout(&self) -> std::time::Duration {
        self.all()
            .iter()
            .map(|proxy| proxy.inactivity_timeout)
            .max()
            .unwrap_or_default()
    }

    pub fn all(&self) -> &[VirtualProxyConfig] {
        &self.all
    }

    /// Prefixes of every virtual proxy, sorted.
    pub fn prefixes(&self) -> Vec<&str> {
        let mut prefixes: Vec<&str> = self.by_prefix.keys().map(String::as_str).collect();
        prefixes.sort_unstable();
        prefixes
    }

    /// The one virtual proxy named, or all of them when none is.
    pub fn select(&self, prefix: Option<&str>) -> Result<Vec<&str>, Error> {
        match prefix {
            Some(prefix) => Ok(vec![self.get(prefix)?.prefix.as_str()]),
            None => Ok(self.prefixes()),
        }
    }
}

/// Something built from one virtual proxy's settings (a JWT verifier, an OpenID client), kept
/// per prefix and rebuilt only when those settings change, so what it has learnt (keys read,
/// a discovery document) survives reloads that do not touch it.
#[derive(Debug)]
pub struct PerProxy<C, T> {
    by_prefix: Mutex<HashMap<String, (C, Arc<T>)>>,
}

impl<C, T> Default for PerProxy<C, T> {
    fn default() -> Self {
        Self {
            by_prefix: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Clone + PartialEq, T> PerProxy<C, T> {
    /// The value for `prefix` built from `settings`: the kept one if the settings are the
    /// same, else a new one from `build`.
    pub fn get<E>(
        &self,
        prefix: &str,
        settings: &C,
        build: impl FnOnce(C) -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let mut map = self
            .by_prefix
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((kept, value)) = map.get(prefix)
            && kept == settings
        {
            return Ok(value.clone());
        }
        let value = Arc::new(build(settings.clone())?);
        map.insert(prefix.to_owned(), (settings.clone(), value.clone()));
        Ok(value)
    }
}
