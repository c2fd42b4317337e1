//! Destinations that drain the outbox.

pub mod mqtt;
pub mod object_store;
