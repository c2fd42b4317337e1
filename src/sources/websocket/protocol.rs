//! The VAPIX event-stream JSON-RPC messages: the `events:configure` request we send and the
//! frames the camera sends (fixtures/README.md §1.3, §1.4). Pure functions, no I/O.
//!
//! Sizes are checked before an event is built: a frame with more than [`MAX_JSON_NODES`]
//! values is refused before it is parsed (parsed JSON costs tens of bytes per value, so a
//! 1 MiB frame of `[0,0,...]` would otherwise cost 16 MiB), and a notification's topic and
//! items must stay within [`crate::sources::limits`]. Either is a malformed frame.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use crate::event::{Event, EventKind, Items, canonical_topic};
use crate::sources::catalog::Catalog;
use crate::sources::limits::{
    self, LimitError, MAX_ITEMS, MAX_JSON_NODES, MAX_TOPIC_BYTES, json_nodes,
};

/// One frame from the camera, classified.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// An `events:notify`.
    Notify(Box<Notification>),
    /// The reply accepting `events:configure`.
    ConfigureAck,
    /// The reply rejecting `events:configure` (a config problem: report, back off).
    ConfigureError {
        /// JSON-RPC error code (2104: invalid parameter value, ...).
        code: i64,
        /// Text for people.
        message: String,
    },
    /// Any other method or reply: skipped without closing the stream.
    Other,
}

/// The notification part of an `events:notify`.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Notification {
    /// Topic in the camera's spelling.
    pub topic: String,
    /// Epoch ms (integer on devices; an ISO 8601 string is accepted too).
    #[serde(default)]
    pub timestamp: Option<Value>,
    /// Source/key/data items.
    #[serde(default)]
    pub message: Message,
}

/// `message` of a notification; each member optional.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Message {
    /// Source items.
    #[serde(default)]
    pub source: Option<IndexMap<String, Value>>,
    /// Key items.
    #[serde(default)]
    pub key: Option<IndexMap<String, Value>>,
    /// Data items.
    #[serde(default)]
    pub data: Option<IndexMap<String, Value>>,
}

/// A frame that is not the JSON-RPC we expect.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct FrameError(String);

#[derive(Deserialize)]
struct Frame {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Params>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct Params {
    notification: Option<Notification>,
}

#[derive(Deserialize)]
struct RpcError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// The `events:configure` request for a filter list (never empty: devices reject that).
pub fn configure_request(context: &str, filters: &[String]) -> String {
    let list: Vec<Value> = if filters.is_empty() {
        vec![serde_json::json!({"topicFilter": "//."})]
    } else {
        filters
            .iter()
            .map(|f| serde_json::json!({"topicFilter": f}))
            .collect()
    };
    serde_json::json!({
        "apiVersion": "1.0",
        "context": context,
        "method": "events:configure",
        "params": {"eventFilterList": list}
    })
    .to_string()
}

/// Classifies one text frame.
pub fn parse_frame(text: &str) -> Result<Incoming, FrameError> {
    if json_nodes(text.as_bytes()) > MAX_JSON_NODES {
        return Err(FrameError(format!(
            "more than {MAX_JSON_NODES} JSON values in one frame"
        )));
    }
    let f: Frame = serde_json::from_str(text).map_err(|e| FrameError(e.to_string()))?;
    match f.method.as_deref() {
        Some("events:notify") => {
            let n = f
                .params
                .and_then(|p| p.notification)
                .ok_or_else(|| FrameError("events:notify without params.notification".into()))?;
            n.check().map_err(|e| FrameError(e.to_string()))?;
            Ok(Incoming::Notify(Box::new(n)))
        }
        Some("events:configure") => Ok(match f.error {
            Some(e) => Incoming::ConfigureError {
                code: e.code,
                message: e.message,
            },
            None => Incoming::ConfigureAck,
        }),
        _ => Ok(Incoming::Other),
    }
}

/// The length of an item value once it is a string (as [`items`] makes it).
fn value_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    }
}

