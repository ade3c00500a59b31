//! The PostgreSQL warehouse against a real PostgreSQL server started by each test (initdb into a
//! temporary directory, a free loopback port): tables and columns created, schema evolution, a
//! type conflict kept and reported, idempotent redelivery, users upserted with the latest
//! traits, a poison event rejected alone, subject deletion, audience memberships, and an outage
//! (server stopped: retry; restarted: delivered); TLS against a server with `ssl = on` and a
//! certificate the test makes (`rcgen`), refusing plain TCP: every `sslmode`.

mod pg_harness;
mod tls_harness;

use pg_harness::PgServer;
use serde_json::{json, Value};
use tandem_activate::destinations::postgres::{self, MembershipChange, Postgres};
use tandem_activate::{BatchOutcome, BuildContext, Destination, OutboundEvent, Outcome};
use tandem_core::time_util::parse_iso8601_ms;
use tandem_core::EventType;

const WORKSPACE: &str = "my-shop";
const SCHEMA: &str = "tandem_my_shop";

fn warehouse(server: &PgServer, destination_id: &str) -> Postgres {
    let context = BuildContext {
        workspace_id: WORKSPACE.into(),
        destination_id: destination_id.into(),
        data_dir: std::env::temp_dir(),
    };
    Postgres::new(&json!({"url": server.url(), "pool_size": 2}), &context).expect("build")
}

/// An outbound event from a Segment-shaped JSON object with `messageId`, `type` and `receivedAt`.
fn event(json: Value) -> OutboundEvent {
    let text = |member: &str| json.get(member).and_then(Value::as_str).map(str::to_string);
    OutboundEvent {
        offset: 0,
        message_id: text("messageId").expect("messageId"),
        event_type: EventType::parse(&text("type").expect("type")).expect("a call type"),
        source_id: "web".into(),
        received_at_ms: parse_iso8601_ms(&text("receivedAt").expect("receivedAt")).unwrap(),
        user_key: text("userId")
            .or_else(|| text("anonymousId"))
            .unwrap_or_default(),
        event: json.into(),
    }
}

async fn send(destination: &Postgres, events: &[OutboundEvent]) -> BatchOutcome {
    destination.send(events).await
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {SCHEMA}.{table}"), &[])
        .await
        .unwrap_or_else(|error| panic!("count {table}: {error:?}"))
        .get(0)
}

