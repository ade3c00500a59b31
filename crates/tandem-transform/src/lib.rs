//! Transformations: a user's JavaScript `transform(event, context)` run on each event of a
//! connection, in a QuickJS sandbox (rquickjs) with CPU-time, memory, stack and output limits.
//!
//! ```js
//! function transform(event, context) {
//!   if (event.event === "Test Event") return null;            // drop
//!   event.properties.revenue = event.properties.total / 100;  // modify
//!   return event;                                             // or an array: fan out
//! }
//! ```
//!
//! # Life of a transformation
//! 1. [`Transformer::compile`] checks the limits and the code's size, then creates the first
//!    sandbox (`sandbox.rs`): a runtime with only ECMAScript's built-ins, deep-frozen by
//!    `lockdown.js`; the code parsed alone as a strict script (a syntax error reports the user's
//!    line and column), then compiled as the body of a *factory* function whose top level is
//!    run once to find `transform`.
//! 2. [`Transformer::run`] takes a sandbox from the pool (`transformer.rs`), arms the CPU-time
//!    deadline, and inside the runtime: calls the factory (fresh top-level declarations for
//!    this event), parses the event and the context from JSON, calls `transform`.
//! 3. What it returned is checked: `null`/`undefined` drop the event, an object replaces it, an
//!    array of objects fans it out (at most `output_events_max`, `output_bytes_max` of JSON);
//!    anything else is a `wrong_return_type` error. The output goes back through
//!    `JSON.stringify` into `serde_json` values.
//! 4. Promise jobs the run queued are drained within the same budget; the deadline is disarmed
//!    and the sandbox returned to the pool — or dropped after a timeout or out-of-memory.
//! 5. Every failure is a [`TransformError`] value (syntax with position, throw with the JS
//!    stack, timeout, out of memory, stack overflow, wrong return type, limits); the delivery
//!    worker sends the event to the dead-letter queue with its message.
//!
//! [`test_run`] compiles code and runs it on sample events, reporting each output or error with
//! its duration: the function behind the transformation test API.
//!
//! # Numbers
//! Events cross into JavaScript as JSON and numbers become doubles: integers beyond ±2^53
//! (9007199254740992) come back rounded to the nearest double, and integral floats come back
//! as integers (`3.0` → `3`). Every other JSON value — strings with any Unicode, nesting —
//! round-trips unchanged through an identity transform.

pub mod error;
pub mod limits;
mod sandbox;
pub mod test_run;
pub mod transformer;

#[cfg(test)]
mod tests;

pub use error::TransformError;
pub use limits::TransformLimits;
pub use test_run::{test_run, test_run_each, test_run_with_limits, TestResult, TestRun};
pub use transformer::{TransformContext, Transformer};
