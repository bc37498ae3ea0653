//! Any setting from the environment or the command line: `GATEHOUSE__<SECTION>__<KEY>=value`
//! and `--set section.key=value` address keys of the TOML configuration (outside arrays of
//! tables). Values are read as TOML when they parse (numbers, booleans, arrays, quoted
//! strings), else as plain strings.
//!
//! Both binaries load their configuration the same way, here: the file, then the
//! `GATEHOUSE__*` variables, then `--set`, deserialized into the binary's file type (the
//! named flags and validation stay with each binary), with one [`ConfigError`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::admin_access::AdminToken;

/// Why a configuration cannot be used; the message is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file itself.
    #[error("cannot read configuration file {path}: {source}")]
    ReadConfiguration {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file the configuration names (a secret, say).
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration is not valid TOML: {0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The configuration in `file` (none: every default), with the `GATEHOUSE__*` variables and
/// then `set` applied. Precedence, lowest first: file, variables, `--set`; the named flags
/// the caller applies afterwards win over all of them.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, set: &[String]) -> Result<T, ConfigError> {
    let text = match file {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfiguration {
                path: path.to_owned(),
                source,
            })?
        }
        None => String::new(),
    };
    let mut settings = from_environment();
    settings.extend(set.iter().cloned());
    from_toml(&text, &settings)
}

/// `text` with `settings` applied, deserialized.
pub fn from_toml<T: DeserializeOwned>(text: &str, settings: &[String]) -> Result<T, ConfigError> {
    let mut table = parse(text).map_err(ConfigError::Parse)?;
    apply(&mut table, settings).map_err(ConfigError::Invalid)?;
    toml::Value::Table(table)
        .try_into()
        .map_err(|error: toml::de::Error| ConfigError::Parse(error.message().replace('\n', " ")))
}

/// The admin token: the flag's (or `GATEHOUSE_ADMIN_TOKEN`'s) value wins over the file's.
pub fn admin_token(
    flag: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<AdminToken>, ConfigError> {
    match (flag, file) {
        (Some(token), _) => AdminToken::new(token).map(Some),
        (None, Some(path)) => AdminToken::read(path).map(Some),
        (None, None) => Ok(None),
    }
    .map_err(ConfigError::Invalid)
}

/// Parses a configuration file; a syntax error is one line naming the line it is on.
pub fn parse(text: &str) -> Result<toml::Table, String> {
    toml::from_str(text).map_err(|error: toml::de::Error| {
        let message = error.message().replace('\n', " ");
        match error.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {}", message.trim())
            }
            None => message.trim().to_owned(),
        }
    })
}

/// `section.key=value` pairs from `GATEHOUSE__SECTION__KEY` variables.
pub fn from_environment() -> Vec<String> {
    let mut settings: Vec<String> = std::env::vars()
        .filter_map(|(name, value)| {
            let path = name.strip_prefix("GATEHOUSE__")?;
            Some(format!(
                "{}={value}",
                path.to_ascii_lowercase().replace("__", ".")
            ))
        })
        .collect();
    // Deterministic order: the environment has none.
    settings.sort();
    settings
}

/// Applies `path=value` settings to a parsed configuration file.
pub fn apply(table: &mut toml::Table, settings: &[String]) -> Result<(), String> {
    for setting in settings {
        let (path, raw) = setting
            .split_once('=')
            .ok_or_else(|| format!("setting {setting:?} is not key=value"))?;
        let value = format!("value = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut parsed| parsed.remove("value"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        let keys: Vec<&str> = path.trim().split('.').collect();
        let Some((last, sections)) = keys.split_last() else {
            return Err(format!("setting {setting:?} names no key"));
        };
        let mut current = &mut *table;
        for section in sections {
            let entry = current
                .entry((*section).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            current = entry
                .as_table_mut()
                .ok_or_else(|| format!("setting {path:?}: {section} is not a table"))?;
        }
        current.insert((*last).to_owned(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::apply;

    #[test]
    fn settings_reach_nested_keys_with_typed_values() {
        let mut table: toml::Table = "listen = \"127.0.0.1:1\"\n[cache]\nttl = \"5s\""
            .parse()
            .unwrap();
        apply(
            &mut table,
            &[
                "cache.ttl=9s".into(),
                "cache.max_sessions=7".into(),
                "tls.reload_interval=\"1s\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(table["cache"]["ttl"].as_str(), Some("9s"));
        assert_eq!(table["cache"]["max_sessions"].as_integer(), Some(7));
        assert_eq!(table["tls"]["reload_interval"].as_str(), Some("1s"));
        assert!(apply(&mut table, &["listen.x=1".into()]).is_err());
        assert!(apply(&mut table, &["novalue".into()]).is_err());
    }
}
