use crate::*;
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use std::path::Path;

const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
const ACTIVITY: TableDefinition<&str, &[u8]> = TableDefinition::new("source_activity");
const UNKNOWN_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("unknown_key_traffic");
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// The metadata store in one redb file.
pub struct RedbStore {
    db: Database,
}

fn engine<E: std::fmt::Display>(error: E) -> StoreError {
    StoreError::Engine(error.to_string())
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        key: key.to_string(),
        reason: error.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata values serialize")
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, creating its tables.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(engine)?;
        let txn = db.begin_write().map_err(engine)?;
        {
            txn.open_table(SOURCES).map_err(engine)?;
            txn.open_table(ACTIVITY).map_err(engine)?;
            txn.open_table(UNKNOWN_KEYS).map_err(engine)?;
            txn.open_table(SETTINGS).map_err(engine)?;
            txn.open_table(USERS).map_err(engine)?;
            txn.open_table(API_TOKENS).map_err(engine)?;
            txn.open_table(SESSIONS).map_err(engine)?;
        }
        txn.commit().map_err(engine)?;
        Ok(RedbStore { db })
    }

    fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(table).map_err(engine)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(engine)? {
            let (key, value) = entry.map_err(engine)?;
            let key = key.value().to_string();
            let decoded = decode(&key, value.value())?;
            out.push((key, decoded));
        }
        Ok(out)
    }

    fn one<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(table).map_err(engine)?;
        let value = table.get(key).map_err(engine)?;
        value.map(|value| decode(key, value.value())).transpose()
    }

    fn write<R>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        body: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let txn = self.db.begin_write().map_err(engine)?;
        let result = {
            let mut table = txn.open_table(table).map_err(engine)?;
            body(&mut table)?
        };
        txn.commit().map_err(engine)?;
        Ok(result)
    }
}

fn source_storage_key(workspace_id: &str, source_id: &str) -> String {
    format!("{workspace_id}/{source_id}")
}

fn get<T: DeserializeOwned>(
    table: &redb::Table<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key).map_err(engine)? {
        Some(value) => Ok(Some(decode(key, value.value())?)),
        None => Ok(None),
    }
}

impl MetadataStore for RedbStore {
    fn sources(&self) -> Result<Vec<SourceRecord>, StoreError> {
        Ok(self
            .all::<SourceRecord>(SOURCES)?
            .into_iter()
            .map(|(_, source)| source)
            .collect())
    }

