//! Behaviour of the file log through its public API.

use bytes::Bytes;
use std::sync::Arc;
use tandem_log::*;

fn options(segment_bytes_max: u64) -> LogOptions {
    LogOptions {
        name: "test".into(),
        segment_bytes_max,
        disk_free_bytes_min: 0,
        ..LogOptions::default()
    }
}

fn records(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            timestamp_ms: i as i64,
            payload: Bytes::from(format!("{prefix}-{i}")),
        })
        .collect()
}

fn payloads(log: &FileLog, from: u64) -> Vec<String> {
    log.read(from, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.payload.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn appends_are_dense_contiguous_and_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = FileLog::open(dir.path(), options(200)).unwrap();
    assert_eq!(report.next_offset, 0);
    assert_eq!(log.append(records("a", 3)).unwrap().await.unwrap(), 0..3);
    assert_eq!(log.append(records("b", 10)).unwrap().await.unwrap(), 3..13);
    assert!(log.segments().len() > 1, "200-byte segments roll");
    assert_eq!(payloads(&log, 0).len(), 13);
    assert_eq!(payloads(&log, 11), vec!["b-8", "b-9"]);
    assert_eq!(
        log.read(5, 2)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert!(log.read(13, 10).unwrap().is_empty());
    log.close();
    assert!(matches!(
        log.append(records("c", 1)),
        Err(AppendError::Closed)
    ));

    let (log, report) = FileLog::open(dir.path(), options(200)).unwrap();
    assert_eq!((report.next_offset, report.truncated_bytes), (13, 0));
    assert_eq!(payloads(&log, 0)[12], "b-9");
    assert_eq!(log.append(records("c", 1)).unwrap().await.unwrap(), 13..14);
}

#[tokio::test]
async fn concurrent_appends_are_group_committed_without_interleaving() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    let mut tasks = Vec::new();
    for client in 0..32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for round in 0..20 {
                ranges.push(
                    log.append(records(&format!("{client}-{round}"), 5))
                        .unwrap()
                        .await
                        .unwrap(),
                );
            }
            ranges
        }));
    }
    let mut ranges = Vec::new();
    for task in tasks {
        ranges.extend(task.await.unwrap());
    }
    ranges.sort_by_key(|r| r.start);
    assert_eq!(ranges.len(), 640);
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    let all = log.read(0, usize::MAX).unwrap();
    assert_eq!(all.len(), 3200);
    for range in ranges {
        let first = String::from_utf8(all[range.start as usize].payload.to_vec()).unwrap();
        let prefix = first.rsplit_once('-').unwrap().0.to_string();
        for offset in range.clone() {
            assert!(
                String::from_utf8(all[offset as usize].payload.to_vec())
                    .unwrap()
                    .starts_with(&prefix),
                "one append stays contiguous"
            );
        }
    }
}

#[tokio::test]
async fn invalid_records_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    let mut batch = records("x", 2);
    batch.push(Record {
        timestamp_ms: 0,
        payload: Bytes::new(),
    });
    assert!(matches!(
        log.append(batch),
        Err(AppendError::InvalidRecord(0))
    ));
    let huge = Record {
        timestamp_ms: 0,
        payload: Bytes::from(vec![1u8; tandem_core::limits::RECORD_BYTES_MAX]),
    };
    assert!(matches!(
        log.append(vec![huge]),
        Err(AppendError::InvalidRecord(_))
    ));
    assert_eq!(log.stats().end_offset, 0);
    assert_eq!(log.append(Vec::new()).unwrap().await.unwrap(), 0..0);
}

#[tokio::test]
async fn wait_for_resolves_when_a_record_becomes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    let waiter = tokio::spawn(log.wait_for(0));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    log.append(records("w", 1)).unwrap().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn consumers_resume_from_their_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    log.append(records("e", 10)).unwrap().await.unwrap();
    let dyn_log: Arc<dyn EventLog> = log.clone();
    let mut consumer = Consumer::new(dyn_log.clone(), "profiles", 0).unwrap();
    let batch = consumer.next_batch(4).await.unwrap();
    assert_eq!(
        batch.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    consumer.commit().unwrap();
    consumer.next_batch(4).await.unwrap(); // processed but not committed
    drop(consumer);
    assert!(log.commit_offset("../escape", 1).is_err());
    log.close();
    drop(dyn_log);

    let (log, _) = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(log.consumers(), vec![("profiles".to_string(), 4)]);
    let mut consumer = Consumer::new(log.clone(), "profiles", 0).unwrap();
    assert_eq!(
        consumer
            .next_batch(100)
            .await
            .unwrap()
            .first()
            .unwrap()
            .offset,
        4,
        "at-least-once: uncommitted records come again"
    );
}

