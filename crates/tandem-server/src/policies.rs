//! The policy layer at run time: the config file's policies plus those set through the API,
//! as one [`PolicyValues`] every stage asks (`change_approval` for changes,
//! `allowed_destination_types` for destinations, and whatever later stages read).
//!
//! What the file declares is read-only through the API (409), as for sources and destinations.
//! API-set values live in the metadata store under one setting (`policies`), written before the
//! in-memory view is swapped, so a restart finds exactly what was last answered. Organization
//! policies keep their own version history there (`POLICY_VERSIONS_KEPT` per policy); a
//! workspace's overrides are versioned with the rest of its configuration (the change history,
//! kind `policy`), since they go through change requests like any workspace change.

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use tandem_config::policy::{check_value, override_problem};
use tandem_config::{
    ChangeApproval, Config, DeclaredIn, EffectivePolicy, PolicyConfig, PolicyValues,
};
use tandem_store::{MetadataStore, StoreError};

/// The metadata-store setting holding every API-set policy value.
const SETTING: &str = "policies";
/// Versions kept per organization policy (older ones are dropped, oldest first).
pub const POLICY_VERSIONS_KEPT: usize = 100;

/// One version of an organization policy: the value it set (none: removed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: u64,
    pub value: Option<Value>,
    pub overridable: bool,
    pub by: String,
    pub at_ms: i64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct StoredPolicy {
    value: Value,
    overridable: bool,
}

/// What the setting holds (values as JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    organization: BTreeMap<String, StoredPolicy>,
    #[serde(default)]
    workspaces: BTreeMap<String, BTreeMap<String, Value>>,
    #[serde(default)]
    history: BTreeMap<String, Vec<PolicyVersion>>,
}

/// Why a policy change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
}

impl From<PolicyError> for crate::error::ApiError {
    fn from(error: PolicyError) -> Self {
        use tandem_core::ErrorCode;
        match error {
            PolicyError::Invalid(message) => Self::new(ErrorCode::InvalidRequest, message),
            PolicyError::Conflict(message) => Self::new(ErrorCode::Conflict, message),
            PolicyError::NotFound(message) => Self::not_found(message),
            PolicyError::Store(error) => Self::internal(error),
        }
    }
}

/// A JSON value as the TOML value policies hold (null has no TOML form).
pub fn toml_of(value: &Value) -> Result<toml::Value, PolicyError> {
    serde_json::from_value(value.clone())
        .map_err(|error| PolicyError::Invalid(format!("not a policy value: {error}")))
}

