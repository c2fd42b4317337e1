//! What a destination's failure means for the delivery: retry it later, never retry it (dead
//! letter), or stop (the config is wrong). Every sink maps its errors to one of these, and the
//! drain loops act on the class alone.

/// The retry class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The destination is unavailable or busy (5xx, 408, 429, timeouts, connections): try the
    /// same thing again after back-off.
    Retry,
    /// The destination will never take this item (4xx): dead-letter it and go on.
    Permanent,
}

/// A destination failure with its class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What to do about it.
    pub class: ErrorClass,
    /// What happened, in words for logs and dead letters.
    pub message: String,
}

impl SinkError {
    /// A failure worth retrying.
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Retry,
            message: message.into(),
        }
    }

    /// A failure no retry can mend.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    /// A failure answered with HTTP `status`: 4xx is permanent for that request except 408
    /// (request timeout) and 429 (too many requests); everything else is retried.
    pub fn from_http_status(status: u16, message: impl Into<String>) -> Self {
        let class = match status {
            408 | 429 => ErrorClass::Retry,
            400..=499 => ErrorClass::Permanent,
            _ => ErrorClass::Retry,
        };
        Self {
            class,
            message: message.into(),
        }
    }

    /// True when retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.class == ErrorClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_classes() {
        for (status, class) in [
            (400, ErrorClass::Permanent),
            (403, ErrorClass::Permanent),
            (404, ErrorClass::Permanent),
            (413, ErrorClass::Permanent),
            (408, ErrorClass::Retry),
            (429, ErrorClass::Retry),
            (500, ErrorClass::Retry),
            (503, ErrorClass::Retry),
            (301, ErrorClass::Retry),
        ] {
            assert_eq!(
                SinkError::from_http_status(status, "x").class,
                class,
                "{status}"
            );
        }
    }
}