/// `column → data_type` of a table.
async fn columns(client: &tokio_postgres::Client, table: &str) -> Vec<(String, String)> {
    client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 ORDER BY column_name",
            &[&SCHEMA, &table],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn column_type(client: &tokio_postgres::Client, table: &str, column: &str) -> Option<String> {
    columns(client, table)
        .await
        .into_iter()
        .find(|(name, _)| name == column)
        .map(|(_, data_type)| data_type)
}

/// One text cell (`column::text`) of the row with `id`.
async fn cell(
    client: &tokio_postgres::Client,
    table: &str,
    id: &str,
    column: &str,
) -> Option<String> {
    client
        .query_one(
            &format!("SELECT \"{column}\"::text FROM {SCHEMA}.{table} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap_or_else(|error| panic!("{table}.{column} of {id}: {error:?}"))
        .get(0)
}

fn order(message_id: &str, user_id: &str, properties: Value) -> OutboundEvent {
    event(json!({
        "type": "track", "messageId": message_id, "userId": user_id, "event": "Order Completed",
        "properties": properties,
        "context": {"ip": "10.0.0.1", "page": {"url": "https://shop.example/checkout"}, "library": {"name": "analytics.js", "version": "2.1"}},
        "timestamp": "2024-05-01T10:00:00.000Z", "sentAt": "2024-05-01T10:00:01.000Z",
        "originalTimestamp": "2024-05-01T09:59:59.000Z", "receivedAt": "2024-05-01T10:00:02.000Z"
    }))
}

#[tokio::test]
async fn tables_and_columns_are_created_for_every_call_type() {
    let server = PgServer::start();
    let destination = warehouse(&server, "tables");
    let batch = vec![
        order(
            "m-track",
            "u1",
            json!({"revenue": 42.5, "quantity": 2, "paid": true, "items": [{"sku": "a"}],
                   "product": {"id": "p1", "name": "Kettle"}, "id": "order-7", "shippedAt": "2024-05-02T08:00:00Z"}),
        ),
        event(
            json!({"type": "identify", "messageId": "m-identify", "userId": "u1", "anonymousId": "a1",
            "traits": {"email": "ada@example.org", "age": 36}, "receivedAt": "2024-05-01T10:00:03Z"}),
        ),
        event(
            json!({"type": "page", "messageId": "m-page", "anonymousId": "a1", "name": "Checkout",
            "properties": {"path": "/checkout"}, "receivedAt": "2024-05-01T10:00:04Z"}),
        ),
        event(
            json!({"type": "screen", "messageId": "m-screen", "userId": "u1", "name": "Home",
            "receivedAt": "2024-05-01T10:00:05Z"}),
        ),
        event(
            json!({"type": "group", "messageId": "m-group", "userId": "u1", "groupId": "g1",
            "traits": {"plan": "team"}, "receivedAt": "2024-05-01T10:00:06Z"}),
        ),
        event(
            json!({"type": "alias", "messageId": "m-alias", "userId": "u1", "previousId": "a1",
            "receivedAt": "2024-05-01T10:00:07Z"}),
        ),
    ];
    assert_eq!(
        send(&destination, &batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );

    let client = server.client().await;
    for table in [
        "tracks",
        "order_completed",
        "identifies",
        "users",
        "pages",
        "screens",
        "groups",
        "aliases",
    ] {
        assert_eq!(count(&client, table).await, 1, "{table}");
    }
    let types = columns(&client, "order_completed").await;
    let expect = [
        ("id", "text"),
        ("received_at", "timestamp with time zone"),
        ("sent_at", "timestamp with time zone"),
        ("timestamp", "timestamp with time zone"),
        ("original_timestamp", "timestamp with time zone"),
        ("user_id", "text"),
        ("event", "text"),
        ("event_text", "text"),
        ("context_ip", "text"),
        ("context_page_url", "text"),
        ("context_library_name", "text"),
        ("revenue", "double precision"),
        ("quantity", "bigint"),
        ("paid", "boolean"),
        ("items", "text"),
        ("product_id", "text"),
        ("product_name", "text"),
        ("properties_id", "text"),
        ("shipped_at", "timestamp with time zone"),
        ("loaded_at", "timestamp with time zone"),
    ];
    for (column, data_type) in expect {
        assert!(
            types.contains(&(column.to_string(), data_type.to_string())),
            "order_completed.{column} {data_type} missing from {types:?}"
        );
    }
    assert_eq!(
        cell(&client, "order_completed", "m-track", "revenue")
            .await
            .as_deref(),
        Some("42.5")
    );
    assert_eq!(
        cell(&client, "order_completed", "m-track", "items")
            .await
            .as_deref(),
        Some(r#"[{"sku":"a"}]"#)
    );
    assert_eq!(
        cell(&client, "order_completed", "m-track", "properties_id")
            .await
            .as_deref(),
        Some("order-7")
    );
    assert_eq!(
        cell(&client, "tracks", "m-track", "event").await.as_deref(),
        Some("order_completed")
    );
    assert_eq!(
        cell(&client, "tracks", "m-track", "event_text")
            .await
            .as_deref(),
        Some("Order Completed")
    );
    assert_eq!(
        column_type(&client, "tracks", "revenue").await,
        None,
        "tracks holds the common columns, not the properties"
    );
    assert_eq!(
        cell(&client, "users", "u1", "email").await.as_deref(),
        Some("ada@example.org")
    );
    assert_eq!(
        cell(&client, "users", "u1", "age").await.as_deref(),
        Some("36")
    );
    assert_eq!(
        cell(&client, "pages", "m-page", "name").await.as_deref(),
        Some("Checkout")
    );
    assert_eq!(
        cell(&client, "pages", "m-page", "path").await.as_deref(),
        Some("/checkout")
    );
    assert_eq!(
        cell(&client, "groups", "m-group", "group_id")
            .await
            .as_deref(),
        Some("g1")
    );
    assert_eq!(
        cell(&client, "aliases", "m-alias", "previous_id")
            .await
            .as_deref(),
        Some("a1")
    );
    let timestamp: Option<String> = client
        .query_one(
            &format!("SELECT to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM {SCHEMA}.tracks WHERE id = 'm-track'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(timestamp.as_deref(), Some("2024-05-01 10:00:00"));
}

#[tokio::test]
async fn new_properties_add_columns_and_integers_widen() {
    let server = PgServer::start();
    let destination = warehouse(&server, "evolution");
    let client = server.client().await;
    let first = order("m1", "u1", json!({"plan": "pro"}));
    assert_eq!(
        send(&destination, &[first]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(column_type(&client, "order_completed", "seats").await, None);

    let second = order(
        "m2",
        "u1",
        json!({"plan": "free", "seats": 3, "trial_ends": "2024-06-01T00:00:00Z"}),
    );
    assert_eq!(
        send(&destination, &[second]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(
        column_type(&client, "order_completed", "seats")
            .await
            .as_deref(),
        Some("bigint")
    );
    assert_eq!(
        column_type(&client, "order_completed", "trial_ends")
            .await
            .as_deref(),
        Some("timestamp with time zone")
    );

    let third = order("m3", "u1", json!({"seats": 2.5}));
    assert_eq!(
        send(&destination, &[third]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(
        column_type(&client, "order_completed", "seats")
            .await
            .as_deref(),
        Some("double precision")
    );
    assert_eq!(
        cell(&client, "order_completed", "m2", "seats")
            .await
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        cell(&client, "order_completed", "m3", "seats")
            .await
            .as_deref(),
        Some("2.5")
    );
    assert_eq!(cell(&client, "order_completed", "m1", "seats").await, None);
    assert_eq!(count(&client, "order_completed").await, 3);

    // A second destination instance (another process) with a cold cache sees the same schema.
    let other = warehouse(&server, "evolution-2");
    let fourth = order("m4", "u2", json!({"seats": 4, "coupon": "SPRING"}));
    assert_eq!(
        send(&other, &[fourth]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(
        cell(&client, "order_completed", "m4", "seats")
            .await
            .as_deref(),
        Some("4")
    );
    assert_eq!(
        cell(&client, "order_completed", "m4", "coupon")
            .await
            .as_deref(),
        Some("SPRING")
    );
}

#[tokio::test]
async fn a_type_conflict_is_kept_as_text_and_reported() {
    let server = PgServer::start();
    let destination = warehouse(&server, "conflicts");
    let client = server.client().await;
    let first = order("m1", "u1", json!({"gift": true}));
    assert_eq!(
        send(&destination, &[first]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let second = order("m2", "u1", json!({"gift": "yes please"}));
    let third = order("m3", "u2", json!({"gift": false}));
    assert_eq!(
        send(&destination, &[second, third]).await,
        BatchOutcome::All(Outcome::Delivered),
        "a conflicting value never loses the event"
    );
    assert_eq!(
        column_type(&client, "order_completed", "gift")
            .await
            .as_deref(),
        Some("boolean")
    );
    assert_eq!(cell(&client, "order_completed", "m2", "gift").await, None);
    assert_eq!(
        cell(&client, "order_completed", "m2", "gift_text")
            .await
            .as_deref(),
        Some("yes please")
    );
    assert_eq!(
        cell(&client, "order_completed", "m3", "gift")
            .await
            .as_deref(),
        Some("false")
    );

    let reported = client
        .query_one(
            &format!("SELECT table_name, column_name, problem, column_type, value_type, stored_in, example_message_id, occurrences FROM {SCHEMA}.schema_problems"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reported.get::<_, String>(0), "order_completed");
    assert_eq!(reported.get::<_, String>(1), "gift");
    assert_eq!(reported.get::<_, String>(2), "type_conflict");
    assert_eq!(
        reported.get::<_, Option<String>>(3).as_deref(),
        Some("boolean")
    );
    assert_eq!(reported.get::<_, String>(4), "text");
    assert_eq!(
        reported.get::<_, Option<String>>(5).as_deref(),
        Some("gift_text")
    );
    assert_eq!(reported.get::<_, Option<String>>(6).as_deref(), Some("m2"));
    assert_eq!(reported.get::<_, i64>(7), 1);

    for problems in [
        destination.schema_problems(),
        postgres::schema_problems(WORKSPACE, "conflicts"),
    ] {
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].problem.column, "gift");
        assert_eq!(problems[0].problem.kind, "type_conflict");
        assert_eq!(problems[0].problem.stored_in.as_deref(), Some("gift_text"));
        assert_eq!(problems[0].occurrences, 1);
    }
    assert!(postgres::schema_problems(WORKSPACE, "no-such-destination").is_empty());
}

#[tokio::test]
async fn redelivering_a_batch_inserts_nothing_twice() {
    let server = PgServer::start();
    let destination = warehouse(&server, "idempotent");
    let client = server.client().await;
    let batch = vec![
        order("m1", "u1", json!({"total": 10})),
        order("m2", "u2", json!({"total": 20})),
        event(
            json!({"type": "identify", "messageId": "m3", "userId": "u1", "traits": {"name": "Ada"},
            "receivedAt": "2024-05-01T10:00:03Z"}),
        ),
    ];
    for _ in 0..2 {
        assert_eq!(
            send(&destination, &batch).await,
            BatchOutcome::All(Outcome::Delivered)
        );
    }
    // The same events again, inside a larger batch (a redelivered in-flight window).
    let mut larger = batch.clone();
    larger.push(order("m4", "u3", json!({"total": 30})));
    assert_eq!(
        send(&destination, &larger).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(count(&client, "tracks").await, 3);
    assert_eq!(count(&client, "order_completed").await, 3);
    assert_eq!(count(&client, "identifies").await, 1);
    assert_eq!(count(&client, "users").await, 1);
}

#[tokio::test]
async fn users_hold_the_latest_traits() {
    let server = PgServer::start();
    let destination = warehouse(&server, "users");
    let client = server.client().await;
    let identify = |message_id: &str, received_at: &str, traits: Value| {
        event(
            json!({"type": "identify", "messageId": message_id, "userId": "u1", "traits": traits,
            "receivedAt": received_at}),
        )
    };
    let early = identify(
        "m1",
        "2024-05-01T10:00:00Z",
        json!({"name": "Ada", "plan": "free"}),
    );
    let batch = vec![
        early.clone(),
        identify("m2", "2024-05-01T10:00:01Z", json!({"plan": "pro"})),
    ];
    assert_eq!(
        send(&destination, &batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(
        cell(&client, "users", "u1", "name").await.as_deref(),
        Some("Ada")
    );
    assert_eq!(
        cell(&client, "users", "u1", "plan").await.as_deref(),
        Some("pro")
    );

    let later = identify("m3", "2024-05-02T10:00:00Z", json!({"city": "London"}));
    assert_eq!(
        send(&destination, &[later]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    // A replay of the oldest identify must not bring the old plan back.
    let mut replayed = early;
    replayed.message_id = "m1-replayed".into();
    let mut changed = replayed.event.to_value();
    changed["messageId"] = json!("m1-replayed");
    replayed.event = changed.into();
    assert_eq!(
        send(&destination, &[replayed]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    assert_eq!(
        cell(&client, "users", "u1", "plan").await.as_deref(),
        Some("pro")
    );
    assert_eq!(
        cell(&client, "users", "u1", "city").await.as_deref(),
        Some("London")
    );
    assert_eq!(
        cell(&client, "users", "u1", "name").await.as_deref(),
        Some("Ada")
    );
    assert_eq!(count(&client, "users").await, 1);
    assert_eq!(count(&client, "identifies").await, 4);
}

#[tokio::test]
async fn a_poison_event_is_rejected_alone() {
    let server = PgServer::start();
    let destination = warehouse(&server, "poison");
    let client = server.client().await;
    assert_eq!(
        send(&destination, &[order("m0", "u0", json!({"quantity": 1}))]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    // An analyst narrowed the column by hand: PostgreSQL now refuses large quantities.
    client
        .batch_execute(&format!(
            "ALTER TABLE {SCHEMA}.order_completed ALTER COLUMN quantity TYPE smallint"
        ))
        .await
        .unwrap();
    let fresh = warehouse(&server, "poison-2");
    let batch = vec![
        order("m1", "u1", json!({"quantity": 2})),
        order("m2", "u2", json!({"quantity": 100000})),
        order("m3", "u3", json!({"quantity": 3})),
    ];
    let BatchOutcome::PerEvent(outcomes) = send(&fresh, &batch).await else {
        panic!("a data error is answered per event");
    };
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(
        matches!(&outcomes[1], Outcome::Reject { error } if error.contains("22003")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert_eq!(
        cell(&client, "order_completed", "m1", "quantity")
            .await
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        cell(&client, "order_completed", "m3", "quantity")
            .await
            .as_deref(),
        Some("3")
    );
    let poison: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {SCHEMA}.tracks WHERE id = 'm2'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        poison, 0,
        "the rejected event left no row behind in any table"
    );
    // Alone, it is rejected outright.
    assert!(matches!(
        send(&fresh, &batch[1..2]).await,
        BatchOutcome::All(Outcome::Reject { .. })
    ));
}

#[tokio::test]
async fn deleting_a_user_removes_their_rows_everywhere() {
    let server = PgServer::start();
    let destination = warehouse(&server, "delete");
    let client = server.client().await;
    let batch = vec![
        event(
            json!({"type": "page", "messageId": "m1", "anonymousId": "a1", "receivedAt": "2024-05-01T10:00:00Z"}),
        ),
        event(
            json!({"type": "identify", "messageId": "m2", "userId": "u1", "anonymousId": "a1",
            "traits": {"email": "ada@example.org"}, "receivedAt": "2024-05-01T10:00:01Z"}),
        ),
        order("m3", "u1", json!({"total": 5})),
        order("m4", "u2", json!({"total": 6})),
        event(
            json!({"type": "identify", "messageId": "m5", "userId": "u2", "traits": {"email": "bob@example.org"},
            "receivedAt": "2024-05-01T10:00:02Z"}),
        ),
    ];
    assert_eq!(
        send(&destination, &batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    destination
        .upsert_audience_memberships(&[MembershipChange {
            audience: "buyers".into(),
            profile_id: "prof_0000000000000001".into(),
            user_id: Some("u1".into()),
            anonymous_id: None,
            entered: true,
            at_ms: 1_714_557_600_000,
            continues: Vec::new(),
        }])
        .await
        .unwrap();
    let outcome = destination
        .delete_user(&[
            ("user_id".into(), "u1".into()),
            ("anonymous_id".into(), "a1".into()),
        ])
        .await;
    assert_eq!(outcome, tandem_activate::DeleteOutcome::Deleted);
    for table in [
        "pages",
        "identifies",
        "tracks",
        "order_completed",
        "audience_memberships",
    ] {
        let left: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {SCHEMA}.{table} AS t
                     WHERE to_jsonb(t)->>'user_id' = 'u1' OR to_jsonb(t)->>'anonymous_id' = 'a1'"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{table}");
    }
    assert_eq!(cell_count(&client, "users", "u1").await, 0);
    assert_eq!(cell_count(&client, "users", "u2").await, 1);
    assert_eq!(
        count(&client, "tracks").await,
        1,
        "the other user's rows stay"
    );
    assert_eq!(count(&client, "identifies").await, 1);

    // By email alone: the traits tables.
    let outcome = destination
        .delete_user(&[("email".into(), " Bob@Example.org".into())])
        .await;
    assert_eq!(outcome, tandem_activate::DeleteOutcome::Deleted);
    assert_eq!(cell_count(&client, "users", "u2").await, 0);
    assert_eq!(count(&client, "identifies").await, 0);
}

async fn cell_count(client: &tokio_postgres::Client, table: &str, id: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM {SCHEMA}.{table} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn audience_memberships_keep_the_latest_change() {
    let server = PgServer::start();
    let destination = warehouse(&server, "audiences");
    let client = server.client().await;
    let change = |user_id: &str, entered: bool, at: &str| MembershipChange {
        audience: "high-value".into(),
        profile_id: format!("prof-of-{user_id}"),
        user_id: Some(user_id.into()),
        anonymous_id: None,
        entered,
        at_ms: parse_iso8601_ms(at).unwrap(),
        continues: Vec::new(),
    };
    destination
        .upsert_audience_memberships(&[
            change("u1", true, "2024-05-01T10:00:00Z"),
            change("u2", true, "2024-05-01T11:00:00Z"),
            change("u1", false, "2024-05-03T10:00:00Z"),
        ])
        .await
        .unwrap();
    // A late, older entry (a replay) does not undo the exit.
    destination
        .upsert_audience_memberships(&[change("u1", true, "2024-05-02T10:00:00Z")])
        .await
        .unwrap();
    let rows = client
        .query(
            &format!("SELECT user_id, to_char(entered_at AT TIME ZONE 'UTC', 'MM-DD HH24'), to_char(exited_at AT TIME ZONE 'UTC', 'MM-DD HH24') FROM {SCHEMA}.audience_memberships ORDER BY user_id"),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "u1".into(),
                Some("05-01 10".into()),
                Some("05-03 10".into())
            ),
            ("u2".into(), Some("05-01 11".into()), None),
        ]
    );
    // Re-entering later clears the exit.
    destination
        .upsert_audience_memberships(&[change("u1", true, "2024-05-04T10:00:00Z")])
        .await
        .unwrap();
    let exited: Option<String> = client
        .query_one(
            &format!(
                "SELECT exited_at::text FROM {SCHEMA}.audience_memberships WHERE user_id = 'u1'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exited, None);
}

/// An `Audience Entered`/`Exited` event as the audience outbox drain writes it.
fn audience_event(
    message_id: &str,
    entered: bool,
    audience: &str,
    profile: &str,
    user: Option<&str>,
    at: &str,
    merged: &[&str],
) -> OutboundEvent {
    let mut json = json!({
        "type": "track", "messageId": message_id,
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "anonymousId": format!("anon-{profile}"), "timestamp": at, "receivedAt": at,
        "properties": {"audience_key": audience, audience: entered, "profile_id": profile},
        "context": {"audience": {"id": audience, "profile_id": profile, "reason": "event",
                                 "merged_profile_ids": merged}},
    });
    if let Some(user) = user {
        json["userId"] = json!(user);
    }
    let mut event = event(json);
    event.source_id = tandem_core::envelope::AUDIENCES_SOURCE_ID.into();
    event
}

#[tokio::test]
async fn audience_events_keep_the_membership_table_in_their_batch() {
    let server = PgServer::start();
    let destination = warehouse(&server, "audience-sync");
    let client = server.client().await;
    let batch = vec![
        audience_event(
            "e1",
            true,
            "vip",
            "prof_a",
            Some("u1"),
            "2024-05-01T10:00:00Z",
            &[],
        ),
        audience_event(
            "e2",
            true,
            "vip",
            "prof_b",
            None,
            "2024-05-01T11:00:00Z",
            &[],
        ),
        audience_event(
            "e3",
            true,
            "buyers",
            "prof_b",
            None,
            "2024-05-01T11:00:00Z",
            &[],
        ),
        audience_event(
            "e4",
            false,
            "buyers",
            "prof_b",
            None,
            "2024-05-02T11:00:00Z",
            &[],
        ),
        // prof_b merged into prof_c: the entry continues prof_b's membership.
        audience_event(
            "e5",
            true,
            "vip",
            "prof_c",
            Some("u3"),
            "2024-05-03T11:00:00Z",
            &["prof_b"],
        ),
        order("o1", "u1", json!({"total": 5})),
    ];
    assert_eq!(
        send(&destination, &batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    // Redelivered: nothing changes.
    assert_eq!(
        send(&destination, &batch).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let rows = client
        .query(
            &format!("SELECT audience, profile_id, user_id, exited_at IS NOT NULL FROM {SCHEMA}.audience_memberships ORDER BY audience, profile_id"),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, Option<String>, bool)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("buyers".into(), "prof_b".into(), None, true),
            ("vip".into(), "prof_a".into(), Some("u1".into()), false),
            ("vip".into(), "prof_c".into(), Some("u3".into()), false),
        ]
    );
    // The events are also rows of their own, like any track call.
    assert_eq!(count(&client, "audience_entered").await, 4);
    assert_eq!(count(&client, "audience_exited").await, 1);
    // Events of other sources with the same name are only events.
    let mut forged = audience_event(
        "f1",
        true,
        "vip",
        "prof_z",
        None,
        "2024-05-04T10:00:00Z",
        &[],
    );
    forged.source_id = "web".into();
    assert_eq!(
        send(&destination, &[forged]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    let members: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {SCHEMA}.audience_memberships"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 3);
}

#[tokio::test]
async fn an_outage_is_retried_then_delivered() {
    let server = PgServer::start();
    let destination = warehouse(&server, "outage");
    assert_eq!(
        send(&destination, &[order("m1", "u1", json!({"total": 1}))]).await,
        BatchOutcome::All(Outcome::Delivered)
    );
    server.stop();
    let during = vec![order("m2", "u1", json!({"total": 2, "new_column": "x"}))];
    for _ in 0..2 {
        match send(&destination, &during).await {
            BatchOutcome::All(Outcome::Retry { error, .. }) => assert!(!error.is_empty()),
            other => panic!("a stopped server is retried, got {other:?}"),
        }
    }
    server.resume();
    let mut delivered = false;
    for _ in 0..5 {
        match send(&destination, &during).await {
            BatchOutcome::All(Outcome::Delivered) => {
                delivered = true;
                break;
            }
            BatchOutcome::All(Outcome::Retry { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            other => panic!("after a restart: {other:?}"),
        }
    }
    assert!(delivered, "delivered once the server is back");
    let client = server.client().await;
    assert_eq!(count(&client, "order_completed").await, 2);
    assert_eq!(
        cell(&client, "order_completed", "m2", "new_column")
            .await
            .as_deref(),
        Some("x")
    );
}

#[tokio::test]
async fn registered_and_validated() {
    let kind = tandem_activate::registry::find("postgres").expect("registered");
    assert!((kind.validate)(&json!({"url": "postgres://tandem@127.0.0.1:5432/db"})).is_ok());
    let problems = (kind.validate)(
        &json!({"url": "postgres://tandem@127.0.0.1/db", "host": "x", "schema": "Bad-Name"}),
    )
    .unwrap_err();
    let fields: Vec<&str> = problems
        .iter()
        .map(|problem| problem.field.as_str())
        .collect();
    assert_eq!(fields, ["host", "schema"], "{problems:?}");
    assert!((kind.validate)(&json!({"url": "postgres://x@h/db", "colour": "red"})).is_err());
}

/// Loads one event through `settings`: delivered, or the retry's error.
async fn load_with(settings: Value, id: &str) -> Result<(), String> {
    load_through(&tls_warehouse(settings, id), id).await
}

fn tls_warehouse(settings: Value, id: &str) -> Postgres {
    let context = BuildContext {
        workspace_id: WORKSPACE.into(),
        destination_id: format!("tls-{id}"),
        data_dir: std::env::temp_dir(),
    };
    Postgres::new(&settings, &context).expect("build")
}

async fn load_through(destination: &Postgres, id: &str) -> Result<(), String> {
    match send(destination, &[order(id, "u1", json!({"total": 1}))]).await {
        BatchOutcome::All(Outcome::Delivered) => Ok(()),
        BatchOutcome::All(Outcome::Retry { error, .. }) => Err(error),
        other => panic!("a TLS problem is never the event's fault: {other:?}"),
    }
}

#[tokio::test]
async fn tls_with_every_sslmode() {
    let ca = tls_harness::TestCa::new("tandem test CA");
    // Issued for `localhost` only: connecting to 127.0.0.1 passes verify-ca, not verify-full.
    let certificate = ca.server(&["localhost"]);
    let server = PgServer::start_tls(&certificate.cert_pem, &certificate.key_pem);
    let port = server.port();
    let by_ip = format!("postgres://tandem@127.0.0.1:{port}/postgres");
    let by_name = format!("postgres://tandem@localhost:{port}/postgres");
    let with = |url: &str, mode: &str| json!({"url": url, "sslmode": mode, "pool_size": 1});
    let trusting = |url: &str, mode: &str| json!({"url": url, "sslmode": mode, "ssl_root_cert_pem": ca.pem(), "pool_size": 1});

    load_with(trusting(&by_name, "verify-full"), "m-full")
        .await
        .expect("verify-full: trusted CA, matching name");
    load_with(
        json!({"url": format!("{by_name}?sslmode=verify-full"), "ssl_root_cert_pem": ca.pem()}),
        "m-url",
    )
    .await
    .expect("sslmode in the URL, as libpq takes it");
    load_with(trusting(&by_ip, "verify-ca"), "m-ca")
        .await
        .expect("verify-ca does not check the name");
    load_with(with(&by_ip, "require"), "m-require")
        .await
        .expect("require encrypts without checking the certificate");
    load_with(json!({"url": by_ip, "pool_size": 1}), "m-prefer")
        .await
        .expect("prefer (the default) uses TLS when offered");

    let misnamed = load_with(trusting(&by_ip, "verify-full"), "m-misnamed")
        .await
        .expect_err("verify-full checks the name");
    assert!(
        misnamed.to_lowercase().contains("certificate"),
        "{misnamed}"
    );
    let untrusted = load_with(with(&by_name, "verify-full"), "m-untrusted")
        .await
        .expect_err("verify-full without the CA: the system's roots do not know it");
    assert!(
        untrusted.to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    let plain = load_with(with(&by_ip, "disable"), "m-plain")
        .await
        .expect_err("the server refuses plain TCP");
    assert!(
        plain.contains("no encryption") || plain.contains("pg_hba"),
        "{plain}"
    );

    // A pool kept open, to see its connection from the server's side.
    let kept = tls_warehouse(trusting(&by_name, "verify-full"), "m-kept");
    load_through(&kept, "m-full")
        .await
        .expect("again: nothing twice");
    let client = server.client().await;
    let loaded: Vec<String> = client
        .query(&format!("SELECT id FROM {SCHEMA}.tracks ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(loaded, ["m-ca", "m-full", "m-prefer", "m-require", "m-url"]);
    let encrypted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'tandem' AND ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the open pool's connection is encrypted");
    drop(kept);
}