#[tokio::test]
async fn retention_by_size_deletes_the_oldest_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(300);
    opts.retention_bytes_max = Some(600);
    let (log, _) = FileLog::open(dir.path(), opts).unwrap();
    for round in 0..20 {
        log.append(records(&format!("r{round}"), 4))
            .unwrap()
            .await
            .unwrap();
    }
    let before = log.segments().len();
    let report = log.enforce_retention();
    assert!(report.segments_deleted > 0 && log.segments().len() < before);
    let sealed: u64 = log
        .segments()
        .iter()
        .filter(|s| s.sealed)
        .map(|s| s.bytes)
        .sum();
    assert!(sealed <= 600);
    let start = log.stats().start_offset;
    assert_eq!(start, report.new_start_offset);
    assert!(matches!(log.read(0, 1), Err(ReadError::BelowStart { .. })));
    assert_eq!(
        log.read(start, usize::MAX).unwrap().last().unwrap().offset,
        79
    );
    assert!(
        verify_dir(dir.path()).unwrap().problems.is_empty(),
        "a log starting after retention verifies"
    );
}

#[tokio::test]
async fn retention_by_age_keeps_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(200);
    opts.retention_age = Some(std::time::Duration::from_millis(1));
    let (log, _) = FileLog::open(dir.path(), opts).unwrap();
    log.append(records("old", 20)).unwrap().await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    log.enforce_retention();
    let segments = log.segments();
    assert_eq!(segments.len(), 1);
    assert!(!segments[0].sealed);
    log.append(records("new", 1)).unwrap().await.unwrap();
    assert_eq!(log.stats().end_offset, 21);
}

#[tokio::test]
async fn torn_tail_is_truncated_at_open_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    log.append(records("t", 5)).unwrap().await.unwrap();
    log.close();
    let segment = dir.path().join(format!("{:020}.seg", 0));
    let good_len = std::fs::metadata(&segment).unwrap().len();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    std::fs::write(&segment, &bytes).unwrap();
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].is_torn_tail());
    assert_eq!(
        read_dir(dir.path()).unwrap().count(),
        5,
        "export stops before the torn tail"
    );

    let (log, report) = FileLog::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!((report.next_offset, report.truncated_bytes), (5, 6));
    assert!(report.truncation_reason.unwrap().contains("short"));
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
    assert_eq!(log.append(records("u", 1)).unwrap().await.unwrap(), 5..6);
    assert!(verify_dir(dir.path()).unwrap().problems.is_empty());
}

#[tokio::test]
async fn corruption_in_a_sealed_segment_is_reported_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), options(200)).unwrap();
    for round in 0..30 {
        log.append(records(&format!("s{round}"), 1))
            .unwrap()
            .await
            .unwrap();
    }
    assert!(log.segments().len() > 2);
    log.close();
    let first = dir.path().join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[30] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert!(!report.problems[0].is_torn_tail());
    assert!(read_dir(dir.path())
        .unwrap()
        .any(|r| matches!(r, Err(ReadError::Corruption { .. }))));
    let (log, _) = FileLog::open(dir.path(), options(200)).unwrap();
    assert!(matches!(log.read(0, 10), Err(ReadError::Corruption { .. })));
}

#[tokio::test]
async fn a_rewrite_replaces_erased_records_in_place_and_leaves_no_trace_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = FileLog::open(dir.path(), options(300)).unwrap();
    log.append(records("keep", 6)).unwrap().await.unwrap();
    log.append(records("secret-ada", 3)).unwrap().await.unwrap();
    log.append(records("keep2", 4)).unwrap().await.unwrap();
    // The active segment holds records too: roll seals it first.
    let below = log.roll().await.unwrap();
    assert_eq!(below, 13);
    assert!(log
        .segments()
        .iter()
        .all(|s| s.sealed || s.base_offset == 13));
    let report = log
        .rewrite_sealed(below, &|payload: &[u8]| {
            payload
                .starts_with(b"secret-ada")
                .then(|| b"erased".to_vec())
        })
        .unwrap();
    assert_eq!(report.records_replaced, 3);
    assert!(report.segments_rewritten >= 1);
    let all = payloads(&log, 0);
    assert_eq!(all.len(), 13, "offsets stay dense");
    assert_eq!(&all[6..9], ["erased", "erased", "erased"]);
    assert_eq!(all[9], "keep2-0");
    // Appends go on after a rewrite, and a reopen verifies every rewritten file.
    log.append(records("after", 2)).unwrap().await.unwrap();
    assert_eq!(payloads(&log, 13), ["after-0", "after-1"]);
    log.close();
    let (log, report) = FileLog::open(dir.path(), options(300)).unwrap();
    assert_eq!((report.next_offset, report.truncated_bytes), (15, 0));
    assert_eq!(payloads(&log, 0)[7], "erased");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes.windows(10).any(|w| w == b"secret-ada"),
            "no byte of the erased records is left"
        );
    }
    assert!(verify_dir(dir.path()).is_ok());
}
