//! The transport: schema changes, then one transaction per batch, and the classification of
//! PostgreSQL's answers into an [`Outcome`].
//!
//! Life of a batch:
//! 1. Each event becomes rows (`request.rs`); the rows are planned against the cached catalog
//!    (`schema.rs`): new tables and columns, widened columns, conflicts diverted.
//! 2. When the plan changes the schema, the DDL lock is taken, the catalog re-read (another lane
//!    or process may have changed it), the plan redone, and the changes committed in their own
//!    transaction. Changes only add, so a plan made before them stays loadable.
//! 3. The rows are loaded in ONE transaction: one `INSERT … SELECT FROM jsonb_populate_recordset
//!    … ON CONFLICT (id) DO NOTHING` per table (idempotent by messageId), the `users` upsert
//!    (latest traits win, older redeliveries do not overwrite newer ones), the schema problems.
//! 4. A failure caused by data (class 22/23/54, invalid names) makes a second transaction load
//!    each event under its own savepoint: the bad ones are rejected, the rest committed
//!    ([`BatchOutcome::PerEvent`]). Anything else (connection lost, shutdown, deadlock,
//!    serialization, too many connections, missing privilege) is retried; an undefined table or
//!    column (dropped by hand) also empties the catalog cache.

use super::config::{self, PostgresSettings};
use super::request::{rows, Naming, Row};
use super::schema::{
    apply, change_sql, plan, problem_log, quote, Catalog, ColumnType, Limits, LoadRow, Plan,
    ProblemLog, SchemaProblem,
};
use crate::destination::{
    BatchLimits, BatchOutcome, BuildContext, DeleteOutcome, Destination, OutboundEvent, Outcome,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tandem_core::time_util::{format_iso8601_ms, now_ms};

/// Longest wait for a free pooled connection before the batch is retried.
const POOL_WAIT_MS: u64 = 10_000;

/// How a failure is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Transient or operator-fixable: try again later.
    Retry(String),
    /// Caused by the data of an event: never accepted as is.
    Reject(String),
    /// The cached catalog is wrong (a table or column was dropped by hand): re-read, retry.
    Stale(String),
}

impl Failure {
    fn outcome(self) -> Outcome {
        match self {
            Failure::Retry(error) | Failure::Stale(error) => Outcome::retry(error),
            Failure::Reject(error) => Outcome::reject(error),
        }
    }
}

/// The class of a SQLSTATE: data errors are rejected, a missing table or column is a stale
/// cache, everything else (connection, shutdown 57P01, serialization 40001, deadlock 40P01, too
/// many connections 53300, privileges 42501, timeouts 57014, …) is retried.
pub fn classify_code(code: &str) -> fn(String) -> Failure {
    match code {
        "42P01" | "42703" => Failure::Stale,
        // Invalid or reserved names, duplicate columns: an event's key made a bad identifier.
        "42601" | "42602" | "42622" | "42939" | "42701" => Failure::Reject,
        _ if code.starts_with("22") || code.starts_with("23") || code.starts_with("54") => {
            Failure::Reject
        }
        _ => Failure::Retry,
    }
}

/// A driver error: with a SQLSTATE by its class, without one (connection refused or closed,
/// I/O) retried.
pub fn classify(error: &tokio_postgres::Error) -> Failure {
    match error.as_db_error() {
        Some(db) => {
            let mut message = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                message.push_str(&format!(": {detail}"));
            }
            classify_code(db.code().code())(message)
        }
        None => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Failure::Retry(message)
        }
    }
}

fn classify_pool(error: PoolError) -> Failure {
    match error {
        PoolError::Backend(error) => match classify(&error) {
            // Refusals while connecting (authentication, unknown database) are the operator's
            // to fix: never the events' fault.
            Failure::Reject(message) | Failure::Stale(message) => Failure::Retry(message),
            retry => retry,
        },
        other => Failure::Retry(format!("no connection to PostgreSQL: {other}")),
    }
}

