//! Destinations that drain the outbox.
