//! A compiled connection: which events of a workspace go to one destination and how they are
//! shaped on the way (filters, field mappings, the optional transformation).

use std::sync::Arc;

/// The transformation step of a connection (JavaScript run sandboxed by `tandem-transform`).
/// Called once per event after the mappings; may modify the event, drop it (`Ok(vec![])`) or fan
/// it out (several outputs). `Err(message)` (a throw, a CPU/memory limit) sends the original
/// event to the DLQ with that message. Implementations are shared by the lanes of a connection,
/// hence `Send + Sync`.
pub trait Transform: Send + Sync + 'static {
    fn run(&self, event: &serde_json::Value) -> Result<Vec<serde_json::Value>, String>;
}

/// Compiles a connection's transformation source into a [`Transform`] (the server passes
/// `tandem-transform`'s compiler in; `Err` = the code does not compile, with the message).
pub type TransformCompiler = fn(code: &str) -> Result<Arc<dyn Transform>, String>;