pub struct Postgres {
    schema: String,
    naming: Naming,
    fixed_tables: Vec<String>,
    batch_limits: BatchLimits,
    pool: Pool,
    /// Columns per table; `None` until read (and after a stale-cache failure).
    catalog: parking_lot::RwLock<Option<Catalog>>,
    /// Held while changing the schema, so lanes do not race each other's DDL.
    ddl: tokio::sync::Mutex<()>,
    memberships_ready: AtomicBool,
    problems: Arc<ProblemLog>,
}

pub fn build(
    settings: &serde_json::Value,
    context: &BuildContext,
) -> Result<Arc<dyn Destination>, String> {
    Ok(Arc::new(Postgres::new(settings, context)?))
}

impl Postgres {
    /// A warehouse destination; connects on first use.
    pub fn new(settings: &serde_json::Value, context: &BuildContext) -> Result<Postgres, String> {
        let settings: PostgresSettings = config::parse(settings)
            .map_err(|problems| crate::destination::describe_problems(&problems))?;
        let manager = Manager::from_config(
            settings.connection()?,
            settings.tls_connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size())
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_millis(POOL_WAIT_MS)))
            .create_timeout(Some(settings.connect_timeout()))
            .build()
            .map_err(|error| format!("cannot build the connection pool: {error}"))?;
        let naming = Naming {
            prefix: settings.table_prefix.clone(),
            event_tables: settings.event_tables,
        };
        Ok(Postgres {
            schema: settings.schema_name(&context.workspace_id),
            fixed_tables: naming.fixed_tables(),
            naming,
            batch_limits: BatchLimits {
                events_max: settings.batch_events_max(),
                age_ms: settings.batch_age_ms(),
                ..BatchLimits::default()
            },
            pool,
            catalog: parking_lot::RwLock::new(None),
            ddl: tokio::sync::Mutex::new(()),
            memberships_ready: AtomicBool::new(false),
            problems: problem_log(&context.workspace_id, &context.destination_id),
        })
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The type conflicts and values not stored so far (also in `<schema>.schema_problems`).
    pub fn schema_problems(&self) -> Vec<super::schema::ReportedProblem> {
        self.problems.list()
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, Failure> {
        self.pool.get().await.map_err(classify_pool)
    }

    fn table(&self, name: &str) -> String {
        format!(
            "{}.{}",
            quote(&self.schema),
            quote(&self.naming.table(name))
        )
    }

    pub(super) async fn send_batch(&self, batch: &[OutboundEvent]) -> BatchOutcome {
        let memberships = membership_changes(batch);
        if !memberships.is_empty() {
            if let Err(failure) = self.ensure_memberships_table().await {
                return BatchOutcome::All(self.fail(failure));
            }
        }
        let rows: Vec<(usize, Row)> = batch
            .iter()
            .enumerate()
            .flat_map(|(index, event)| {
                rows(event, &self.naming)
                    .into_iter()
                    .map(move |row| (index, row))
            })
            .collect();
        if rows.is_empty() {
            return BatchOutcome::All(Outcome::Delivered);
        }
        let plan = match self.prepare(&rows).await {
            Ok(plan) => plan,
            Err(failure) => return BatchOutcome::All(self.fail(failure)),
        };
        match self.load(&plan, &memberships).await {
            Ok(()) => {
                self.report(&plan.problems);
                BatchOutcome::All(Outcome::Delivered)
            }
            Err(Failure::Reject(_)) if batch.len() > 1 => {
                self.isolate(&plan, batch.len(), &memberships).await
            }
            Err(failure) => BatchOutcome::All(self.fail(failure)),
        }
    }

    fn fail(&self, failure: Failure) -> Outcome {
        if matches!(failure, Failure::Stale(_)) {
            *self.catalog.write() = None;
        }
        failure.outcome()
    }

    fn report(&self, problems: &[SchemaProblem]) {
        for problem in self.problems.record(problems, now_ms()) {
            tracing::warn!(
                schema = %self.schema,
                table = %problem.table,
                column = %problem.column,
                kind = problem.kind,
                message = %problem.message,
                "warehouse schema problem"
            );
        }
    }

    /// Steps 1 and 2: the plan, with its schema changes committed.
    async fn prepare(&self, rows: &[(usize, Row)]) -> Result<Plan, Failure> {
        let limits = Limits::new(&self.fixed_tables);
        if let Some(catalog) = self.catalog.read().as_ref() {
            let plan = plan(rows, catalog, &limits);
            if plan.changes.is_empty() {
                return Ok(plan);
            }
        }
        let _ddl = self.ddl.lock().await;
        let mut client = self.client().await?;
        let mut catalog = self.read_catalog(&client).await?;
        let plan = plan(rows, &catalog, &limits);
        if !plan.changes.is_empty() {
            let transaction = client.transaction().await.map_err(|e| ddl_failure(&e))?;
            for change in &plan.changes {
                let sql = change_sql(&self.schema, change);
                transaction
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| ddl_failure(&e))?;
            }
            transaction.commit().await.map_err(|e| ddl_failure(&e))?;
            tracing::info!(schema = %self.schema, changes = plan.changes.len(), "warehouse schema changed");
            apply(&mut catalog, &plan.changes);
        }
        *self.catalog.write() = Some(catalog);
        Ok(plan)
    }

    /// Creates the schema and the problems table when missing, then reads every column.
    async fn read_catalog(&self, client: &deadpool_postgres::Client) -> Result<Catalog, Failure> {
        let setup = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {problems} (
                 table_name text NOT NULL, column_name text NOT NULL, problem text NOT NULL,
                 value_type text NOT NULL, column_type text, stored_in text, message text,
                 example_message_id text, occurrences bigint NOT NULL,
                 first_seen_at timestamptz NOT NULL, last_seen_at timestamptz NOT NULL,
                 PRIMARY KEY (table_name, column_name, problem, value_type))",
            schema = quote(&self.schema),
            problems = self.table("schema_problems"),
        );
        client
            .batch_execute(&setup)
            .await
            .map_err(|e| ddl_failure(&e))?;
        let columns = client
            .query(
                "SELECT table_name::text, column_name::text, data_type::text
                 FROM information_schema.columns WHERE table_schema = $1",
                &[&self.schema],
            )
            .await
            .map_err(|e| ddl_failure(&e))?;
        let mut catalog = Catalog::new();
        for row in columns {
            let (table, column, data_type): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            catalog
                .entry(table)
                .or_default()
                .insert(column, ColumnType::from_information_schema(&data_type));
        }
        Ok(catalog)
    }

    /// Step 3: every row of the plan in one transaction, with the audience memberships the
    /// batch's audience events announce.
    async fn load(
        &self,
        plan: &Plan,
        memberships: &[(usize, MembershipChange)],
    ) -> Result<(), Failure> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(|e| classify(&e))?;
        let mut by_table: BTreeMap<(&str, bool), Vec<&LoadRow>> = BTreeMap::new();
        for row in &plan.rows {
            by_table
                .entry((row.table.as_str(), row.upsert))
                .or_default()
                .push(row);
        }
        for ((table, upsert), rows) in by_table {
            if upsert {
                let merged = merge_upserts(&rows);
                let merged: Vec<&LoadRow> = merged.iter().collect();
                self.insert(&transaction, table, upsert, &merged).await?;
            } else {
                self.insert(&transaction, table, upsert, &rows).await?;
            }
        }
        self.record_problems(&transaction, &plan.problems).await?;
        let changes: Vec<MembershipChange> = memberships.iter().map(|(_, c)| c.clone()).collect();
        self.write_memberships(&transaction, &changes).await?;
        transaction.commit().await.map_err(|e| classify(&e))
    }

    /// Step 4: each event under its own savepoint; the ones PostgreSQL refuses are rejected.
    async fn isolate(
        &self,
        plan: &Plan,
        events: usize,
        memberships: &[(usize, MembershipChange)],
    ) -> BatchOutcome {
        match self.isolate_events(plan, events, memberships).await {
            Ok(outcomes) => BatchOutcome::PerEvent(outcomes),
            Err(failure) => BatchOutcome::All(self.fail(failure)),
        }
    }

    async fn isolate_events(
        &self,
        plan: &Plan,
        events: usize,
        memberships: &[(usize, MembershipChange)],
    ) -> Result<Vec<Outcome>, Failure> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(|e| classify(&e))?;
        let mut outcomes = vec![Outcome::Delivered; events];
        let mut rows_of: Vec<Vec<&LoadRow>> = vec![Vec::new(); events];
        for row in &plan.rows {
            rows_of[row.event_index].push(row);
        }
        for (index, rows) in rows_of.iter().enumerate() {
            transaction
                .batch_execute("SAVEPOINT tandem_event")
                .await
                .map_err(|e| classify(&e))?;
            let mut result = Ok(());
            for row in rows {
                result = self
                    .insert(
                        &transaction,
                        &row.table,
                        row.upsert,
                        std::slice::from_ref(row),
                    )
                    .await;
                if result.is_err() {
                    break;
                }
            }
            match result {
                Ok(()) => {
                    transaction
                        .batch_execute("RELEASE SAVEPOINT tandem_event")
                        .await
                }
                Err(Failure::Reject(error)) => {
                    outcomes[index] = Outcome::reject(error);
                    transaction
                        .batch_execute("ROLLBACK TO SAVEPOINT tandem_event")
                        .await
                }
                Err(failure) => return Err(failure),
            }
            .map_err(|e| classify(&e))?;
        }
        let problems: Vec<SchemaProblem> = plan
            .problems
            .iter()
            .filter(|problem| outcomes[problem.event_index].is_delivered())
            .cloned()
            .collect();
        self.record_problems(&transaction, &problems).await?;
        let changes: Vec<MembershipChange> = memberships
            .iter()
            .filter(|(index, _)| outcomes[*index].is_delivered())
            .map(|(_, change)| change.clone())
            .collect();
        self.write_memberships(&transaction, &changes).await?;
        transaction.commit().await.map_err(|e| classify(&e))?;
        self.report(&problems);
        Ok(outcomes)
    }

    /// One multi-row statement for `rows` of `table` (all of one kind).
    async fn insert(
        &self,
        client: &tokio_postgres::Transaction<'_>,
        table: &str,
        upsert: bool,
        rows: &[&LoadRow],
    ) -> Result<(), Failure> {
        let mut columns: Vec<&str> = Vec::new();
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let mut record = serde_json::Map::with_capacity(row.cells.len());
            for (column, value) in &row.cells {
                if !columns.contains(&column.as_str()) {
                    columns.push(column);
                }
                record.insert(column.clone(), value.clone());
            }
            records.push(serde_json::Value::Object(record));
        }
        let sql = insert_sql(&self.schema, table, &columns, upsert);
        let records = serde_json::Value::Array(records).to_string();
        client
            .execute(&sql, &[&records])
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    async fn record_problems(
        &self,
        client: &tokio_postgres::Transaction<'_>,
        problems: &[SchemaProblem],
    ) -> Result<(), Failure> {
        if problems.is_empty() {
            return Ok(());
        }
        let mut merged: BTreeMap<_, (serde_json::Value, u64)> = BTreeMap::new();
        for problem in problems {
            let value_type = problem.value_type.map(ColumnType::sql).unwrap_or_default();
            let record = serde_json::json!({
                "table_name": problem.table,
                "column_name": problem.column,
                "problem": problem.kind,
                "value_type": value_type,
                "column_type": problem.column_type.map(ColumnType::sql),
                "stored_in": problem.stored_in,
                "message": problem.message,
                "example_message_id": problem.message_id,
            });
            let key = (
                problem.table.clone(),
                problem.column.clone(),
                problem.kind,
                value_type,
            );
            let entry = merged.entry(key).or_insert((record.clone(), 0));
            entry.0 = record;
            entry.1 += 1;
        }
        let records: Vec<serde_json::Value> = merged
            .into_values()
            .map(|(mut record, count)| {
                record["occurrences"] = count.into();
                record
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} AS p (table_name, column_name, problem, value_type, column_type,
                 stored_in, message, example_message_id, occurrences, first_seen_at, last_seen_at)
             SELECT table_name, column_name, problem, value_type, column_type, stored_in, message,
                 example_message_id, occurrences, now(), now()
             FROM jsonb_to_recordset($1::text::jsonb) AS r(table_name text, column_name text,
                 problem text, value_type text, column_type text, stored_in text, message text,
                 example_message_id text, occurrences bigint)
             ON CONFLICT (table_name, column_name, problem, value_type) DO UPDATE SET
                 occurrences = p.occurrences + EXCLUDED.occurrences, last_seen_at = now(),
                 column_type = EXCLUDED.column_type, stored_in = EXCLUDED.stored_in,
                 message = EXCLUDED.message, example_message_id = EXCLUDED.example_message_id",
            table = self.table("schema_problems")
        );
        let records = serde_json::Value::Array(records).to_string();
        client
            .execute(&sql, &[&records])
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    /// Deletes every row of the subject: `user_id` / `anonymous_id` columns of every table, the
    /// `users` row, and the `email` of `identifies` and `users`. Other identifier types are
    /// not stored as such and are ignored.
    pub async fn delete_subject(&self, identifiers: &[(String, String)]) -> Result<u64, Failure> {
        let pick = |types: &[&str]| -> Vec<String> {
            identifiers
                .iter()
                .filter(|(kind, _)| types.contains(&kind.as_str()))
                .map(|(_, value)| value.clone())
                .collect()
        };
        let user_ids = pick(&["user_id", "userId"]);
        let anonymous_ids = pick(&["anonymous_id", "anonymousId"]);
        let emails: Vec<String> = pick(&["email"])
            .into_iter()
            .map(|email| email.trim().to_lowercase())
            .collect();
        if user_ids.is_empty() && anonymous_ids.is_empty() && emails.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(|e| classify(&e))?;
        let columns = transaction
            .query(
                "SELECT table_name::text, column_name::text, data_type::text
                 FROM information_schema.columns WHERE table_schema = $1
                 AND column_name IN ('id', 'user_id', 'anonymous_id', 'email')",
                &[&self.schema],
            )
            .await
            .map_err(|e| classify(&e))?;
        let mut tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for row in columns {
            tables
                .entry(row.get(0))
                .or_default()
                .push((row.get(1), row.get(2)));
        }
        let users = self.naming.table("users");
        let identifies = self.naming.table("identifies");
        let mut deleted = 0;
        for (table, columns) in tables {
            let has = |name: &str| {
                columns
                    .iter()
                    .any(|(column, data_type)| column == name && data_type == "text")
            };
            let mut wanted: Vec<(&str, &Vec<String>, bool)> = Vec::new();
            if has("user_id") && !user_ids.is_empty() {
                wanted.push(("user_id", &user_ids, false));
            }
            if has("anonymous_id") && !anonymous_ids.is_empty() {
                wanted.push(("anonymous_id", &anonymous_ids, false));
            }
            if table == users && has("id") && !user_ids.is_empty() {
                wanted.push(("id", &user_ids, false));
            }
            if (table == users || table == identifies) && has("email") && !emails.is_empty() {
                wanted.push(("email", &emails, true));
            }
            let mut conditions = Vec::new();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
            for (column, values, lower) in wanted {
                params.push(values);
                let column = quote(column);
                let column = if lower {
                    format!("lower({column})")
                } else {
                    column
                };
                conditions.push(format!("{column} = ANY(${}::text[])", params.len()));
            }
            if conditions.is_empty() {
                continue;
            }
            let sql = format!(
                "DELETE FROM {}.{} WHERE {}",
                quote(&self.schema),
                quote(&table),
                conditions.join(" OR ")
            );
            deleted += transaction
                .execute(&sql, &params)
                .await
                .map_err(|e| classify(&e))?;
        }
        transaction.commit().await.map_err(|e| classify(&e))?;
        tracing::info!(schema = %self.schema, rows = deleted, "warehouse subject deleted");
        Ok(deleted)
    }

    /// Records audience entries and exits in `audience_memberships` (one row per audience and
    /// profile: `user_id`, `anonymous_id`, `entered_at`, `exited_at`), in order, in one
    /// transaction. A change older than the row's latest is ignored (redeliveries and replays
    /// cannot undo a newer state); an entry that continues merged-away profiles' memberships
    /// removes their rows. Audience sync calls it for the `Audience Entered`/`Exited` events of
    /// each batch (see [`membership_changes`]), inside the batch's own transaction.
    pub async fn upsert_audience_memberships(
        &self,
        changes: &[MembershipChange],
    ) -> Result<(), Failure> {
        if changes.is_empty() {
            return Ok(());
        }
        self.ensure_memberships_table().await?;
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(|e| classify(&e))?;
        self.write_memberships(&transaction, changes).await?;
        transaction.commit().await.map_err(|e| classify(&e))
    }

    async fn ensure_memberships_table(&self) -> Result<(), Failure> {
        if self.memberships_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let client = self.client().await?;
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {};
             CREATE TABLE IF NOT EXISTS {} (
                 audience text NOT NULL, profile_id text NOT NULL,
                 user_id text, anonymous_id text,
                 entered_at timestamptz, exited_at timestamptz,
                 updated_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (audience, profile_id))",
            quote(&self.schema),
            self.table("audience_memberships")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| ddl_failure(&e))?;
        self.memberships_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn write_memberships(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        changes: &[MembershipChange],
    ) -> Result<(), Failure> {
        if changes.is_empty() {
            return Ok(());
        }
        let table = self.table("audience_memberships");
        let latest =
            "GREATEST(COALESCE(m.entered_at, '-infinity'), COALESCE(m.exited_at, '-infinity'))";
        let enter = transaction
            .prepare(&format!(
                "INSERT INTO {table} AS m (audience, profile_id, user_id, anonymous_id, entered_at)
                 VALUES ($1, $2, $3, $4, $5::text::timestamptz)
                 ON CONFLICT (audience, profile_id) DO UPDATE SET entered_at = EXCLUDED.entered_at,
                     exited_at = NULL, user_id = COALESCE(EXCLUDED.user_id, m.user_id),
                     anonymous_id = COALESCE(EXCLUDED.anonymous_id, m.anonymous_id), updated_at = now()
                 WHERE {latest} <= EXCLUDED.entered_at"
            ))
            .await
            .map_err(|e| classify(&e))?;
        let exit = transaction
            .prepare(&format!(
                "INSERT INTO {table} AS m (audience, profile_id, user_id, anonymous_id, exited_at)
                 VALUES ($1, $2, $3, $4, $5::text::timestamptz)
                 ON CONFLICT (audience, profile_id) DO UPDATE SET exited_at = EXCLUDED.exited_at,
                     updated_at = now()
                 WHERE {latest} <= EXCLUDED.exited_at"
            ))
            .await
            .map_err(|e| classify(&e))?;
        let continued = transaction
            .prepare(&format!(
                "DELETE FROM {table} WHERE audience = $1 AND profile_id = ANY($2::text[])"
            ))
            .await
            .map_err(|e| classify(&e))?;
        for change in changes {
            let at = format_iso8601_ms(change.at_ms);
            let statement = if change.entered { &enter } else { &exit };
            transaction
                .execute(
                    statement,
                    &[
                        &change.audience,
                        &change.profile_id,
                        &change.user_id,
                        &change.anonymous_id,
                        &at,
                    ],
                )
                .await
                .map_err(|e| classify(&e))?;
            if change.entered && !change.continues.is_empty() {
                transaction
                    .execute(&continued, &[&change.audience, &change.continues])
                    .await
                    .map_err(|e| classify(&e))?;
            }
        }
        Ok(())
    }
}

