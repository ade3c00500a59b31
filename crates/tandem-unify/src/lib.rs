//! Unify: identity resolution and profiles, a consumer of the workspace log.
//!
//! 1. [`identity`]: which values of an event identify a person, their priority and limits, blocked
//!    values.
//! 2. [`engine`]: applies one log record — resolve, refuse merges that break a rule (and record
//!    why), create/join/merge profiles, link identifiers with the event that joined them, traits
//!    last-write-wins with provenance, timeline, accounts; admin splits as control records.
//! 3. [`computed`]: computed traits — aggregates of a profile's events, incremental, windowed.
//! 4. [`kv`]: the storage contract (ordered tables in transactions), redb and in-memory.
//! 5. [`store`]: one workspace's state file; a batch and its offset commit together.
//! 6. [`query`]: profiles by identifier, timelines, accounts, explanations, search.

pub mod computed;
pub mod engine;
pub mod erase;
pub mod identity;
pub mod kv;
pub mod model;
pub mod query;
pub mod store;

pub use engine::{Applied, Control, ControlOutcome, Engine, RecordSource};
pub use identity::{Identity, IdentityRules};
pub use store::{AfterBatch, BatchStats, Changed, DynKv, UnifyStore};
