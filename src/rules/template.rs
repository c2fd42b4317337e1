//! `{placeholder}` templates for topics and payloads.
//!
//! Placeholders: `{camera}`, `{serial}`, `{topic}` (MQTT topic-path spelling as the rule
//! configures namespaces), `{topic_raw}` (camera spelling), `{timestamp}` (epoch ms),
//! `{iso_time}` (RFC 3339 UTC with milliseconds, `2025-06-17T08:14:03.512Z`),
//! `{snapshot_key}` (the object key of the event's snapshot when its rule takes one, else
//! empty), `{source.NAME}`, `{key.NAME}`, `{data.NAME}`, and a JSONPath over the event's JSON view
//! (`{$.message.data.active}`: the first match; a string as its text, other JSON as JSON
//! text). `{{` and `}}` are literal braces. A missing value renders empty. Values put into
//! topics are made safe for MQTT topic levels.
//!
//! A payload template whose text starts with `{` or `[` is a JSON template: a placeholder
//! inside a JSON string literal is escaped for it, and a placeholder standing alone where a
//! JSON value goes renders as a JSON value (strings quoted, a missing value `null`), so the
//! payload stays valid JSON whatever the event holds. [`Template::check_json`] verifies that at
//! load time.

use std::cell::OnceCell;
use std::sync::Arc;

use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;

use crate::event::{Event, EventKind, Items, mqtt_path, payload_topic, push_level};

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    json: bool,
    needs_view: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Value(Placeholder, Context),
}

/// Where a placeholder stands in a JSON template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Plain text (topics, text payloads).
    Text,
    /// Inside a JSON string literal: escape.
    JsonString,
    /// Where a JSON value goes: render a whole JSON value.
    JsonValue,
}

#[derive(Debug, Clone, PartialEq)]
enum Placeholder {
    Camera,
    Serial,
    Topic,
    TopicRaw,
    Timestamp,
    IsoTime,
    SnapshotKey,
    Source(String),
    Key(String),
    Data(String),
    Path(Arc<JsonPathExpr>),
}

/// A JSONPath compiled once, evaluated on every event.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPathExpr {
    text: String,
    query: JpQuery,
}

impl JsonPathExpr {
    /// Parses an RFC 9535 JSONPath (as jsonpath-rust 1.0 implements it).
    pub fn parse(s: &str) -> Result<Self, String> {
        jsonpath_rust::parser::parse_json_path(s)
            .map(|query| Self {
                text: s.to_string(),
                query,
            })
            .map_err(|e| format!("invalid JSONPath \"{s}\": {e}"))
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it selects anything in `v`.
    pub fn matches(&self, v: &Value) -> bool {
        self.first(v).is_some()
    }

    /// The first node it selects in `v`.
    pub fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        jsonpath_rust::query::js_path_process(&self.query, v)
            .ok()?
            .into_iter()
            .next()
            .map(|r| r.val)
    }
}

/// An event with its JSON view built at most once, on first use: conditions and JSONPath
/// placeholders need it, most rules never do.
pub struct View<'a> {
    /// The event.
    pub ev: &'a Event,
    json: OnceCell<Value>,
    /// `{snapshot_key}`: the key of the picture the rule takes for this event, if any.
    pub snapshot_key: Option<&'a str>,
}

impl<'a> View<'a> {
    /// Wraps an event.
    pub fn new(ev: &'a Event) -> Self {
        Self {
            ev,
            json: OnceCell::new(),
            snapshot_key: None,
        }
    }

    /// The JSON view ([`Event::json_view`]).
    pub fn json(&self) -> &Value {
        self.json.get_or_init(|| json_view(self.ev))
    }
}

