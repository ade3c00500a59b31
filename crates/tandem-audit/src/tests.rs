use super::*;
use serde_json::json;

fn actor() -> Actor {
    Actor {
        kind: "user".into(),
        id: Some("usr_1".into()),
        name: "ann@example.test".into(),
        role: Some("org_admin".into()),
        scope: None,
    }
}

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        workspace: Some("demo".into()),
        resource: Some(format!("source demo/s{n}")),
        ip: Some("127.0.0.1".into()),
        before: None,
        after: Some(json!({"id": format!("s{n}"), "enabled": true})),
        ..AuditEvent::new(actor(), "source.create", "success")
    }
}

/// A log of `count` entries in a fresh directory.
fn written(count: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    for n in 0..count {
        let entry = log.append(event(n)).unwrap();
        assert_eq!(entry.seq, n);
    }
    dir
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join(LOG_FILE), text).unwrap();
}

fn problem(dir: &Path) -> Problem {
    let verification = verify(dir).unwrap();
    assert!(!verification.ok, "expected a problem: {verification:?}");
    verification.problem.unwrap()
}

#[test]
fn an_untouched_log_verifies_and_survives_reopen() {
    let dir = written(5);
    let verification = verify(dir.path()).unwrap();
    assert!(verification.ok, "{verification:?}");
    assert_eq!(verification.entries, 5);
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.append(event(5)).unwrap().seq, 5);
    let entries: Vec<AuditEntry> = log.entries().unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[3].event, event(3));
    assert_eq!(entries[0].prev, GENESIS);
    assert!(verify(dir.path()).unwrap().ok);
    assert_eq!(verify(dir.path()).unwrap().head.unwrap().seq, 5);
}

#[test]
fn an_empty_directory_verifies() {
    let dir = tempfile::tempdir().unwrap();
    assert!(verify(dir.path()).unwrap().ok);
    AuditLog::open(dir.path()).unwrap();
    assert!(verify(dir.path()).unwrap().ok);
}

#[test]
fn every_edited_byte_of_a_past_entry_is_found() {
    let dir = written(4);
    let original = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let offsets: Vec<usize> = original
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .collect();
    // Every byte of entry 2 (the third line), newline excluded.
    let (start, end) = (offsets[1] + 1, offsets[2]);
    for at in start..end {
        let mut edited = original.clone();
        edited[at] = if edited[at] == b'x' { b'y' } else { b'x' };
        std::fs::write(dir.path().join(LOG_FILE), &edited).unwrap();
        let found = problem(dir.path());
        assert_eq!(found.line, 3, "byte {at}: {found:?}");
        assert_eq!(found.seq, 2, "byte {at}: {found:?}");
    }
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let dir = written(4);
    let mut all = lines(dir.path());
    let stored: serde_json::Value = serde_json::from_str(&all[1]).unwrap();
    let mut entry = stored["entry"].clone();
    entry["actor"]["name"] = json!("mallory@example.test");
    let bytes = serde_json::to_vec(&entry).unwrap();
    all[1] = serde_json::to_string(&json!({"entry": entry, "sha256": sha256_hex(&bytes)})).unwrap();
    write_lines(dir.path(), &all);
    let found = problem(dir.path());
    assert_eq!((found.seq, found.line), (2, 3), "{found:?}");
    assert!(found.reason.contains("entry 1 was changed"), "{found:?}");
}

#[test]
fn a_deleted_entry_is_named() {
    let dir = written(5);
    let mut all = lines(dir.path());
    all.remove(2);
    write_lines(dir.path(), &all);
    let found = problem(dir.path());
    assert_eq!((found.seq, found.line), (2, 3), "{found:?}");
    assert!(found.reason.contains("entry 2 is missing"), "{found:?}");
}

#[test]
fn a_truncated_tail_is_found_against_the_head() {
    let dir = written(5);
    let mut all = lines(dir.path());
    all.truncate(3);
    write_lines(dir.path(), &all);
    let found = problem(dir.path());
    assert_eq!(found.seq, 3, "{found:?}");
    assert!(
        found.reason.contains("entries 3..=4 are missing"),
        "{found:?}"
    );
    // The server refuses to append after such a gap.
    let refused = AuditLog::open(dir.path()).err().unwrap();
    assert!(
        refused.to_string().contains("entries were removed"),
        "{refused}"
    );
    // Emptying the log entirely is found too.
    std::fs::write(dir.path().join(LOG_FILE), "").unwrap();
    assert_eq!(problem(dir.path()).seq, 0);
}

#[test]
fn a_tail_cut_inside_an_entry_is_found() {
    let dir = written(3);
    let mut bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
    let found = problem(dir.path());
    assert_eq!((found.seq, found.line), (2, 3), "{found:?}");
}

#[test]
fn a_deleted_head_file_is_found() {
    let dir = written(3);
    std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
    assert!(problem(dir.path()).reason.contains("head file"));
}

#[test]
fn a_torn_write_beyond_the_head_is_cut_at_open() {
    let dir = written(3);
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(LOG_FILE))
        .unwrap();
    file.write_all(b"{\"entry\":{\"seq\":3,\"at\"").unwrap();
    drop(file);
    // Not acknowledged (the head never covered it): verify ignores it, open cuts it.
    assert!(verify(dir.path()).unwrap().ok);
    let log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.append(event(3)).unwrap().seq, 3);
    let verification = verify(dir.path()).unwrap();
    assert!(verification.ok, "{verification:?}");
    assert_eq!(verification.entries, 4);
}

#[test]
fn large_values_are_replaced_by_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let big = json!({"blob": "x".repeat(AUDIT_VALUE_BYTES_MAX + 1)});
    let entry = log
        .append(AuditEvent {
            after: Some(big),
            ..event(0)
        })
        .unwrap();
    let after = entry.event.after.unwrap();
    assert_eq!(after["omitted"], "larger than AUDIT_VALUE_BYTES_MAX");
    assert!(verify(dir.path()).unwrap().ok);
}
