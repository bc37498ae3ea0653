//! Access rules: the first rule whose path, method and user match decides; none matching
//! allows.

use crate::cache::CachedSession;
use crate::vproxy::AccessRule;

/// `Some(reason)` when the request is denied.
pub fn denied(
    rules: &[AccessRule],
    path: &str,
    method: &str,
    session: &CachedSession,
) -> Option<&'static str> {
    let rule = rules.iter().find(|rule| {
        starts_with_ignoring_case(path, &rule.path_prefix)
            && (rule.methods.is_empty()
                || rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && rule
                .user_directory
                .as_ref()
                .is_none_or(|directory| directory.eq_ignore_ascii_case(&session.user_directory))
            && rule
                .user_id
                .as_ref()
                .is_none_or(|id| id.eq_ignore_ascii_case(&session.user_id))
            && rule.attribute.as_ref().is_none_or(|(name, value)| {
                session
                    .attributes
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
            })
    })?;
    (!rule.allow).then_some("access denied by the virtual proxy's access rules")
}

/// Upstreams on Windows (the Qlik engine among them) treat paths case-insensitively.
fn starts_with_ignoring_case(path: &str, prefix: &str) -> bool {
    path.len() >= prefix.len()
        && path.is_char_boundary(prefix.len())
        && path[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn session(group: &str) -> CachedSession {
        CachedSession {
            handle: "h".into(),
            virtual_proxy: String::new(),
            user_directory: "CORP".into(),
            user_id: "alice".into(),
            attributes: vec![("group".into(), group.into())],
            absolute_expiry: SystemTime::now(),
        }
    }

    fn rule(path: &str, allow: bool, attribute: Option<(&str, &str)>) -> AccessRule {
        AccessRule {
            path_prefix: path.into(),
            methods: vec![],
            allow,
            user_directory: None,
            user_id: None,
            attribute: attribute.map(|(n, v)| (n.into(), v.into())),
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let rules = vec![
            rule("/admin", true, Some(("Group", "admin"))),
            rule("/admin", false, None),
        ];
        assert!(denied(&rules, "/admin/users", "GET", &session("admin")).is_none());
        assert!(denied(&rules, "/admin/users", "GET", &session("sales")).is_some());
        assert!(denied(&rules, "/hub", "GET", &session("sales")).is_none());
        assert!(denied(&rules, "/ADMIN/users", "GET", &session("sales")).is_some());
        let post_only = vec![AccessRule {
            methods: vec!["POST".into()],
            ..rule("/", false, None)
        }];
        assert!(denied(&post_only, "/x", "GET", &session("a")).is_none());
        assert!(denied(&post_only, "/x", "post", &session("a")).is_some());
    }
}