/// [`Event::json_view`] built directly rather than through a JSON string (a third of the
/// cost of a condition); other kinds of events take the event's own.
fn json_view(ev: &Event) -> Value {
    if ev.kind != EventKind::Event {
        return ev.json_view();
    }
    let items = |i: &Items| {
        Value::Object(
            i.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    };
    let mut message = serde_json::Map::with_capacity(3);
    message.insert("source".into(), items(&ev.source));
    message.insert("key".into(), items(&ev.key));
    message.insert("data".into(), items(&ev.data));
    let mut v = serde_json::Map::with_capacity(5);
    v.insert("topic".into(), payload_topic(&ev.topic).into());
    v.insert("timestamp".into(), ev.time_ms.into());
    v.insert("serial".into(), ev.serial.to_string().into());
    v.insert("message".into(), Value::Object(message));
    v.insert("camera".into(), ev.camera.to_string().into());
    Value::Object(v)
}

/// Why a template does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template error at position {position}: {reason}")]
pub struct TemplateError {
    /// Byte offset.
    pub position: usize,
    /// What is wrong.
    pub reason: String,
}

impl Template {
    /// Compiles a text template (topics, prefixes).
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        Self::parse_as(s, false)
    }

    /// Compiles a payload template: a JSON template when it looks like JSON (starts with `{`
    /// or `[` once `{{` is read as a brace), text otherwise.
    pub fn parse_payload(s: &str) -> Result<Self, TemplateError> {
        let t = s.trim_start();
        Self::parse_as(s, t.starts_with("{{") || t.starts_with('['))
    }

    fn parse_as(s: &str, json: bool) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        // JSON string-literal state of the literal text so far (JSON templates only).
        let (mut in_string, mut escaped) = (false, false);
        let mut chars = s.char_indices().peekable();
        let mut literal = |text: &mut String, c: char| {
            if json {
                if in_string {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => in_string = false,
                        _ => {}
                    }
                } else if c == '"' {
                    in_string = true;
                }
            }
            text.push(c);
            in_string
        };
        let mut context = Context::Text;
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|x| x.1) == Some('{') => {
                    chars.next();
                    literal(&mut text, '{');
                }
                '}' if chars.peek().map(|x| x.1) == Some('}') => {
                    chars.next();
                    literal(&mut text, '}');
                }
                '{' => {
                    let rest = &s[i + 1..];
                    let end = rest.find('}').ok_or_else(|| TemplateError {
                        position: i,
                        reason: "unclosed '{'".into(),
                    })?;
                    let name = &rest[..end];
                    let placeholder = match name {
                        "camera" => Placeholder::Camera,
                        "serial" => Placeholder::Serial,
                        "topic" => Placeholder::Topic,
                        "topic_raw" => Placeholder::TopicRaw,
                        "timestamp" => Placeholder::Timestamp,
                        "iso_time" => Placeholder::IsoTime,
                        "snapshot_key" => Placeholder::SnapshotKey,
                        _ if name.starts_with('$') => Placeholder::Path(Arc::new(
                            JsonPathExpr::parse(name).map_err(|reason| TemplateError {
                                position: i,
                                reason,
                            })?,
                        )),
                        _ => match name.split_once('.') {
                            Some(("source", n)) if !n.is_empty() => Placeholder::Source(n.into()),
                            Some(("key", n)) if !n.is_empty() => Placeholder::Key(n.into()),
                            Some(("data", n)) if !n.is_empty() => Placeholder::Data(n.into()),
                            _ => {
                                return Err(TemplateError {
                                    position: i,
                                    reason: format!("unknown placeholder {{{name}}}"),
                                });
                            }
                        },
                    };
                    if json {
                        context = if literal(&mut String::new(), '\0') {
                            Context::JsonString
                        } else {
                            Context::JsonValue
                        };
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Value(placeholder, context));
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(TemplateError {
                        position: i,
                        reason: "unmatched '}' (write '}}' for a literal brace)".into(),
                    });
                }
                c => {
                    literal(&mut text, c);
                }
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let needs_view = parts
            .iter()
            .any(|p| matches!(p, Part::Value(Placeholder::Path(_), _)));
        Ok(Self {
            parts,
            json,
            needs_view,
        })
    }

    /// Whether this is a JSON payload template.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Whether rendering needs the event's JSON view (it has JSONPath placeholders).
    pub fn needs_view(&self) -> bool {
        self.needs_view
    }

    /// The placeholders that render empty (or `null`) when an event lacks the value, as
    /// written: `{data.active}`, `{$.message.key.x}`.
    pub fn optional_fields(&self) -> Vec<String> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Value(Placeholder::Source(n), _) => Some(format!("{{source.{n}}}")),
                Part::Value(Placeholder::Key(n), _) => Some(format!("{{key.{n}}}")),
                Part::Value(Placeholder::Data(n), _) => Some(format!("{{data.{n}}}")),
                Part::Value(Placeholder::Path(p), _) => Some(format!("{{{}}}", p.as_str())),
                _ => None,
            })
            .collect()
    }

    /// For a JSON template: renders it against a sample event with every field it names
    /// present, and against one with none, and checks that both are valid JSON.
    pub fn check_json(&self) -> Result<(), String> {
        if !self.json {
            return Ok(());
        }
        let mut full = sample_event();
        for p in &self.parts {
            match p {
                Part::Value(Placeholder::Source(n), _) => {
                    full.source.insert(n.clone(), "1".into());
                }
                Part::Value(Placeholder::Key(n), _) => {
                    full.key.insert(n.clone(), "1".into());
                }
                Part::Value(Placeholder::Data(n), _) => {
                    full.data.insert(n.clone(), "1".into());
                }
                _ => {}
            }
        }
        for ev in [sample_event(), full] {
            let mut s = String::new();
            self.render(&ev, true, false, &mut s);
            if let Err(e) = serde_json::from_str::<Value>(&s) {
                return Err(format!(
                    "looks like JSON but does not render as JSON ({e}); sample: {s} \
                     (write literal braces as {{{{ and }}}})"
                ));
            }
        }
        Ok(())
    }

    /// Renders into `out`. `for_topic` makes substituted values safe as MQTT topic levels.
    pub fn render(&self, ev: &Event, include_namespaces: bool, for_topic: bool, out: &mut String) {
        self.render_view(&View::new(ev), include_namespaces, for_topic, out)
    }

    /// Renders into `out`, sharing the event's JSON view with other users.
    pub fn render_view(
        &self,
        view: &View<'_>,
        include_namespaces: bool,
        for_topic: bool,
        out: &mut String,
    ) {
        let ev = view.ev;
        for p in &self.parts {
            let (ph, ctx) = match p {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Value(ph, ctx) => (ph, *ctx),
            };
            let s: Option<std::borrow::Cow<'_, str>> = match ph {
                Placeholder::Camera => Some((&*ev.camera).into()),
                Placeholder::Serial => Some((&*ev.serial).into()),
                Placeholder::Topic => {
                    let mut t = String::new();
                    mqtt_path(&ev.topic, include_namespaces, &mut t);
                    if ctx == Context::Text {
                        // Already made safe level by level; '/' separates them on purpose.
                        out.push_str(&t);
                        continue;
                    }
                    Some(t.into())
                }
                Placeholder::TopicRaw => Some(ev.topic.as_str().into()),
                Placeholder::Timestamp => {
                    let n = ev.time_ms.to_string();
                    if ctx == Context::JsonValue {
                        out.push_str(&n);
                        continue;
                    }
                    Some(n.into())
                }
                Placeholder::IsoTime => {
                    // Digits, '-', ':', '.': nothing to escape in any context but a bare value.
                    if ctx == Context::JsonValue {
                        out.push('"');
                    }
                    push_iso_time(out, ev.time_ms);
                    if ctx == Context::JsonValue {
                        out.push('"');
                    }
                    continue;
                }
                Placeholder::SnapshotKey => view.snapshot_key.map(Into::into),
                Placeholder::Source(n) => ev.source.get(n).map(|s| s.as_str().into()),
                Placeholder::Key(n) => ev.key.get(n).map(|s| s.as_str().into()),
                Placeholder::Data(n) => ev.data.get(n).map(|s| s.as_str().into()),
                Placeholder::Path(p) => match p.first(view.json()) {
                    None => None,
                    Some(Value::String(s)) => Some(s.clone().into()),
                    Some(v) if ctx == Context::JsonValue => {
                        out.push_str(&v.to_string());
                        continue;
                    }
                    Some(v) => Some(v.to_string().into()),
                },
            };
            match (ctx, s) {
                (Context::JsonValue, None) => out.push_str("null"),
                (_, None) => {}
                (Context::Text, Some(s)) if for_topic => push_level(out, &s),
                (Context::Text, Some(s)) => out.push_str(&s),
                (Context::JsonString, Some(s)) => {
                    let q = Value::String(s.into_owned()).to_string();
                    out.push_str(&q[1..q.len() - 1]);
                }
                (Context::JsonValue, Some(s)) => {
                    out.push_str(&Value::String(s.into_owned()).to_string())
                }
            }
        }
    }
}

