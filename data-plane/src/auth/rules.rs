//! Access rules: the first rule whose path, method and user match decides; none matching
//! allows. A request on a public path has no user: only rules that name none match it
//! (and those scoped to public requests only match it).
//!
//! One path has several spellings an upstream may take for the same resource: the canonical
//! path as sent (`/caf%C3%A9`), fully percent-decoded without `;` parameters (`/café`), and
//! its Unicode fold (NFKC, then upper- and lower-cased as Java's `equalsIgnoreCase` compares:
//! `／ａｄｍｉｎ`, `adm\u{131}n` and `/\u{17F}ettings` are `/admin` and `/settings` to it). The
//! rules decide each spelling on its own and the request is denied if any of them is: an
//! allow matched only through folding never grants what the path as sent would not get.

use gatehouse_proto::user_name;
use unicode_normalization::UnicodeNormalization as _;

use crate::cache::CachedSession;

const DENIED: &str = "access denied by the virtual proxy's access rules";

#[derive(Debug, Clone)]
pub struct AccessRule {
    pub path_prefix: String,
    /// `path_prefix` Unicode-folded ([`fold`]), for look-alike paths.
    pub folded_prefix: String,
    /// Upper-case; empty matches every method.
    pub methods: Vec<String>,
    pub allow: bool,
    pub user_directory: Option<String>,
    pub user_id: Option<String>,
    pub attribute: Option<(String, String)>,
    /// Which requests the rule is about.
    pub scope: Scope,
}

/// Which requests a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Any,
    /// Requests on a public path, served without identification.
    Public,
    /// Requests of an identified user.
    Identified,
}

/// Whom the rules are asked about.
#[derive(Debug, Clone, Copy)]
pub enum Visitor<'a> {
    /// A request on a public path: nobody in particular.
    Public,
    User(&'a CachedSession),
}

impl<'a> From<&'a CachedSession> for Visitor<'a> {
    fn from(session: &'a CachedSession) -> Self {
        Self::User(session)
    }
}

impl<'a> From<&'a std::sync::Arc<CachedSession>> for Visitor<'a> {
    fn from(session: &'a std::sync::Arc<CachedSession>) -> Self {
        Self::User(session)
    }
}

/// `Some(reason)` when the request is denied.
pub fn denied<'a>(
    rules: &[AccessRule],
    path: &str,
    method: &str,
    visitor: impl Into<Visitor<'a>>,
) -> Option<&'static str> {
    if rules.is_empty() {
        return None;
    }
    let visitor = visitor.into();
    let denies = |path: &str, prefix: Prefix| {
        first_match(rules, path, method, visitor, prefix).is_some_and(|rule| !rule.allow)
    };
    // Nearly every path: nothing encoded, no parameter, ASCII. Its decoded form is itself,
    // and its fold is itself in lower case, which the comparison ignores anyway.
    if path.is_ascii() && !path.contains(['%', ';']) {
        return (denies(path, Prefix::AsWritten) || denies(path, Prefix::Folded)).then_some(DENIED);
    }
    let decoded = decoded(path);
    let folded = folded(&decoded);
    (denies(path, Prefix::AsWritten)
        || denies(&decoded, Prefix::AsWritten)
        || denies(&folded, Prefix::Folded))
    .then_some(DENIED)
}

/// Which spelling of a rule's prefix a path is compared with.
#[derive(Debug, Clone, Copy)]
enum Prefix {
    AsWritten,
    Folded,
}

fn first_match<'a>(
    rules: &'a [AccessRule],
    path: &str,
    method: &str,
    visitor: Visitor<'_>,
    prefix: Prefix,
) -> Option<&'a AccessRule> {
    rules.iter().find(|rule| {
        let prefix = match prefix {
            Prefix::AsWritten => &rule.path_prefix,
            Prefix::Folded => &rule.folded_prefix,
        };
        starts_with_ignoring_case(path, prefix)
            && (rule.methods.is_empty()
                || rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && matches_visitor(rule, visitor)
    })
}

