//! The configured virtual proxies, looked up by prefix.

use std::collections::HashMap;

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