    fn source(
        &self,
        workspace_id: &str,
        source_id: &str,
    ) -> Result<Option<SourceRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(SOURCES).map_err(engine)?;
        let key = source_storage_key(workspace_id, source_id);
        let value = table.get(key.as_str()).map_err(engine)?;
        value.map(|value| decode(&key, value.value())).transpose()
    }

    fn create_source(&self, source: &SourceRecord) -> Result<(), StoreError> {
        let key = source.key().storage_key();
        self.write(SOURCES, |table| {
            if table.get(key.as_str()).map_err(engine)?.is_some() {
                return Err(StoreError::Conflict(format!("source {key}")));
            }
            table
                .insert(key.as_str(), encode(source).as_slice())
                .map_err(engine)?;
            Ok(())
        })
    }

    fn put_source(&self, source: &SourceRecord) -> Result<(), StoreError> {
        let key = source.key().storage_key();
        self.write(SOURCES, |table| {
            table
                .insert(key.as_str(), encode(source).as_slice())
                .map_err(engine)?;
            Ok(())
        })
    }

    fn delete_source(&self, workspace_id: &str, source_id: &str) -> Result<(), StoreError> {
        let key = source_storage_key(workspace_id, source_id);
        self.write(SOURCES, |table| {
            match table.remove(key.as_str()).map_err(engine)? {
                Some(_) => Ok(()),
                None => Err(StoreError::NotFound(format!("source {key}"))),
            }
        })
    }

    fn record_activity(&self, deltas: &[(SourceKey, ActivityDelta)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        self.write(ACTIVITY, |table| {
            for (source, delta) in deltas {
                let key = source.storage_key();
                let mut activity: SourceActivity = get(table, &key)?.unwrap_or_default();
                activity.events_accepted += delta.events_accepted;
                activity.events_rejected += delta.events_rejected;
                activity.last_seen_ms =
                    Some(activity.last_seen_ms.unwrap_or(0).max(delta.last_seen_ms));
                table
                    .insert(key.as_str(), encode(&activity).as_slice())
                    .map_err(engine)?;
            }
            Ok(())
        })
    }

    fn activity(&self) -> Result<Vec<(SourceKey, SourceActivity)>, StoreError> {
        let entries = self.all::<SourceActivity>(ACTIVITY)?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, activity)| {
                let (workspace_id, source_id) = key.split_once('/')?;
                Some((
                    SourceKey {
                        workspace_id: workspace_id.into(),
                        source_id: source_id.into(),
                    },
                    activity,
                ))
            })
            .collect())
    }

    fn record_unknown_traffic(&self, seen: &[UnknownKeyTraffic]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        self.write(UNKNOWN_KEYS, |table| {
            for delta in seen {
                let key = format!("{}/{}", delta.reason, delta.key_fingerprint);
                let merged = match get::<UnknownKeyTraffic>(table, &key)? {
                    Some(mut known) => {
                        known.attempts += delta.attempts;
                        known.first_seen_ms = known.first_seen_ms.min(delta.first_seen_ms);
                        if delta.last_seen_ms >= known.last_seen_ms {
                            known.last_seen_ms = delta.last_seen_ms;
                            known.last_ip = delta.last_ip.clone().or(known.last_ip);
                            known.last_user_agent =
                                delta.last_user_agent.clone().or(known.last_user_agent);
                            known.last_origin = delta.last_origin.clone().or(known.last_origin);
                        }
                        known
                    }
                    None => delta.clone(),
                };
                table
                    .insert(key.as_str(), encode(&merged).as_slice())
                    .map_err(engine)?;
            }
            Ok(())
        })
    }

    fn unknown_traffic(&self) -> Result<Vec<UnknownKeyTraffic>, StoreError> {
        Ok(self
            .all::<UnknownKeyTraffic>(UNKNOWN_KEYS)?
            .into_iter()
            .map(|(_, traffic)| traffic)
            .collect())
    }

    fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = txn.open_table(SETTINGS).map_err(engine)?;
        Ok(table
            .get(name)
            .map_err(engine)?
            .map(|value| value.value().to_string()))
    }

    fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(engine)?;
        {
            let mut table = txn.open_table(SETTINGS).map_err(engine)?;
            table.insert(name, value).map_err(engine)?;
        }
        txn.commit().map_err(engine)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Ok(self
            .all::<UserRecord>(USERS)?
            .into_iter()
            .map(|(_, user)| user)
            .collect())
    }

    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.one(USERS, id)
    }

    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.write(USERS, |table| {
            if table.get(user.id.as_str()).map_err(engine)?.is_some() {
                return Err(StoreError::Conflict(format!("user {}", user.id)));
            }
            check_email_free(table, user)?;
            table
                .insert(user.id.as_str(), encode(user).as_slice())
                .map_err(engine)?;
            Ok(())
        })
    }

    fn update_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.write(USERS, |table| {
            if table.get(user.id.as_str()).map_err(engine)?.is_none() {
                return Err(StoreError::NotFound(format!("user {}", user.id)));
            }
            check_email_free(table, user)?;
            table
                .insert(user.id.as_str(), encode(user).as_slice())
                .map_err(engine)?;
            Ok(())
        })
    }

    fn delete_user(&self, id: &str) -> Result<UserRecord, StoreError> {
        let txn = self.db.begin_write().map_err(engine)?;
        let removed = {
            let mut users = txn.open_table(USERS).map_err(engine)?;
            let removed: UserRecord = match users.remove(id).map_err(engine)? {
                Some(value) => decode(id, value.value())?,
                None => return Err(StoreError::NotFound(format!("user {id}"))),
            };
            let mut sessions = txn.open_table(SESSIONS).map_err(engine)?;
            let theirs: Vec<String> = sessions
                .iter()
                .map_err(engine)?
                .filter_map(|entry| entry.ok())
                .filter_map(|(key, value)| {
                    let session: SessionRecord = decode(key.value(), value.value()).ok()?;
                    (session.user_id == id).then(|| key.value().to_string())
                })
                .collect();
            for key in theirs {
                sessions.remove(key.as_str()).map_err(engine)?;
            }
            removed
        };
        txn.commit().map_err(engine)?;
        Ok(removed)
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        Ok(self
            .all::<ApiTokenRecord>(API_TOKENS)?
            .into_iter()
            .map(|(_, token)| token)
            .collect())
    }

    fn api_token_by_hash(&self, sha256: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        self.one(API_TOKENS, sha256)
    }

    fn put_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError> {
        self.write(API_TOKENS, |table| {
            table
                .insert(token.sha256.as_str(), encode(token).as_slice())
                .map_err(engine)?;
            Ok(())
        })
    }

    fn session(&self, sha256: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.one(SESSIONS, sha256)
    }

    fn put_session(&self, session: &SessionRecord, now_ms: i64) -> Result<(), StoreError> {
        self.write(SESSIONS, |table| {
            let expired: Vec<String> = table
                .iter()
                .map_err(engine)?
                .filter_map(|entry| entry.ok())
                .filter_map(|(key, value)| {
                    let old: SessionRecord = decode(key.value(), value.value()).ok()?;
                    (old.expires_at_ms <= now_ms).then(|| key.value().to_string())
                })
                .collect();
            for key in expired {
                table.remove(key.as_str()).map_err(engine)?;
            }
            table
                .insert(session.sha256.as_str(), encode(session).as_slice())
                .map_err(engine)?;
            Ok(())
        })
    }

    fn delete_session(&self, sha256: &str) -> Result<(), StoreError> {
        self.write(SESSIONS, |table| {
            table.remove(sha256).map_err(engine)?;
            Ok(())
        })
    }
}

