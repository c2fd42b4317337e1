//! Config problems, each printed as `FILE:LINE: KEY: what is wrong` (one line per problem).

use std::fmt;

/// One problem in a config file, located by file, line and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the user named it (or a label for text that has no file).
    pub file: String,
    /// 1-based line of the key, when it could be located.
    pub line: Option<usize>,
    /// Key path like `rule[1].to` or `destination.cloud.url`; empty for the whole file.
    pub key: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors {
    /// The problems, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The number of problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when there are no problems.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Iterates the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// A problem found by a pass over the typed config, before it is given a file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a key path.
    pub path: crate::config::locate::KeyPath,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: crate::config::locate::KeyPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}
