//! The anti-CSRF key QPS requires on every call: the `Xrfkey` query parameter and the
//! `X-Qlik-Xrfkey` header, equal, 16 characters of `[0-9A-Za-z]`. A browser tricked into a
//! cross-site request can set the query but not the header, so both must be there.

use http::HeaderMap;

const HEADER: &str = "x-qlik-xrfkey";
const LENGTH: usize = 16;

/// Checks the key; the error is the reason shown to the caller with a 403.
pub fn check(query: Option<&str>, headers: &HeaderMap) -> Result<(), &'static str> {
    // The parameter's name is matched case-insensitively: modules send `xrfkey` and `Xrfkey`.
    let mut from_query = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(name, _)| name.eq_ignore_ascii_case("xrfkey"))
        .map(|(_, value)| value);
    let query_key = from_query
        .next()
        .ok_or("the Xrfkey query parameter is missing")?;
    if from_query.next().is_some() {
        return Err("the Xrfkey query parameter is given more than once");
    }
    let mut from_header = headers.get_all(HEADER).iter();
    let header_key = from_header
        .next()
        .ok_or("the X-Qlik-Xrfkey header is missing")?;
    if from_header.next().is_some() {
        return Err("the X-Qlik-Xrfkey header is given more than once");
    }
    let header_key = header_key
        .to_str()
        .map_err(|_| "Xrfkey must be 16 characters 0-9, A-Z or a-z")?;
    if !well_formed(query_key) || !well_formed(header_key) {
        return Err("Xrfkey must be 16 characters 0-9, A-Z or a-z");
    }
    if query_key != header_key {
        return Err("the Xrfkey query parameter and the X-Qlik-Xrfkey header differ");
    }
    Ok(())
}

fn well_formed(key: &str) -> bool {
    key.len() == LENGTH && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(HEADER, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn equal_well_formed_keys_pass() {
        let key = "abcdefABCDEF0123";
        assert!(check(Some(&format!("xrfkey={key}")), &headers(&[key])).is_ok());
        assert!(check(Some(&format!("a=1&Xrfkey={key}")), &headers(&[key])).is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        let key = "abcdefABCDEF0123";
        let cases: [(Option<&str>, &[&str]); 8] = [
            (None, &[key]),
            (Some("xrfkey=abcdefABCDEF0123"), &[]),
            (Some("xrfkey=abcdefABCDEF0124"), &[key]),
            (Some("xrfkey=abcdefABCDEF012"), &["abcdefABCDEF012"]),
            (Some("xrfkey=abcdefABCDEF012!"), &["abcdefABCDEF012!"]),
            (Some("xrfkey=ABCDEFABCDEF0123"), &[key]),
            (
                Some("xrfkey=abcdefABCDEF0123&xrfkey=abcdefABCDEF0123"),
                &[key],
            ),
            (Some("xrfkey=abcdefABCDEF0123"), &[key, key]),
        ];
        for (query, values) in cases {
            assert!(
                check(query, &headers(values)).is_err(),
                "{query:?} {values:?}"
            );
        }
    }
}
