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

#[cfg(test)]
mod tests {
    use super::{is_canonical, normalize, rebuild};

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
}
