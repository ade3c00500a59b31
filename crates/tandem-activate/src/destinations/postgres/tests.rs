//! Naming, type inference, planning, classification, SQL building and settings of the warehouse
//! (no server here; `tests/postgres.rs` loads into a real PostgreSQL).

use super::config::parse;
use super::request::{event_name, rows, Naming, Scalar};
use super::schema::{
    apply, change_sql, conflict_column, identifier, plan, Catalog, ColumnType, Limits, ProblemLog,
    SchemaChange,
};
use super::service::{classify_code, insert_sql, merge_upserts, Failure};
use crate::destination::OutboundEvent;
use serde_json::{json, Value};
use std::collections::HashMap;
use tandem_core::EventType;

fn outbound(event_type: EventType, event: Value) -> OutboundEvent {
    OutboundEvent {
        offset: 1,
        message_id: event["messageId"].as_str().unwrap_or("m1").to_string(),
        event_type,
        source_id: "web".into(),
        received_at_ms: 1_714_557_600_000,
        user_key: "u1".into(),
        event: event.into(),
    }
}

fn naming() -> Naming {
    Naming {
        prefix: String::new(),
        event_tables: true,
    }
}

fn cells(row: &super::request::Row) -> HashMap<&str, &Scalar> {
    row.cells
        .iter()
        .map(|(column, scalar)| (column.as_str(), scalar))
        .collect()
}

#[test]
fn identifiers_are_snake_case_ascii_and_bounded() {
    assert_eq!(identifier("Order Completed"), "order_completed");
    assert_eq!(identifier("productId"), "product_id");
    assert_eq!(identifier("HTMLParser"), "html_parser");
    assert_eq!(identifier("userID"), "user_id");
    assert_eq!(identifier("  Café--au lait!! "), "caf_au_lait");
    assert_eq!(identifier("2fa enabled"), "_2fa_enabled");
    assert_eq!(identifier("xmin"), "_xmin", "system column names are taken");
    assert_eq!(identifier("oid"), "_oid");
    let unusable = identifier("日本");
    assert!(
        unusable.starts_with('_') && unusable.len() == 9,
        "{unusable}"
    );
    assert_eq!(identifier("日本"), unusable, "stable");
    assert_ne!(identifier("中国"), unusable);
    let long = identifier(&"a".repeat(100));
    assert_eq!(long.len(), 63);
    assert_eq!(conflict_column(&long).len(), 63);
    assert!(conflict_column(&long).ends_with("_text"));
    assert_eq!(conflict_column("gift"), "gift_text");
}

#[test]
fn event_names_avoid_the_fixed_tables() {
    assert_eq!(event_name("Users"), "users_events");
    assert_eq!(event_name("Schema Problems"), "schema_problems_events");
    assert_eq!(event_name("Signed Up"), "signed_up");
    let prefixed = Naming {
        prefix: "web_".into(),
        event_tables: true,
    };
    assert_eq!(prefixed.event_table("Signed Up"), "web_signed_up");
    assert_eq!(prefixed.table("users"), "web_users");
}

