//! Real-time audiences: sets of profiles defined by conditions on traits, computed traits,
//! events and other audiences, kept up to date inside the unify transaction.
//!
//! Life of an audience change (ARCHITECTURE.md has the long form):
//! 1. [`compile`][]: definitions (`tandem_config::AudienceConfig`, from the file or the API)
//!    become an [`AudienceSet`] in dependency order; each event condition becomes a hidden
//!    counter that unify keeps like a computed trait (merged on merges, re-counted on splits,
//!    moved forward by the window sweep).
//! 2. [`engine::AudienceEngine::after_batch`] runs in the unify batch's store transaction: the
//!    profiles the batch changed are evaluated ([`condition`]), memberships written
//!    ([`state`]) and each change put in the outbox, in that same transaction.
//! 3. The server drains the outbox into the workspace log as `Audience Entered`/`Exited`
//!    events (deterministic messageIds), which connections deliver like any event.
//! 4. A new or changed definition becomes a [`state::Job`] that walks every profile in steps
//!    between batches: counters counted from [`history`], memberships evaluated; a deleted
//!    audience's members exit. [`engine::preview_chunk`] evaluates an unsaved definition the
//!    same way over a snapshot.

pub mod compile;
pub mod condition;
pub mod engine;
pub mod history;
pub mod state;

pub use compile::{AudienceSet, CompiledAudience, CounterSpec};
pub use engine::{AudienceEngine, Effects, JobView, Preview, ProfileView};
pub use state::{OutboxEntry, Reason};

use tandem_unify::kv::{KvRead, KvResult, Table};

/// Any store reference as a sized `KvRead` (the unify helpers take `&impl KvRead`).
pub struct ReadRef<'a, K: ?Sized>(pub &'a K);

impl<K: KvRead + ?Sized> KvRead for ReadRef<'_, K> {
    fn get(&self, table: Table, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.0.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0.scan(table, prefix, after, reverse, limit)
    }
}
