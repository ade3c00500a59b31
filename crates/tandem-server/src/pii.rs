//! PII at run time: each workspace's classification (its `[[workspaces.pii.rules]]` compiled
//! once), its hashing salt and its collect option, shared by the delivery of every connection
//! (`ConnectionHooks::pii`), collect (`anonymize_ip`) and the profile routes (masking for readers
//! without `ReadPii`).
//!
//! The salt: the value of the environment variable `[workspaces.pii] salt_env` names, else one
//! generated at the first start (random, [`GENERATED_SALT_BYTES`]) and kept in the metadata store
//! under [`salt_setting`], so hashes stay stable across restarts. It is never logged (`Salt`'s
//! `Debug` hides it), never in the config file or its export (only the variable's name is).

use serde_json::Value;
use std::sync::Arc;
use tandem_config::WorkspaceConfig;
use tandem_pii::{Classifier, Policy, Salt, WorkspacePii, SALT_CHARS_MIN};
use tandem_store::MetadataStore;

/// Random bytes of a generated salt (256 bits: never guessed, so hashes cannot be reversed by
/// hashing candidate values without the store).
pub const GENERATED_SALT_BYTES: usize = 32;

/// The metadata-store setting holding a workspace's generated salt.
pub fn salt_setting(workspace_id: &str) -> String {
    format!("pii_salt:{workspace_id}")
}

/// The workspace's PII settings, with its salt read from the environment or the store (made and
/// stored on first use).
pub fn load(
    store: &dyn MetadataStore,
    workspace: &WorkspaceConfig,
) -> anyhow::Result<Arc<WorkspacePii>> {
    let salt = match &workspace.pii.salt_env {
        Some(name) => {
            let value = std::env::var(name).map_err(|_| {
                anyhow::anyhow!(
                    "workspace {}: [workspaces.pii] salt_env names {name}, which is not set",
                    workspace.id
                )
            })?;
            if value.chars().count() < SALT_CHARS_MIN {
                anyhow::bail!(
                    "workspace {}: the salt in {name} is shorter than {SALT_CHARS_MIN} characters",
                    workspace.id
                );
            }
            value
        }
        None => match store.setting(&salt_setting(&workspace.id))? {
            Some(stored) => stored,
            None => {
                let generated = tandem_core::ids::random_secret(GENERATED_SALT_BYTES);
                store.put_setting(&salt_setting(&workspace.id), &generated)?;
                generated
            }
        },
    };
    Ok(Arc::new(WorkspacePii {
        classifier: Classifier::new(&workspace.pii.rules),
        salt: Salt::new(salt),
        anonymize_ip: workspace.pii.anonymize_ip,
    }))
}

/// The `[workspaces.pii]` section the file declares for `workspace_id` (the default when none):
/// what API-created connections' policies are checked against.
pub fn declared(state: &crate::state::AppState, workspace_id: &str) -> tandem_config::PiiConfig {
    state
        .config
        .workspaces
        .iter()
        .find(|workspace| workspace.id == workspace_id)
        .map(|workspace| workspace.pii.clone())
        .unwrap_or_default()
}

/// How a profile answer shows PII: in clear to holders of `ReadPii` (and to Profile API access
/// tokens, which a workspace admin gives applications), masked to everyone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sight {
    Clear,
    Masked,
}

impl Sight {
    pub fn of(principal: &crate::auth::Principal) -> Sight {
        if principal.may(crate::auth::Permission::ReadPii) {
            Sight::Clear
        } else {
            Sight::Masked
        }
    }

    /// Masks a profile trait's value (classified as if at `traits.<name>` of an identify call).
    pub fn trait_value(self, pii: &WorkspacePii, name: &str, value: &mut Value) {
        self.at(pii, &["traits", name], value);
    }

    /// Masks an account trait's value (by value only: an account's `name` is not a person's).
    pub fn account_trait(self, pii: &WorkspacePii, name: &str, value: &mut Value) {
        self.at(pii, &["account", name], value);
    }

    /// Masks an identity's value (`email` and `phone` by type, others by value).
    pub fn identity(self, pii: &WorkspacePii, kind: &str, value: &mut Value) {
        if self == Sight::Clear {
            return;
        }
        let Some(text) = value.as_str() else {
            return;
        };
        if let Some(category) = pii.classifier.classify_identity(kind, text) {
            *value = tandem_pii::mask(category, value);
        }
    }

    /// Masks a stored event as delivery would classify it.
    pub fn event(self, pii: &WorkspacePii, event: &mut Value) {
        if self == Sight::Masked {
            pii.apply(event, &Policy::mask_all());
        }
    }

    /// Masks identities (`{"type", "id"}` objects) and whatever a detector recognises anywhere
    /// in `value` (explanations, refusals, splits, merges).
    pub fn anything(self, pii: &WorkspacePii, value: &mut Value) {
        if self == Sight::Clear {
            return;
        }
        self.identities_in(pii, value);
        self.at(pii, &[], value);
    }

    fn identities_in(self, pii: &WorkspacePii, value: &mut Value) {
        match value {
            Value::Object(members) => {
                if let Some(kind) = members
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                {
                    if let Some(id) = members.get_mut("id") {
                        self.identity(pii, &kind, id);
                    }
                }
                for child in members.values_mut() {
                    self.identities_in(pii, child);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.identities_in(pii, item);
                }
            }
            _ => {}
        }
    }

    fn at(self, pii: &WorkspacePii, base: &[&str], value: &mut Value) {
        if self == Sight::Masked {
            tandem_pii::apply_at(value, base, &pii.classifier, &Policy::mask_all(), &pii.salt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(salt_env: Option<&str>) -> WorkspaceConfig {
        WorkspaceConfig {
            id: "eu".into(),
            name: "EU".into(),
            pii: tandem_config::PiiConfig {
                salt_env: salt_env.map(str::to_string),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_generated_salt_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = tandem_store::RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        let first = load(&store, &workspace(None)).unwrap();
        let again = load(&store, &workspace(None)).unwrap();
        assert_eq!(first.salt, again.salt, "stable across restarts");
        assert!(first.salt.expose().len() >= SALT_CHARS_MIN);
        let other = load(
            &store,
            &WorkspaceConfig {
                id: "us".into(),
                ..workspace(None)
            },
        )
        .unwrap();
        assert_ne!(first.salt, other.salt, "one salt per workspace");
    }

    #[test]
    fn a_salt_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let store = tandem_store::RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        let error = load(&store, &workspace(Some("TANDEM_TEST_PII_SALT_UNSET"))).unwrap_err();
        assert!(error
            .to_string()
            .contains("TANDEM_TEST_PII_SALT_UNSET, which is not set"));
        std::env::set_var("TANDEM_TEST_PII_SALT_SHORT", "short");
        let error = load(&store, &workspace(Some("TANDEM_TEST_PII_SALT_SHORT"))).unwrap_err();
        assert!(error.to_string().contains("shorter than"), "{error}");
        assert!(
            !error.to_string().contains("short\""),
            "the salt is not quoted"
        );
        std::env::set_var("TANDEM_TEST_PII_SALT", "a-long-enough-salt-value");
        let pii = load(&store, &workspace(Some("TANDEM_TEST_PII_SALT"))).unwrap();
        assert_eq!(pii.salt.expose(), "a-long-enough-salt-value");
        assert_eq!(
            store.setting(&salt_setting("eu")).unwrap(),
            None,
            "nothing stored"
        );
    }
}
