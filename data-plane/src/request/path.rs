//! One canonical form of the request path, used for routing, access rules and the URI sent
//! upstream alike, so that `/%61dmin`, `//admin` or `/x/../admin` cannot slip past a rule on
//! `/admin` and still reach it.

/// The normalised path, or `None` when it cannot be made safe (escaping the root, or holding
/// a backslash or an encoded slash, which upstreams on Windows treat as separators). Nearly
/// every path is canonical already, and comes back borrowed.
pub fn normalize(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    if is_canonical(path) {
        return Some(path.into());
    }
    rebuild(path).map(Into::into)
}

/// Whether `normalize` would return `path` unchanged: rooted, nothing percent-encoded, no
/// backslash, and no empty (except a trailing slash), `.` or `..` segment.
fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path.bytes().any(|byte| byte == b'%' || byte == b'\\') {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

fn rebuild(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return (path == "*").then(|| path.to_owned());
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            segment => segments.push(segment),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut normalized = String::with_capacity(decoded.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() || (trailing && !segments.is_empty()) {
        normalized.push('/');
    }
    Some(normalized)
}

/// Decodes `%XX` of unreserved characters (RFC 3986: they mean the same encoded or not),
/// upper-cases the hex of the rest, and refuses backslashes and encoded `/`, `\` or NUL.
fn decode_unreserved(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => return None,
            b'%' => {
                let hex = path.get(index + 1..index + 3)?;
                let value = u8::from_str_radix(hex, 16).ok()?;
                match value {
                    b'/' | b'\\' | 0 => return None,
                    v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                        out.push(char::from(v))
                    }
                    v => {
                        out.push('%');
                        out.push_str(&format!("{v:02X}"));
                    }
                }
                index += 3;
            }
            _ => {
                // Multi-byte characters are copied whole (the request line is ASCII in
                // practice; hyper has checked it).
                let character = path[index..].chars().next()?;
                out.push(character);
                index += character.len_utf8();
            }
        }
    }
    Some(out)
}

/// Spellings a virtual proxy lets through although some upstreams read them as another path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowedSpellings {
    /// `;` (and `%3B`) path parameters, for upstreams that use them (`;jsessionid=`).
    pub path_parameters: bool,
    /// `%25` followed by two hex digits: a second decoding turns it into another character.
    pub double_encoding: bool,
}

/// Why a path's spelling is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmbiguousSpelling {
    /// Tomcat and Jetty drop `;...` from each segment (`/admin;x` is `/admin`) and treat
    /// `..;` as `..`; most other servers keep it.
    #[error("the request path holds a ';' path parameter")]
    PathParameter,
    /// `/x/..;/admin` is `/admin` to Tomcat, even where parameters are allowed.
    #[error("the request path holds a dot segment with a ';' parameter")]
    DotSegmentParameter,
    /// `%252e` is `%2e` to us and `.` to an upstream that decodes once more.
    #[error("the request path is percent-encoded twice")]
    DoubleEncoding,
}

/// Refuses spellings of a canonical path (from [`normalize`]) that upstreams disagree on,
/// except those `allowed`.
pub fn check_spelling(path: &str, allowed: AllowedSpellings) -> Result<(), AmbiguousSpelling> {
    if !path.bytes().any(|byte| byte == b';' || byte == b'%') {
        return Ok(());
    }
    for segment in path.split('/') {
        let Some(parameter) = parameter_start(segment) else {
            continue;
        };
        if !allowed.path_parameters {
            return Err(AmbiguousSpelling::PathParameter);
        }
        if matches!(&segment[..parameter], "" | "." | "..") {
            return Err(AmbiguousSpelling::DotSegmentParameter);
        }
    }
    if !allowed.double_encoding && is_double_encoded(path) {
        return Err(AmbiguousSpelling::DoubleEncoding);
    }
    Ok(())
}

/// Where a segment's first `;` or `%3B` is.
fn parameter_start(segment: &str) -> Option<usize> {
    let bytes = segment.as_bytes();
    (0..bytes.len()).find(|&at| {
        bytes[at] == b';'
            || bytes
                .get(at..at + 3)
                .is_some_and(|escape| escape.eq_ignore_ascii_case(b"%3b"))
    })
}

