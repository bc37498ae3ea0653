//! Any setting from the environment or the command line: `GATEHOUSE__<SECTION>__<KEY>=value`
//! and `--set section.key=value` address keys of the TOML configuration (outside arrays of
//! tables). Values are read as TOML when they parse (numbers, booleans, arrays, quoted
//! strings), else as plain strings.

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
