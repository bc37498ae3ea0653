//! Query-string handling for the login flow: finding and removing `qlikTicket` (any case) and
//! reading the QPS parameters.

use percent_encoding::percent_decode_str;

/// The first parameter named `name` (ASCII case-insensitive), percent-decoded.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            key.eq_ignore_ascii_case(name).then_some(value)
        })
        .next()
        .map(|value| {
            percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// The path and query without any parameter named `name` (ASCII case-insensitive).
pub fn without_param(path: &str, query: Option<&str>, name: &str) -> String {
    let kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            !pair
                .split('=')
                .next()
                .unwrap_or_default()
                .eq_ignore_ascii_case(name)
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// A same-site redirect target for `path` without parameter `name`: exactly one leading `/`,
/// so that `//evil.example` or `/\\evil.example` cannot become a redirect to another host.
pub fn local_redirect(path: &str, query: Option<&str>, name: &str) -> String {
    let trimmed = path.trim_start_matches(['/', '\\']);
    without_param(&format!("/{trimmed}"), query, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_found_and_removed_in_any_spelling() {
        for name in ["qlikTicket", "QlikTicket", "qlikticket"] {
            let query = format!("a=1&{name}=T%2Bx&b=2");
            assert_eq!(param(Some(&query), "qlikticket").as_deref(), Some("T+x"));
            assert_eq!(
                without_param("/p", Some(&query), "qlikticket"),
                "/p?a=1&b=2"
            );
        }
        assert_eq!(
            without_param("/p", Some("qlikTicket=x"), "qlikticket"),
            "/p"
        );
        assert_eq!(param(None, "qlikticket"), None);
    }

    proptest::proptest! {
        #[test]
        fn local_redirects_always_stay_on_the_host(path in "[/\\\\a-z%.:@]{0,20}", query in "[a-zA-Z=&%]{0,20}") {
            let location = local_redirect(&path, Some(&query), "qlikticket");
            proptest::prop_assert!(location.starts_with('/'));
            proptest::prop_assert!(!location.starts_with("//") && !location.starts_with("/\\"));
        }

        #[test]
        fn tickets_never_survive_their_removal(query in "[a-zA-Z=&]{0,30}") {
            let query = format!("{query}&QlikTicket=secret&{query}");
            let cleaned = without_param("/p", Some(&query), "qlikticket");
            proptest::prop_assert!(!cleaned.contains("secret"));
        }
    }

    #[test]
    fn local_redirects_never_leave_the_host() {
        assert_eq!(
            local_redirect("//evil.example/x", Some("qlikTicket=t"), "qlikticket"),
            "/evil.example/x"
        );
        assert_eq!(
            local_redirect("/\\evil.example", None, "qlikticket"),
            "/evil.example"
        );
        assert_eq!(
            local_redirect("/%2F%2Fevil", None, "qlikticket"),
            "/%2F%2Fevil"
        );
        assert_eq!(
            local_redirect("/hub", Some("a=1&qlikTicket=t"), "qlikticket"),
            "/hub?a=1"
        );
    }
}
