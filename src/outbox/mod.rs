//! The durable per-destination FIFO between rules and sinks.
