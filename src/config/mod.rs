//! The config file: typed structs ([`types`]), loading with `${VAR}` and `*_file` secrets, and
//! validation that reports every problem as `file:line: key: what is wrong`.

pub mod types;
pub use types::*;
