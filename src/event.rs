//! The one event model every source produces and every rule reads (DESIGN.md §3).
//!
//! Topics are stored in the camera's canonical spelling (`tns1:` for ONVIF, `tnsaxis:` for
//! Axis) whatever prefixes the device declared, so rule filters match any device. The JSON
//! view ([`Event::payload`]) is exactly the payload an Axis camera publishes over its own MQTT
//! client, so rules and dashboards written for cameras work unchanged.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;

/// Ordered name → value items: the order of source items shapes the MQTT topic.
pub type Items = IndexMap<String, String>;

/// ONVIF namespace URI of the standard topic tree.
pub const ONVIF_TOPICS_URI: &str = "http://www.onvif.org/ver10/topics";
/// Axis namespace URI of the vendor topic tree.
pub const AXIS_TOPICS_URI: &str = "http://www.axis.com/2009/event/topics";

/// What the camera's catalog declares an item's value to be (its XML Schema `Type`), as far
/// as JSON cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `xsd:boolean`: `true`, `false`, `1` or `0`.
    Boolean,
    /// `xsd:int` and the other integer types.
    Integer,
    /// `xsd:double`, `xsd:float`, `xsd:decimal`.
    Decimal,
    /// `xsd:string`.
    String,
    /// Anything else (`tt:ReferenceToken`, ...): text.
    Other,
}

impl ValueType {
    /// The type of a catalog `Type` attribute such as `xsd:int` (any prefix).
    pub fn from_xsd(ty: &str) -> Self {
        let local = ty.rsplit(':').next().unwrap_or(ty);
        match local {
            "boolean" => Self::Boolean,
            "int" | "integer" | "long" | "short" | "byte" | "unsignedInt" | "unsignedLong"
            | "unsignedShort" | "unsignedByte" | "nonNegativeInteger" | "positiveInteger"
            | "negativeInteger" | "nonPositiveInteger" => Self::Integer,
            "double" | "float" | "decimal" => Self::Decimal,
            "string" => Self::String,
            _ => Self::Other,
        }
    }
}

/// The declared types of one topic's items, by item name, per part of the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemTypes {
    /// Source items.
    pub source: IndexMap<String, ValueType>,
    /// Key items.
    pub key: IndexMap<String, ValueType>,
    /// Data items.
    pub data: IndexMap<String, ValueType>,
}

/// What the camera says it is (basic device information), for dashboards' device entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Product number (`ProdNbr`), e.g. `Q1809-LE`.
    pub model: Option<String>,
    /// Firmware version (`Version`), e.g. `12.3.56`.
    pub firmware: Option<String>,
}

/// Property operation of a stateful event; stateless events have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Operation {
    /// Current state, sent when a subscription starts (and after every reconnect).
    Initialized,
    /// A transition.
    Changed,
    /// The property instance is gone: its retained state must be cleared.
    Deleted,
}

impl Operation {
    /// Parses the ONVIF `PropertyOperation` attribute value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Initialized" => Some(Self::Initialized),
            "Changed" => Some(Self::Changed),
            "Deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// What kind of content an event carries; decides its default topic and payload shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An ONVIF/VAPIX event notification.
    Event,
    /// An analytics scene description frame (`tt:VideoAnalytics/tt:Frame`); see [`Event::analytics`].
    Analytics,
    /// A PTZ status report (`tt:PTZ/tt:PTZStatus`); see [`Event::ptz`].
    Ptz,
}

/// ONVIF normalised bounding box (x and y from -1 to 1, y pointing up).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoundingBox {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Right edge.
    pub right: f64,
    /// Bottom edge.
    pub bottom: f64,
}

/// One object of an analytics frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    /// `ObjectId`, as received.
    pub id: String,
    /// Most likely class (`tt:Class/tt:Type`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Likelihood of that class, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Bounding box, if given.
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BoundingBox>,
}

/// An analytics scene description frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// The video source the frame names (`Source` attribute), if any.
    pub source: Option<String>,
    /// The objects, in document order.
    pub objects: Vec<Object>,
}

/// PTZ move state of one axis group, as received (`IDLE`, `MOVING`, `UNKNOWN`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PtzMoving {
    /// Pan/tilt move status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pan_tilt: Option<String>,
    /// Zoom move status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zoom: Option<String>,
}

