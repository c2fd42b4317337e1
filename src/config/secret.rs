//! Secrets in the config (passwords, keys, SAS tokens, connection strings) and URLs that may
//! hold one: what reaches a log, an error or `check`'s output never shows them.
//!
//! A [`Secret`] reads from TOML as a plain string and prints as `<redacted>` with `{}` and
//! `{:?}`; the value is reached only through [`Secret::expose`], at the one place that sends it.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the connection or signature that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `Option<Secret>::as_deref()` gives the `Option<&str>` that client libraries take; the
/// dereferenced `str` prints in full, so it goes to a connection, never to a format string.
impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `url` with the password of its user info and any `sig=` query value (SAS) replaced by
/// `***`; works on text that is not a valid URL too, since that is when errors quote it.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    let mut from = 0;
    while let Some(i) = out[from..].find("sig=").map(|i| from + i) {
        let value = i + 4;
        if i > 0 && !matches!(out.as_bytes()[i - 1], b'?' | b'&') {
            from = value;
            continue;
        }
        let end = out[value..]
            .find(['&', '#'])
            .map_or(out.len(), |e| value + e);
        out.replace_range(value..end, "***");
        from = value + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_redacted_and_read_as_strings() {
        #[derive(Debug, Deserialize)]
        struct T {
            password: Option<Secret>,
        }
        let t: T = toml::from_str("password = \"hunter2\"").unwrap();
        assert_eq!(format!("{t:?}"), "T { password: Some(<redacted>) }");
        let p = t.password.unwrap();
        assert_eq!(p.to_string(), REDACTED);
        assert_eq!(p.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_passwords_and_signatures() {
        assert_eq!(
            redact_url("mqtt://user:hunter2@broker:1883"),
            "mqtt://user:***@broker:1883"
        );
        assert_eq!(redact_url("mqtt://user@broker"), "mqtt://user@broker");
        assert_eq!(redact_url("gopher://u:p@w@h/x?y"), "gopher://u:***@h/x?y");
        assert_eq!(
            redact_url("https://a.blob.core.windows.net/c?sv=1&sig=abc%2F&se=2"),
            "https://a.blob.core.windows.net/c?sv=1&sig=***&se=2"
        );
        assert_eq!(redact_url("http://h/?design=1"), "http://h/?design=1");
    }
}
