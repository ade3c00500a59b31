//! Injected ENOSPC on the real write path (its own test binary: it sets a process-wide variable).

use bytes::Bytes;
use tandem_log::*;

#[tokio::test]
async fn enospc_fails_the_group_loses_nothing_durable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("enospc");
    std::env::set_var(FAULT_ENOSPC_ENV, &flag);
    let logdir = dir.path().join("log");
    let options = LogOptions {
        name: "enospc".into(),
        disk_free_bytes_min: 0,
        ..LogOptions::default()
    };
    let (log, _) = FileLog::open(&logdir, options.clone()).unwrap();
    let record = |text: &str| {
        vec![Record {
            timestamp_ms: 1,
            payload: Bytes::from(text.to_string()),
        }]
    };
    assert_eq!(log.append(record("before")).unwrap().await.unwrap(), 0..1);

    std::fs::write(&flag, b"").unwrap();
    assert!(matches!(
        log.append(record("during")).unwrap().await,
        Err(AppendError::DiskFull)
    ));
    assert!(
        matches!(log.append(record("during")), Err(AppendError::DiskFull)),
        "refused at once while full"
    );
    assert_eq!(log.stats().end_offset, 1);

    std::fs::remove_file(&flag).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(log.append(record("after")).unwrap().await.unwrap(), 1..2);
    log.close();
    let (log, report) = FileLog::open(&logdir, options).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    let payloads: Vec<_> = log
        .read(0, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(payloads, vec![Bytes::from("before"), Bytes::from("after")]);
}
