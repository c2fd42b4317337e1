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
//!
//! The relay id names this relay's deliveries, so consumers can drop the duplicates that
//! at-least-once delivery resends: 16 hex digits (64 random bits), created on the first start
//! and kept in `data_dir/relay-id` (written to a temp file, synced, renamed, directory
//! synced: a crash leaves the old id or the new one, never half of one). A delivery's
//! `event_id` is `{relay id}-{outbox sequence as 16 hex digits}`: the sequence a delivery has
//! in its destination's outbox survives every resend and restart, so the id does too. Fixed
//! width, so ids of one relay sort in outbox order. Unique per destination (each outbox counts
//! on its own), not across destinations.

use std::io::Write as _;
use std::path::Path;
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

/// The file in `data_dir` that holds the relay id.
pub const RELAY_ID_FILE: &str = "relay-id";

/// This relay's id, from `data_dir/relay-id`; created there on the first start. A file that
/// does not hold an id (edited by hand) is replaced by a new one, with a warning: resends then
/// carry new ids, which is what a fresh relay would do.
pub fn relay_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(RELAY_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if is_relay_id(text.trim()) => return Ok(text.trim().to_string()),
        Ok(text) => {
            tracing::warn!(file = %path.display(), content = %text.trim(), "not a relay id (16 hex digits): a new one replaces it, and event ids of resent deliveries change once");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let tmp = data_dir.join(format!("{RELAY_ID_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(id)
}

fn is_relay_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `event_id` of the delivery at outbox sequence `seq` of a relay with id `relay_id`.
pub fn event_id(relay_id: &str, seq: u64) -> String {
    format!("{relay_id}-{seq:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = relay_id(dir.path()).unwrap();
        assert!(is_relay_id(&id), "{id}");
        assert_eq!(
            relay_id(dir.path()).unwrap(),
            id,
            "read back, not made anew"
        );
        assert!(!dir.path().join("relay-id.tmp").exists());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(relay_id(other.path()).unwrap(), id, "random per data_dir");
        std::fs::write(dir.path().join(RELAY_ID_FILE), "garbage").unwrap();
        let new = relay_id(dir.path()).unwrap();
        assert!(is_relay_id(&new) && new != id);
    }

    #[test]
    fn event_ids_are_fixed_width_and_sort_in_outbox_order() {
        assert_eq!(
            event_id("00ff00ff00ff00ff", 10),
            "00ff00ff00ff00ff-000000000000000a"
        );
        assert!(event_id("a", 9) < event_id("a", 10));
    }

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
