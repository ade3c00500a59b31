//! Property tests: whatever the file holds, every row becomes either a valid `identify` event or
//! a rejection with a reason — never a panic, never a lost or repeated row — and resuming at any
//! row's position reads the same rows again.

use proptest::prelude::*;
use serde_json::Value;
use std::io::Cursor;
use tandem_core::limits::EVENT_BYTES_MAX;
use tandem_import::{Format, ImportIdentity, Mapping, Position, ReadError, Row, RowReader};

const COLUMN_NAMES: &[&str] = &[
    "user_id",
    "userId",
    "anonymous_id",
    "email",
    "Email",
    "phone",
    "plan",
    "age",
    "signup",
    "crm",
    "address",
    "",
    "notes",
    "x,y",
    "\"q\"",
];

const TARGETS: &[&str] = &[
    "userId",
    "anonymousId",
    "traits.email",
    "traits.age:number",
    "traits.vip:boolean",
    "traits.address.city",
    "traits.address",
    "externalId:crm_id",
    "timestamp",
    "timestamp:unix_ms",
    "ignore",
];

fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9]{1,12}",
        "[a-z]{1,8}@[a-z]{1,8}\\.(com|org)",
        "[a-z@. ]{0,12}",
        "-?[0-9]{1,20}(\\.[0-9]{1,3})?",
        "(true|false|yes|no|maybe)",
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]( [0-2][0-9]:[0-5][0-9]:[0-5][0-9])?",
        any::<String>(),
        "[\"',;\n\r\t ]{1,6}",
        (0usize..3).prop_map(|k| "z".repeat(k * 20_000)),
    ]
}

fn mapping() -> impl Strategy<Value = Mapping> {
    proptest::collection::vec(
        (
            proptest::sample::select(COLUMN_NAMES),
            proptest::sample::select(TARGETS),
        ),
        0..4,
    )
    .prop_map(|pairs| {
        let mut mapping = Mapping::default();
        for (column, target) in pairs {
            // A conflicting pair is refused here, as the CLI refuses it: keep the rest.
            let _ = mapping.add_flag(&format!("{column}={target}"));
        }
        mapping
    })
}

/// A CSV file written by a CSV writer (so quoting is right), with some rows of the wrong width.
fn csv_file() -> impl Strategy<Value = (Vec<u8>, usize)> {
    // Distinct names, usually with an identity column (else the header alone is refused).
    (
        proptest::sample::subsequence(COLUMN_NAMES, 1..6),
        proptest::sample::select(&["", "user_id", "anonymous_id"][..]),
    )
        .prop_map(|(mut header, identity)| {
            if !identity.is_empty() && !header.contains(&identity) {
                header.insert(header.len() / 2, identity);
            }
            header
        })
        .prop_flat_map(|header| {
            let width = header.len();
            // Mostly rows as wide as the header, some narrower or wider.
            let row = prop_oneof![
                4 => proptest::collection::vec(cell(), width..=width),
                1 => proptest::collection::vec(cell(), 0..8),
            ];
            (
                Just(header),
                proptest::collection::vec(row, 0..25),
                any::<bool>(),
            )
        })
        .prop_map(|(header, rows, crlf)| {
            let mut writer = csv::WriterBuilder::new()
                .flexible(true)
                .terminator(if crlf {
                    csv::Terminator::CRLF
                } else {
                    csv::Terminator::Any(b'\n')
                })
                .from_writer(Vec::new());
            writer.write_record(&header).unwrap();
            let mut written = 0;
            for row in &rows {
                // A record of no cells is an empty line, which is no row.
                if row.is_empty() {
                    continue;
                }
                writer.write_record(row).unwrap();
                written += 1;
            }
            (writer.into_inner().unwrap(), written)
        })
}

fn read_all(
    bytes: &[u8],
    format: Format,
    mapping: &Mapping,
    identity: &ImportIdentity,
    resume: Option<Position>,
) -> Result<Vec<Row>, ReadError> {
    let mut reader = RowReader::open(
        Cursor::new(bytes.to_vec()),
        format,
        mapping.clone(),
        identity.clone(),
        resume,
    )?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row()? {
        rows.push(row);
    }
    Ok(rows)
}