/// A small event for load-time checks of templates.
fn sample_event() -> Event {
    Event {
        camera: "camera".into(),
        serial: "ACCC8E000000".into(),
        kind: EventKind::Event,
        topic: "tns1:Device/tnsaxis:IO/VirtualInput".into(),
        time_ms: 0,
        operation: None,
        stateful: true,
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

/// RFC 3339 UTC with milliseconds: `2025-06-17T08:14:03.512Z`.
pub fn iso_time(ms: i64) -> String {
    let mut s = String::with_capacity(24);
    push_iso_time(&mut s, ms);
    s
}

/// Earliest and latest instants RFC 3339 can write with a four-digit year
/// (0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z): camera clocks can say anything.
const ISO_MIN_MS: i64 = -62_167_219_200_000;
const ISO_MAX_MS: i64 = 253_402_300_799_999;

/// Appends [`iso_time`] without formatting machinery (templates render it per event). Times
/// outside years 0000–9999 are clamped to that range, so the text is always valid RFC 3339.
pub fn push_iso_time(out: &mut String, ms: i64) {
    let ms = ms.clamp(ISO_MIN_MS, ISO_MAX_MS);
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::time::civil_from_days(days);
    let fields = [
        (y, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (sod / 3600, 2, ':'),
        (sod % 3600 / 60, 2, ':'),
        (sod % 60, 2, '.'),
        (milli, 3, 'Z'),
    ];
    for (n, width, sep) in fields {
        for i in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10i64.pow(i) % 10) as u8));
        }
        out.push(sep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Items};

    fn ev() -> Event {
        Event {
            camera: "lobby".into(),
            serial: "ACCC8E012345".into(),
            kind: EventKind::Event,
            topic: "tns1:Device/tnsaxis:IO/VirtualInput".into(),
            time_ms: 5,
            operation: None,
            stateful: true,
            state_item: None,
            item_types: None,
            device: None,
            source: Items::from([("port".into(), "a/b".into())]),
            key: Items::new(),
            data: Items::from([("active".into(), "1".into())]),
            analytics: None,
            ptz: None,
        }
    }

    #[test]
    fn renders_placeholders_and_escapes_topic_levels() {
        let t =
            Template::parse("site/{camera}/{topic}/{source.port}/{data.active}{key.x}").unwrap();
        let mut s = String::new();
        t.render(&ev(), false, true, &mut s);
        assert_eq!(s, "site/lobby/Device/IO/VirtualInput/a%2Fb/1");
        let t = Template::parse("{{\"a\":\"{data.active}\"}}").unwrap();
        s.clear();
        t.render(&ev(), true, false, &mut s);
        assert_eq!(s, "{\"a\":\"1\"}");
    }

    #[test]
    fn bad_templates_name_a_position() {
        assert_eq!(Template::parse("a/{nope}").unwrap_err().position, 2);
        assert!(Template::parse("a/{camera").is_err());
        assert!(Template::parse("a}").is_err());
    }

    fn render(t: &str, ev: &Event, for_topic: bool) -> String {
        let t = if for_topic {
            Template::parse(t)
        } else {
            Template::parse_payload(t)
        }
        .unwrap();
        let mut s = String::new();
        t.render(ev, true, for_topic, &mut s);
        s
    }

    #[test]
    fn every_placeholder_renders() {
        let mut e = ev();
        e.time_ms = 1_750_148_043_512;
        e.key.insert("k".into(), "v".into());
        assert_eq!(
            render(
                "{camera}|{serial}|{topic}|{topic_raw}|{timestamp}|{iso_time}|{source.port}|{key.k}|{data.active}|{$.message.data.active}|{$.message.source}|{$.timestamp}|{$.nope}|{data.nope}",
                &e,
                false
            ),
            "lobby|ACCC8E012345|tns:onvif/Device/tns:axis/IO/VirtualInput|tns1:Device/tnsaxis:IO/VirtualInput|1750148043512|2025-06-17T08:14:03.512Z|a/b|v|1|1|{\"port\":\"a/b\"}|1750148043512||"
        );
        // In a topic, values are made safe as levels; the JSONPath form too.
        assert_eq!(
            render("t/{$.message.source.port}/{iso_time}", &e, true),
            "t/a%2Fb/2025-06-17T08:14:03.512Z"
        );
    }

    #[test]
    fn the_direct_json_view_is_the_events_own() {
        let mut e = ev();
        e.key.insert("k".into(), "v".into());
        let v = json_view(&e);
        assert_eq!(v, e.json_view());
        assert_eq!(v.to_string(), e.json_view().to_string(), "key order too");
    }

    #[test]
    fn iso_time_is_rfc3339_utc_with_milliseconds() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_735_732_800_123), "2025-01-01T12:00:00.123Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_time(-1), "1969-12-31T23:59:59.999Z");
        // Any i64 renders valid RFC 3339: years clamp to 0000..=9999.
        assert_eq!(iso_time(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(iso_time(-62_167_219_200_001), "0000-01-01T00:00:00.000Z");
        assert_eq!(iso_time(-62_135_596_800_000), "0001-01-01T00:00:00.000Z");
        assert_eq!(iso_time(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn json_templates_escape_strings_and_render_values() {
        let mut e = ev();
        e.data.insert("note".into(), "say \"hi\"\n".into());
        let t = r#"{{"note":"{data.note}","active":{data.active},"src":{$.message.source},"t":{timestamp},"missing":{data.nope},"gone":"{$.x}"}}"#;
        let s = render(t, &e, false);
        assert_eq!(
            s,
            r#"{"note":"say \"hi\"\n","active":"1","src":{"port":"a/b"},"t":5,"missing":null,"gone":""}"#
        );
        serde_json::from_str::<serde_json::Value>(&s).unwrap();
        let t = Template::parse_payload(t).unwrap();
        assert!(t.is_json() && t.needs_view());
        assert!(t.check_json().is_ok());
        assert_eq!(
            t.optional_fields(),
            [
                "{data.note}",
                "{data.active}",
                "{$.message.source}",
                "{data.nope}",
                "{$.x}"
            ]
        );
        // A text payload stays text.
        let t = Template::parse_payload("{camera} is {data.active}").unwrap();
        assert!(!t.is_json() && !t.needs_view());
        // Broken JSON is found at load time.
        let t = Template::parse_payload(r#"{{"a":{camera}"#).unwrap();
        assert!(t.check_json().is_err());
        let t = Template::parse_payload(r#"{{"a": x{camera}}}"#).unwrap();
        assert!(t.check_json().is_err());
    }

    #[test]
    fn bad_json_paths_are_template_errors() {
        assert_eq!(Template::parse("a/{$.[}").unwrap_err().position, 2);
    }
}
