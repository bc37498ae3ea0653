//! Public paths: the requests a virtual proxy serves without identification (health checks,
//! static assets, webhooks). Such a request gets no login, reads no cookie, starts no
//! session and reaches the upstream with no identity header at all.
//!
//! A public path grants access, so it is matched the strict way round from access rules
//! (which deny on any spelling): on the canonical path below the proxy's prefix, exactly as
//! written (case included), a whole segment at a time; and a path that some upstream may
//! read as another spelling (percent-encoded, with `;` parameters, non-ASCII) is public only
//! if every spelling is (`/static/．．/admin` is `/admin` to an upstream that folds Unicode).

use crate::auth::rules::{decoded, fold, folded};

/// One public path of a virtual proxy.
#[derive(Debug, Clone)]
pub struct PublicPath {
    /// Canonical, starting with `/` (the control plane checked it).
    prefix: String,
    /// `prefix` Unicode-folded, for the folded spelling of a path.
    folded_prefix: String,
    /// Upper-case, compared exactly; empty: every method.
    methods: Vec<String>,
}

impl PublicPath {
    pub fn new(prefix: &str, methods: &[String]) -> Self {
        Self {
            prefix: prefix.to_owned(),
            folded_prefix: fold(prefix),
            methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        }
    }

    fn admits(&self, path: &str, method: &str) -> bool {
        if !(self.methods.is_empty() || self.methods.iter().any(|m| m == method)) {
            return false;
        }
        if !covers(&self.prefix, path) {
            return false;
        }
        // Nearly every path: nothing encoded, no parameter, ASCII; it is its only spelling.
        if path.is_ascii() && !path.contains(['%', ';']) {
            return true;
        }
        // Spellings an upstream may read otherwise than this check can: escapes that decode
        // to no UTF-8 (overlong forms such as `%C0%AE`, which old servers read as `.`), and
        // an escaped `%` (decoded twice, `%252e` is `.`). Such a path is never public.
        if path.contains("%25")
            || percent_encoding::percent_decode_str(path)
                .decode_utf8()
                .is_err()
        {
            return false;
        }
        let decoded = decoded(path);
        covers(&self.prefix, &decoded) && covers(&self.folded_prefix, &folded(&decoded))
    }
}

/// Whether a request for `path` (below the proxy's prefix, normalised) with `method` is on
/// one of `paths`.
pub fn is_public(paths: &[PublicPath], path: &str, method: &str) -> bool {
    paths.iter().any(|public| public.admits(path, method))
}

/// `prefix` covers `path` segment by segment: `/health` covers `/health` and `/health/x`,
/// not `/healthcheck`; `/static/` covers what is below it, not `/static` itself.
fn covers(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[(&str, &[&str])]) -> Vec<PublicPath> {
        list.iter()
            .map(|(prefix, methods)| {
                let methods: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
                PublicPath::new(prefix, &methods)
            })
            .collect()
    }

    #[test]
    fn prefixes_cover_whole_segments() {
        let public = paths(&[("/static/", &[]), ("/health", &[])]);
        for path in [
            "/static/a.css",
            "/static/js/app.js",
            "/static/",
            "/health",
            "/health/live",
        ] {
            assert!(is_public(&public, path, "GET"), "{path}");
        }
        for path in [
            "/static",
            "/staticx/a",
            "/healthcheck-admin",
            "/health-admin",
            "/",
            "/admin",
        ] {
            assert!(!is_public(&public, path, "GET"), "{path}");
        }
        assert!(is_public(&paths(&[("/", &[])]), "/anything", "DELETE"));
    }

    #[test]
    fn methods_are_compared_exactly() {
        let public = paths(&[("/static/", &["GET", "head"])]);
        assert!(is_public(&public, "/static/a.css", "GET"));
        assert!(is_public(&public, "/static/a.css", "HEAD"));
        assert!(!is_public(&public, "/static/a.css", "POST"));
        assert!(!is_public(&public, "/static/a.css", "get"));
        assert!(!is_public(&[], "/static/a.css", "GET"));
    }

    #[test]
    fn paths_are_compared_as_written_and_every_spelling_must_be_public() {
        let public = paths(&[("/static/", &[])]);
        // Case: a case-sensitive upstream may serve another resource at /STATIC/.
        assert!(!is_public(&public, "/STATIC/a.css", "GET"));
        // Full-width dots are `..` to an upstream that applies NFKC.
        assert!(!is_public(
            &public,
            "/static/%EF%BC%8E%EF%BC%8E/admin",
            "GET"
        ));
        assert!(!is_public(&public, "/static/\u{FF0E}\u{FF0E}/admin", "GET"));
        // Dot segments that only decoding reveals (normalisation resolves these first).
        assert!(!is_public(&public, "/static/%2E%2E/admin", "GET"));
        assert!(is_public(&public, "/static/caf%C3%A9.css", "GET"));
        assert!(is_public(&public, "/static/a.css;v=1", "GET"));
        assert!(!is_public(&public, "/static;x/a.css", "GET"));
        // Overlong UTF-8 (`%C0%AE` is `.` to some old servers) and escaped escapes.
        assert!(!is_public(&public, "/static/%C0%AE%C0%AE/admin", "GET"));
        assert!(!is_public(&public, "/static/%252e%252e/admin", "GET"));
        assert!(!is_public(&public, "/static/%FF.css", "GET"));
    }
}
