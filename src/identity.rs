//! Who this box is on a shared broker: the host name and the default MQTT client ids built
//! from it.
//!
//! A broker allows one connection per client id and drops the older one when a second arrives.
//! Boxes deployed from one config file would otherwise share every client id and kick each
//! other off forever, so the default ids carry the host name: `edgerelay-{hostname}-{name}`.
//!
//! The host name comes from, in order: the `EDGERELAY_HOSTNAME` environment variable (tests,
//! containers whose host name is random), the kernel (`/proc/sys/kernel/hostname`),
//! `/etc/hostname`, the `HOSTNAME` environment variable; `localhost` when none is set.

use std::sync::OnceLock;

/// Overrides the host name in default client ids.
pub const HOSTNAME_ENV: &str = "EDGERELAY_HOSTNAME";

/// Longest host name part of a client id. AWS IoT Core takes client ids of up to 128 bytes and
/// most brokers far more; 64 leaves room for the prefix and a destination name.
const MAX_HOSTNAME: usize = 64;

/// This box's host name, sanitized for client ids (read once per process).
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let from_file = |path: &str| std::fs::read_to_string(path).ok();
        let raw = [
            std::env::var(HOSTNAME_ENV).ok(),
            from_file("/proc/sys/kernel/hostname"),
            from_file("/etc/hostname"),
            std::env::var("HOSTNAME").ok(),
        ]
        .into_iter()
        .flatten()
        .map(|s| sanitize(&s))
        .find(|s| !s.is_empty());
        raw.unwrap_or_else(|| "localhost".into())
    })
}

/// Keeps what every broker accepts in a client id (ASCII letters, digits, `-` and `_`); any
/// other character becomes `-`, surrounding blanks are dropped, and the result is cut to
/// [`MAX_HOSTNAME`] characters.
pub fn sanitize(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_HOSTNAME)
        .collect()
}

/// The default client id of a destination, source or command connection named `name`.
pub fn default_client_id(name: &str) -> String {
    client_id_for(hostname(), name)
}

/// `edgerelay-{hostname}-{name}`, with `name` sanitized as the host name is.
pub fn client_id_for(hostname: &str, name: &str) -> String {
    format!("edgerelay-{hostname}-{}", sanitize(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_carry_the_host_name_in_characters_brokers_accept() {
        assert_eq!(client_id_for("box-7", "hub"), "edgerelay-box-7-hub");
        assert_eq!(sanitize(" gw.site.example\n"), "gw-site-example");
        assert_eq!(sanitize("caméra 1/a"), "cam-ra-1-a");
        assert_eq!(sanitize(&"x".repeat(300)).len(), MAX_HOSTNAME);
        assert_eq!(client_id_for("h", "out/1"), "edgerelay-h-out-1");
    }

    #[test]
    fn the_host_name_is_never_empty() {
        assert!(!hostname().is_empty());
        assert!(
            hostname()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
