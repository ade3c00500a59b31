//! One QuickJS runtime holding one compiled transformation.
//!
//! # Sandbox
//! The context gets only ECMAScript's own built-ins (`Date`, `RegExp`, `JSON`, `Proxy`, maps and
//! sets, typed arrays, `Promise`, `WeakRef`): not QuickJS's `std`/`os` modules, no module
//! loader (so no `import`/`require`), no `fetch`, timers, `performance`, `atob` or
//! `queueMicrotask`. Nothing in it reaches the network, the file system or the clock beyond
//! `Date`. The runtime has a memory limit, a stack limit and an interrupt handler that ends the
//! run once the event's CPU-time budget is spent (an uncatchable error: `try` cannot swallow it).
//!
//! # Isolation between events
//! Making a fresh context per event costs ~0.5 ms, a thousand times the work of a typical
//! transformation, so one context serves every event, and two measures keep one event from
//! changing what the next one computes:
//! 1. Before the user's code is compiled, `lockdown.js` deep-freezes the global object and every
//!    built-in (prototypes included): `Array.prototype.x = 1` or `globalThis.x = 1` throws (the
//!    code runs in strict mode).
//! 2. The user's code is compiled as the body of a function (the *factory*) returning
//!    `transform`, and the factory is called for every event: its top-level `let`, `var` and
//!    `function` declarations are fresh each time, so a counter or cache declared there starts
//!    over. The code is first checked to be a complete script on its own, so it cannot close
//!    the factory's braces and declare something outside it.
//!
//! The guarantee: the output for an event depends only on the event, the context and the code
//! (and on `Date` and `Math.random`, the only non-deterministic built-ins). What remains shared
//! (the `Symbol.for` registry, `WeakRef` targets) cannot carry data from one event into another
//! event's output.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rquickjs::context::intrinsic;
use rquickjs::{qjs, Context, Ctx, Function, Persistent, Runtime, Type, Value};

use crate::error::TransformError;
use crate::limits::TransformLimits;

/// ECMAScript's own built-ins, and nothing of QuickJS's host extras (`performance`,
/// `DOMException`).
type PureEcmaScript = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::WeakRef,
);

/// The name errors and stack frames give the user's code.
const FILE_NAME: &str = "transform.js";
/// The factory wrapping the user's code: its own line, so the code keeps its line numbers plus
/// one, which are taken back off in stacks and syntax errors.
const FACTORY_PREFIX: &str = "(function () { \"use strict\";\n";
const FACTORY_SUFFIX: &str =
    "\n;return typeof transform === \"function\" ? transform : undefined;\n})";
/// Lines the prefix adds before the user's code.
const FACTORY_PREFIX_LINES: u32 = 1;

/// The CPU-time budget of the run in progress, shared with the interrupt handler.
struct Deadline {
    /// Thread CPU time (ns) past which the handler interrupts; `u64::MAX` when disarmed.
    at_ns: AtomicU64,
    /// Set by the handler when it interrupted the run.
    fired: AtomicBool,
}