/// One audience entry or exit of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub audience: String,
    /// tandem's profile id (`prof_…`): the row's key with the audience.
    pub profile_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// true: entered; false: exited.
    pub entered: bool,
    pub at_ms: i64,
    /// Profiles merged into this one whose membership this entry continues (their rows go).
    pub continues: Vec<String>,
}

/// The membership changes an audience event announces: `Audience Entered`/`Exited` track calls
/// of the built-in source `tandem-audiences` carrying `context.audience`.
pub fn membership_change(event: &OutboundEvent) -> Option<MembershipChange> {
    if event.source_id != tandem_core::envelope::AUDIENCES_SOURCE_ID
        || event.event_type != tandem_core::EventType::Track
    {
        return None;
    }
    let json = &event.event;
    let entered = match json.get("event")?.as_str()? {
        "Audience Entered" => true,
        "Audience Exited" => false,
        _ => return None,
    };
    let audience = json.pointer("/context/audience")?;
    let text =
        |value: Option<&serde_json::Value>| value.and_then(|v| v.as_str()).map(str::to_string);
    Some(MembershipChange {
        audience: text(audience.get("id"))?,
        profile_id: text(audience.get("profile_id"))?,
        user_id: text(json.get("userId")),
        anonymous_id: text(json.get("anonymousId")),
        entered,
        at_ms: json
            .get("timestamp")
            .and_then(|v| v.as_str())
            .and_then(tandem_core::time_util::parse_iso8601_ms)
            .unwrap_or(event.received_at_ms),
        continues: if entered {
            audience
                .get("merged_profile_ids")
                .and_then(|v| v.as_array())
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        },
    })
}