#[test]
fn values_imply_column_types() {
    assert_eq!(Scalar::from_json(&json!(3)), Some(Scalar::Int(3)));
    assert_eq!(Scalar::from_json(&json!(2.5)), Some(Scalar::Float(2.5)));
    assert_eq!(
        Scalar::from_json(&json!(u64::MAX)).map(|scalar| scalar.column_type()),
        Some(ColumnType::Double),
        "beyond bigint"
    );
    assert_eq!(Scalar::from_json(&json!(true)), Some(Scalar::Bool(true)));
    assert_eq!(Scalar::from_json(&json!(null)), None);
    assert_eq!(
        Scalar::from_json(&json!([1, "a"])),
        Some(Scalar::Text("[1,\"a\"]".into()))
    );
    assert_eq!(
        Scalar::from_json(&json!("2024-05-01T10:00:00+02:00")),
        Some(Scalar::Timestamp {
            text: "2024-05-01T10:00:00+02:00".into(),
            utc: "2024-05-01T08:00:00.000Z".into()
        })
    );
    for text in [
        "2024-05-01",
        "yesterday",
        "2024-13-45T99:00:00Z",
        "0000-01-01T00:00:00Z",
    ] {
        assert_eq!(
            Scalar::from_json(&json!(text)).map(|scalar| scalar.column_type()),
            Some(ColumnType::Text),
            "{text}"
        );
    }
    assert_eq!(
        Scalar::from_json(&json!("a\u{0}b")),
        Some(Scalar::Text("ab".into())),
        "PostgreSQL text cannot hold NUL"
    );
    assert!(Scalar::Int(1).fits(ColumnType::Double));
    assert!(!Scalar::Float(1.5).fits(ColumnType::BigInt));
    assert!(Scalar::Bool(true).fits(ColumnType::Text));
    assert!(!Scalar::Text("x".into()).fits(ColumnType::Boolean));
    assert_eq!(Scalar::Bool(true).cell(ColumnType::Text), json!("true"));
    assert_eq!(Scalar::Int(7).cell(ColumnType::Double), json!(7));
}

