//! Trying a transformation on sample events before enabling it (the function behind
//! `POST /api/v1/workspaces/{ws}/transformations/test`).

use std::time::Instant;

use serde::Serialize;

use crate::error::TransformError;
use crate::limits::TransformLimits;
use crate::transformer::{TransformContext, Transformer};

/// What one sample event became. Serialises as
/// `{"index":0,"output":[{…}],"error":null,"duration_us":41}` or, on failure,
/// `{"index":0,"output":null,"error":{"kind":"thrown","message":"…","stack":"…"},"duration_us":9}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// Position of the event in the request.
    pub index: usize,
    /// The events it turned into: empty when dropped, several when fanned out.
    pub output: Option<Vec<serde_json::Value>>,
    pub error: Option<TransformError>,
    /// Time the run of this event took (wall clock, so it includes waiting for the CPU on a
    /// busy machine). Compilation is not counted: it happens once, before the first event.
    pub duration_us: u64,
}

/// Compiles `code` with the default limits and runs it on each event in turn. A compilation
/// failure is every event's error (duration 0); callers that need to report it even for an
/// empty list can call [`Transformer::compile`] first. The caller bounds the number of events
/// (`TRANSFORM_TEST_EVENTS_MAX`).
pub fn test_run(
    code: &str,
    events: &[serde_json::Value],
    context: &TransformContext,
) -> Vec<TestResult> {
    test_run_with_limits(code, events, context, TransformLimits::default())
}

/// [`test_run`] with explicit limits (those of the connection the code is meant for).
pub fn test_run_with_limits(
    code: &str,
    events: &[serde_json::Value],
    context: &TransformContext,
    limits: TransformLimits,
) -> Vec<TestResult> {
    let events: Vec<(&serde_json::Value, &TransformContext)> =
        events.iter().map(|event| (event, context)).collect();
    test_run_each(code, &events, limits).results
}

/// A test run of several events: the compilation error, if the code does not compile (then it
/// is also every event's error), and one result per event.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRun {
    pub compile_error: Option<TransformError>,
    pub results: Vec<TestResult>,
}

/// [`test_run_with_limits`] with a context per event (recent events of several sources), the
/// code compiled once; the compilation error is reported even when there are no events.
pub fn test_run_each(
    code: &str,
    events: &[(&serde_json::Value, &TransformContext)],
    limits: TransformLimits,
) -> TestRun {
    // One runtime is enough for events run one after the other.
    let limits = TransformLimits {
        runtimes_max: 1,
        ..limits
    };
    let transformer = match Transformer::compile(code, limits) {
        Ok(transformer) => transformer,
        Err(error) => {
            return TestRun {
                results: (0..events.len())
                    .map(|index| TestResult {
                        index,
                        output: None,
                        error: Some(error.clone()),
                        duration_us: 0,
                    })
                    .collect(),
                compile_error: Some(error),
            }
        }
    };
    let results = events
        .iter()
        .enumerate()
        .map(|(index, (event, context))| {
            let started = Instant::now();
            let result = transformer.run(event, context);
            let duration_us = started.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
            let (output, error) = match result {
                Ok(output) => (Some(output), None),
                Err(error) => (None, Some(error)),
            };
            TestResult {
                index,
                output,
                error,
                duration_us,
            }
        })
        .collect();
    TestRun {
        compile_error: None,
        results,
    }
}