fn matches_visitor(rule: &AccessRule, visitor: Visitor<'_>) -> bool {
    match visitor {
        Visitor::Public => {
            rule.scope != Scope::Identified
                && rule.user_directory.is_none()
                && rule.user_id.is_none()
                && rule.attribute.is_none()
        }
        Visitor::User(session) => {
            rule.scope != Scope::Public
                && rule
                    .user_directory
                    .as_ref()
                    .is_none_or(|directory| user_name::same(directory, &session.user_directory))
                && rule
                    .user_id
                    .as_ref()
                    .is_none_or(|id| user_name::same(id, &session.user_id))
                && rule.attribute.as_ref().is_none_or(|(name, value)| {
                    session
                        .attributes
                        .iter()
                        .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
                })
        }
    }
}

/// Upstreams on Windows (the Qlik engine among them) treat paths case-insensitively.
fn starts_with_ignoring_case(path: &str, prefix: &str) -> bool {
    path.len() >= prefix.len()
        && path.is_char_boundary(prefix.len())
        && path[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Unicode compatibility normalisation (NFKC) and case folding the way Java compares
/// ignoring case (each character upper-cased, then lower-cased: `ı` and `ſ` become `i` and
/// `s`). Rule prefixes are folded once, when a snapshot arrives.
pub fn fold(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// The path fully percent-decoded, each segment without its `;` parameters.
pub(crate) fn decoded(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    resolve_segments(&decoded)
}

/// The fold of a decoded path, with the separators and dots folding produced (`／`, `．`)
/// resolved again.
pub(crate) fn folded(decoded: &str) -> String {
    resolve_segments(&fold(decoded))
}

/// `.` and empty segments dropped, `..` resolved (never above the root), `;` parameters
/// removed; a trailing slash is kept.
fn resolve_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        let name = segment.split(';').next().unwrap_or_default();
        match name {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => segments.push(name),
        }
    }
    let mut resolved = String::with_capacity(path.len());
    for segment in &segments {
        resolved.push('/');
        resolved.push_str(segment);
    }
    if resolved.is_empty() || path.ends_with('/') {
        resolved.push('/');
    }
    resolved
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
            assertion: Default::default(),
        }
    }

    fn rule(path: &str, allow: bool, attribute: Option<(&str, &str)>) -> AccessRule {
        AccessRule {
            path_prefix: path.into(),
            folded_prefix: fold(path),
            methods: vec![],
            allow,
            user_directory: None,
            user_id: None,
            attribute: attribute.map(|(n, v)| (n.into(), v.into())),
            scope: Scope::Any,
        }
    }

    /// As a browser sends a path: non-ASCII percent-encoded.
    fn encoded(path: &str) -> String {
        path.chars()
            .map(|c| match c.is_ascii() {
                true => c.to_string(),
                false => c.to_string().bytes().map(|b| format!("%{b:02X}")).collect(),
            })
            .collect()
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

    #[test]
    fn a_public_request_matches_only_rules_that_name_no_user() {
        let public = |path: &str, method: &str, rules: &[AccessRule]| {
            denied(rules, path, method, Visitor::Public).is_some()
        };
        let post_denied = vec![AccessRule {
            methods: vec!["POST".into()],
            ..rule("/hooks/", false, None)
        }];
        assert!(public("/hooks/github", "POST", &post_denied));
        assert!(!public("/hooks/github", "GET", &post_denied));
        // An allow for admins does not let a public request through a deny that follows.
        let admins_only = vec![
            rule("/admin", true, Some(("group", "admin"))),
            rule("/admin", false, None),
        ];
        assert!(public("/admin/x", "GET", &admins_only));
        let bob = AccessRule {
            user_id: Some("bob".into()),
            ..rule("/", false, None)
        };
        assert!(!public("/x", "GET", std::slice::from_ref(&bob)));
        let public_only = vec![AccessRule {
            scope: Scope::Public,
            ..rule("/static/", false, None)
        }];
        assert!(public("/static/a.css", "GET", &public_only));
        assert!(denied(&public_only, "/static/a.css", "GET", &session("a")).is_none());
        let identified_only = vec![AccessRule {
            scope: Scope::Identified,
            ..rule("/", false, None)
        }];
        assert!(!public("/static/a.css", "GET", &identified_only));
        assert!(denied(&identified_only, "/static/a.css", "GET", &session("a")).is_some());
    }

    #[test]
    fn a_rule_names_a_user_as_the_control_plane_compares_users() {
        let rule_for = |directory: &str, id: &str| AccessRule {
            user_directory: Some(directory.into()),
            user_id: Some(id.into()),
            ..rule("/", false, None)
        };
        let user = |directory: &str, id: &str| CachedSession {
            user_directory: directory.into(),
            user_id: id.into(),
            ..session("a")
        };
        let deny = |rule: AccessRule, session: &CachedSession| {
            denied(std::slice::from_ref(&rule), "/x", "GET", session).is_some()
        };
        // One user to the control plane, whatever the case: one user to a rule.
        assert!(deny(rule_for("corp", "ärger"), &user("CORP", "ÄRGER")));
        assert!(deny(rule_for("ÖST", "kate"), &user("öst", "KATE")));
        // Another user to the control plane: another user here.
        assert!(!deny(
            rule_for("corp", "kate"),
            &user("corp", "\u{212A}ate")
        ));
    }

    #[test]
    fn folding_follows_java_and_compatibility_forms() {
        assert_eq!(fold("／ＡＤＭＩＮ"), "/admin");
        assert_eq!(fold("adm\u{131}n"), "admin");
        assert_eq!(fold("\u{17F}ettings"), "settings");
        assert_eq!(fold("\u{212A}pi"), "kpi");
        assert_eq!(fold("\u{1D41A}dmin"), "admin");
        assert_eq!(fold("café"), "café");
        assert_eq!(folded("/x/．．/admin"), "/admin");
        assert_eq!(decoded("/a%3Bx/b;y/c"), "/a/b/c");
        assert_eq!(decoded("/caf%C3%A9/"), "/café/");
        assert_eq!(resolve_segments("/../../a"), "/a");
    }

    #[test]
    fn look_alikes_of_a_denied_prefix_are_denied() {
        let rules = vec![
            rule("/admin", false, None),
            rule("/settings", false, None),
            rule("/kpi", false, None),
        ];
        let user = session("sales");
        for path in [
            "/ａｄｍｉｎ/x",
            "/／ａｄｍｉｎ",
            "/adm\u{131}n",
            "/\u{17F}ettings",
            "/\u{212A}pi",
            "/x/．．/admin",
            "/admin;x/y",
        ] {
            assert!(
                denied(&rules, &encoded(path), "GET", &user).is_some(),
                "{path}"
            );
        }
        for path in ["/café", "/東京/admin", "/hub", "/adm/in"] {
            assert!(
                denied(&rules, &encoded(path), "GET", &user).is_none(),
                "{path}"
            );
        }
    }

    #[test]
    fn an_allow_matched_only_through_folding_grants_nothing() {
        let rules = vec![rule("/public", true, None), rule("/", false, None)];
        let user = session("sales");
        assert!(denied(&rules, "/public/x", "GET", &user).is_none());
        assert!(denied(&rules, &encoded("/ｐｕｂｌｉｃ/x"), "GET", &user).is_some());
        // A rule written with a look-alike covers the plain spelling too.
        let rules = vec![rule("/\u{17F}ecret", false, None)];
        assert!(denied(&rules, "/secret", "GET", &user).is_some());
        assert!(denied(&rules, "/SECRET/x", "GET", &user).is_some());
    }
}