/// `Conflict` when another user than `user` has its email (emails compare case-insensitively).
fn check_email_free(table: &redb::Table<&str, &[u8]>, user: &UserRecord) -> Result<(), StoreError> {
    for entry in table.iter().map_err(engine)? {
        let (key, value) = entry.map_err(engine)?;
        let other: UserRecord = decode(key.value(), value.value())?;
        if other.id != user.id && other.email.eq_ignore_ascii_case(&user.email) {
            return Err(StoreError::Conflict(format!(
                "a user with email {}",
                user.email
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str) -> SourceRecord {
        SourceRecord {
            workspace_id: "emea".into(),
            id: id.into(),
            name: "Website".into(),
            owner: "web@acme.test".into(),
            purpose: None,
            data_categories: Vec::new(),
            write_key_hash: "ab".into(),
            enabled: true,
            managed_by: ManagedBy::Api,
            created_at_ms: 1,
            created_by: "admin".into(),
            updated_at_ms: 1,
        }
    }

    #[test]
    fn sources_survive_reopen_and_conflict_on_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.create_source(&source("web")).unwrap();
            assert!(matches!(
                store.create_source(&source("web")),
                Err(StoreError::Conflict(_))
            ));
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.sources().unwrap(), vec![source("web")]);
        assert_eq!(store.source("emea", "web").unwrap(), Some(source("web")));
        store.delete_source("emea", "web").unwrap();
        assert!(store.sources().unwrap().is_empty());
    }

    #[test]
    fn activity_accumulates() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        let key = source("web").key();
        let delta = ActivityDelta {
            last_seen_ms: 10,
            events_accepted: 3,
            events_rejected: 1,
        };
        store
            .record_activity(&[(key.clone(), delta.clone())])
            .unwrap();
        store
            .record_activity(&[(
                key.clone(),
                ActivityDelta {
                    last_seen_ms: 5,
                    ..delta
                },
            )])
            .unwrap();
        let activity = store.activity().unwrap();
        assert_eq!(
            activity,
            vec![(
                key,
                SourceActivity {
                    last_seen_ms: Some(10),
                    events_accepted: 6,
                    events_rejected: 2
                }
            )]
        );
    }

    #[test]
    fn unknown_traffic_merges_by_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        let seen = UnknownKeyTraffic {
            key_fingerprint: "abc".into(),
            reason: "unknown_write_key".into(),
            attempts: 2,
            first_seen_ms: 5,
            last_seen_ms: 6,
            last_ip: Some("127.0.0.1".into()),
            ..Default::default()
        };
        store
            .record_unknown_traffic(std::slice::from_ref(&seen))
            .unwrap();
        store
            .record_unknown_traffic(&[UnknownKeyTraffic {
                first_seen_ms: 7,
                last_seen_ms: 9,
                last_origin: Some("https://x.test".into()),
                ..seen.clone()
            }])
            .unwrap();
        let traffic = store.unknown_traffic().unwrap();
        assert_eq!(traffic.len(), 1);
        assert_eq!(traffic[0].attempts, 4);
        assert_eq!(traffic[0].first_seen_ms, 5);
        assert_eq!(traffic[0].last_seen_ms, 9);
        assert_eq!(traffic[0].last_origin.as_deref(), Some("https://x.test"));
    }

    fn user(id: &str, email: &str) -> UserRecord {
        UserRecord {
            id: id.into(),
            email: email.into(),
            name: String::new(),
            role: "viewer".into(),
            workspace_id: None,
            password_argon2: "$argon2id$x".into(),
            created_at_ms: 1,
            created_by: "admin".into(),
            updated_at_ms: 1,
        }
    }

    fn session(sha: &str, user_id: &str, expires_at_ms: i64) -> SessionRecord {
        SessionRecord {
            sha256: sha.into(),
            user_id: user_id.into(),
            created_at_ms: 1,
            expires_at_ms,
            ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn users_have_unique_emails_and_take_their_sessions_along() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.create_user(&user("u1", "Ann@example.test")).unwrap();
            assert!(matches!(
                store.create_user(&user("u2", "ann@EXAMPLE.test")),
                Err(StoreError::Conflict(_))
            ));
            store.create_user(&user("u2", "bob@example.test")).unwrap();
            assert!(matches!(
                store.update_user(&user("u2", "ann@example.test")),
                Err(StoreError::Conflict(_))
            ));
            store.put_session(&session("s1", "u1", 100), 0).unwrap();
            store.put_session(&session("s2", "u2", 100), 0).unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.users().unwrap().len(), 2);
        store.delete_user("u1").unwrap();
        assert_eq!(store.session("s1").unwrap(), None);
        assert!(store.session("s2").unwrap().is_some());
        assert!(matches!(
            store.delete_user("u1"),
            Err(StoreError::NotFound(_))
        ));
        // Storing a session drops the expired ones.
        store.put_session(&session("s3", "u2", 500), 200).unwrap();
        assert_eq!(store.session("s2").unwrap(), None);
        assert!(store.session("s3").unwrap().is_some());
        store.delete_session("s3").unwrap();
        assert_eq!(store.session("s3").unwrap(), None);
    }

    #[test]
    fn api_tokens_are_found_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        let token = ApiTokenRecord {
            id: "tok_1".into(),
            name: "ci".into(),
            role: "marketer".into(),
            workspace_id: Some("emea".into()),
            sha256: "abcd".into(),
            created_at_ms: 1,
            created_by: "admin".into(),
            expires_at_ms: None,
            revoked_at_ms: None,
            last_used_at_ms: None,
        };
        store.put_api_token(&token).unwrap();
        assert_eq!(
            store.api_token_by_hash("abcd").unwrap(),
            Some(token.clone())
        );
        let revoked = ApiTokenRecord {
            revoked_at_ms: Some(5),
            ..token
        };
        store.put_api_token(&revoked).unwrap();
        assert_eq!(store.api_tokens().unwrap(), vec![revoked]);
    }

    #[test]
    fn settings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        assert_eq!(store.setting("admin_token_hash").unwrap(), None);
        store.put_setting("admin_token_hash", "x").unwrap();
        assert_eq!(
            store.setting("admin_token_hash").unwrap().as_deref(),
            Some("x")
        );
    }
}