pub fn json_of(value: &toml::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub struct Policies {
    store: Arc<dyn MetadataStore>,
    file: PolicyValues,
    stored: Mutex<Stored>,
    values: RwLock<Arc<PolicyValues>>,
}

impl Policies {
    pub fn open(config: &Config, store: Arc<dyn MetadataStore>) -> anyhow::Result<Policies> {
        let stored: Stored = match store.setting(SETTING)? {
            Some(json) => serde_json::from_str(&json)?,
            None => Stored::default(),
        };
        let file = PolicyValues::from_config(config);
        let values = merged(&file, &stored);
        Ok(Policies {
            store,
            file,
            stored: Mutex::new(stored),
            values: RwLock::new(Arc::new(values)),
        })
    }

    /// Every value in force, file and API together.
    pub fn values(&self) -> Arc<PolicyValues> {
        self.values.read().clone()
    }

    pub fn effective(&self, workspace: &str) -> Vec<EffectivePolicy> {
        self.values().effective(workspace)
    }

    pub fn change_approval(&self, workspace: &str) -> ChangeApproval {
        self.values().change_approval(workspace)
    }

    pub fn consent(&self, workspace: &str) -> tandem_consent::ConsentPolicy {
        self.values().consent(workspace)
    }

    pub fn destination_type_problem(&self, workspace: &str, kind: &str) -> Option<String> {
        self.values().destination_type_problem(workspace, kind)
    }

    /// The history of an organization policy set through the API, oldest first.
    pub fn history(&self, name: &str) -> Vec<PolicyVersion> {
        self.stored
            .lock()
            .history
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets (or, with `None`, removes) an organization policy. Refused: a policy the file
    /// declares, a value that does not check, and a change that would silently stop a
    /// workspace's API-set override from applying (made not overridable, or of another type).
    /// Returns the version recorded.
    pub fn set_organization(
        &self,
        name: &str,
        value: Option<(toml::Value, bool)>,
        by: &str,
        reason: &str,
    ) -> Result<PolicyVersion, PolicyError> {
        if self.file.organization.contains_key(name) {
            return Err(PolicyError::Conflict(format!(
                "policy `{name}` is declared in the config file; change it there"
            )));
        }
        let mut stored = self.stored.lock();
        if value.is_none() && !stored.organization.contains_key(name) {
            return Err(PolicyError::NotFound(format!("policy {name}")));
        }
        if let Some((value, _)) = &value {
            check_value(name, value)
                .map_err(|message| PolicyError::Invalid(format!("policy `{name}`: {message}")))?;
        }
        let still_valid = |override_value: &toml::Value| match &value {
            None => false,
            Some((value, overridable)) => {
                *overridable && value.type_str() == override_value.type_str()
            }
        };
        let broken: Vec<String> = self
            .values()
            .workspaces
            .iter()
            .filter_map(|(workspace, overrides)| {
                let (override_value, declared_in) = overrides.get(name)?;
                (!still_valid(override_value)).then(|| match declared_in {
                    DeclaredIn::Config => format!("{workspace} (config file)"),
                    DeclaredIn::Api => workspace.clone(),
                })
            })
            .collect();
        if !broken.is_empty() {
            return Err(PolicyError::Conflict(format!(
                "workspaces override policy `{name}` and would lose their value: {} — remove their overrides first",
                broken.join(", ")
            )));
        }
        let mut next = stored.clone();
        let history = next.history.entry(name.to_string()).or_default();
        let version = PolicyVersion {
            version: history.last().map_or(1, |last| last.version + 1),
            value: value.as_ref().map(|(value, _)| json_of(value)),
            overridable: value.as_ref().is_some_and(|(_, overridable)| *overridable),
            by: by.to_string(),
            at_ms: tandem_core::time_util::now_ms(),
            reason: reason.to_string(),
        };
        history.push(version.clone());
        if history.len() > POLICY_VERSIONS_KEPT {
            history.remove(0);
        }
        match value {
            Some((value, overridable)) => {
                next.organization.insert(
                    name.to_string(),
                    StoredPolicy {
                        value: json_of(&value),
                        overridable,
                    },
                );
            }
            None => {
                next.organization.remove(name);
            }
        }
        self.save(&mut stored, next)?;
        Ok(version)
    }

    /// Why `workspace` may not set `value` for `name`, if it may not (file-declared overrides
    /// are read-only).
    pub fn override_problem(&self, name: &str, value: &toml::Value) -> Option<String> {
        let values = self.values();
        let organization = values.organization.get(name).map(|(policy, _)| policy);
        override_problem(organization, name, value)
    }

    /// A workspace's own value of `name`, with where it was declared.
    pub fn workspace_override(
        &self,
        workspace: &str,
        name: &str,
    ) -> Option<(toml::Value, DeclaredIn)> {
        self.values()
            .workspaces
            .get(workspace)
            .and_then(|overrides| overrides.get(name))
            .cloned()
    }

    /// Writes (or removes) a workspace's API-set override: the last step of an applied change
    /// (`changes::apply`), after it was validated.
    pub fn write_override(
        &self,
        workspace: &str,
        name: &str,
        value: Option<&toml::Value>,
    ) -> Result<(), PolicyError> {
        let mut stored = self.stored.lock();
        let mut next = stored.clone();
        let overrides = next.workspaces.entry(workspace.to_string()).or_default();
        match value {
            Some(value) => {
                overrides.insert(name.to_string(), json_of(value));
            }
            None => {
                overrides.remove(name);
            }
        }
        if overrides.is_empty() {
            next.workspaces.remove(workspace);
        }
        self.save(&mut stored, next)
    }

    /// Stores `next` durably, then makes it the values in force.
    fn save(&self, stored: &mut Stored, next: Stored) -> Result<(), PolicyError> {
        let json = serde_json::to_string(&next).expect("policies serialize");
        self.store.put_setting(SETTING, &json)?;
        *self.values.write() = Arc::new(merged(&self.file, &next));
        *stored = next;
        Ok(())
    }
}

/// The file's values, then the API's where the file says nothing.
fn merged(file: &PolicyValues, stored: &Stored) -> PolicyValues {
    let mut values = file.clone();
    for (name, policy) in &stored.organization {
        let Ok(value) = toml_of(&policy.value) else {
            continue;
        };
        values.organization.entry(name.clone()).or_insert((
            PolicyConfig {
                value,
                overridable: policy.overridable,
            },
            DeclaredIn::Api,
        ));
    }
    for (workspace, overrides) in &stored.workspaces {
        let own = values.workspaces.entry(workspace.clone()).or_default();
        for (name, value) in overrides {
            if let Ok(value) = toml_of(value) {
                own.entry(name.clone()).or_insert((value, DeclaredIn::Api));
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(file: &str) -> Policies {
        let config = tandem_config::parse(file, "test.toml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = tandem_store::RedbStore::open(&dir.path().join("m.redb")).unwrap();
        std::mem::forget(dir);
        Policies::open(&config, Arc::new(store)).unwrap()
    }

    const FILE: &str = r#"
[organization.policies.change_approval]
value = true
overridable = true
[[workspaces]]
id = "de"
name = "Germany"
"#;

    #[test]
    fn the_file_is_read_only_and_the_api_fills_the_rest() {
        let policies = policies(FILE);
        let refused = policies
            .set_organization(
                "change_approval",
                Some((toml::Value::Boolean(false), true)),
                "it",
                "",
            )
            .unwrap_err();
        assert!(matches!(refused, PolicyError::Conflict(_)), "{refused}");
        let version = policies
            .set_organization(
                "allowed_destination_types",
                Some((toml::Value::Array(vec!["webhook".into()]), true)),
                "it",
                "only webhooks for now",
            )
            .unwrap();
        assert_eq!(version.version, 1);
        assert!(policies.destination_type_problem("de", "nats").is_some());
        assert!(policies.destination_type_problem("de", "webhook").is_none());
        let bad = policies
            .set_organization(
                "allowed_destination_types",
                Some((toml::Value::Integer(1), true)),
                "it",
                "",
            )
            .unwrap_err();
        assert!(matches!(bad, PolicyError::Invalid(_)), "{bad}");
    }

    #[test]
    fn overrides_are_protected_from_changes_that_would_drop_them() {
        let policies = policies(FILE);
        let list = |items: &[&str]| toml::Value::Array(items.iter().map(|i| (*i).into()).collect());
        policies
            .set_organization(
                "allowed_destination_types",
                Some((list(&["webhook"]), true)),
                "it",
                "",
            )
            .unwrap();
        assert_eq!(
            policies.override_problem("allowed_destination_types", &toml::Value::Integer(3)),
            Some("a integer; organization policy `allowed_destination_types` is a array".into())
        );
        policies
            .write_override(
                "de",
                "allowed_destination_types",
                Some(&list(&["webhook", "nats"])),
            )
            .unwrap();
        assert!(policies.destination_type_problem("de", "nats").is_none());
        let refused = policies
            .set_organization(
                "allowed_destination_types",
                Some((list(&["webhook"]), false)),
                "it",
                "",
            )
            .unwrap_err();
        assert!(refused.to_string().contains("de"), "{refused}");
        policies
            .write_override("de", "allowed_destination_types", None)
            .unwrap();
        policies
            .set_organization("allowed_destination_types", None, "it", "gone")
            .unwrap();
        assert_eq!(policies.history("allowed_destination_types").len(), 2);
        assert!(policies.destination_type_problem("de", "nats").is_none());
    }
}
