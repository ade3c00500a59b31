//! A consumer of a log with a committed offset: at-least-once processing for later stages
//! (identity resolution, audiences, destinations).

use crate::api::{EventLog, ReadError, StoredRecord};
use std::sync::Arc;

/// Reads a log from its committed offset on; `commit` records progress durably. After a crash
/// it resumes at the last commit, so records after it are seen again (at-least-once).
pub struct Consumer {
    log: Arc<dyn EventLog>,
    name: String,
    next: u64,
}

impl Consumer {
    /// Resumes `name` at its committed offset, or at `start` if it never committed.
    pub fn new(log: Arc<dyn EventLog>, name: &str, start: u64) -> std::io::Result<Consumer> {
        let next = log
            .committed_offset(name)?
            .unwrap_or(start)
            .max(log.stats().start_offset);
        Ok(Consumer {
            log,
            name: name.to_string(),
            next,
        })
    }

    /// The next offset this consumer will read.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Up to `max` records, waiting until at least one is durable.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<StoredRecord>, ReadError> {
        loop {
            let records = match self.log.read(self.next, max) {
                Err(ReadError::BelowStart { start, .. }) => {
                    tracing::warn!(consumer = %self.name, skipped_to = start, "records expired by retention before this consumer read them");
                    self.next = start;
                    continue;
                }
                other => other?,
            };
            if let Some(last) = records.last() {
                self.next = last.offset + 1;
                return Ok(records);
            }
            self.log.wait_for(self.next).await;
        }
    }

    /// Durably records that everything before `position()` is processed.
    pub fn commit(&self) -> std::io::Result<()> {
        self.log.commit_offset(&self.name, self.next)
    }
}
