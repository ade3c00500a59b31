//! The per-event limits of a transformation, defaulting to the named constants of
//! `tandem_core::limits`.

use serde::{Deserialize, Serialize};
use tandem_core::limits::{
    DEFAULT_TRANSFORM_CPU_MS, DEFAULT_TRANSFORM_MEMORY_BYTES, DEFAULT_TRANSFORM_OUTPUT_BYTES_MAX,
    DEFAULT_TRANSFORM_OUTPUT_EVENTS_MAX, DEFAULT_TRANSFORM_STACK_BYTES, TRANSFORM_MEMORY_BYTES_MIN,
    TRANSFORM_RUNTIMES_MAX, TRANSFORM_STACK_BYTES_MAX,
};

use crate::error::TransformError;

/// What one event's run may use. `Default` takes the `DEFAULT_TRANSFORM_*` constants; a
/// connection may override any of them (in config, all fields optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformLimits {
    /// CPU time per event (thread CPU time, not wall time).
    pub cpu_ms: u64,
    /// Memory of one runtime: built-ins, code, the event and all the code allocates.
    pub memory_bytes: usize,
    /// Stack the JavaScript may use (recursion depth).
    pub stack_bytes: usize,
    /// Most events one input event may fan out to.
    pub output_events_max: usize,
    /// Most bytes of JSON one input event may turn into.
    pub output_bytes_max: usize,
    /// Most runtimes kept for concurrent callers; more callers wait for one to be free.
    pub runtimes_max: usize,
}

impl Default for TransformLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        TransformLimits {
            cpu_ms: DEFAULT_TRANSFORM_CPU_MS,
            memory_bytes: DEFAULT_TRANSFORM_MEMORY_BYTES,
            stack_bytes: DEFAULT_TRANSFORM_STACK_BYTES,
            output_events_max: DEFAULT_TRANSFORM_OUTPUT_EVENTS_MAX,
            output_bytes_max: DEFAULT_TRANSFORM_OUTPUT_BYTES_MAX,
            runtimes_max: cores.clamp(1, TRANSFORM_RUNTIMES_MAX),
        }
    }
}

impl TransformLimits {
    /// Every value the sandbox cannot run with, in one message.
    pub fn validate(&self) -> Result<(), TransformError> {
        let mut problems = Vec::new();
        if self.cpu_ms == 0 {
            problems.push("cpu_ms must be at least 1".to_string());
        }
        if self.memory_bytes < TRANSFORM_MEMORY_BYTES_MIN {
            problems.push(format!(
                "memory_bytes must be at least {TRANSFORM_MEMORY_BYTES_MIN}"
            ));
        }
        if self.stack_bytes == 0 || self.stack_bytes > TRANSFORM_STACK_BYTES_MAX {
            problems.push(format!(
                "stack_bytes must be between 1 and {TRANSFORM_STACK_BYTES_MAX}"
            ));
        }
        if self.output_events_max == 0 {
            problems.push("output_events_max must be at least 1".to_string());
        }
        if self.output_bytes_max == 0 {
            problems.push("output_bytes_max must be at least 1".to_string());
        }
        if self.runtimes_max == 0 || self.runtimes_max > TRANSFORM_RUNTIMES_MAX {
            problems.push(format!(
                "runtimes_max must be between 1 and {TRANSFORM_RUNTIMES_MAX}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TransformError::InvalidLimits {
                message: problems.join("; "),
            })
        }
    }
}