/// A PTZ status report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PtzStatus {
    /// Pan position (generic space, -1..1).
    pub pan: Option<f64>,
    /// Tilt position (generic space, -1..1).
    pub tilt: Option<f64>,
    /// Zoom position (generic space, 0..1).
    pub zoom: Option<f64>,
    /// Move status, when the device sent `tt:MoveStatus`.
    pub moving: Option<PtzMoving>,
}

/// One normalized camera event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Config name of the camera it came from.
    pub camera: Arc<str>,
    /// Device serial, upper-case hex as the device reports it.
    pub serial: Arc<str>,
    /// What the event carries.
    pub kind: EventKind,
    /// Topic in canonical `tns1:`/`tnsaxis:` spelling.
    pub topic: String,
    /// UTC epoch milliseconds (from the message, else arrival time).
    pub time_ms: i64,
    /// Property operation; `None` for stateless events or unknown on this transport.
    pub operation: Option<Operation>,
    /// Whether the topic is a property (stateful) per the device's catalog or the message.
    pub stateful: bool,
    /// Which data item holds a property's state, when the catalog says (Home Assistant
    /// discovery points its sensors at it).
    pub state_item: Option<Arc<str>>,
    /// The catalog's types of this topic's items, when it lists the topic (`typed_values`
    /// and Home Assistant discovery read them).
    pub item_types: Option<Arc<ItemTypes>>,
    /// Model and firmware, when the camera reported them (Home Assistant's device entry).
    pub device: Option<Arc<DeviceInfo>>,
    /// Source items (identify the instance: port, channel, ...).
    pub source: Items,
    /// Key items.
    pub key: Items,
    /// Data items (the state and other values).
    pub data: Items,
    /// The frame of an [`EventKind::Analytics`] event (shared: clones stay cheap).
    pub analytics: Option<Arc<Frame>>,
    /// The status of an [`EventKind::Ptz`] event.
    pub ptz: Option<Arc<PtzStatus>>,
}

/// The camera's own MQTT payload, in its exact key order.
#[derive(Serialize)]
struct Payload<'a> {
    topic: String,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<&'a str>,
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    source: &'a Items,
    key: &'a Items,
    data: &'a Items,
}

/// Analytics frame payload (DESIGN.md §4).
#[derive(Serialize)]
struct FramePayload<'a> {
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    objects: &'a [Object],
}

/// PTZ status payload (DESIGN.md §4).
#[derive(Serialize)]
struct PtzPayload<'a> {
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pan: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tilt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zoom: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    moving: Option<&'a PtzMoving>,
}

impl Event {
    /// A notification event with empty items and no frame/PTZ body.
    pub fn new(camera: Arc<str>, serial: Arc<str>, topic: String, time_ms: i64) -> Self {
        Self {
            camera,
            serial,
            kind: EventKind::Event,
            topic,
            time_ms,
            operation: None,
            stateful: false,
            state_item: None,
            item_types: None,
            device: None,
            source: Items::new(),
            key: Items::new(),
            data: Items::new(),
            analytics: None,
            ptz: None,
        }
    }

    /// The JSON payload (DESIGN.md §4), compact, keys in camera order; its shape follows
    /// [`Event::kind`]. Numbers in frames and PTZ status are written in their shortest form.
    pub fn payload(&self, include_serial: bool) -> String {
        let serial = include_serial.then_some(&*self.serial);
        let json = match self.kind {
            EventKind::Event => return self.event_payload(include_serial),
            EventKind::Analytics => {
                let empty = Frame::default();
                let f = self.analytics.as_deref().unwrap_or(&empty);
                serde_json::to_string(&FramePayload {
                    timestamp: self.time_ms,
                    serial,
                    source: f.source.as_deref(),
                    objects: &f.objects,
                })
            }
            EventKind::Ptz => {
                let empty = PtzStatus::default();
                let p = self.ptz.as_deref().unwrap_or(&empty);
                serde_json::to_string(&PtzPayload {
                    timestamp: self.time_ms,
                    serial,
                    pan: p.pan,
                    tilt: p.tilt,
                    zoom: p.zoom,
                    moving: p.moving.as_ref(),
                })
            }
        };
        json.expect("serializing strings and numbers cannot fail")
    }