impl Deadline {
    fn arm(&self, cpu_ms: u64) {
        self.fired.store(false, Ordering::Relaxed);
        let at = thread_cpu_ns().saturating_add(cpu_ms.saturating_mul(1_000_000));
        self.at_ns.store(at, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.at_ns.store(u64::MAX, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        let at = self.at_ns.load(Ordering::Relaxed);
        at != u64::MAX && thread_cpu_ns() >= at
    }
}

/// CPU time consumed by the calling thread, in nanoseconds. The interrupt handler runs on the
/// thread executing the JavaScript, so this measures the run itself, not time spent preempted.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported
    // on Linux and macOS.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if result != 0 {
        return 0;
    }
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// A runtime with the user's code compiled in it, used by one thread at a time.
pub(crate) struct Sandbox {
    // Fields drop in order: the saved function must go before its context and runtime.
    factory: Persistent<Function<'static>>,
    context: Context,
    runtime: Runtime,
    deadline: Arc<Deadline>,
    limits: TransformLimits,
}

// SAFETY: with rquickjs's `parallel` feature `Runtime` and `Context` are `Send`; every use of
// them takes the runtime's lock. `Persistent` is not `Send` only because it holds a raw pointer
// identifying its runtime — the one this struct owns. The sandbox is owned by one thread at a
// time (moved in and out of the pool) and its JavaScript values are only touched inside
// `context.with`, under that lock.
unsafe impl Send for Sandbox {}

/// How one run ended, besides its result: whether the sandbox may serve another event.
pub(crate) struct RunOutcome {
    pub result: Result<Vec<serde_json::Value>, TransformError>,
    /// False after a timeout, out of memory or engine failure: the runtime may hold a
    /// half-finished state or garbage near its limit, so it is dropped rather than reused.
    pub reusable: bool,
}

impl Sandbox {
    /// A fresh runtime: lockdown, the code checked and compiled, its top level run once to find
    /// `transform`.
    pub(crate) fn new(code: &str, limits: &TransformLimits) -> Result<Sandbox, TransformError> {
        let engine = |error: rquickjs::Error| TransformError::Engine {
            message: error.to_string(),
        };
        let runtime = Runtime::new().map_err(engine)?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(limits.stack_bytes);
        let deadline = Arc::new(Deadline {
            at_ns: AtomicU64::new(u64::MAX),
            fired: AtomicBool::new(false),
        });
        let handler_deadline = Arc::clone(&deadline);
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let expired = handler_deadline.expired();
            if expired {
                handler_deadline.fired.store(true, Ordering::Relaxed);
            }
            expired
        })));
        let context = Context::custom::<PureEcmaScript>(&runtime).map_err(engine)?;

        let factory = context.with(|ctx| -> Result<_, TransformError> {
            ctx.eval::<(), _>(include_str!("lockdown.js"))
                .map_err(|error| TransformError::Engine {
                    message: format!("lockdown: {}", describe_rquickjs_error(&ctx, error)),
                })?;
            check_syntax(&ctx, code)?;
            let wrapped = format!("{FACTORY_PREFIX}{code}{FACTORY_SUFFIX}");
            let mut options = rquickjs::context::EvalOptions::default();
            options.global = true;
            options.strict = true;
            options.filename = Some(FILE_NAME.to_string());
            let factory: Function = ctx
                .eval_with_options(wrapped, options)
                .map_err(|error| to_transform_error(&ctx, error, &deadline, limits))?;
            // Only the user's top level counts against the CPU budget, not the lockdown.
            deadline.arm(limits.cpu_ms);
            let transform = factory
                .call::<_, Value>(())
                .map_err(|error| to_transform_error(&ctx, error, &deadline, limits));
            deadline.disarm();
            let transform = transform?;
            if !transform.is_function() {
                return Err(TransformError::MissingTransform);
            }
            Ok(Persistent::save(&ctx, factory))
        });
        Ok(Sandbox {
            factory: factory?,
            context,
            runtime,
            deadline,
            limits: limits.clone(),
        })
    }

    /// Runs `transform` on one event (`event_json` and `context_json` are JSON texts).
    pub(crate) fn run(&self, event_json: &str, context_json: &str) -> RunOutcome {
        let limits = &self.limits;
        let deadline = &self.deadline;
        deadline.arm(limits.cpu_ms);
        let result = self.context.with(|ctx| {
            let attempt = || -> rquickjs::Result<Result<Vec<serde_json::Value>, TransformError>> {
                let factory = self.factory.clone().restore(&ctx)?;
                // The top level again: fresh declarations for this event.
                let transform: Value = factory.call(())?;
                let Some(transform) = transform.into_function() else {
                    return Ok(Err(TransformError::MissingTransform));
                };
                let event = ctx.json_parse(event_json)?;
                let context = ctx.json_parse(context_json)?;
                let returned: Value = transform.call((event, context))?;
                Ok(collect_output(&ctx, returned, deadline, limits))
            };
            attempt().unwrap_or_else(|error| Err(to_transform_error(&ctx, error, deadline, limits)))
        });
        // Promise callbacks the event queued run now, within its budget, so they cannot pile
        // up; they cannot change the output, which is already taken.
        let mut reusable = self.drain_jobs();
        deadline.disarm();
        if matches!(
            result,
            Err(TransformError::Timeout { .. }
                | TransformError::OutOfMemory { .. }
                | TransformError::Engine { .. })
        ) {
            reusable = false;
        }
        RunOutcome { result, reusable }
    }

    /// Runs pending jobs until none is left or the budget is spent (then the sandbox is not
    /// reusable: jobs would remain).
    fn drain_jobs(&self) -> bool {
        while self.runtime.is_job_pending() {
            if self.deadline.expired() {
                return false;
            }
            // A failing job only concerns its own promise.
            let _ = self.runtime.execute_pending_job();
        }
        true
    }
}

