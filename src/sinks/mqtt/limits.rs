//! What MQTT itself refuses in a PUBLISH, checked before a delivery is handed to the client.
//!
//! A broker that meets a malformed publish (U+0000 in the topic, a wildcard, a packet over its
//! limit) closes the connection; the sink would reconnect and send the same head again, for
//! ever, with every later delivery stuck behind it. So every delivery is checked here first, on
//! every MQTT-family destination, and one that can never be accepted is dead-lettered with the
//! reason instead (MQTT 3.1.1 §1.5.3, §3.3.2.1, §4.7.3 and §2.2.3).

/// Longest UTF-8 string MQTT can encode (a 16-bit length prefix).
pub const MAX_TOPIC_BYTES: usize = 65_535;
/// Largest packet MQTT's remaining-length field can describe, plus its fixed header (256 MiB).
pub const MAX_PACKET_BYTES: usize = 268_435_455 + 5;
/// Default `max_packet_size` of an `mqtt` destination: far above any camera event, below what
/// would hold a broker's memory hostage.
pub const DEFAULT_PACKET_BYTES: usize = 1024 * 1024;

/// Size on the wire of a PUBLISH with this topic and payload (as rumqttc computes it).
pub fn publish_packet_size(topic_len: usize, payload_len: usize, qos: u8) -> usize {
    let remaining = 2 + topic_len + payload_len + if qos > 0 { 2 } else { 0 };
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

/// Why a broker would refuse this publish, or `None` when it is well-formed and fits
/// `max_packet` bytes.
pub fn publish_problem(
    topic: &str,
    payload_len: usize,
    qos: u8,
    max_packet: usize,
) -> Option<String> {
    if topic.is_empty() {
        return Some("empty topic (MQTT requires at least one character)".into());
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Some(format!(
            "topic is {} bytes; MQTT allows {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    if let Some(at) = topic.find('\0') {
        return Some(format!("topic holds U+0000 at byte {at}; MQTT forbids it"));
    }
    if let Some(at) = topic.find(['+', '#']) {
        return Some(format!(
            "topic holds the wildcard {:?} at byte {at}; MQTT forbids wildcards in published topics",
            &topic[at..at + 1]
        ));
    }
    let size = publish_packet_size(topic.len(), payload_len, qos);
    if size > max_packet {
        return Some(format!(
            "packet is {size} bytes (payload {payload_len}, topic {}); this destination's max_packet_size is {max_packet}",
            topic.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_size_matches_rumqttc() {
        // rumqttc's own codec test: "hello/world", 265-byte payload, no packet id: 281 bytes.
        assert_eq!(publish_packet_size(11, 265, 0), 281);
        let mut p = rumqttc::Publish::new("a/b", rumqttc::QoS::AtLeastOnce, vec![0; 20_000]);
        p.pkid = 1;
        assert_eq!(publish_packet_size(3, 20_000, 1), p.size());
        let p = rumqttc::Publish::new("a/b", rumqttc::QoS::AtMostOnce, vec![0; 3_000_000]);
        assert_eq!(publish_packet_size(3, 3_000_000, 0), p.size());
    }

    #[test]
    fn refuses_what_a_broker_would_refuse() {
        let ok = |t: &str| publish_problem(t, 10, 1, 1 << 20);
        assert_eq!(ok("axis/X/event/a%2Fb"), None);
        assert!(ok("").unwrap().contains("empty"));
        assert!(ok("a/\0/b").unwrap().contains("U+0000 at byte 2"));
        assert!(ok("a/+/b").unwrap().contains("wildcard \"+\""));
        assert!(ok("a/#").unwrap().contains("wildcard \"#\""));
        assert!(
            ok(&"t".repeat(MAX_TOPIC_BYTES + 1))
                .unwrap()
                .contains("65535")
        );
        assert_eq!(ok(&"t".repeat(MAX_TOPIC_BYTES)), None);
        let max = publish_packet_size(1, 1000, 1);
        assert_eq!(publish_problem("t", 1000, 1, max), None);
        assert!(
            publish_problem("t", 1001, 1, max)
                .unwrap()
                .contains("max_packet_size")
        );
    }
}
