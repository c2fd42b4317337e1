//! A delivery: one message for one destination, as rules shape it and the outbox stores it.
//!
//! Encoded form (little-endian), versioned so an outbox written by an older relay still reads:
//! `[version=2][qos u8][flags u8: bit0 retain][created_ms i64][topic_len u32][topic]`
//! `[camera_len u16][camera][payload]`. Version 1 (written before object stores existed) is
//! the same without the camera; it decodes with an empty camera.
//!
//! Version 3 is a [`Snapshot`], not a message: `[version=3][created_ms i64][event_ms i64]`
//! `[topic_len u16][topic][camera_len u16][camera][serial_len u16][serial][jpeg]`. Messages
//! are still written as version 2, so a relay rolled back to a version without snapshots
//! reads every message and dead-letters only the snapshots. [`Record::decode`] reads all
//! three; [`Delivery::decode`] reads messages only.

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
const VERSION_SNAPSHOT: u8 = 3;
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

/// A camera picture taken because a rule with `snapshot = true` matched an event: object
/// stores keep it as its own object beside the event archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// When the relay queued it (epoch ms): for `max_age`.
    pub created_ms: i64,
    /// The event's own timestamp (epoch ms): the key and metadata name it.
    pub event_ms: i64,
    /// The event's topic in payload spelling (`onvif:Device/axis:IO/VirtualInput`).
    pub topic: String,
    /// Config name of the camera.
    pub camera: String,
    /// The camera's serial.
    pub serial: String,
    /// The JPEG as the camera sent it.
    pub jpeg: Vec<u8>,
}

/// Any record of an outbox: what a sink must be ready to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message (MQTT publish, NDJSON line).
    Message(Delivery),
    /// A picture (object stores only).
    Snapshot(Snapshot),
}

/// Appends a string of at most `u16::MAX` bytes (cut at a character boundary) with its length.
fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Reads a string written by [`put_short_str`]; returns it and the rest.
fn take_short_str<'a>(b: &'a [u8], what: &'static str) -> Result<(String, &'a [u8]), DecodeError> {
    if b.len() < 2 {
        return Err(DecodeError(what));
    }
    let len = u16::from_le_bytes([b[0], b[1]]) as usize;
    let rest = &b[2..];
    if rest.len() < len {
        return Err(DecodeError(what));
    }
    let s = std::str::from_utf8(&rest[..len]).map_err(|_| DecodeError(what))?;
    Ok((s.to_string(), &rest[len..]))
}

impl Snapshot {
    /// The encoded form (version 3).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            17 + 6 + self.topic.len() + self.camera.len() + self.serial.len() + self.jpeg.len(),
        );
        out.push(VERSION_SNAPSHOT);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.event_ms.to_le_bytes());
        put_short_str(&mut out, &self.topic);
        put_short_str(&mut out, &self.camera);
        put_short_str(&mut out, &self.serial);
        out.extend_from_slice(&self.jpeg);
        out
    }

    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < 17 || b[0] != VERSION_SNAPSHOT {
            return Err(DecodeError("snapshot header too short"));
        }
        let created_ms = i64::from_le_bytes(b[1..9].try_into().expect("8 bytes"));
        let event_ms = i64::from_le_bytes(b[9..17].try_into().expect("8 bytes"));
        let (topic, rest) = take_short_str(&b[17..], "snapshot topic past the end")?;
        let (camera, rest) = take_short_str(rest, "snapshot camera past the end")?;
        let (serial, rest) = take_short_str(rest, "snapshot serial past the end")?;
        Ok(Self {
            created_ms,
            event_ms,
            topic,
            camera,
            serial,
            jpeg: rest.to_vec(),
        })
    }
}

impl Record {
    /// Decodes any record version.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        match b.first() {
            Some(&VERSION_SNAPSHOT) => Snapshot::decode(b).map(Self::Snapshot),
            _ => Delivery::decode(b).map(Self::Message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_messages_stay_version_2() {
        let s = Snapshot {
            created_ms: 5,
            event_ms: 1_750_000_000_123,
            topic: "onvif:Device/axis:IO/VirtualInput".into(),
            camera: "lobby".into(),
            serial: "ACCC8E012345".into(),
            jpeg: vec![0xFF, 0xD8, 1, 2, 0xFF, 0xD9],
        };
        let e = s.encode();
        assert_eq!(Record::decode(&e).unwrap(), Record::Snapshot(s));
        assert!(Delivery::decode(&e).is_err(), "a message reader refuses it");
        for cut in [1, 16, 18, 20] {
            assert!(Record::decode(&e[..cut]).is_err(), "cut at {cut}");
        }
        let d = Delivery {
            topic: "t".into(),
            payload: b"{}".to_vec(),
            qos: 1,
            retain: false,
            created_ms: 0,
            camera: "c".into(),
        };
        assert_eq!(d.encode()[0], 2);
        assert_eq!(Record::decode(&d.encode()).unwrap(), Record::Message(d));
    }

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