/// Parses the code alone, as a strict script, without running it: syntax errors get the user's
/// own line and column, and a complete script cannot escape the factory it is wrapped in.
fn check_syntax(ctx: &Ctx, code: &str) -> Result<(), TransformError> {
    let source = CString::new(code).map_err(|_| TransformError::InvalidCode {
        message: "the code contains a NUL character".to_string(),
    })?;
    let file_name = CString::new(FILE_NAME).expect("file name has no NUL");
    let flags =
        qjs::JS_EVAL_TYPE_GLOBAL | qjs::JS_EVAL_FLAG_STRICT | qjs::JS_EVAL_FLAG_COMPILE_ONLY;
    // SAFETY: `ctx` is a live context whose runtime lock is held (we are inside `with`); the
    // source and file name are NUL-terminated and outlive the call; the returned value (compiled
    // bytecode or the exception marker) is freed or its exception taken below.
    let compiled = unsafe {
        qjs::JS_Eval(
            ctx.as_raw().as_ptr(),
            source.as_ptr(),
            code.len() as _,
            file_name.as_ptr(),
            flags as _,
        )
    };
    // SAFETY: as above; `compiled` is owned by us and freed exactly once.
    let failed = unsafe { qjs::JS_IsException(compiled) };
    if !failed {
        unsafe { qjs::JS_FreeValue(ctx.as_raw().as_ptr(), compiled) };
        return Ok(());
    }
    let exception = ctx.catch();
    let (name, message, stack) = error_parts(&exception);
    if name.as_deref() == Some("InternalError") && message == "out of memory" {
        return Err(TransformError::InvalidCode {
            message: "the code is too large to compile within the memory limit".to_string(),
        });
    }
    let (line, column) = position_in(&stack, 0).unwrap_or((1, 1));
    // QuickJS names the end of the input as an empty token.
    let message = match message.strip_suffix(": ''") {
        Some(start) => format!("{start}: the end of the code"),
        None => message,
    };
    Err(TransformError::Syntax {
        message,
        line,
        column,
    })
}

/// Turns what `transform` returned into output events, checking type and limits.
fn collect_output<'js>(
    ctx: &Ctx<'js>,
    returned: Value<'js>,
    deadline: &Deadline,
    limits: &TransformLimits,
) -> Result<Vec<serde_json::Value>, TransformError> {
    let wrong = |found: &str| TransformError::WrongReturnType {
        found: found.to_string(),
    };
    match returned.type_of() {
        Type::Undefined | Type::Null | Type::Uninitialized => return Ok(Vec::new()),
        Type::Promise => return Err(wrong("a Promise (transform must be synchronous)")),
        Type::Function | Type::Constructor => return Err(wrong("a function")),
        Type::Bool => return Err(wrong("a boolean")),
        Type::Int | Type::Float => return Err(wrong("a number")),
        Type::String => return Err(wrong("a string")),
        Type::Symbol => return Err(wrong("a symbol")),
        Type::BigInt => return Err(wrong("a bigint")),
        Type::Array | Type::Object | Type::Exception | Type::Proxy => {}
        Type::Module | Type::Unknown => return Err(wrong("an unknown value")),
    }
    if let Some(array) = returned.as_array() {
        // Before serialising a huge array.
        if array.len() > limits.output_events_max {
            return Err(TransformError::TooManyEvents {
                count: array.len(),
                max: limits.output_events_max,
            });
        }
    }
    // A cycle or a BigInt makes JSON.stringify throw: the output is not JSON.
    let invalid = |error| match to_transform_error(ctx, error, deadline, limits) {
        TransformError::Thrown { message, .. } => TransformError::InvalidOutput { message },
        other => other,
    };
    let json = match ctx.json_stringify(returned) {
        Ok(Some(json)) => json.to_string().map_err(invalid)?,
        Ok(None) => return Err(wrong("a value with no JSON form")),
        Err(error) => return Err(invalid(error)),
    };
    if json.len() > limits.output_bytes_max {
        return Err(TransformError::OutputTooLarge {
            bytes: json.len(),
            max: limits.output_bytes_max,
        });
    }
    let parsed: serde_json::Value =
        serde_json::from_str(&json).map_err(|error| TransformError::InvalidOutput {
            message: error.to_string(),
        })?;
    let events = match parsed {
        serde_json::Value::Object(_) => vec![parsed],
        serde_json::Value::Array(items) => items,
        other => {
            return Err(wrong(&format!(
                "an object whose JSON form is {}",
                json_type_name(&other)
            )))
        }
    };
    if events.len() > limits.output_events_max {
        return Err(TransformError::TooManyEvents {
            count: events.len(),
            max: limits.output_events_max,
        });
    }
    if let Some((index, item)) = events
        .iter()
        .enumerate()
        .find(|(_, item)| !item.is_object())
    {
        return Err(wrong(&format!(
            "an array holding {} at index {index}",
            json_type_name(item)
        )));
    }
    Ok(events)
}

fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Classifies a failed call: the interrupt (timeout), out of memory, stack overflow, or what
/// the code threw.
fn to_transform_error(
    ctx: &Ctx,
    error: rquickjs::Error,
    deadline: &Deadline,
    limits: &TransformLimits,
) -> TransformError {
    if deadline.fired.load(Ordering::Relaxed) {
        return TransformError::Timeout {
            cpu_ms: limits.cpu_ms,
        };
    }
    let out_of_memory = TransformError::OutOfMemory {
        memory_bytes: limits.memory_bytes,
    };
    match error {
        rquickjs::Error::Allocation => out_of_memory,
        rquickjs::Error::Exception => {
            let exception = ctx.catch();
            if exception.type_of() == Type::Uninitialized {
                // QuickJS could not even allocate the error object.
                return out_of_memory;
            }
            let (name, message, stack) = error_parts(&exception);
            match (name.as_deref(), message.as_str()) {
                (Some("InternalError"), "out of memory") => out_of_memory,
                (Some("InternalError"), "interrupted") => TransformError::Timeout {
                    cpu_ms: limits.cpu_ms,
                },
                (Some("RangeError"), "Maximum call stack size exceeded") => {
                    TransformError::StackOverflow {
                        stack_bytes: limits.stack_bytes,
                    }
                }
                (Some(name), _) => TransformError::Thrown {
                    message: if message.is_empty() {
                        name.to_string()
                    } else {
                        format!("{name}: {message}")
                    },
                    stack: user_stack(&stack),
                },
                (None, _) => TransformError::Thrown {
                    message,
                    stack: String::new(),
                },
            }
        }
        other => TransformError::Engine {
            message: describe_rquickjs_error(ctx, other),
        },
    }
}

fn describe_rquickjs_error(ctx: &Ctx, error: rquickjs::Error) -> String {
    if let rquickjs::Error::Exception = error {
        let (name, message, _) = error_parts(&ctx.catch());
        return match name {
            Some(name) => format!("{name}: {message}"),
            None => message,
        };
    }
    error.to_string()
}

/// `(name, message, stack)` of a thrown Error; `(None, text, "")` for any other thrown value.
fn error_parts(exception: &Value) -> (Option<String>, String, String) {
    if let Some(object) = exception.as_object() {
        let name: Option<String> = object.get("name").ok();
        let message: Option<String> = object.get("message").ok();
        let stack: Option<String> = object.get("stack").ok();
        if let (Some(name), Some(message)) = (name, message) {
            return (Some(name), message, stack.unwrap_or_default());
        }
    }
    (None, thrown_value_text(exception), String::new())
}

/// A thrown non-Error value as text: strings as they are, the rest as JSON when possible.
fn thrown_value_text(value: &Value) -> String {
    if let Some(text) = value.as_string().and_then(|s| s.to_string().ok()) {
        return text;
    }
    if let Some(number) = value.as_number() {
        return number.to_string();
    }
    let ctx = value.ctx();
    match ctx.json_stringify(value.clone()) {
        Ok(Some(json)) => json.to_string().unwrap_or_default(),
        _ => {
            let _ = ctx.catch();
            value.type_name().to_string()
        }
    }
}

/// The stack with the user's line numbers (the factory's prefix line taken off). A throw from
/// the top level shows the factory as an `<anonymous>` frame: that is the user's top level.
fn user_stack(stack: &str) -> String {
    let mut lines = Vec::new();
    for line in stack.lines() {
        lines.push(shift_position(line));
    }
    lines.join("\n")
}

/// Rewrites `transform.js:L:C` in one stack line to the user's line numbering.
fn shift_position(line: &str) -> String {
    let marker = format!("{FILE_NAME}:");
    let Some(start) = line.find(&marker) else {
        return line.to_string();
    };
    let digits_start = start + marker.len();
    let digits_len = line[digits_start..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(line.len() - digits_start);
    let Ok(number) = line[digits_start..digits_start + digits_len].parse::<u32>() else {
        return line.to_string();
    };
    let user_line = number.saturating_sub(FACTORY_PREFIX_LINES).max(1);
    format!(
        "{}{user_line}{}",
        &line[..digits_start],
        &line[digits_start + digits_len..]
    )
}

/// The first `transform.js:L:C` position of a stack, minus `shift` lines.
fn position_in(stack: &str, shift: u32) -> Option<(u32, u32)> {
    let marker = format!("{FILE_NAME}:");
    let start = stack.find(&marker)? + marker.len();
    let mut parts = stack[start..].splitn(3, |c: char| !c.is_ascii_digit());
    let line: u32 = parts.next()?.parse().ok()?;
    let column: u32 = parts.next()?.parse().ok()?;
    Some((line.saturating_sub(shift).max(1), column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_positions_are_shifted_to_user_lines() {
        assert_eq!(
            shift_position("    at transform (transform.js:4:9)"),
            "    at transform (transform.js:3:9)"
        );
        assert_eq!(shift_position("    at <anonymous>"), "    at <anonymous>");
        assert_eq!(position_in("    at transform.js:7:12\n", 0), Some((7, 12)));
        assert_eq!(position_in("    at transform.js:7:12\n", 1), Some((6, 12)));
        assert_eq!(position_in("no position", 0), None);
    }
}