#[test]
fn a_track_lands_in_tracks_and_its_own_table() {
    let event = outbound(
        EventType::Track,
        json!({"type": "track", "messageId": "m1", "userId": "u1", "event": "Order Completed",
               "timestamp": "2024-05-01T10:00:00Z",
               "context": {"ip": "1.2.3.4", "page": {"url": "https://x", "deep": {"a": 1}}},
               "properties": {"total": 9.5, "id": "o1", "context_x": 1, "product": {"sku": "k", "tags": ["a"]},
                              "context": {"y": 2}, "nothing": null}}),
    );
    let rows = rows(&event, &naming());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].table, "tracks");
    assert_eq!(rows[1].table, "order_completed");
    let tracks = cells(&rows[0]);
    assert_eq!(tracks["event"], &Scalar::Text("order_completed".into()));
    assert_eq!(
        tracks["event_text"],
        &Scalar::Text("Order Completed".into())
    );
    assert!(!tracks.contains_key("total"), "tracks has no properties");
    let own = cells(&rows[1]);
    assert_eq!(own["id"], &Scalar::Text("m1".into()));
    assert_eq!(own["user_id"], &Scalar::Text("u1".into()));
    assert_eq!(own["source_id"], &Scalar::Text("web".into()));
    assert_eq!(own["received_at"].column_type(), ColumnType::Timestamp);
    assert_eq!(own["timestamp"].column_type(), ColumnType::Timestamp);
    assert_eq!(own["context_ip"], &Scalar::Text("1.2.3.4".into()));
    assert_eq!(own["context_page_url"], &Scalar::Text("https://x".into()));
    assert_eq!(
        own["context_page_deep"],
        &Scalar::Text(r#"{"a":1}"#.into()),
        "context is flattened two levels"
    );
    assert_eq!(own["total"], &Scalar::Float(9.5));
    assert_eq!(own["properties_id"], &Scalar::Text("o1".into()));
    assert_eq!(own["properties_context_x"], &Scalar::Int(1));
    assert_eq!(own["properties_context_y"], &Scalar::Int(2));
    assert_eq!(own["product_sku"], &Scalar::Text("k".into()));
    assert_eq!(own["product_tags"], &Scalar::Text(r#"["a"]"#.into()));
    assert!(!own.contains_key("nothing"));
    let names: Vec<&str> = rows[1]
        .cells
        .iter()
        .map(|(column, _)| column.as_str())
        .collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "one cell per column: {names:?}");

    let no_event_tables = Naming {
        prefix: String::new(),
        event_tables: false,
    };
    assert_eq!(super::request::rows(&event, &no_event_tables).len(), 1);
}

#[test]
fn every_call_type_has_its_table() {
    let cases = [
        (
            EventType::Identify,
            json!({"messageId": "m", "userId": "u1", "traits": {"email": "a@b.c", "id": 5}}),
            vec!["identifies", "users"],
        ),
        (
            EventType::Identify,
            json!({"messageId": "m", "anonymousId": "a1", "traits": {"email": "a@b.c"}}),
            vec!["identifies"],
        ),
        (
            EventType::Page,
            json!({"messageId": "m", "anonymousId": "a1", "name": "Home"}),
            vec!["pages"],
        ),
        (
            EventType::Screen,
            json!({"messageId": "m", "userId": 42, "name": "Home"}),
            vec!["screens"],
        ),
        (
            EventType::Group,
            json!({"messageId": "m", "userId": "u1", "groupId": "g"}),
            vec!["groups"],
        ),
        (
            EventType::Alias,
            json!({"messageId": "m", "userId": "u1", "previousId": "a1"}),
            vec!["aliases"],
        ),
        (EventType::Control, json!({"messageId": "m"}), vec![]),
    ];
    for (event_type, json, tables) in cases {
        let rows = rows(&outbound(event_type, json.clone()), &naming());
        let names: Vec<&str> = rows.iter().map(|row| row.table.as_str()).collect();
        assert_eq!(names, tables, "{json}");
    }
    let identify = rows(
        &outbound(
            EventType::Identify,
            json!({"messageId": "m", "userId": "u1", "traits": {"email": "a@b.c", "id": 5}}),
        ),
        &naming(),
    );
    assert!(identify[1].upsert && !identify[0].upsert);
    let user = cells(&identify[1]);
    assert_eq!(user["id"], &Scalar::Text("u1".into()));
    assert_eq!(user["traits_id"], &Scalar::Int(5));
    assert_eq!(user["email"], &Scalar::Text("a@b.c".into()));
    let screen = rows(
        &outbound(EventType::Screen, json!({"messageId": "m", "userId": 42})),
        &naming(),
    );
    assert_eq!(
        cells(&screen[0])["user_id"],
        &Scalar::Text("42".into()),
        "numeric ids are text"
    );
}

fn track_rows(properties: &[Value]) -> Vec<(usize, super::request::Row)> {
    properties
        .iter()
        .enumerate()
        .flat_map(|(index, properties)| {
            let event = outbound(
                EventType::Track,
                json!({"messageId": format!("m{index}"), "userId": "u1", "event": "Signup", "properties": properties}),
            );
            rows(&event, &naming()).into_iter().map(move |row| (index, row))
        })
        .collect()
}

#[test]
fn planning_creates_tables_and_columns_once() {
    let fixed = naming().fixed_tables();
    let rows = track_rows(&[json!({"plan": "pro"}), json!({"plan": "free", "seats": 2})]);
    let first = plan(&rows, &Catalog::new(), &Limits::new(&fixed));
    let creates: Vec<&SchemaChange> = first
        .changes
        .iter()
        .filter(|change| matches!(change, SchemaChange::CreateTable { .. }))
        .collect();
    assert_eq!(creates.len(), 2, "tracks and signup");
    assert!(first.changes.contains(&SchemaChange::AddColumn {
        table: "signup".into(),
        column: "seats".into(),
        kind: ColumnType::BigInt
    }));
    let seats_added = first
        .changes
        .iter()
        .filter(
            |change| matches!(change, SchemaChange::AddColumn { column, .. } if column == "seats"),
        )
        .count();
    assert_eq!(seats_added, 1);
    assert!(first.problems.is_empty());
    assert_eq!(first.rows.len(), 4);

    let mut catalog = Catalog::new();
    apply(&mut catalog, &first.changes);
    let again = plan(&rows, &catalog, &Limits::new(&fixed));
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.rows, first.rows);
}

