//! The config file: typed structs ([`types`]), loading with `${VAR}` and `*_file` secrets, and
//! validation that reports every problem as `file:line: key: what is wrong`.
//!
//! [`load`] reads a file; [`load_str`] / [`load_str_with`] take text (tests, injected env).
//! [`units`] parses the sizes, durations and rates that the runtime uses too; [`AliasedDuration`]
//! reads a duration key that also has a deprecated whole-seconds spelling (`keep_alive_s`);
//! [`Secret`] holds passwords and keys so that no log or error shows them.

mod durations;
mod error;
mod expand;
mod load;
mod locate;
pub mod secret;
pub mod types;
pub mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use durations::AliasedDuration;
pub use error::{ConfigError, ConfigErrors, Problem};
pub use expand::{EnvLookup, expand_str};
pub use load::{Loaded, check, load, load_str, load_str_with, load_with_warnings, locate_warnings};
pub use locate::{KeyPath, Seg};
pub use secret::{Secret, redact_url};
pub use types::*;
pub use validate::{validate, warnings};
