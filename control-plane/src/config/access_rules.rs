//! A virtual proxy's access rules as configured: which paths, methods and users a rule
//! matches and whether it allows or denies; checked before the configuration is used.

use serde::Deserialize;

use super::syntax::is_token;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    pub name: String,
    pub value: String,
}

/// The first rule whose path, method and user match decides; no match allows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRuleConfig {
    /// Path below the virtual proxy prefix, starting with `/`.
    pub path_prefix: String,
    /// Empty: every method.
    #[serde(default)]
    pub methods: Vec<String>,
    pub action: RuleAction,
    #[serde(default)]
    pub user_directory: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub attribute: Option<AttributeMatch>,
    /// `true`: the rule is only about requests on a public path; `false`: only about
    /// identified ones; unset: both. A rule naming a user never matches a public request.
    #[serde(default)]
    pub public: Option<bool>,
}

/// A rule's path must be below the prefix and its methods HTTP tokens.
pub(super) fn validate_rule(rule: &AccessRuleConfig) -> Result<(), String> {
    if !rule.path_prefix.starts_with('/') {
        return Err(format!(
            "access rule path_prefix {:?} must start with '/'",
            rule.path_prefix
        ));
    }
    if let Some(method) = rule.methods.iter().find(|m| !is_token(m)) {
        return Err(format!(
            "access rule method {method:?} is not an HTTP method"
        ));
    }
    if rule.public == Some(true)
        && (rule.user_directory.is_some() || rule.user_id.is_some() || rule.attribute.is_some())
    {
        return Err(format!(
            "access rule on {:?} has public = true and names a user: a public request has none, \
             so it would never match",
            rule.path_prefix
        ));
    }
    Ok(())
}