#[test]
fn planning_widens_integers_and_diverts_conflicts() {
    let fixed = naming().fixed_tables();
    let mut catalog = Catalog::new();
    let setup = plan(
        &track_rows(&[json!({"seats": 2, "gift": true, "when": "2024-05-01T00:00:00Z"})]),
        &catalog,
        &Limits::new(&fixed),
    );
    apply(&mut catalog, &setup.changes);

    let next = plan(
        &track_rows(&[json!({"seats": 2.5, "gift": "yes", "when": 5})]),
        &catalog,
        &Limits::new(&fixed),
    );
    assert!(next.changes.contains(&SchemaChange::Widen {
        table: "signup".into(),
        column: "seats".into()
    }));
    assert!(next.changes.contains(&SchemaChange::AddColumn {
        table: "signup".into(),
        column: "gift_text".into(),
        kind: ColumnType::Text
    }));
    let row = next.rows.iter().find(|row| row.table == "signup").unwrap();
    let cells: HashMap<&str, &Value> = row.cells.iter().map(|(c, v)| (c.as_str(), v)).collect();
    assert_eq!(cells["seats"], &json!(2.5));
    assert_eq!(cells["gift_text"], &json!("yes"));
    assert_eq!(cells["when_text"], &json!("5"));
    assert!(!cells.contains_key("gift"));
    let kinds: Vec<(&str, &str)> = next
        .problems
        .iter()
        .map(|problem| (problem.column.as_str(), problem.kind))
        .collect();
    assert_eq!(
        kinds,
        [("gift", "type_conflict"), ("when", "type_conflict")]
    );
    assert_eq!(next.problems[0].column_type, Some(ColumnType::Boolean));
    assert_eq!(next.problems[0].value_type, Some(ColumnType::Text));
    assert_eq!(next.problems[0].stored_in.as_deref(), Some("gift_text"));

    // A conflict column someone made non-text: the value is dropped, still reported.
    catalog
        .get_mut("signup")
        .unwrap()
        .insert("gift_text".into(), ColumnType::BigInt);
    let blocked = plan(
        &track_rows(&[json!({"gift": "maybe"})]),
        &catalog,
        &Limits::new(&fixed),
    );
    assert_eq!(blocked.problems.len(), 1);
    assert_eq!(blocked.problems[0].stored_in, None);
    let row = blocked
        .rows
        .iter()
        .find(|row| row.table == "signup")
        .unwrap();
    assert!(row
        .cells
        .iter()
        .all(|(column, _)| !column.starts_with("gift")));
}

#[test]
fn planning_respects_the_column_and_table_limits() {
    let fixed = naming().fixed_tables();
    let limits = Limits {
        fixed_tables: &fixed,
        event_tables_max: 1,
        table_columns_max: 12,
    };
    let many: serde_json::Map<String, Value> = (0..20)
        .map(|index| (format!("p{index}"), json!(index)))
        .collect();
    let planned = plan(
        &track_rows(&[Value::Object(many)]),
        &Catalog::new(),
        &limits,
    );
    let signup = planned
        .rows
        .iter()
        .find(|row| row.table == "signup")
        .unwrap();
    assert_eq!(
        signup.cells.len() + 1,
        12,
        "loaded_at counts too: {:?}",
        signup.cells
    );
    assert!(planned
        .problems
        .iter()
        .all(|problem| problem.kind == "column_limit"));
    assert!(!planned.problems.is_empty());

    let mut catalog = Catalog::new();
    apply(&mut catalog, &planned.changes);
    let other = outbound(
        EventType::Track,
        json!({"messageId": "m9", "userId": "u1", "event": "Another Event"}),
    );
    let rows: Vec<_> = rows(&other, &naming())
        .into_iter()
        .map(|row| (0, row))
        .collect();
    let refused = plan(&rows, &catalog, &limits);
    assert_eq!(refused.rows.len(), 1, "only tracks");
    assert_eq!(refused.rows[0].table, "tracks");
    assert_eq!(refused.problems[0].kind, "event_table_limit");
    assert_eq!(refused.problems[0].table, "another_event");
}

