//! What the emulated camera says: `events:notify` frames, the fixture script
//! (`ws-events.jsonl`), which topics are stateful, and the static VAPIX replies.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The nine `events:notify` frames of `tests/fixtures/ws-events.jsonl`, byte for byte.
const WS_EVENTS: &str = include_str!("../../../tests/fixtures/ws-events.jsonl");
/// GetEventInstances reply (the event catalog).
pub(crate) const EVENT_INSTANCES_XML: &str =
    include_str!("../../../tests/fixtures/event-instances.xml");
/// Basic device information reply; the serial is replaced by the configured one.
const BASIC_DEVICE_INFO: &str = include_str!("../../../tests/fixtures/basicdeviceinfo.json");

static FIXTURE_LINES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| WS_EVENTS.lines().filter(|l| !l.is_empty()).collect());

/// The fixture lines, split once.
pub(crate) fn fixture_lines() -> &'static [&'static str] {
    &FIXTURE_LINES
}

/// Topic of the virtual input ports.
pub(crate) const VIRTUAL_INPUT_TOPIC: &str = "tns1:Device/tnsaxis:IO/VirtualInput";

/// Stateful topics of the fixture catalog (`event-instances.xml`): the emulator remembers
/// their last state per source and re-sends it after every `events:configure`.
const STATEFUL_TOPICS: &[&str] = &[
    VIRTUAL_INPUT_TOPIC,
    "tns1:Device/tnsaxis:Sensor/PIR",
    "tns1:Device/tnsaxis:Light/Status",
    "tns1:RuleEngine/MotionRegionDetector/Motion",
    "tnsaxis:CameraApplicationPlatform/FenceGuard/Camera1Profile2",
    "tnsaxis:Storage/Alert",
];

/// Whether the catalog says a topic is a property (stateful).
pub(crate) fn is_stateful(topic: &str) -> bool {
    STATEFUL_TOPICS.contains(&topic)
}

/// Now as UTC epoch milliseconds, the wire's timestamp unit.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One event as the camera sends it on the WebSocket stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    /// Topic in the WebSocket spelling (`tns1:`/`tnsaxis:`).
    pub topic: String,
    /// Epoch milliseconds; `None` leaves `timestamp` out of the frame.
    pub timestamp: Option<i64>,
    /// Source items, in wire order.
    pub source: Vec<(String, String)>,
    /// Key items, in wire order.
    pub key: Vec<(String, String)>,
    /// Data items, in wire order.
    pub data: Vec<(String, String)>,
}

