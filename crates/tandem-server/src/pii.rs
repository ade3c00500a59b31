//! PII at run time: each workspace's classification (its `[[workspaces.pii.rules]]` compiled
//! once), its hashing salt and its collect option, shared by the delivery of every connection
//! (`ConnectionHooks::pii`), collect (`anonymize_ip`) and the profile routes (masking for readers
//! without `ReadPii`).
//!
//! The salt: the value of the environment variable `[workspaces.pii] salt_env` names, else one
//! generated at the first start (random, [`GENERATED_SALT_BYTES`]) and kept in the metadata store
//! under [`salt_setting`], so hashes stay stable across restarts. It is never logged (`Salt`'s
//! `Debug` hides it), never in the config file or its export (only the variable's name is).

use std::sync::Arc;
use tandem_config::WorkspaceConfig;
use tandem_pii::{Classifier, Salt, WorkspacePii, SALT_CHARS_MIN};
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
