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
    Ok(())
}
