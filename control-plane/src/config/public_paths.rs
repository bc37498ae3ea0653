//! A virtual proxy's public paths as configured: path prefixes (and methods) that nodes serve
//! without identification. Checked before the configuration is used, since a public path
//! grants access: its prefix must be the one spelling nodes compare request paths with.

use serde::Deserialize;

use super::syntax::is_token;

/// A path below the virtual proxy's prefix, served without login, session or identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicPathConfig {
    /// Starts with `/`; covers itself and every path below it, segment by segment
    /// (`/health` covers `/health` and `/health/live`, not `/healthcheck`).
    pub prefix: String,
    /// Upper-case after validation; empty: every method.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Checks `path` and upper-cases its methods. The prefix must be canonical (what nodes
/// normalise request paths to) or it would never match, or match what it should not.
pub(super) fn validate_public_path(path: &mut PublicPathConfig) -> Result<(), String> {
    let prefix = &path.prefix;
    canonical_prefix(prefix)
        .map_err(|reason| format!("public_paths prefix {prefix:?} {reason}"))?;
    if let Some(method) = path.methods.iter().find(|m| !is_token(m)) {
        return Err(format!(
            "public_paths method {method:?} (of prefix {prefix:?}) is not an HTTP method"
        ));
    }
    for method in &mut path.methods {
        method.make_ascii_uppercase();
    }
    Ok(())
}

fn canonical_prefix(prefix: &str) -> Result<(), &'static str> {
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err("must start with '/'");
    };
    if prefix.len() > 1024 {
        return Err("is longer than 1024 characters");
    }
    // RFC 3986 path characters, without `%` (nodes decode what needs no encoding, so an
    // encoded prefix would match nothing) and `;` (Tomcat drops what follows it).
    if let Some(bad) = prefix
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@/".contains(c)))
    {
        return Err(match bad {
            '%' => "may not be percent-encoded",
            ';' => "may not hold ';' path parameters",
            _ => "may only hold letters, digits, '/' and -._~!$&'()*+,=:@",
        });
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." {
            return Err("may not hold '.' or '..' segments");
        }
        if segment.is_empty() && !last {
            return Err("may not hold '//'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(prefix: &str, methods: &[&str]) -> Result<PublicPathConfig, String> {
        let mut path = PublicPathConfig {
            prefix: prefix.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        };
        validate_public_path(&mut path).map(|()| path)
    }

    #[test]
    fn prefixes_are_canonical_paths_and_methods_tokens() {
        for good in [
            "/",
            "/static/",
            "/health",
            "/hooks/github",
            "/a.b/~c/",
            "/x:y@z",
        ] {
            assert!(checked(good, &[]).is_ok(), "{good}");
        }
        for (bad, reason) in [
            ("static/", "start with '/'"),
            ("", "start with '/'"),
            ("/static/../admin", "'..'"),
            ("/./static", "'.'"),
            ("/static//x", "'//'"),
            ("//", "'//'"),
            ("/st%61tic", "percent-encoded"),
            ("/static;x", "';'"),
            ("/static\\x", "letters"),
            ("/static x", "letters"),
            ("/static?x", "letters"),
            ("/café", "letters"),
        ] {
            let error = checked(bad, &[]).unwrap_err();
            assert!(error.contains("public_paths prefix"), "{bad}: {error}");
            assert!(error.contains(reason), "{bad}: {error}");
        }
        assert_eq!(
            checked("/static/", &["get", "HEAD"]).unwrap().methods,
            ["GET", "HEAD"]
        );
        let error = checked("/static/", &["GET HEAD"]).unwrap_err();
        assert!(error.contains("public_paths method"), "{error}");
        assert!(checked("/static/", &[""]).is_err());
    }
}
