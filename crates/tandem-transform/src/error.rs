//! What can go wrong compiling or running a transformation: one enum, every failure a value.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// A failed compilation or run. `Display` is the message shown to the user (and stored with a
/// dead-lettered event); [`TransformError::kind`] is a stable code for machines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The code does not parse. Line and column are 1-based, in the user's code.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        message: String,
        line: u32,
        column: u32,
    },
    /// The code parses but its top level defines no function `transform`.
    #[error("the code defines no function `transform(event, context)`")]
    MissingTransform,
    /// The code threw (or its top level did, at compilation).
    #[error("the transformation threw {message}")]
    Thrown {
        /// `Name: message` of the thrown error, or the thrown value as text.
        message: String,
        /// The JavaScript stack, lines numbered as in the user's code (empty when not an Error).
        stack: String,
    },
    /// The CPU-time limit was reached (an endless loop, a catastrophic regular expression).
    #[error("the transformation used more than {cpu_ms} ms of CPU time")]
    Timeout { cpu_ms: u64 },
    /// The memory limit was reached.
    #[error("the transformation needed more than {memory_bytes} bytes of memory")]
    OutOfMemory { memory_bytes: usize },
    /// The stack limit was reached (usually unbounded recursion).
    #[error("the transformation recursed too deeply (stack limit {stack_bytes} bytes)")]
    StackOverflow { stack_bytes: usize },
    /// `transform` returned something other than an object, an array of objects, null or
    /// undefined.
    #[error(
        "transform returned {found}; return the event (an object), an array of objects to fan \
         out, or null/undefined to drop it"
    )]
    WrongReturnType {
        /// What it returned, in words: "a string", "a Promise", "an array holding a number at
        /// index 2".
        found: String,
    },
    /// More output events than the limit.
    #[error("transform returned {count} events; at most {max} are allowed per input event")]
    TooManyEvents { count: usize, max: usize },
    /// Output JSON larger than the limit.
    #[error("transform returned {bytes} bytes of JSON; at most {max} are allowed per input event")]
    OutputTooLarge { bytes: usize, max: usize },
    /// The output could not be turned into JSON (a cycle, a BigInt).
    #[error("transform returned a value that is not JSON: {message}")]
    InvalidOutput { message: String },
    /// The code is larger than `TRANSFORM_CODE_BYTES_MAX` or holds a NUL character.
    #[error("invalid code: {message}")]
    InvalidCode { message: String },
    /// A limit overridden with a value the sandbox cannot run with.
    #[error("invalid transformation limits: {message}")]
    InvalidLimits { message: String },
    /// The engine itself failed (a runtime could not be created). Not the code's fault.
    #[error("the JavaScript engine failed: {message}")]
    Engine { message: String },
}

impl TransformError {
    /// A stable snake_case code for this kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Syntax { .. } => "syntax_error",
            Self::MissingTransform => "missing_transform",
            Self::Thrown { .. } => "thrown",
            Self::Timeout { .. } => "timeout",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::StackOverflow { .. } => "stack_overflow",
            Self::WrongReturnType { .. } => "wrong_return_type",
            Self::TooManyEvents { .. } => "too_many_events",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::InvalidOutput { .. } => "invalid_output",
            Self::InvalidCode { .. } => "invalid_code",
            Self::InvalidLimits { .. } => "invalid_limits",
            Self::Engine { .. } => "engine",
        }
    }

    /// Whether the code itself is wrong (every event would fail the same way), as opposed to
    /// one event making it fail.
    pub fn is_compile_error(&self) -> bool {
        matches!(
            self,
            Self::Syntax { .. }
                | Self::MissingTransform
                | Self::InvalidCode { .. }
                | Self::InvalidLimits { .. }
        )
    }
}

/// `{"kind": "syntax_error", "message": "syntax error at line 2 …", "line": 2, "column": 5}`:
/// the kind, the full message, and the variant's position or stack when it has one.
impl Serialize for TransformError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        map.serialize_entry("message", &self.to_string())?;
        match self {
            Self::Syntax { line, column, .. } => {
                map.serialize_entry("line", line)?;
                map.serialize_entry("column", column)?;
            }
            Self::Thrown { stack, .. } if !stack.is_empty() => {
                map.serialize_entry("stack", stack)?;
            }
            _ => {}
        }
        map.end()
    }
}
