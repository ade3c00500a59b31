//! A readable diff of two JSON documents: the dotted paths that were added, removed or changed
//! (`settings.url`, `mappings[1].to`), in key order (serde_json's maps are sorted), reaching
//! down to the deepest differing value.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
}

/// The paths where `before` and `after` differ (absent documents: the object was created or
/// deleted: one change of the root path `""`).
pub fn changed_paths(before: Option<&Value>, after: Option<&Value>) -> Vec<PathChange> {
    let mut changes = Vec::new();
    match (before, after) {
        (None, None) => {}
        (None, Some(_)) => changes.push(PathChange {
            path: String::new(),
            change: "added",
        }),
        (Some(_), None) => changes.push(PathChange {
            path: String::new(),
            change: "removed",
        }),
        (Some(before), Some(after)) => walk("", before, after, &mut changes),
    }
    changes
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk(path: &str, before: &Value, after: &Value, changes: &mut Vec<PathChange>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, old_value) in old {
                match new.get(key) {
                    Some(new_value) => walk(&join(path, key), old_value, new_value, changes),
                    None => changes.push(PathChange {
                        path: join(path, key),
                        change: "removed",
                    }),
                }
            }
            for key in new.keys().filter(|key| !old.contains_key(*key)) {
                changes.push(PathChange {
                    path: join(path, key),
                    change: "added",
                });
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            for index in 0..old.len().max(new.len()) {
                let at = format!("{path}[{index}]");
                match (old.get(index), new.get(index)) {
                    (Some(old), Some(new)) => walk(&at, old, new, changes),
                    (Some(_), None) => changes.push(PathChange {
                        path: at,
                        change: "removed",
                    }),
                    (None, Some(_)) => changes.push(PathChange {
                        path: at,
                        change: "added",
                    }),
                    (None, None) => {}
                }
            }
        }
        (old, new) if old != new => changes.push(PathChange {
            path: path.to_string(),
            change: "changed",
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(before: Option<Value>, after: Option<Value>) -> Vec<(String, &'static str)> {
        changed_paths(before.as_ref(), after.as_ref())
            .into_iter()
            .map(|change| (change.path, change.change))
            .collect()
    }

    #[test]
    fn nested_fields_and_arrays_are_named_by_path() {
        let before = json!({
            "id": "c1", "enabled": true, "events": ["Order Completed"],
            "mappings": [{"from": "a", "to": "b"}], "delivery": {"concurrency": 2},
        });
        let after = json!({
            "id": "c1", "enabled": false, "events": ["Order Completed", "Signed Up"],
            "mappings": [{"from": "a", "to": "c"}], "delivery": {},
            "transformation": "function transform(e) { return e }",
        });
        assert_eq!(
            paths(Some(before), Some(after)),
            [
                ("delivery.concurrency".to_string(), "removed"),
                ("enabled".to_string(), "changed"),
                ("events[1]".to_string(), "added"),
                ("mappings[0].to".to_string(), "changed"),
                ("transformation".to_string(), "added"),
            ]
        );
    }

    #[test]
    fn equal_documents_have_no_changes_and_creations_are_one() {
        let doc = json!({"id": "x", "settings": {"url": "http://a"}});
        assert!(paths(Some(doc.clone()), Some(doc.clone())).is_empty());
        assert_eq!(paths(None, Some(doc.clone())), [(String::new(), "added")]);
        assert_eq!(paths(Some(doc), None), [(String::new(), "removed")]);
        assert_eq!(
            paths(Some(json!({"a": 1})), Some(json!({"a": "1"}))),
            [("a".to_string(), "changed")]
        );
        assert_eq!(
            paths(Some(json!({"a": [1, 2]})), Some(json!({"a": [1]}))),
            [("a[1]".to_string(), "removed")]
        );
    }
}
