//! A compiled transformation shared by many callers: a small pool of sandboxes.
//!
//! # Why a pool
//! A QuickJS runtime runs one thing at a time. One runtime behind one mutex would serialise
//! every delivery lane of a connection on one core; a runtime per call would pay ~0.5 ms of
//! set-up per event. So a `Transformer` keeps up to `runtimes_max` sandboxes (default: the
//! number of cores, capped by `TRANSFORM_RUNTIMES_MAX`), created on demand: a caller takes an
//! idle one, or creates one while under the cap, or waits for one to be returned. The pool's
//! lock is held only to take or return a sandbox, never while JavaScript runs. Memory is bounded
//! by `runtimes_max × memory_bytes`; idle sandboxes cost ~0.25 MiB each
//! and ~6 ms to create.
//!
//! A sandbox that timed out or ran out of memory is dropped instead of returned (its heap may
//! be in a half-finished state or full of garbage), and a replacement is compiled by the next
//! caller that needs one.
//!
//! # Calling from async code
//! `run` is synchronous CPU work, microseconds for a typical transformation but up to `cpu_ms`
//! (plus the wait for a free sandbox). From a tokio task, call it through
//! `tokio::task::spawn_blocking` or `block_in_place` when the limit is large, as with any
//! blocking call.

use std::sync::{Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tandem_core::limits::TRANSFORM_CODE_BYTES_MAX;

use crate::error::TransformError;
use crate::limits::TransformLimits;
use crate::sandbox::Sandbox;

/// What `transform(event, context)` receives as `context`. In JavaScript the fields are
/// camelCase: `context.workspaceId`, `context.sourceId`, `context.connectionId`,
/// `context.destinationType` (`null` when absent, e.g. in a test run without a connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformContext {
    pub workspace_id: String,
    pub source_id: Option<String>,
    pub connection_id: Option<String>,
    pub destination_type: Option<String>,
}

/// A compiled transformation. `Send + Sync`: share it (in an `Arc`) between delivery tasks.
pub struct Transformer {
    code: String,
    limits: TransformLimits,
    pool: Mutex<Pool>,
    returned: Condvar,
}

struct Pool {
    idle: Vec<Sandbox>,
    /// Sandboxes in existence, idle or in use.
    created: usize,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Transformer")
            .field("code_bytes", &self.code.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Transformer {
    /// Checks and compiles `code`, which must define `function transform(event, context)`.
    /// Its top level runs once here (within the limits), so it fails now if it throws.
    pub fn compile(code: &str, limits: TransformLimits) -> Result<Transformer, TransformError> {
        limits.validate()?;
        if code.len() > TRANSFORM_CODE_BYTES_MAX {
            return Err(TransformError::InvalidCode {
                message: format!(
                    "the code is {} bytes; at most {TRANSFORM_CODE_BYTES_MAX} are allowed",
                    code.len()
                ),
            });
        }
        let first = Sandbox::new(code, &limits)?;
        Ok(Transformer {
            code: code.to_string(),
            limits,
            pool: Mutex::new(Pool {
                idle: vec![first],
                created: 1,
            }),
            returned: Condvar::new(),
        })
    }

    /// The limits it runs with.
    pub fn limits(&self) -> &TransformLimits {
        &self.limits
    }

    /// Runs the transformation on one event: the events to send instead (empty = dropped, one =
    /// modified or unchanged, several = fanned out), or why it failed.
    ///
    /// Numbers go through JavaScript doubles: integers beyond ±2^53 lose precision (as in any
    /// JavaScript), and `3.0` comes back as `3`.
    pub fn run(
        &self,
        event: &serde_json::Value,
        context: &TransformContext,
    ) -> Result<Vec<serde_json::Value>, TransformError> {
        let event_json = serde_json::to_string(event).map_err(|error| TransformError::Engine {
            message: error.to_string(),
        })?;
        let context_json =
            serde_json::to_string(context).map_err(|error| TransformError::Engine {
                message: error.to_string(),
            })?;
        let result = self.run_json(&event_json, &context_json);
        if let Err(TransformError::OutOfMemory { .. }) = result {
            // The runtime that failed is gone; garbage earlier events left in it may have
            // counted against the limit. In a fresh one, a second failure is the event's own.
            return self.run_json(&event_json, &context_json);
        }
        result
    }

    fn run_json(
        &self,
        event_json: &str,
        context_json: &str,
    ) -> Result<Vec<serde_json::Value>, TransformError> {
        let mut lease = self.checkout()?;
        let sandbox = lease.sandbox.as_ref().expect("a lease holds its sandbox");
        let outcome = sandbox.run(event_json, context_json);
        if !outcome.reusable {
            lease.sandbox = None;
        }
        outcome.result
    }

    /// An idle sandbox, a new one while under the cap, or the next one returned.
    fn checkout(&self) -> Result<Lease<'_>, TransformError> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(sandbox) = pool.idle.pop() {
                return Ok(Lease {
                    transformer: self,
                    sandbox: Some(sandbox),
                });
            }
            if pool.created < self.limits.runtimes_max {
                pool.created += 1;
                drop(pool);
                // Compiling outside the lock; the slot is reserved by `created`.
                // An empty lease gives the reservation back if compiling fails.
                let mut lease = Lease {
                    transformer: self,
                    sandbox: None,
                };
                lease.sandbox = Some(Sandbox::new(&self.code, &self.limits)?);
                return Ok(lease);
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        // Nothing panics while holding the lock; if something did, the pool is still coherent.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A sandbox taken from the pool; returned when dropped, or forgotten (freeing its place) when
/// `sandbox` was emptied.
struct Lease<'a> {
    transformer: &'a Transformer,
    sandbox: Option<Sandbox>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let sandbox = self.sandbox.take();
        let mut pool = self.transformer.lock_pool();
        match sandbox {
            Some(sandbox) => pool.idle.push(sandbox),
            None => pool.created -= 1,
        }
        drop(pool);
        self.transformer.returned.notify_one();
    }
}