fn check_list(list: &'static str, m: &Option<IndexMap<String, Value>>) -> Result<(), LimitError> {
    let Some(m) = m else { return Ok(()) };
    if m.len() > MAX_ITEMS {
        return Err(LimitError::ItemCount { list });
    }
    for (name, value) in m {
        // The value's length only: `check_item` wants text, and a number is short.
        limits::check_item(list, name, "")?;
        let len = value_len(value);
        if len > limits::MAX_ITEM_VALUE_BYTES {
            return Err(LimitError::ItemSize {
                list,
                what: "value",
                len,
                max: limits::MAX_ITEM_VALUE_BYTES,
            });
        }
    }
    Ok(())
}

fn items(m: Option<IndexMap<String, Value>>) -> Items {
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

impl Notification {
    /// Checks the topic and item sizes against [`crate::sources::limits`].
    pub fn check(&self) -> Result<(), LimitError> {
        if self.topic.len() > MAX_TOPIC_BYTES {
            return Err(LimitError::Topic(self.topic.len()));
        }
        check_list("source", &self.message.source)?;
        check_list("key", &self.message.key)?;
        check_list("data", &self.message.data)
    }

    /// The event this notification describes; `now_ms` when the camera sent no usable time.
    pub fn into_event(
        self,
        camera: &std::sync::Arc<str>,
        serial: &std::sync::Arc<str>,
        catalog: &Catalog,
        now_ms: i64,
    ) -> Event {
        let time_ms = match &self.timestamp {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(now_ms),
            Some(Value::String(s)) => crate::time::parse_rfc3339_ms(s)
                .or_else(|| s.parse().ok())
                .unwrap_or(now_ms),
            _ => now_ms,
        };
        let topic = canonical_topic(&self.topic);
        let info = catalog.get(&topic);
        Event {
            camera: camera.clone(),
            serial: serial.clone(),
            kind: EventKind::Event,
            stateful: info.is_some_and(|t| t.stateful),
            state_item: info.and_then(|t| t.state_item.clone()),
            item_types: info.map(|t| t.item_types.clone()),
            device: None,
            topic,
            time_ms,
            operation: None,
            source: items(self.message.source),
            key: items(self.message.key),
            data: items(self.message.data),
            analytics: None,
            ptz: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = include_str!("../../../tests/fixtures/ws-events.jsonl");

    #[test]
    fn every_fixture_line_is_a_notification() {
        let cat =
            Catalog::parse(include_str!("../../../tests/fixtures/event-instances.xml")).unwrap();
        let (cam, serial) = ("lobby".into(), "B8A44F3E9D21".into());
        let expected: Vec<Value> = include_str!("../../../tests/fixtures/expected-mqtt.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for (line, exp) in LINES.lines().zip(&expected) {
            let Incoming::Notify(n) = parse_frame(line).unwrap() else {
                panic!("{line}")
            };
            let ev = n.into_event(&cam, &serial, &cat, 0);
            let payload: Value = serde_json::from_str(&ev.payload(true)).unwrap();
            assert_eq!(payload, exp["payload"], "{line}");
            assert_eq!(
                ev.payload(true),
                exp["payload"].to_string(),
                "byte form, key order"
            );
            assert_eq!(ev.stateful, exp["retain_under_property"].as_bool().unwrap());
        }
    }

    #[test]
    fn replies_and_garbage() {
        let ack = include_str!("../../../tests/fixtures/ws-configure-ack.json");
        assert_eq!(parse_frame(ack).unwrap(), Incoming::ConfigureAck);
        let err = include_str!("../../../tests/fixtures/ws-configure-error.json");
        assert!(matches!(
            parse_frame(err).unwrap(),
            Incoming::ConfigureError { code: 2104, .. }
        ));
        assert_eq!(
            parse_frame(r#"{"method":"events:whatever"}"#).unwrap(),
            Incoming::Other
        );
        assert!(parse_frame("not json").is_err());
        assert!(parse_frame(r#"{"method":"events:notify","params":{}}"#).is_err());
        assert!(
            parse_frame(r#"{"method":"events:notify","params":{"notification":{"topic":5}}}"#)
                .is_err()
        );
    }

    #[test]
    fn missing_timestamp_uses_arrival_and_unknown_fields_are_ignored() {
        let f = r#"{"method":"events:notify","extra":1,"params":{"notification":{"topic":"tns1:A","new":true,"message":{"data":{"n":1}}}}}"#;
        let Incoming::Notify(n) = parse_frame(f).unwrap() else {
            panic!()
        };
        let ev = n.into_event(&"c".into(), &"S".into(), &Catalog::default(), 42);
        assert_eq!(ev.time_ms, 42);
        assert_eq!(ev.data["n"], "1");
        assert_eq!(
            ev.payload(false),
            r#"{"topic":"onvif:A","timestamp":42,"message":{"source":{},"key":{},"data":{"n":"1"}}}"#
        );
    }

    fn notify(topic: &str, data: &str) -> String {
        format!(
            r#"{{"apiVersion":"1.0","method":"events:notify","params":{{"notification":{{"topic":"{topic}","timestamp":1,"message":{{"source":{{}},"key":{{}},"data":{data}}}}}}}}}"#
        )
    }

    #[test]
    fn a_topic_over_the_cap_is_a_malformed_frame() {
        let ok = "tns1:".to_string() + &"a".repeat(MAX_TOPIC_BYTES - 5);
        assert!(matches!(
            parse_frame(&notify(&ok, "{}")),
            Ok(Incoming::Notify(_))
        ));
        let long = "tns1:".to_string() + &"a".repeat(200 * 1024);
        let e = parse_frame(&notify(&long, "{}")).unwrap_err();
        assert!(e.to_string().contains("topic of 204805 bytes"), "{e}");
    }

    #[test]
    fn items_over_the_caps_are_malformed_frames() {
        let many: Vec<String> = (0..=MAX_ITEMS).map(|i| format!(r#""i{i}":"1""#)).collect();
        let e = parse_frame(&notify("tns1:A", &format!("{{{}}}", many.join(",")))).unwrap_err();
        assert!(
            e.to_string().contains("data list of more than 64 items"),
            "{e}"
        );
        let big = format!(
            r#"{{"v":"{}"}}"#,
            "x".repeat(limits::MAX_ITEM_VALUE_BYTES + 1)
        );
        let e = parse_frame(&notify("tns1:A", &big)).unwrap_err();
        assert!(e.to_string().contains("data item value of"), "{e}");
        let name = format!(
            r#"{{"{}":"1"}}"#,
            "n".repeat(limits::MAX_ITEM_NAME_BYTES + 1)
        );
        assert!(parse_frame(&notify("tns1:A", &name)).is_err());
        // A number is measured as the text it becomes.
        assert!(parse_frame(&notify("tns1:A", r#"{"n":12345}"#)).is_ok());
    }

    #[test]
    fn a_frame_of_countless_values_is_refused_before_parsing() {
        let array = format!(r#"{{"v":[{}0]}}"#, "0,".repeat(MAX_JSON_NODES));
        let e = parse_frame(&notify("tns1:A", &array)).unwrap_err();
        assert!(e.to_string().contains("JSON values"), "{e}");
        // Separators inside strings (escaped quotes too) are text, not values.
        let text = format!(r#"{{"v":"\"{}"}}"#, ",:[{".repeat(MAX_JSON_NODES));
        let r = parse_frame(&notify("tns1:A", &text));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(json_nodes(br#"{"a":"x\\","b":[1,2]}"#), 6);
    }

    #[test]
    fn configure_is_never_empty() {
        let r = configure_request("ctx", &[]);
        assert!(
            r.contains(r#""eventFilterList":[{"topicFilter":"//."}]"#),
            "{r}"
        );
    }
}
