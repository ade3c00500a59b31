//! Policies: guardrails the organization sets once and every workspace inherits.
//!
//! A policy is a named TOML value declared at the organization (`[organization.policies.NAME]`,
//! with `overridable`), which a workspace may override (`[workspaces.policies]`) only when it is
//! overridable and only with a value of the same type. Values come from the config file and —
//! for what the file does not declare — from the management API; [`PolicyValues`] holds both
//! and answers every question a stage asks ([`PolicyValues::effective`],
//! [`PolicyValues::change_approval`], [`PolicyValues::allowed_destination_types`]), so there is
//! one rule of inheritance, not one per caller.
//!
//! Policies tandem itself reads are listed in [`KNOWN_POLICIES`] with a check of their value;
//! other names are allowed (an organization may record its own guardrails) and checked for type
//! only.

use crate::error::ConfigProblem;
use crate::schema::{Config, PolicyConfig};
use std::collections::BTreeMap;

/// The policy saying whether API changes of a workspace's configuration need approval.
pub const CHANGE_APPROVAL_POLICY: &str = "change_approval";
/// The policy listing the destination types a workspace may use (absent: every type).
pub const ALLOWED_DESTINATION_TYPES_POLICY: &str = "allowed_destination_types";

/// Policies tandem reads, with what they mean (shown by the API).
pub const KNOWN_POLICIES: &[(&str, &str)] = &[
    (
        CHANGE_APPROVAL_POLICY,
        "true, false or { required = bool, exempt_roles = [role, …] }: whether API changes by a role not exempt become change requests",
    ),
    (
        ALLOWED_DESTINATION_TYPES_POLICY,
        "[type, …]: the destination types a workspace may configure (absent: every type)",
    ),
    (
        tandem_consent::CATEGORIES_POLICY,
        "[category, …]: the consent categories of a workspace (absent: necessary, analytics, personalization, marketing, advertising)",
    ),
    (
        tandem_consent::MISSING_POLICY,
        "\"allow\" or \"deny\": what happens to events and profiles without consent preferences on routes that need a category (absent: allow)",
    ),
];

/// Longest policy name.
pub const POLICY_NAME_CHARS_MAX: usize = 64;

/// The roles a policy may name (the server's role table).
pub const ROLE_NAMES: &[&str] = &[
    "org_admin",
    "workspace_admin",
    "marketer",
    "privacy_officer",
    "analyst",
    "viewer",
];

/// `change_approval = { required = true, exempt_roles = ["org_admin", "workspace_admin"] }`:
/// when `required`, a change by a role not in `exempt_roles` (default: the two admin roles)
/// becomes a change request that someone allowed to approve must approve. `true`/`false` is
/// short for `required` with the default exemptions. Absent: no approval needed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeApproval {
    #[serde(default)]
    pub required: bool,
    #[serde(default = "admin_roles")]
    pub exempt_roles: Vec<String>,
}

fn admin_roles() -> Vec<String> {
    vec!["org_admin".to_string(), "workspace_admin".to_string()]
}

impl ChangeApproval {
    pub fn parse(value: &toml::Value) -> Result<ChangeApproval, String> {
        if let toml::Value::Boolean(required) = value {
            return Ok(ChangeApproval {
                required: *required,
                exempt_roles: admin_roles(),
            });
        }
        let policy: ChangeApproval =
            value.clone().try_into().map_err(|error: toml::de::Error| {
                format!(
                    "expected true, false or {{ required = bool, exempt_roles = [role, …] }}: {}",
                    error.message()
                )
            })?;
        if let Some(unknown) = policy
            .exempt_roles
            .iter()
            .find(|role| !ROLE_NAMES.contains(&role.as_str()))
        {
            return Err(format!(
                "unknown role `{unknown}` in exempt_roles (roles: {})",
                ROLE_NAMES.join(", ")
            ));
        }
        Ok(policy)
    }

    /// Whether a change made by `role` needs approval.
    pub fn applies_to(&self, role: &str) -> bool {
        self.required && !self.exempt_roles.iter().any(|exempt| exempt == role)
    }
}

