//! Destinations that drain the outbox.

pub mod mqtt;