#[test]
fn schema_changes_are_idempotent_sql() {
    assert_eq!(
        change_sql(
            "s",
            &SchemaChange::CreateTable {
                table: "order".into()
            }
        ),
        r#"CREATE TABLE IF NOT EXISTS "s"."order" ("id" text PRIMARY KEY, "loaded_at" timestamptz NOT NULL DEFAULT now())"#
    );
    assert_eq!(
        change_sql(
            "s",
            &SchemaChange::AddColumn {
                table: "t".into(),
                column: "timestamp".into(),
                kind: ColumnType::Timestamp
            }
        ),
        r#"ALTER TABLE "s"."t" ADD COLUMN IF NOT EXISTS "timestamp" timestamptz"#
    );
    assert_eq!(
        change_sql(
            "s",
            &SchemaChange::Widen {
                table: "t".into(),
                column: "n".into()
            }
        ),
        r#"ALTER TABLE "s"."t" ALTER COLUMN "n" TYPE double precision"#
    );
}

#[test]
fn inserts_are_idempotent_and_users_merge() {
    let insert = insert_sql("s", "tracks", &["id", "event"], false);
    assert_eq!(
        insert,
        r#"INSERT INTO "s"."tracks" AS t ("id", "event") SELECT "id", "event" FROM jsonb_populate_recordset(NULL::"s"."tracks", $1::text::jsonb) ON CONFLICT ("id") DO NOTHING"#
    );
    let upsert = insert_sql("s", "users", &["id", "received_at", "plan"], true);
    assert!(upsert.contains(r#"DO UPDATE SET "received_at" = COALESCE(EXCLUDED."received_at", t."received_at"), "plan" = COALESCE(EXCLUDED."plan", t."plan")"#), "{upsert}");
    assert!(upsert.ends_with(
        r#"WHERE t."received_at" IS NULL OR t."received_at" <= EXCLUDED."received_at""#
    ));

    let row = |index: usize, id: &str, cells: Value| super::schema::LoadRow {
        event_index: index,
        table: "users".into(),
        upsert: true,
        cells: std::iter::once(("id".to_string(), json!(id)))
            .chain(
                cells
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
            .collect(),
    };
    let rows = [
        row(0, "u1", json!({"plan": "free", "name": "Ada"})),
        row(1, "u2", json!({"plan": "team"})),
        row(2, "u1", json!({"plan": "pro", "city": "London"})),
    ];
    let merged = merge_upserts(&rows.iter().collect::<Vec<_>>());
    assert_eq!(merged.len(), 2);
    assert_eq!(
        merged[0].cells,
        vec![
            ("id".to_string(), json!("u1")),
            ("name".to_string(), json!("Ada")),
            ("plan".to_string(), json!("pro")),
            ("city".to_string(), json!("London")),
        ]
    );
}

#[test]
fn sqlstates_are_classified() {
    let class = |code: &str| match classify_code(code)(String::new()) {
        Failure::Retry(_) => "retry",
        Failure::Reject(_) => "reject",
        Failure::Stale(_) => "stale",
    };
    for code in [
        "08006", "08001", "57P01", "57P03", "40001", "40P01", "53300", "53100", "57014", "42501",
        "3D000", "28P01", "55P03", "XX000",
    ] {
        assert_eq!(class(code), "retry", "{code}");
    }
    for code in [
        "22001", "22003", "22P02", "23502", "54000", "54011", "42602", "42622", "42701",
    ] {
        assert_eq!(class(code), "reject", "{code}");
    }
    for code in ["42P01", "42703"] {
        assert_eq!(class(code), "stale", "{code}");
    }
}

#[test]
fn problems_are_counted_once_per_key_and_bounded() {
    let log = ProblemLog::default();
    let fixed = naming().fixed_tables();
    let mut catalog = Catalog::new();
    let setup = plan(
        &track_rows(&[json!({"gift": true})]),
        &catalog,
        &Limits::new(&fixed),
    );
    apply(&mut catalog, &setup.changes);
    let conflict = plan(
        &track_rows(&[json!({"gift": "x"})]),
        &catalog,
        &Limits::new(&fixed),
    );
    assert_eq!(log.record(&conflict.problems, 1).len(), 1, "new");
    assert!(
        log.record(&conflict.problems, 2).is_empty(),
        "already known"
    );
    let listed = log.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].occurrences,
            listed[0].first_seen_ms,
            listed[0].last_seen_ms
        ),
        (2, 1, 2)
    );
    let mut many = conflict.problems[0].clone();
    for index in 0..tandem_core::limits::WAREHOUSE_SCHEMA_PROBLEMS_KEPT + 5 {
        many.column = format!("c{index}");
        log.record(std::slice::from_ref(&many), 3);
    }
    assert_eq!(
        log.list().len(),
        tandem_core::limits::WAREHOUSE_SCHEMA_PROBLEMS_KEPT
    );
    let serialized = serde_json::to_value(&log.list()[0]).unwrap();
    assert!(serialized.get("event_index").is_none());
    assert_eq!(serialized["kind"], "type_conflict");
}