fn check_row(row: &Row, identity: &ImportIdentity) {
    match &row.outcome {
        Ok(json) => {
            assert!(json.len() <= EVENT_BYTES_MAX);
            let event: Value = serde_json::from_slice(json).expect("an event is JSON");
            assert_eq!(event["type"], "identify");
            assert_eq!(event["messageId"], identity.message_id(row.row).as_str());
            let has_identity = ["userId", "anonymousId"]
                .iter()
                .any(|key| event[key].as_str().is_some_and(|id| !id.is_empty()));
            assert!(has_identity, "an event without identity: {event}");
            assert_eq!(event["context"]["library"]["name"], "tandem-import");
            assert_eq!(event["context"]["import"]["row"], row.row);
            if let Some(email) = event["traits"].get("email") {
                assert!(tandem_import::value::is_valid_email(
                    email.as_str().unwrap()
                ));
            }
        }
        Err(rejected) => {
            assert_eq!(rejected.row, row.row);
            assert!(!rejected.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_csv_row_is_an_event_or_a_reason((bytes, written) in csv_file(), mapping in mapping()) {
        let identity = ImportIdentity::of_file("f.csv", bytes.len() as u64, &bytes, &mapping.fingerprint());
        let format = Format::Csv { delimiter: b',' };
        let rows = match read_all(&bytes, format, &mapping, &identity, None) {
            Ok(rows) => rows,
            // Header-level refusals (no identity column, duplicate names, a named column missing).
            Err(ReadError::Mapping(_) | ReadError::NoIdentityColumn { .. }) => return Ok(()),
            Err(other) => panic!("unexpected error: {other}"),
        };
        prop_assert_eq!(rows.len(), written);
        for (index, row) in rows.iter().enumerate() {
            prop_assert_eq!(row.row, index as u64 + 1);
            check_row(row, &identity);
        }
        if let Some(middle) = rows.get(rows.len() / 2) {
            let rest = read_all(&bytes, format, &mapping, &identity, Some(middle.start)).unwrap();
            let expected: Vec<_> = rows[rows.len() / 2..].iter().map(|r| (r.row, r.line, r.outcome.clone())).collect();
            let got: Vec<_> = rest.iter().map(|r| (r.row, r.line, r.outcome.clone())).collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn every_json_line_is_an_event_or_a_reason(
        lines in proptest::collection::vec(
            prop_oneof![
                proptest::collection::btree_map(proptest::sample::select(COLUMN_NAMES), cell(), 0..6)
                    .prop_map(|members| serde_json::to_string(&members).unwrap()),
                any::<String>().prop_map(|s| s.replace('\n', " ")),
                Just("[1,2]".to_string()),
                Just("{\"userId\": {\"a\": 1}}".to_string()),
                Just("{\"userId\": 12, \"age\": 1e400}".to_string()),
            ],
            0..25,
        ),
        mapping in mapping(),
    ) {
        let bytes = lines.join("\n").into_bytes();
        let identity = ImportIdentity::of_file("f.jsonl", bytes.len() as u64, &bytes, &mapping.fingerprint());
        let rows = read_all(&bytes, Format::JsonLines, &mapping, &identity, None).unwrap();
        let non_blank = lines
            .iter()
            .filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace()))
            .count();
        prop_assert_eq!(rows.len(), non_blank);
        for row in &rows {
            check_row(row, &identity);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), delimiter in prop_oneof![Just(b','), Just(b';'), Just(b'\t'), any::<u8>()]) {
        let identity = ImportIdentity::of_file("f", bytes.len() as u64, &bytes, "");
        for format in [Format::Csv { delimiter }, Format::JsonLines] {
            if let Ok(rows) = read_all(&bytes, format, &Mapping::default(), &identity, None) {
                for row in &rows {
                    check_row(row, &identity);
                }
            }
        }
    }
}