    /// An analytics frame in a few bytes: how many objects, and how many of each class
    /// (`"unknown"` for objects without one), for dashboards that count rather than track.
    pub fn summary_payload(&self, include_serial: bool) -> String {
        let empty = Frame::default();
        let f = self.analytics.as_deref().unwrap_or(&empty);
        let mut classes: std::collections::BTreeMap<&str, u64> = Default::default();
        for o in &f.objects {
            *classes
                .entry(o.class.as_deref().unwrap_or("unknown"))
                .or_default() += 1;
        }
        let mut v = serde_json::Map::new();
        v.insert("timestamp".into(), self.time_ms.into());
        if include_serial {
            v.insert("serial".into(), self.serial.as_ref().into());
        }
        if let Some(s) = &f.source {
            v.insert("source".into(), s.as_str().into());
        }
        v.insert("objects".into(), f.objects.len().into());
        v.insert(
            "classes".into(),
            classes
                .into_iter()
                .map(|(k, n)| (k.to_string(), n.into()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        );
        serde_json::Value::Object(v).to_string()
    }

    fn event_payload(&self, include_serial: bool) -> String {
        let p = Payload {
            topic: payload_topic(&self.topic),
            timestamp: self.time_ms,
            serial: include_serial.then_some(&*self.serial),
            message: Message {
                source: &self.source,
                key: &self.key,
                data: &self.data,
            },
        };
        serde_json::to_string(&p).expect("serializing strings and integers cannot fail")
    }

    /// The JSON view that conditions and templates see: the payload with serial and camera.
    pub fn json_view(&self) -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&self.payload(true)).expect("payload is valid JSON");
        if let Some(obj) = v.as_object_mut() {
            obj.insert("camera".into(), self.camera.to_string().into());
        }
        v
    }
}

/// The namespace a topic prefix stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// `http://www.onvif.org/ver10/topics`
    Onvif,
    /// `http://www.axis.com/2009/event/topics`
    Axis,
}

impl Namespace {
    /// Namespace from a URI declared in XML.
    pub fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            ONVIF_TOPICS_URI => Some(Self::Onvif),
            AXIS_TOPICS_URI => Some(Self::Axis),
            _ => None,
        }
    }

    /// Namespace from a prefix written in any of the three spellings (no declarations in JSON).
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        match prefix {
            "tns1" | "onvif" => Some(Self::Onvif),
            "tnsaxis" | "axis" => Some(Self::Axis),
            _ => None,
        }
    }

    /// Camera (WebSocket/RTSP) spelling.
    pub fn camera_prefix(self) -> &'static str {
        match self {
            Self::Onvif => "tns1",
            Self::Axis => "tnsaxis",
        }
    }

    /// MQTT payload spelling.
    pub fn payload_prefix(self) -> &'static str {
        match self {
            Self::Onvif => "onvif",
            Self::Axis => "axis",
        }
    }
}

/// Splits a topic segment into its prefix (if any) and local name.
pub fn split_segment(seg: &str) -> (Option<&str>, &str) {
    match seg.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, seg),
    }
}

/// Rewrites each segment's prefix through `f`, keeping segments without a known prefix as is.
fn map_prefixes(topic: &str, f: impl Fn(Namespace) -> &'static str) -> String {
    let mut out = String::with_capacity(topic.len());
    for (i, seg) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match split_segment(seg) {
            (Some(p), local) if Namespace::from_prefix(p).is_some() => {
                out.push_str(f(Namespace::from_prefix(p).unwrap()));
                out.push(':');
                out.push_str(local);
            }
            _ => out.push_str(seg),
        }
    }
    out
}

/// Canonical camera spelling (`tns1:`/`tnsaxis:`) of a topic written with known prefixes.
pub fn canonical_topic(topic: &str) -> String {
    map_prefixes(topic, Namespace::camera_prefix)
}

/// Payload spelling: `onvif:Device/axis:IO/VirtualInput`.
pub fn payload_topic(topic: &str) -> String {
    map_prefixes(topic, Namespace::payload_prefix)
}