#[test]
fn settings_are_checked_without_connecting() {
    let ok = parse(&json!({"url": "postgres://tandem:secret@db.internal:5433/analytics"})).unwrap();
    assert_eq!(ok.batch_events_max(), 1000);
    assert_eq!(ok.batch_age_ms(), 5000);
    assert_eq!(ok.schema_name("my-shop"), "tandem_my_shop");
    let config = ok.connection().unwrap();
    assert_eq!(config.get_ports(), [5433]);
    assert_eq!(config.get_dbname(), Some("analytics"));

    let fields = parse(&json!({"host": "127.0.0.1", "user": "tandem", "password": "x", "dbname": "d", "schema": "warehouse", "table_prefix": "web_"})).unwrap();
    assert_eq!(fields.schema_name("my-shop"), "warehouse");
    assert_eq!(fields.connection().unwrap().get_ports(), [5432]);

    let problems = |settings: Value| -> Vec<String> {
        parse(&settings)
            .unwrap_err()
            .into_iter()
            .map(|problem| problem.field)
            .collect()
    };
    assert_eq!(problems(json!({})), ["host", "user"]);
    assert_eq!(
        problems(json!({"url": "postgres://u@h/d", "user": "x"})),
        ["user"]
    );
    assert_eq!(problems(json!({"url": "mysql://u@h/d"})), ["url"]);
    assert_eq!(
        problems(json!({"url": "postgres://u@h/d?sslmode=allow"})),
        ["url"],
        "libpq's allow is not offered"
    );
    assert_eq!(
        problems(json!({"url": "postgres://u@h/d?sslmode=require", "sslmode": "verify-full"})),
        ["sslmode"],
        "two different modes"
    );
    assert_eq!(
        problems(
            json!({"url": "postgres://u@h/d", "sslmode": "require", "ssl_root_cert_pem": "-----BEGIN CERTIFICATE-----"})
        ),
        ["ssl_root_cert_pem"]
    );
    let verify =
        parse(&json!({"url": "postgres://u@h/d?sslmode=verify-full&connect_timeout=3"})).unwrap();
    assert_eq!(verify.ssl_mode(), Ok(super::SslMode::VerifyFull));
    assert_eq!(
        verify.connection().unwrap().get_ssl_mode(),
        tokio_postgres::config::SslMode::Require,
        "the driver insists on TLS; the connector verifies"
    );
    assert_eq!(
        ok.connection().unwrap().get_ssl_mode(),
        tokio_postgres::config::SslMode::Prefer,
        "libpq's default"
    );
    assert_eq!(
        problems(json!({"url": "postgres://h/d"})),
        ["url"],
        "no user"
    );
    assert_eq!(
        problems(
            json!({"url": "postgres://u@h/d", "schema": "1abc", "table_prefix": "Web-", "batch_events_max": 0, "pool_size": 1000, "batch_age_ms": 0})
        ),
        [
            "schema",
            "table_prefix",
            "batch_events_max",
            "batch_age_ms",
            "pool_size"
        ]
    );
    assert_eq!(
        problems(json!({"url": "postgres://u@h/d", "tabel_prefix": "x"})),
        [""],
        "unknown field"
    );
}
