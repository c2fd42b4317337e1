//! Wiring: sources → rules → outbox → sinks, for `edgerelay run`.
