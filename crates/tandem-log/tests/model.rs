//! Property test: the log against a `Vec` model, through appends, reads, clean reopens,
//! crashes that leave garbage after the last durable record, and retention.

use bytes::Bytes;
use proptest::prelude::*;
use tandem_log::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Read { from: u8, max: u8 },
    Reopen,
    CrashWithGarbage(Vec<u8>),
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(prop::collection::vec(any::<u8>(), 1..120), 1..8).prop_map(Op::Append),
        3 => (any::<u8>(), 1..40u8).prop_map(|(from, max)| Op::Read { from, max }),
        1 => Just(Op::Reopen),
        1 => prop::collection::vec(any::<u8>(), 0..60).prop_map(Op::CrashWithGarbage),
        1 => Just(Op::Retention),
    ]
}

fn options() -> LogOptions {
    LogOptions {
        name: "model".into(),
        segment_bytes_max: 700,
        retention_bytes_max: Some(2_000),
        disk_free_bytes_min: 0,
        ..LogOptions::default()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = FileLog::open(dir.path(), options()).unwrap();
    let mut model: Vec<Vec<u8>> = Vec::new();
    let mut start = 0u64;
    for op in ops {
        match op {
            Op::Append(payloads) => {
                let records = payloads
                    .iter()
                    .map(|p| Record {
                        timestamp_ms: 7,
                        payload: Bytes::from(p.clone()),
                    })
                    .collect();
                let range = runtime.block_on(log.append(records).unwrap()).unwrap();
                prop_assert_eq!(range.start, model.len() as u64);
                model.extend(payloads);
                prop_assert_eq!(range.end, model.len() as u64);
            }
            Op::Read { from, max } => {
                let from = start + from as u64 % (model.len() as u64 - start + 1);
                let got: Vec<Vec<u8>> = log
                    .read(from, max as usize)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.payload.to_vec())
                    .collect();
                let want: Vec<Vec<u8>> = model
                    .iter()
                    .skip(from as usize)
                    .take(max as usize)
                    .cloned()
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::Reopen | Op::CrashWithGarbage(_) => {
                log.close();
                drop(log);
                if let Op::CrashWithGarbage(garbage) = &op {
                    let last = std::fs::read_dir(dir.path())
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                        .max()
                        .unwrap();
                    let mut bytes = std::fs::read(&last).unwrap();
                    bytes.extend_from_slice(garbage);
                    std::fs::write(&last, bytes).unwrap();
                }
                let (reopened, report) = FileLog::open(dir.path(), options()).unwrap();
                prop_assert_eq!(report.next_offset, model.len() as u64);
                log = reopened;
            }
            Op::Retention => {
                start = log.enforce_retention().new_start_offset;
            }
        }
        let stats = log.stats();
        prop_assert_eq!(stats.end_offset, model.len() as u64);
        prop_assert_eq!(stats.start_offset, start);
    }
    let all: Vec<Vec<u8>> = log
        .read(start, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.payload.to_vec())
        .collect();
    prop_assert_eq!(&all[..], &model[start as usize..]);
    log.close();
    prop_assert!(verify_dir(dir.path()).unwrap().problems.is_empty());
    let offline: Vec<Vec<u8>> = read_dir(dir.path())
        .unwrap()
        .map(|r| r.unwrap().payload.to_vec())
        .collect();
    prop_assert_eq!(&offline[..], &model[start as usize..]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
