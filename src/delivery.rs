//! A delivery: one message for one destination, as rules shape it and the outbox stores it.
//!
//! Encoded form (little-endian), versioned so an outbox written by an older relay still reads:
//! `[version=2][qos u8][flags u8: bit0 retain][created_ms i64][topic_len u32][topic]`
//! `[camera_len u16][camera][payload]`. Version 1 (written before object stores existed) is
//! the same without the camera; it decodes with an empty camera.

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
    /// Config name of the camera the event came from (object-store keys use it); empty for
    /// records written by a relay before version 2.
    pub camera: String,
}

/// A stored delivery that cannot be decoded (written by a newer relay, or damaged).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("undecodable delivery record: {0}")]
pub struct DecodeError(&'static str);

const VERSION: u8 = 2;
const VERSION_NO_CAMERA: u8 = 1;
const HEADER: usize = 1 + 1 + 1 + 8 + 4;

impl Delivery {
    /// Appends the encoded form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let camera = &self.camera.as_bytes()[..self.camera.len().min(u16::MAX as usize)];
        out.reserve(HEADER + 2 + self.topic.len() + camera.len() + self.payload.len());
        out.push(VERSION);
        out.push(self.qos);
        out.push(u8::from(self.retain));
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&(self.topic.len() as u32).to_le_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&(camera.len() as u16).to_le_bytes());
        out.extend_from_slice(camera);
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
        if b[0] != VERSION && b[0] != VERSION_NO_CAMERA {
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
        let mut rest = &rest[tlen..];
        let mut camera = String::new();
        if b[0] == VERSION {
            if rest.len() < 2 {
                return Err(DecodeError("camera length past the end"));
            }
            let clen = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            rest = &rest[2..];
            if rest.len() < clen {
                return Err(DecodeError("camera past the end"));
            }
            camera = std::str::from_utf8(&rest[..clen])
                .map_err(|_| DecodeError("camera is not UTF-8"))?
                .to_string();
            rest = &rest[clen..];
        }
        Ok(Self {
            topic,
            payload: rest.to_vec(),
            qos,
            retain,
            created_ms,
            camera,
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
            camera: "lobby".into(),
        };
        let e = d.encode();
        assert_eq!(Delivery::decode(&e).unwrap(), d);
        assert!(Delivery::decode(&e[..5]).is_err());
        let mut bad = e.clone();
        bad[0] = 9;
        assert!(Delivery::decode(&bad).is_err());
    }

    #[test]
    fn version_1_records_still_decode_without_a_camera() {
        let mut v1 = vec![1u8, 1, 0];
        v1.extend_from_slice(&7i64.to_le_bytes());
        v1.extend_from_slice(&3u32.to_le_bytes());
        v1.extend_from_slice(b"a/b{}");
        let d = Delivery::decode(&v1).unwrap();
        assert_eq!(
            (d.topic.as_str(), d.payload.as_slice()),
            ("a/b", &b"{}"[..])
        );
        assert_eq!((d.camera.as_str(), d.created_ms, d.qos), ("", 7, 1));
    }
}
