//! PostgreSQL warehouse: events loaded into tables the way Segment and RudderStack warehouses
//! lay them out, evolving the schema as new properties appear.
//!
//! - Tables (in the schema `tandem_<workspace>` unless set, names optionally prefixed):
//!   `tracks` (every track), one table per track event name (snake_case), `pages`, `screens`,
//!   `identifies`, `groups`, `aliases`, `users` (latest traits per userId, upserted),
//!   `schema_problems`, and `audience_memberships` (audience sync: one row per audience and
//!   profile, kept from the `Audience Entered`/`Exited` events of each batch, in its transaction).
//! - Columns: `id` (messageId, primary key), `received_at`, `sent_at`, `timestamp`,
//!   `original_timestamp`, `user_id`, `anonymous_id`, `source_id`, `loaded_at`, `context_*`,
//!   and the properties or traits flattened with `_` (arrays and deep objects as JSON text).
//! - Types are inferred (bigint, double precision, boolean, timestamptz for RFC 3339 strings,
//!   text); new columns are added, bigint is widened to double precision, and a value of a
//!   conflicting type is stored as text in `<column>_text` and reported (the
//!   `schema_problems` table, [`schema_problems`] for the API, a warning in the log).
//! - One transaction per batch, idempotent by messageId (`ON CONFLICT (id) DO NOTHING`): a
//!   redelivery inserts nothing twice. See `service.rs` for the life of a batch.
//! - TLS (rustls) with libpq's `sslmode` (`disable`, `prefer` — the default —, `require`,
//!   `verify-ca`, `verify-full`) and `ssl_root_cert_pem`: see `tls.rs`.

mod config;
mod request;
mod schema;
mod service;
#[cfg(test)]
mod tests;
mod tls;

pub use config::PostgresSettings;
pub use request::FIXED_TABLES;
pub use schema::{schema_problems, ColumnType, ReportedProblem, SchemaProblem};
pub use service::{membership_change, membership_changes, Failure, MembershipChange, Postgres};
pub use tls::SslMode;

use crate::destination::DestinationType;

pub static TYPE: DestinationType = DestinationType {
    name: "postgres",
    description: "PostgreSQL warehouse: a table per event type and track event, users upserted, columns added as properties appear, idempotent loads in transactions",
    settings_schema: config::schema,
    validate: config::validate,
    build: service::build,
};