/// `%25` followed by two hex digits.
fn is_double_encoded(path: &str) -> bool {
    path.as_bytes().windows(5).any(|window| {
        window[..3].eq_ignore_ascii_case(b"%25")
            && window[3].is_ascii_hexdigit()
            && window[4].is_ascii_hexdigit()
    })
}

#[cfg(test)]
mod tests {
    use super::{
        AllowedSpellings, AmbiguousSpelling, check_spelling, is_canonical, normalize, rebuild,
    };

    #[test]
    fn equivalent_spellings_become_one() {
        assert_eq!(normalize("/%61dmin/x").as_deref(), Some("/admin/x"));
        assert_eq!(normalize("//admin").as_deref(), Some("/admin"));
        assert_eq!(normalize("/x/../admin/").as_deref(), Some("/admin/"));
        assert_eq!(normalize("/./a/./b").as_deref(), Some("/a/b"));
        assert_eq!(normalize("/").as_deref(), Some("/"));
        assert_eq!(normalize("/a%20b").as_deref(), Some("/a%20b"));
        assert_eq!(normalize("/a%2fb"), None);
        assert_eq!(normalize("/a%5Cb"), None);
        assert_eq!(normalize("/a\\b"), None);
        assert_eq!(normalize("/../etc/passwd"), None);
        assert_eq!(normalize("/%zz"), None);
        assert_eq!(normalize("/%2"), None);
        for canonical in ["/", "/a", "/a/", "/a/b.c/d", "/a/.b/..c"] {
            assert!(is_canonical(canonical), "{canonical}");
            assert_eq!(rebuild(canonical).as_deref(), Some(canonical));
        }
        for other in [
            "", "//", "/a//b", "/./a", "/a/..", "/a/.", "/%41", "/a\\b", "*",
        ] {
            assert!(!is_canonical(other), "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalized_paths_are_stable_and_clean(path in "/[a-z./%0-9A-F]{0,30}") {
            if let Some(once) = normalize(&path) {
                proptest::prop_assert_eq!(normalize(&once), Some(once.clone()));
                let rebuilt = rebuild(&path);
                proptest::prop_assert_eq!(rebuilt.as_deref(), Some(&*once));
                proptest::prop_assert!(!once.contains("//") && !once.contains("/../") && !once.contains("/./"));
            }
        }
    }

    #[test]
    fn spellings_upstreams_disagree_on_are_refused_unless_allowed() {
        let strict = AllowedSpellings::default();
        let parameters = AllowedSpellings {
            path_parameters: true,
            ..strict
        };
        let double = AllowedSpellings {
            double_encoding: true,
            ..strict
        };
        use AmbiguousSpelling::*;
        for (path, refusal) in [
            ("/hub;jsessionid=1", PathParameter),
            ("/x/..;/admin", PathParameter),
            ("/hub%3Bx", PathParameter),
            ("/hub%3bx", PathParameter),
            ("/%252e%252e/admin", DoubleEncoding),
            ("/%2561dmin", DoubleEncoding),
            ("/a%25fF", DoubleEncoding),
        ] {
            assert_eq!(check_spelling(path, strict), Err(refusal), "{path}");
        }
        for path in ["/", "/hub/x", "/100%25", "/a%25g1", "/a%20b", "/caf%C3%A9"] {
            assert_eq!(check_spelling(path, strict), Ok(()), "{path}");
        }
        assert_eq!(check_spelling("/hub;jsessionid=1/x", parameters), Ok(()));
        assert_eq!(check_spelling("/hub%3Bx", parameters), Ok(()));
        for path in [
            "/x/..;/admin",
            "/x/.;x/a",
            "/;x/admin",
            "/x/..%3B/a",
            "/x/;",
        ] {
            assert_eq!(
                check_spelling(path, parameters),
                Err(DotSegmentParameter),
                "{path}"
            );
        }
        assert_eq!(
            check_spelling("/%2561dmin", parameters),
            Err(DoubleEncoding)
        );
        assert_eq!(check_spelling("/%2561dmin", double), Ok(()));
        assert_eq!(check_spelling("/a;b", double), Err(PathParameter));
    }
}
