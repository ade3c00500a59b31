//! Consent at run time: the oracle every connection's gate asks (the profile's latest
//! preferences from the unify store, the workspace's `consent_missing` policy from the policy
//! layer), shared by delivery, audience sync (audience events go through connections like any
//! event) and the personalization API.

use crate::policies::Policies;
use crate::unify::Unify;
use std::sync::Arc;
use tandem_activate::consent::ConsentOracle;
use tandem_consent::{Missing, Preferences};
use tandem_unify::identity::{Identity, ANONYMOUS_ID, USER_ID};
use tandem_unify::query;

pub struct WorkspaceConsent {
    pub workspace_id: String,
    pub policies: Arc<Policies>,
    pub unify: Arc<Unify>,
}

impl WorkspaceConsent {
    /// The latest preferences of a profile, by its identifiers (userId first).
    pub fn preferences_of(&self, identities: &[Identity]) -> Option<Preferences> {
        let store = self.unify.store();
        let found = store.read(|kv| {
            for identity in identities {
                if let Some(profile) = query::profile_by_identity(kv, identity)? {
                    return query::latest_consent(kv, profile.id);
                }
            }
            Ok(None)
        });
        match found {
            Ok(found) => found,
            Err(error) => {
                // Fails closed through the policy: an unreadable profile counts as unknown.
                tracing::warn!(workspace = %self.workspace_id, %error, "reading consent from the profile store");
                None
            }
        }
    }
}

impl ConsentOracle for WorkspaceConsent {
    fn missing_policy(&self) -> Missing {
        self.policies.consent(&self.workspace_id).missing
    }

    fn profile_preferences(
        &self,
        user_id: Option<&str>,
        anonymous_id: Option<&str>,
    ) -> Option<Preferences> {
        let mut identities = Vec::with_capacity(2);
        if let Some(id) = user_id {
            identities.push(Identity::new(USER_ID, id));
        }
        if let Some(id) = anonymous_id {
            identities.push(Identity::new(ANONYMOUS_ID, id));
        }
        self.preferences_of(&identities)
    }
}
