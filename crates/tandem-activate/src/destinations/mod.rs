//! The destination types, one folder each with fixed file roles (`mod.rs` doc + modules +
//! `pub static TYPE`, `config.rs`, `request.rs`, `service.rs`, `tests.rs`). Register a new one
//! in [`crate::registry::REGISTRY`].

pub mod files;
pub mod nats;
pub mod postgres;
pub mod webhook;