/// `allowed_destination_types = ["webhook", "postgres"]`.
fn parse_type_list(value: &toml::Value) -> Result<Vec<String>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| "expected a list of destination types".to_string())?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("expected destination type names, found {item}"))
        })
        .collect()
}

/// `consent_categories = ["necessary", "analytics", …]`.
fn parse_categories(value: &toml::Value) -> Result<Vec<String>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| "expected a list of consent category names".to_string())?;
    let mut names = Vec::new();
    for item in items {
        let name = item
            .as_str()
            .ok_or_else(|| format!("expected consent category names, found {item}"))?;
        tandem_consent::check_category(name)?;
        if !names.iter().any(|known: &String| known == name) {
            names.push(name.to_string());
        }
    }
    if !names.iter().any(|name| name == tandem_consent::NECESSARY) {
        names.insert(0, tandem_consent::NECESSARY.to_string());
    }
    Ok(names)
}

/// `consent_missing = "allow" | "deny"`.
fn parse_missing(value: &toml::Value) -> Result<tandem_consent::Missing, String> {
    value
        .as_str()
        .and_then(tandem_consent::Missing::parse)
        .ok_or_else(|| format!("expected \"allow\" or \"deny\", found {value}"))
}

/// Checks a policy's value: a known policy's meaning, any policy's name.
pub fn check_value(name: &str, value: &toml::Value) -> Result<(), String> {
    if name.is_empty()
        || name.len() > POLICY_NAME_CHARS_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "policy names are lowercase letters, digits and `_`, at most {POLICY_NAME_CHARS_MAX}"
        ));
    }
    match name {
        CHANGE_APPROVAL_POLICY => ChangeApproval::parse(value).map(|_| ()),
        ALLOWED_DESTINATION_TYPES_POLICY => parse_type_list(value).map(|_| ()),
        tandem_consent::CATEGORIES_POLICY => parse_categories(value).map(|_| ()),
        tandem_consent::MISSING_POLICY => parse_missing(value).map(|_| ()),
        _ => Ok(()),
    }
}

/// Why a workspace may not set `value` for `name`, if it may not.
pub fn override_problem(
    organization: Option<&PolicyConfig>,
    name: &str,
    value: &toml::Value,
) -> Option<String> {
    match organization {
        None => Some(format!(
            "no organization policy `{name}` to override: declare it at the organization first"
        )),
        Some(policy) if !policy.overridable => Some(format!(
            "organization policy `{name}` is not overridable: workspaces inherit it"
        )),
        Some(policy) if policy.value.type_str() != value.type_str() => Some(format!(
            "a {}; organization policy `{name}` is a {}",
            value.type_str(),
            policy.value.type_str()
        )),
        Some(_) => check_value(name, value).err(),
    }
}

/// Where a value was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclaredIn {
    /// The config file: read-only through the API.
    Config,
    /// The management API.
    Api,
}

/// Every policy value of an organization: the organization's and each workspace's overrides,
/// with where each was declared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyValues {
    pub organization: BTreeMap<String, (PolicyConfig, DeclaredIn)>,
    /// workspace id → policy name → override.
    pub workspaces: BTreeMap<String, BTreeMap<String, (toml::Value, DeclaredIn)>>,
}

/// A policy as a workspace runs with it, and where its value comes from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EffectivePolicy {
    pub name: String,
    pub value: toml::Value,
    /// `organization` or `workspace`.
    pub source: &'static str,
    /// Where the value in force was declared: `config` (the file) or `api`.
    pub declared_in: DeclaredIn,
    pub overridable: bool,
    /// The organization's value, when the workspace overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_value: Option<toml::Value>,
}

impl PolicyValues {
    /// The values the config file declares.
    pub fn from_config(config: &Config) -> PolicyValues {
        PolicyValues {
            organization: config
                .organization
                .policies
                .iter()
                .map(|(name, policy)| (name.clone(), (policy.clone(), DeclaredIn::Config)))
                .collect(),
            workspaces: config
                .workspaces
                .iter()
                .map(|workspace| {
                    let own = workspace
                        .policies
                        .iter()
                        .map(|(name, value)| (name.clone(), (value.clone(), DeclaredIn::Config)))
                        .collect();
                    (workspace.id.clone(), own)
                })
                .collect(),
        }
    }