/// The membership changes of a batch's events, in order (with the index of each event).
pub fn membership_changes(batch: &[OutboundEvent]) -> Vec<(usize, MembershipChange)> {
    batch
        .iter()
        .enumerate()
        .filter_map(|(index, event)| Some((index, membership_change(event)?)))
        .collect()
}

impl Destination for Postgres {
    fn batch_limits(&self) -> BatchLimits {
        self.batch_limits
    }

    fn send<'a>(&'a self, batch: &'a [OutboundEvent]) -> BoxFuture<'a, BatchOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn delete_user<'a>(
        &'a self,
        identifiers: &'a [(String, String)],
    ) -> BoxFuture<'a, DeleteOutcome> {
        Box::pin(async move {
            match self.delete_subject(identifiers).await {
                Ok(_) => DeleteOutcome::Deleted,
                Err(Failure::Reject(error)) => DeleteOutcome::Failed {
                    error,
                    retryable: false,
                },
                Err(Failure::Retry(error) | Failure::Stale(error)) => DeleteOutcome::Failed {
                    error,
                    retryable: true,
                },
            }
        })
    }
}

/// Schema changes and setup never reject events: whatever fails there is retried (with the
/// catalog re-read).
fn ddl_failure(error: &tokio_postgres::Error) -> Failure {
    match classify(error) {
        Failure::Reject(message) | Failure::Stale(message) | Failure::Retry(message) => {
            Failure::Stale(message)
        }
    }
}

