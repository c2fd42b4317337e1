//! Per-kind shaping of a delivery just before it is published: each cloud's topic scheme and
//! limits. A delivery a cloud can never accept is rejected (the sink dead-letters it); one that
//! means nothing there is skipped (acknowledged without sending).

use crate::delivery::Delivery;

use super::{aws, azure};

/// Which broker rules apply.
#[derive(Debug, Clone)]
pub enum Flavor {
    /// Any MQTT broker: published as the rule made it.
    Plain,
    /// Azure IoT Hub: fixed telemetry topic, rule topic and event id as properties, no retain,
    /// QoS ≤ 1.
    Azure {
        /// Device id of the telemetry topic.
        device_id: String,
    },
    /// AWS IoT Core: topic and payload limits, QoS ≤ 1.
    Aws,
}

/// What to do with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Publish this.
    Send(Delivery),
    /// Nothing to send here (e.g. clearing a retained message on a broker without retain).
    Skip,
    /// Can never be delivered: dead letter, with the reason.
    Reject(String),
}

impl Flavor {
    /// Shapes `d`, whose `event_id` is given ([`crate::identity::event_id`]), for this broker.
    pub fn prepare(&self, mut d: Delivery, event_id: &str) -> Prepared {
        match self {
            Flavor::Plain => Prepared::Send(d),
            Flavor::Azure { device_id } => {
                if d.retain && d.payload.is_empty() {
                    return Prepared::Skip;
                }
                // IoT Hub counts the properties into the message size; the property bag is a
                // close upper bound of what they take.
                let json = serde_json::from_slice::<serde::de::IgnoredAny>(&d.payload).is_ok();
                let topic = azure::event_topic(device_id, &d.topic, json, event_id);
                let bag = topic.len() - format!("devices/{device_id}/messages/events/").len();
                if d.payload.len() + bag > azure::MAX_PAYLOAD {
                    return Prepared::Reject(format!(
                        "message is {} bytes (payload {} + properties {bag}); Azure IoT Hub allows {}",
                        d.payload.len() + bag,
                        d.payload.len(),
                        azure::MAX_PAYLOAD
                    ));
                }
                d.topic = topic;
                d.retain = false;
                d.qos = d.qos.min(1);
                Prepared::Send(d)
            }
            Flavor::Aws => {
                if let Err(e) = aws::check_topic(&d.topic) {
                    return Prepared::Reject(e);
                }
                if let Err(e) = aws::check_payload(d.payload.len()) {
                    return Prepared::Reject(e);
                }
                d.qos = d.qos.min(1);
                Prepared::Send(d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef-0000000000000001";

    fn delivery(topic: &str, payload: Vec<u8>, qos: u8, retain: bool) -> Delivery {
        Delivery {
            topic: topic.into(),
            payload,
            qos,
            retain,
            created_ms: 1,
            camera: String::new(),
        }
    }

    #[test]
    fn plain_leaves_deliveries_alone() {
        let d = delivery("a/b", b"{}".to_vec(), 2, true);
        assert_eq!(Flavor::Plain.prepare(d.clone(), ID), Prepared::Send(d));
    }

    #[test]
    fn azure_moves_topic_into_property_bag_and_caps_qos_and_retain() {
        let f = Flavor::Azure {
            device_id: "cam".into(),
        };
        let Prepared::Send(d) =
            f.prepare(delivery("site/lobby", b"{\"a\":1}".to_vec(), 2, true), ID)
        else {
            panic!()
        };
        assert_eq!(
            d.topic,
            "devices/cam/messages/events/mqtt_topic=site%2Flobby&$.ct=application%2Fjson&$.ce=utf-8&$.mid=0123456789abcdef-0000000000000001"
        );
        assert_eq!((d.qos, d.retain), (1, false));
        assert_eq!(
            f.prepare(delivery("t", vec![], 1, true), ID),
            Prepared::Skip
        );
        assert!(matches!(
            f.prepare(delivery("t", vec![b'x'; 256 * 1024], 1, false), ID),
            Prepared::Reject(r) if r.contains("Azure IoT Hub allows 262144")
        ));
        // Property bag of topic "t" with text/plain, message id included.
        let bag = format!("mqtt_topic=t&$.ct=text%2Fplain&$.ce=utf-8&$.mid={ID}").len();
        assert!(matches!(
            f.prepare(delivery("t", vec![b'x'; 256 * 1024 - bag], 1, false), ID),
            Prepared::Send(_)
        ));
        assert!(matches!(
            f.prepare(
                delivery("t", vec![b'x'; 256 * 1024 - bag + 1], 1, false),
                ID
            ),
            Prepared::Reject(_)
        ));
    }

    #[test]
    fn aws_rejects_what_it_would_refuse_and_keeps_retain() {
        let f = Flavor::Aws;
        let Prepared::Send(d) = f.prepare(delivery("a/b", b"x".to_vec(), 2, true), ID) else {
            panic!()
        };
        assert_eq!((d.qos, d.retain), (1, true));
        assert!(matches!(
            f.prepare(delivery(&"t".repeat(257), vec![], 1, false), ID),
            Prepared::Reject(_)
        ));
        assert!(matches!(
            f.prepare(delivery("1/2/3/4/5/6/7/8/9", vec![], 1, false), ID),
            Prepared::Reject(r) if r.contains("8 slashes")
        ));
        assert!(matches!(
            f.prepare(delivery("t", vec![0; 128 * 1024 + 1], 1, false), ID),
            Prepared::Reject(_)
        ));
    }
}