    /// Every organization policy as `workspace_id` sees it. An override is in force only while
    /// the organization's policy is overridable and of the same type.
    pub fn effective(&self, workspace_id: &str) -> Vec<EffectivePolicy> {
        let overrides = self.workspaces.get(workspace_id);
        self.organization
            .iter()
            .map(|(name, (policy, declared_in))| {
                let own =
                    overrides
                        .and_then(|overrides| overrides.get(name))
                        .filter(|(value, _)| {
                            policy.overridable && value.type_str() == policy.value.type_str()
                        });
                match own {
                    Some((value, own_declared_in)) => EffectivePolicy {
                        name: name.clone(),
                        value: value.clone(),
                        source: "workspace",
                        declared_in: *own_declared_in,
                        overridable: true,
                        organization_value: Some(policy.value.clone()),
                    },
                    None => EffectivePolicy {
                        name: name.clone(),
                        value: policy.value.clone(),
                        source: "organization",
                        declared_in: *declared_in,
                        overridable: policy.overridable,
                        organization_value: None,
                    },
                }
            })
            .collect()
    }

    fn effective_value(&self, workspace_id: &str, name: &str) -> Option<toml::Value> {
        self.effective(workspace_id)
            .into_iter()
            .find(|policy| policy.name == name)
            .map(|policy| policy.value)
    }

    /// The `change_approval` policy a workspace runs with (an unreadable value counts as
    /// required with no exemption: a broken guardrail fails closed).
    pub fn change_approval(&self, workspace_id: &str) -> ChangeApproval {
        self.effective_value(workspace_id, CHANGE_APPROVAL_POLICY)
            .map(|value| {
                ChangeApproval::parse(&value).unwrap_or(ChangeApproval {
                    required: true,
                    exempt_roles: Vec::new(),
                })
            })
            .unwrap_or_default()
    }

    /// The destination types a workspace may use, when the policy restricts them (an
    /// unreadable value allows none: fails closed).
    pub fn allowed_destination_types(&self, workspace_id: &str) -> Option<Vec<String>> {
        self.effective_value(workspace_id, ALLOWED_DESTINATION_TYPES_POLICY)
            .map(|value| parse_type_list(&value).unwrap_or_default())
    }

    /// The consent settings a workspace runs with. An unreadable `consent_missing` counts as
    /// `deny` and unreadable categories as the defaults: a broken guardrail fails closed.
    pub fn consent(&self, workspace_id: &str) -> tandem_consent::ConsentPolicy {
        let mut policy = tandem_consent::ConsentPolicy::default();
        if let Some(value) = self.effective_value(workspace_id, tandem_consent::CATEGORIES_POLICY) {
            if let Ok(categories) = parse_categories(&value) {
                policy.categories = categories;
            }
        }
        if let Some(value) = self.effective_value(workspace_id, tandem_consent::MISSING_POLICY) {
            policy.missing = parse_missing(&value).unwrap_or(tandem_consent::Missing::Deny);
        }
        policy
    }

    /// Why a destination of `kind` may not be used in `workspace_id`, if it may not.
    pub fn destination_type_problem(&self, workspace_id: &str, kind: &str) -> Option<String> {
        let allowed = self.allowed_destination_types(workspace_id)?;
        (!allowed.iter().any(|allowed| allowed == kind)).then(|| {
            format!(
                "destination type `{kind}` is not allowed in workspace {workspace_id} (policy {ALLOWED_DESTINATION_TYPES_POLICY}: {})",
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )
        })
    }
}

/// Every organization policy as `workspace_id` sees it, from the config file alone.
pub fn effective_policies(config: &Config, workspace_id: &str) -> Vec<EffectivePolicy> {
    PolicyValues::from_config(config).effective(workspace_id)
}

/// The `change_approval` policy a workspace runs with, from the config file alone.
pub fn change_approval(config: &Config, workspace_id: &str) -> ChangeApproval {
    PolicyValues::from_config(config).change_approval(workspace_id)
}