/// Several upserts of one user in a batch become one row: later values win (the batch is in
/// per-user order), absent ones keep earlier values.
pub fn merge_upserts(rows: &[&LoadRow]) -> Vec<LoadRow> {
    let mut merged: Vec<LoadRow> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let id = row
            .cells
            .iter()
            .find(|(column, _)| column == "id")
            .map(|(_, value)| value.to_string())
            .unwrap_or_default();
        match index_of.get(&id) {
            Some(&index) => {
                let target = &mut merged[index];
                for (column, value) in &row.cells {
                    match target
                        .cells
                        .iter_mut()
                        .find(|(existing, _)| existing == column)
                    {
                        Some(cell) => cell.1 = value.clone(),
                        None => target.cells.push((column.clone(), value.clone())),
                    }
                }
            }
            None => {
                index_of.insert(id, merged.len());
                merged.push((*row).clone());
            }
        }
    }
    merged
}

/// The statement loading a JSON array of records into `table`: insert-once by `id`, or (the
/// `users` table) merge into the existing row unless that row is newer.
pub fn insert_sql(schema: &str, table: &str, columns: &[&str], upsert: bool) -> String {
    let target = format!("{}.{}", quote(schema), quote(table));
    let list = columns
        .iter()
        .map(|column| quote(column))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!(
        "INSERT INTO {target} AS t ({list}) SELECT {list} FROM jsonb_populate_recordset(NULL::{target}, $1::text::jsonb) ON CONFLICT (\"id\") "
    );
    let updates: Vec<String> = columns
        .iter()
        .filter(|column| **column != "id")
        .map(|column| {
            let column = quote(column);
            format!("{column} = COALESCE(EXCLUDED.{column}, t.{column})")
        })
        .collect();
    if upsert && !updates.is_empty() {
        sql.push_str("DO UPDATE SET ");
        sql.push_str(&updates.join(", "));
        sql.push_str(
            " WHERE t.\"received_at\" IS NULL OR t.\"received_at\" <= EXCLUDED.\"received_at\"",
        );
    } else {
        sql.push_str("DO NOTHING");
    }
    sql
}
