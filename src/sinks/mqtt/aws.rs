//! AWS IoT Core as an MQTT destination: one thing, mutual TLS on 8883, or on 443 with ALPN
//! `x-amzn-mqtt-ca`.
//!
//! Limits (AWS IoT Core quotas, "Message broker and protocol limits"): a topic is at most
//! 256 bytes of UTF-8 and has at most 7 forward slashes, not counting the 3 of the Basic
//! Ingest prefix `$aws/rules/{rule}/`; a payload is at most 128 KB; QoS 0 or 1. Such a
//! message can never be delivered, so the sink moves it to the dead-letter file.

use crate::config::{AwsIotCoreDestination, BufferConfig, MqttDestination};

/// Topic length limit, bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Slash limit of a topic (Basic Ingest prefix excluded).
pub const MAX_SLASHES: usize = 7;
/// Payload limit, bytes.
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// In-flight unacknowledged publishes the broker takes from one client ("Maximum inbound
/// unacknowledged messages": past it, nothing more is accepted until it acknowledges one):
/// the largest and default `inflight`.
pub const MAX_INFLIGHT: u16 = 100;
/// ALPN protocol that lets MQTT with client certificates use port 443.
pub const ALPN_443: &str = "x-amzn-mqtt-ca";

/// Slashes AWS counts in `topic`: the `$aws/rules/{rule}/` prefix is not counted.
pub fn counted_slashes(topic: &str) -> usize {
    let all = topic.matches('/').count();
    let basic_ingest = topic
        .get(..11)
        .is_some_and(|p| p.eq_ignore_ascii_case("$aws/rules/"))
        && topic[11..].contains('/');
    if basic_ingest { all - 3 } else { all }
}

/// Why AWS IoT Core would refuse `topic`, if it would.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "topic is {} bytes; AWS IoT Core allows {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    let slashes = counted_slashes(topic);
    if slashes > MAX_SLASHES {
        return Err(format!(
            "topic has {slashes} slashes; AWS IoT Core allows {MAX_SLASHES}"
        ));
    }
    Ok(())
}

/// Why AWS IoT Core would refuse a payload of `len` bytes, if it would.
pub fn check_payload(len: usize) -> Result<(), String> {
    if len > MAX_PAYLOAD {
        return Err(format!(
            "payload is {len} bytes; AWS IoT Core allows {MAX_PAYLOAD}"
        ));
    }
    Ok(())
}

/// Connection settings in generic form (validated by `check` first).
pub fn setup(a: &AwsIotCoreDestination) -> Result<MqttDestination, String> {
    let endpoint = a.endpoint.clone().ok_or("endpoint is required")?;
    let thing = a.thing_name.clone().ok_or("thing_name is required")?;
    Ok(MqttDestination {
        url: format!("mqtts://{endpoint}:{}", a.port),
        client_id: Some(thing),
        username: None,
        password: None,
        password_file: None,
        keep_alive: a.keep_alive.clone(),
        keep_alive_s: a.keep_alive_s,
        connect_timeout: a.connect_timeout.clone(),
        connect_timeout_s: a.connect_timeout_s,
        clean_session: a.clean_session,
        last_will: a.last_will.clone(),
        connect_message: a.connect_message.clone(),
        inflight: a.inflight,
        buffer: BufferConfig::default(),
        ca_file: a.ca_file.clone(),
        cert_file: a.cert_file.clone(),
        key_file: a.key_file.clone(),
        alpn: (a.port == 443).then(|| vec![ALPN_443.to_string()]),
        tls_insecure_skip_verify: false,
        home_assistant: false,
        home_assistant_prefix: String::new(),
        max_packet_size: String::new(),
        availability_topic: a.availability_topic.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_are_counted_as_aws_does() {
        assert_eq!(counted_slashes("a/b/c/d/e/f/g/h"), 7);
        assert!(check_topic("a/b/c/d/e/f/g/h").is_ok());
        let e = check_topic("a/b/c/d/e/f/g/h/i").unwrap_err();
        assert!(e.contains("8 slashes"), "{e}");
        // Basic Ingest: the 3 slashes of `$aws/rules/name/` are free.
        assert_eq!(counted_slashes("$aws/rules/ingest/a/b/c/d/e/f/g/h"), 7);
        assert_eq!(counted_slashes("$aws/rules/ingest"), 2);
        // The camera default topic is over the limit.
        assert!(
            check_topic(
                "axis/ACCC8E012345/event/tns:onvif/Device/tns:axis/IO/VirtualInput/$source/port/1"
            )
            .is_err()
        );
    }

    #[test]
    fn topic_and_payload_sizes_are_limited() {
        assert!(check_topic(&"x".repeat(256)).is_ok());
        assert!(
            check_topic(&"x".repeat(257))
                .unwrap_err()
                .contains("257 bytes")
        );
        assert!(
            check_topic(&"é".repeat(129)).is_err(),
            "bytes, not characters"
        );
        assert!(check_payload(128 * 1024).is_ok());
        assert!(check_payload(128 * 1024 + 1).is_err());
    }

    #[test]
    fn port_443_offers_the_aws_alpn() {
        let mut a: AwsIotCoreDestination =
            toml::from_str("endpoint = \"e.iot.eu-north-1.amazonaws.com\"\nthing_name = \"t\"")
                .unwrap();
        let m = setup(&a).unwrap();
        assert_eq!(m.url, "mqtts://e.iot.eu-north-1.amazonaws.com:8883");
        assert_eq!(m.alpn, None);
        a.port = 443;
        assert_eq!(setup(&a).unwrap().alpn, Some(vec!["x-amzn-mqtt-ca".into()]));
    }
}