/// The file's policy rules: known policies' values make sense; a workspace overrides only
/// overridable organization policies, with a value of the same type; file-declared destinations
/// are of allowed types.
pub(crate) fn check_policies(config: &Config, problems: &mut Vec<ConfigProblem>) {
    for (name, policy) in &config.organization.policies {
        if let Err(message) = check_value(name, &policy.value) {
            let path = format!("organization.policies.{name}.value");
            problems.push(ConfigProblem::new(path, message));
        }
    }
    for (index, workspace) in config.workspaces.iter().enumerate() {
        for (name, value) in &workspace.policies {
            let path = format!("workspaces[{index}].policies.{name}");
            if let Some(message) =
                override_problem(config.organization.policies.get(name), name, value)
            {
                problems.push(ConfigProblem::new(path, message));
            }
        }
    }
    let values = PolicyValues::from_config(config);
    for (index, workspace) in config.workspaces.iter().enumerate() {
        for (position, destination) in workspace.destinations.iter().enumerate() {
            if let Some(message) = values.destination_type_problem(&workspace.id, &destination.kind)
            {
                let path = format!("workspaces[{index}].destinations[{position}].type");
                problems.push(ConfigProblem::new(path, message));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(value: toml::Value, overridable: bool) -> PolicyConfig {
        PolicyConfig { value, overridable }
    }

    #[test]
    fn overrides_apply_only_while_overridable_and_of_the_same_type() {
        let mut values = PolicyValues::default();
        values.organization.insert(
            "retention_days".into(),
            (policy(toml::Value::Integer(30), true), DeclaredIn::Config),
        );
        values.workspaces.entry("de".into()).or_default().insert(
            "retention_days".into(),
            (toml::Value::Integer(7), DeclaredIn::Api),
        );
        let de = values.effective("de");
        assert_eq!(de[0].value, toml::Value::Integer(7));
        assert_eq!(
            (de[0].source, de[0].declared_in),
            ("workspace", DeclaredIn::Api)
        );
        assert_eq!(de[0].organization_value, Some(toml::Value::Integer(30)));
        assert_eq!(values.effective("fr")[0].value, toml::Value::Integer(30));

        values
            .organization
            .get_mut("retention_days")
            .unwrap()
            .0
            .overridable = false;
        assert_eq!(values.effective("de")[0].value, toml::Value::Integer(30));
        values.organization.get_mut("retention_days").unwrap().0 =
            policy(toml::Value::String("30d".into()), true);
        assert_eq!(values.effective("de")[0].source, "organization");
    }

    #[test]
    fn known_policies_are_checked_and_broken_guardrails_fail_closed() {
        assert!(check_value(CHANGE_APPROVAL_POLICY, &toml::Value::Boolean(true)).is_ok());
        assert!(check_value(CHANGE_APPROVAL_POLICY, &toml::Value::Integer(3)).is_err());
        assert!(check_value(ALLOWED_DESTINATION_TYPES_POLICY, &toml::Value::Integer(3)).is_err());
        assert!(check_value("Bad Name", &toml::Value::Integer(3)).is_err());
        assert!(check_value("house_rule", &toml::Value::Integer(3)).is_ok());

        let mut values = PolicyValues::default();
        values.organization.insert(
            ALLOWED_DESTINATION_TYPES_POLICY.into(),
            (
                policy(toml::Value::Array(vec!["webhook".into()]), false),
                DeclaredIn::Api,
            ),
        );
        assert_eq!(values.destination_type_problem("de", "webhook"), None);
        let problem = values.destination_type_problem("de", "nats").unwrap();
        assert!(problem.contains("`nats` is not allowed"), "{problem}");
        values.organization.insert(
            ALLOWED_DESTINATION_TYPES_POLICY.into(),
            (policy(toml::Value::Integer(1), false), DeclaredIn::Api),
        );
        assert!(values.destination_type_problem("de", "webhook").is_some());
        values.organization.insert(
            CHANGE_APPROVAL_POLICY.into(),
            (policy(toml::Value::Integer(1), false), DeclaredIn::Api),
        );
        assert!(values.change_approval("de").applies_to("org_admin"));
    }
}
