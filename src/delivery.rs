//! A delivery: one message for one destination, as rules shape it and the outbox stores it.
//!
//! Encoded form (little-endian), versioned so an outbox written by an older relay still reads:
//! `[version=1][qos u8][flags u8: bit0 retain][created_ms i64][topic_len u32][topic][payload]`.

use thiserror::Error;

/// One message for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Destination topic (MQTT) or routing topic (object stores keep it as `mqtt_topic`).
    pub topic: String,
    /// Message body.
    pub payload: Vec<u8>,
    /// MQTT QoS 0, 1 or 2.
    pub qos: u8,
    /// MQTT retain flag.
    pub retain: bool,
    /// When the relay accepted the event (epoch ms): for latency and `max_age`.
    pub created_ms: i64,
}

/// A stored delivery that cannot be decoded (written by a newer relay, or damaged).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("undecodable delivery record: {0}")]
pub struct DecodeError(&'static str);

const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 1 + 8 + 4;

impl Delivery {
    /// Appends the encoded form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(HEADER + self.topic.len() + self.payload.len());
        out.push(VERSION);
        out.push(self.qos);
        out.push(u8::from(self.retain));
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&(self.topic.len() as u32).to_le_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The encoded form.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Decodes a record written by [`Delivery::encode`].
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < HEADER {
            return Err(DecodeError("too short"));
        }
        if b[0] != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let qos = b[1];
        if qos > 2 {
            return Err(DecodeError("qos out of range"));
        }
        let retain = b[2] & 1 == 1;
        let created_ms = i64::from_le_bytes(b[3..11].try_into().expect("8 bytes"));
        let tlen = u32::from_le_bytes(b[11..15].try_into().expect("4 bytes")) as usize;
        let rest = &b[HEADER..];
        if rest.len() < tlen {
            return Err(DecodeError("topic length past the end"));
        }
        let topic = std::str::from_utf8(&rest[..tlen])
            .map_err(|_| DecodeError("topic is not UTF-8"))?
            .to_string();
        Ok(Self {
            topic,
            payload: rest[tlen..].to_vec(),
            qos,
            retain,
            created_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let d = Delivery {
            topic: "a/b".into(),
            payload: b"{}".to_vec(),
            qos: 1,
            retain: true,
            created_ms: 1_750_148_043_512,
        };
        let e = d.encode();
        assert_eq!(Delivery::decode(&e).unwrap(), d);
        assert!(Delivery::decode(&e[..5]).is_err());
        let mut bad = e.clone();
        bad[0] = 9;
        assert!(Delivery::decode(&bad).is_err());
    }
}
