//! Destinations that drain the outbox.

pub mod error;
pub mod mqtt;
pub mod object_store;