fn items(v: &[(String, String)]) -> Value {
    Value::Object(
        v.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn parse_items(v: Option<&Value>) -> Vec<(String, String)> {
    match v.and_then(Value::as_object) {
        Some(m) => m
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
        None => Vec::new(),
    }
}

impl Notification {
    /// A notification with a topic and nothing else, to fill in field by field.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// The compact `events:notify` frame text, members in the device's usual order.
    pub fn to_frame(&self) -> String {
        let mut n = Map::new();
        n.insert("topic".into(), Value::String(self.topic.clone()));
        if let Some(ts) = self.timestamp {
            n.insert("timestamp".into(), Value::from(ts));
        }
        let mut m = Map::new();
        m.insert("source".into(), items(&self.source));
        m.insert("key".into(), items(&self.key));
        m.insert("data".into(), items(&self.data));
        n.insert("message".into(), Value::Object(m));
        let mut params = Map::new();
        params.insert("notification".into(), Value::Object(n));
        let mut f = Map::new();
        f.insert("apiVersion".into(), "1.0".into());
        f.insert("method".into(), "events:notify".into());
        f.insert("params".into(), Value::Object(params));
        Value::Object(f).to_string()
    }

    /// Parses an `events:notify` frame (any member order); `None` for anything else.
    pub fn from_frame(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text).ok()?;
        if v.get("method")?.as_str()? != "events:notify" {
            return None;
        }
        let n = v.pointer("/params/notification")?;
        let msg = n.get("message");
        Some(Self {
            topic: n.get("topic")?.as_str()?.to_string(),
            timestamp: n.get("timestamp").and_then(Value::as_i64),
            source: parse_items(msg.and_then(|m| m.get("source"))),
            key: parse_items(msg.and_then(|m| m.get("key"))),
            data: parse_items(msg.and_then(|m| m.get("data"))),
        })
    }
}

/// The notification on fixture line `line` (1-based), if there is such a line.
pub(crate) fn fixture_notification(line: usize) -> Option<Notification> {
    let text = fixture_lines().get(line.checked_sub(1)?)?;
    Notification::from_frame(text)
}

/// A JSON API reply envelope: `apiVersion`, `context` (only if given), `method`, then
/// `data` or `error` — the member order of the fixtures.
pub(crate) fn reply(
    api_version: &str,
    context: Option<&Value>,
    method: Option<&str>,
    body: Result<Value, (u32, &str)>,
) -> String {
    let mut f = Map::new();
    f.insert("apiVersion".into(), api_version.into());
    if let Some(c) = context {
        f.insert("context".into(), c.clone());
    }
    if let Some(m) = method {
        f.insert("method".into(), m.into());
    }
    match body {
        Ok(data) => {
            f.insert("data".into(), data);
        }
        Err((code, message)) => {
            let mut e = Map::new();
            e.insert("code".into(), code.into());
            e.insert("message".into(), message.into());
            f.insert("error".into(), Value::Object(e));
        }
    }
    Value::Object(f).to_string()
}

/// The fixture's `propertyList` with `SerialNumber` set to this device's serial.
pub(crate) fn device_properties(serial: &str) -> Map<String, Value> {
    let v: Value = serde_json::from_str(BASIC_DEVICE_INFO).unwrap_or_default();
    let mut props = v
        .pointer("/data/propertyList")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    props.insert("SerialNumber".into(), serial.into());
    props
}

/// A virtual input success reply (`ActivateSuccess`/`DeactivateSuccess`), shaped like
/// `virtualinput-activate.xml`.
pub(crate) fn virtual_input_success(activate: bool, changed: bool) -> String {
    let el = if activate {
        "ActivateSuccess"
    } else {
        "DeactivateSuccess"
    };
    format!(
        "{VI_HEAD}  <Success>\n    <{el}>\n      <StateChanged>\n        {changed}\n      </StateChanged>\n    </{el}>\n  </Success>\n</VirtualInputResponse>\n"
    )
}

/// A virtual input failure reply (`Error/GeneralError`).
pub(crate) fn virtual_input_error(code: u32, description: &str) -> String {
    format!(
        "{VI_HEAD}  <Error>\n    <GeneralError>\n      <ErrorCode>{code}</ErrorCode>\n      <ErrorDescription>{description}</ErrorDescription>\n    </GeneralError>\n  </Error>\n</VirtualInputResponse>\n"
    )
}

const VI_HEAD: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<VirtualInputResponse xmlns=\"http://www.axis.com/vapix/http_cgi/virtualinput1\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" SchemaVersion=\"1.1\" xsi:schemaLocation=\"http://www.axis.com/vapix/http_cgi/virtualinput1 http://www.axis.com/vapix/http_cgi/virtualinput1_0.xsd\">\n";

/// A 1×1 grey baseline JPEG (SOI, DQT, SOF0, two one-code DHTs, SOS, one block, EOI).
pub(crate) const TINY_JPEG: &[u8] = &[
    0xFF, 0xD8, // SOI
    0xFF, 0xDB, 0x00, 0x43, 0x00, // DQT, table 0, 8-bit
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, // 64 quantizers
    0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11, 0x00, // SOF0 1x1
    0xFF, 0xC4, 0x00, 0x14, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x00, // DHT DC0: one 1-bit code for category 0
    0xFF, 0xC4, 0x00, 0x14, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x00, // DHT AC0: one 1-bit code for EOB
    0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, // SOS
    0x3F, // DC diff 0 ("0"), EOB ("0"), padding 1s
    0xFF, 0xD9, // EOI
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_fixture_lines_round_trip() {
        let lines = fixture_lines();
        assert_eq!(lines.len(), 9);
        for (i, line) in lines.iter().enumerate() {
            let n = Notification::from_frame(line).expect("fixture parses");
            // Line 5 has timestamp first and line 7 has no key: the rest are canonical.
            if i + 1 != 5 && i + 1 != 7 {
                assert_eq!(&n.to_frame(), line, "line {}", i + 1);
            }
        }
        let seven = fixture_notification(7).unwrap();
        assert!(seven.key.is_empty());
        assert_eq!(seven.data, vec![("state".into(), "ON".into())]);
        assert!(fixture_notification(0).is_none());
        assert!(fixture_notification(10).is_none());
    }

    #[test]
    fn frame_without_timestamp_omits_it() {
        let mut n = Notification::new("tns1:X");
        n.data.push(("a".into(), "1".into()));
        assert_eq!(
            n.to_frame(),
            r#"{"apiVersion":"1.0","method":"events:notify","params":{"notification":{"topic":"tns1:X","message":{"source":{},"key":{},"data":{"a":"1"}}}}}"#
        );
        assert!(Notification::from_frame("{\"method\":\"events:configure\"}").is_none());
        assert!(Notification::from_frame("not json").is_none());
    }

    #[test]
    fn replies_match_the_fixtures() {
        let ctx = Value::from("edgerelay-lobby-1");
        assert_eq!(
            reply(
                "1.0",
                Some(&ctx),
                Some("events:configure"),
                Ok(Value::Object(Map::new()))
            ),
            include_str!("../../../tests/fixtures/ws-configure-ack.json").trim_end()
        );
        assert_eq!(
            reply(
                "1.0",
                Some(&ctx),
                Some("events:configure"),
                Err((
                    2104,
                    "Invalid event datasource payload: eventFilterList is empty"
                ))
            ),
            include_str!("../../../tests/fixtures/ws-configure-error.json").trim_end()
        );
        assert_eq!(
            virtual_input_success(true, true),
            include_str!("../../../tests/fixtures/virtualinput-activate.xml")
        );
        assert_eq!(device_properties("X")["SerialNumber"], "X");
        assert_eq!(TINY_JPEG.len(), 141);
        assert_eq!(&TINY_JPEG[..2], &[0xFF, 0xD8]);
        assert_eq!(&TINY_JPEG[TINY_JPEG.len() - 2..], &[0xFF, 0xD9]);
    }
}