/// MQTT topic-path spelling: `tns:onvif/Device/tns:axis/IO/VirtualInput`, or without the
/// namespace segments. Segments are made safe for MQTT topic levels.
pub fn mqtt_path(topic: &str, include_namespaces: bool, out: &mut String) {
    for (i, seg) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match split_segment(seg) {
            (Some(p), local) => {
                if include_namespaces {
                    out.push_str("tns:");
                    let ns = Namespace::from_prefix(p).map(Namespace::payload_prefix);
                    push_level(out, ns.unwrap_or(p));
                    out.push('/');
                }
                push_level(out, local);
            }
            (None, local) => push_level(out, local),
        }
    }
}

/// Appends one MQTT topic level, percent-encoding what a level must not hold (DESIGN.md §4):
/// `/` would add levels, `+` and `#` are wildcards MQTT forbids in published topics, U+0000 is
/// forbidden in any MQTT string, and C0/C1 control characters make topics brokers and
/// dashboards mangle. `%` itself is encoded too, so `a/b` and `a%2Fb` stay two topics.
pub fn push_level(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, '/' | '+' | '#' | '%') || c.is_control() {
            push_percent_encoded(out, c);
        } else {
            out.push(c);
        }
    }
}

/// `%XX` for every UTF-8 byte of `c` (upper-case hex, as RFC 3986 recommends).
fn push_percent_encoded(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_analytics_summary_counts_objects_per_class() {
        let obj = |id: &str, class: Option<&str>| Object {
            id: id.into(),
            class: class.map(str::to_string),
            score: Some(0.9),
            bbox: None,
        };
        let mut ev = Event::new("gate".into(), "B8A44F3E9D21".into(), String::new(), 7);
        ev.kind = EventKind::Analytics;
        ev.analytics = Some(Arc::new(Frame {
            source: Some("VideoSource0".into()),
            objects: vec![
                obj("1", Some("Human")),
                obj("2", Some("Vehicle")),
                obj("3", Some("Human")),
                obj("4", None),
            ],
        }));
        assert_eq!(
            ev.summary_payload(true),
            r#"{"timestamp":7,"serial":"B8A44F3E9D21","source":"VideoSource0","objects":4,"classes":{"Human":2,"Vehicle":1,"unknown":1}}"#
        );
        ev.analytics = None;
        assert_eq!(
            ev.summary_payload(false),
            r#"{"timestamp":7,"objects":0,"classes":{}}"#
        );
    }

    #[test]
    fn three_spellings_of_a_topic() {
        let t = "tns1:Device/tnsaxis:IO/VirtualInput";
        assert_eq!(payload_topic(t), "onvif:Device/axis:IO/VirtualInput");
        let mut p = String::new();
        mqtt_path(t, true, &mut p);
        assert_eq!(p, "tns:onvif/Device/tns:axis/IO/VirtualInput");
        p.clear();
        mqtt_path(t, false, &mut p);
        assert_eq!(p, "Device/IO/VirtualInput");
        assert_eq!(
            canonical_topic("onvif:Device/axis:IO/X"),
            t.replace("VirtualInput", "X")
        );
    }

    #[test]
    fn unknown_prefixes_and_text_inside_segments_are_kept() {
        assert_eq!(payload_topic("acme:AxisCamera/x"), "acme:AxisCamera/x");
        let mut p = String::new();
        mqtt_path("acme:Thing/a+b", true, &mut p);
        assert_eq!(p, "tns:acme/Thing/a%2Bb");
    }

    #[test]
    fn topic_levels_escape_separators_wildcards_percent_and_control_characters() {
        let level = |s: &str| {
            let mut out = String::new();
            push_level(&mut out, s);
            out
        };
        assert_eq!(level("a/b+c#d"), "a%2Fb%2Bc%23d");
        // `%` is escaped, so a value that looks escaped stays distinct from one that is not.
        assert_eq!(level("a%2Fb"), "a%252Fb");
        assert_ne!(level("a/b"), level("a%2Fb"));
        assert_eq!(level("x\0y\ty\u{7f}"), "x%00y%09y%7F");
        // C1 controls are two UTF-8 bytes.
        assert_eq!(level("\u{85}"), "%C2%85");
        assert_eq!(level("Kamera Süd:1"), "Kamera Süd:1");
    }
}
