//! One ONVIF `tt:MetadataStream` document to events, analytics frames and PTZ status
//! (fixtures/README.md §2.6–2.9). Namespace-aware: elements are matched by namespace URI,
//! never by prefix text, and the prefixes inside topic text are resolved through the
//! declarations in scope at `wsnt:Topic`.
//!
//! Bounded in memory: at most [`MAX_XML_NODES`] nodes are parsed per document, and a
//! notification or frame over the caps of [`crate::sources::limits`] (topic length, item
//! count and sizes, objects per frame) is skipped while the rest of its document is kept; the
//! document then reports the first such error, so the camera's malformed count goes up once.

use std::sync::Arc;

use roxmltree::{Document, Node, ParsingOptions};

use crate::event::{
    BoundingBox, Event, EventKind, Frame, Items, Namespace, Object, Operation, PtzMoving,
    PtzStatus, split_segment,
};
use crate::sources::limits::{self, LimitError, MAX_ITEM_NAME_BYTES, MAX_OBJECTS, MAX_XML_NODES};
use crate::time::parse_rfc3339_ms;

/// ONVIF schema namespace (`tt`).
pub const TT: &str = "http://www.onvif.org/ver10/schema";
/// WS-BaseNotification namespace (`wsnt`).
pub const WSNT: &str = "http://docs.oasis-open.org/wsn/b-2";

/// A document that is not well-formed XML or not a metadata stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed metadata document: {0}")]
pub struct OnvifError(pub String);

/// Who the events belong to, and the time to use when a message carries none.
#[derive(Debug, Clone)]
pub struct Context {
    /// Camera config name.
    pub camera: Arc<str>,
    /// Device serial.
    pub serial: Arc<str>,
    /// Arrival time, epoch ms.
    pub now_ms: i64,
}

/// Parses one document (bytes as reassembled from RTP), appending what it holds to `out` in
/// document order. The empty document yields nothing.
pub fn parse_document(xml: &[u8], ctx: &Context, out: &mut Vec<Event>) -> Result<(), OnvifError> {
    let text = std::str::from_utf8(xml).map_err(|e| OnvifError(format!("not UTF-8: {e}")))?;
    let options = ParsingOptions {
        nodes_limit: MAX_XML_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| OnvifError(e.to_string()))?;
    let root = doc.root_element();
    if !is(root, TT, "MetadataStream") {
        return Err(OnvifError(format!(
            "root element is {:?}, not tt:MetadataStream",
            root.tag_name().name()
        )));
    }
    let mut refused: Option<LimitError> = None;
    let mut keep = |r: Result<Option<Event>, LimitError>| match r {
        Ok(ev) => out.extend(ev),
        Err(e) => {
            refused.get_or_insert(e);
        }
    };
    for child in elements(root) {
        if is(child, TT, "Event") {
            for n in elements(child).filter(|n| is(*n, WSNT, "NotificationMessage")) {
                keep(notification(n, ctx));
            }
        } else if is(child, TT, "VideoAnalytics") {
            for f in elements(child).filter(|n| is(*n, TT, "Frame")) {
                keep(frame(f, ctx).map(Some));
            }
        } else if is(child, TT, "PTZ") {
            for s in elements(child).filter(|n| is(*n, TT, "PTZStatus")) {
                keep(ptz(s, ctx).map(Some));
            }
        }
    }
    match refused {
        Some(e) => Err(OnvifError(format!("skipped an event: {e}"))),
        None => Ok(()),
    }
}

fn is(n: Node, ns: &str, local: &str) -> bool {
    n.is_element() && n.tag_name().name() == local && n.tag_name().namespace() == Some(ns)
}

fn elements<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(Node::is_element)
}

fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, local: &str) -> Option<Node<'a, 'i>> {
    elements(n).find(|c| is(*c, ns, local))
}

fn base_event(ctx: &Context, kind: EventKind, time: Option<&str>) -> Event {
    let mut ev = Event::new(
        ctx.camera.clone(),
        ctx.serial.clone(),
        String::new(),
        time.and_then(parse_rfc3339_ms).unwrap_or(ctx.now_ms),
    );
    ev.kind = kind;
    ev
}

/// One `wsnt:NotificationMessage` (RTSP metadata and PullMessages replies share the shape);
/// `None` when it has no topic.
pub fn notification(n: Node, ctx: &Context) -> Result<Option<Event>, LimitError> {
    let Some(topic_node) = child(n, WSNT, "Topic") else {
        return Ok(None);
    };
    let text = topic_node.text().unwrap_or("").trim();
    limits::check_topic(text)?;
    let topic = resolve_topic(topic_node, text);
    if topic.is_empty() {
        return Ok(None);
    }
    limits::check_topic(&topic)?;
    let msg = child(n, WSNT, "Message").and_then(|m| child(m, TT, "Message"));
    let mut ev = base_event(
        ctx,
        EventKind::Event,
        msg.and_then(|m| m.attribute("UtcTime")),
    );
    ev.topic = topic;
    if let Some(m) = msg {
        if let Some(op) = m.attribute("PropertyOperation") {
            ev.stateful = true;
            ev.operation = Operation::parse(op.trim());
        }
        ev.source = items(m, "Source");
        ev.key = items(m, "Key");
        ev.data = items(m, "Data");
        limits::check_items("source", &ev.source)?;
        limits::check_items("key", &ev.key)?;
        limits::check_items("data", &ev.data)?;
    }
    Ok(Some(ev))
}

/// `tt:SimpleItem Name Value` children of `tt:{list}`, in order; values already unescaped.
fn items(msg: Node, list: &str) -> Items {
    let mut out = Items::new();
    if let Some(l) = child(msg, TT, list) {
        for it in elements(l).filter(|c| is(*c, TT, "SimpleItem")) {
            if let Some(name) = it.attribute("Name") {
                out.insert(
                    name.to_string(),
                    it.attribute("Value").unwrap_or("").to_string(),
                );
            }
        }
    }
    out
}

/// Canonical `tns1:`/`tnsaxis:` spelling of topic text, prefixes looked up in scope at `node`.
fn resolve_topic(node: Node, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, seg) in text.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match split_segment(seg) {
            (Some(prefix), local) => {
                let ns = match node.lookup_namespace_uri(Some(prefix)) {
                    Some(uri) => Namespace::from_uri(uri),
                    None => Namespace::from_prefix(prefix),
                };
                out.push_str(match ns {
                    Some(ns) => ns.camera_prefix(),
                    None => prefix,
                });
                out.push(':');
                out.push_str(local);
            }
            (None, local) => out.push_str(local),
        }
    }
    out
}

fn num(s: Option<&str>) -> Option<f64> {
    s?.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// One `tt:Frame`; more than [`MAX_OBJECTS`] objects, or an id, class or source longer than
/// an item name may be, is refused.
fn frame(f: Node, ctx: &Context) -> Result<Event, LimitError> {
    let mut ev = base_event(ctx, EventKind::Analytics, f.attribute("UtcTime"));
    let listed = || elements(f).filter(|o| is(*o, TT, "Object"));
    if listed().nth(MAX_OBJECTS).is_some() {
        return Err(LimitError::ItemCount { list: "objects" });
    }
    let objects: Vec<Object> = listed()
        .map(|o| {
            let app = child(o, TT, "Appearance");
            let bbox = app
                .and_then(|a| child(a, TT, "Shape"))
                .and_then(|s| child(s, TT, "BoundingBox"))
                .and_then(|b| {
                    Some(BoundingBox {
                        left: num(b.attribute("left"))?,
                        top: num(b.attribute("top"))?,
                        right: num(b.attribute("right"))?,
                        bottom: num(b.attribute("bottom"))?,
                    })
                });
            let (class, score) = app
                .and_then(|a| child(a, TT, "Class"))
                .map(class)
                .unwrap_or_default();
            Object {
                id: o.attribute("ObjectId").unwrap_or("").to_string(),
                class,
                score,
                bbox,
            }
        })
        .collect();
    let source = f.attribute("Source").map(str::to_string);
    let names = objects
        .iter()
        .flat_map(|o| [Some(o.id.as_str()), o.class.as_deref()])
        .chain([source.as_deref()])
        .flatten();
    for name in names {
        if name.len() > MAX_ITEM_NAME_BYTES {
            return Err(LimitError::ItemSize {
                list: "objects",
                what: "name",
                len: name.len(),
                max: MAX_ITEM_NAME_BYTES,
            });
        }
    }
    ev.analytics = Some(Arc::new(Frame { source, objects }));
    Ok(ev)
}

/// The most likely class of a `tt:Class`: `Type` elements with a `Likelihood` attribute, or
/// the older `ClassCandidate` (`Type` and `Likelihood` children).
fn class(c: Node) -> (Option<String>, Option<f64>) {
    let mut best: Option<(String, Option<f64>)> = None;
    let mut consider = |name: Option<&str>, score: Option<f64>| {
        let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
            return;
        };
        let better = match &best {
            None => true,
            Some((_, s)) => score.unwrap_or(f64::MIN) > s.unwrap_or(f64::MIN),
        };
        if better {
            best = Some((name.to_string(), score));
        }
    };
    for e in elements(c) {
        if is(e, TT, "Type") {
            consider(e.text(), num(e.attribute("Likelihood")));
        } else if is(e, TT, "ClassCandidate") {
            let t = child(e, TT, "Type").and_then(|t| t.text());
            let l = num(child(e, TT, "Likelihood").and_then(|l| l.text()));
            consider(t, l);
        }
    }
    match best {
        Some((n, s)) => (Some(n), s),
        None => (None, None),
    }
}

/// One `tt:PTZStatus`; a move status longer than an item name may be is refused.
fn ptz(s: Node, ctx: &Context) -> Result<Event, LimitError> {
    let time = child(s, TT, "UtcTime").and_then(|t| t.text());
    let mut ev = base_event(ctx, EventKind::Ptz, time);
    let pos = child(s, TT, "Position");
    let pan_tilt = pos.and_then(|p| child(p, TT, "PanTilt"));
    let zoom = pos.and_then(|p| child(p, TT, "Zoom"));
    let moving = child(s, TT, "MoveStatus").map(|m| PtzMoving {
        pan_tilt: child(m, TT, "PanTilt")
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string()),
        zoom: child(m, TT, "Zoom")
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string()),
    });
    if let Some(m) = &moving {
        for text in [&m.pan_tilt, &m.zoom].into_iter().flatten() {
            if text.len() > MAX_ITEM_NAME_BYTES {
                return Err(LimitError::ItemSize {
                    list: "ptz",
                    what: "value",
                    len: text.len(),
                    max: MAX_ITEM_NAME_BYTES,
                });
            }
        }
    }
    ev.ptz = Some(Arc::new(PtzStatus {
        pan: num(pan_tilt.and_then(|n| n.attribute("x"))),
        tilt: num(pan_tilt.and_then(|n| n.attribute("y"))),
        zoom: num(zoom.and_then(|n| n.attribute("x"))),
        moving,
    }));
    Ok(ev)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::RuleConfig;
    use crate::rules::Rule;
    use rand::{Rng, SeedableRng};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

    pub(crate) fn ctx() -> Context {
        Context {
            camera: "lobby".into(),
            serial: "B8A44F3E9D21".into(),
            now_ms: 1,
        }
    }

    fn rule(extra: &str) -> Rule {
        let rc: RuleConfig =
            toml::from_str(&format!("name = \"r\"\nto = [\"d\"]\n{extra}")).unwrap();
        Rule::compile(&rc).unwrap()
    }

    /// Checks parsed events against one line of `expected-mqtt-rtsp.jsonl`.
    pub(crate) fn check_expected(fixture: &str, events: &[Event]) {
        let lines = std::fs::read_to_string(format!("{FIXTURES}expected-mqtt-rtsp.jsonl")).unwrap();
        let exp: serde_json::Value = lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["fixture"] == fixture)
            .unwrap_or_else(|| panic!("{fixture} not in expectations"));
        let msgs = exp["messages"].as_array().unwrap();
        assert_eq!(events.len(), msgs.len(), "{fixture}: message count");
        let (plain, no_ns, property) = (
            rule(""),
            rule("include_namespaces = false"),
            rule("retain = \"property\"\ninclude_serial = true"),
        );
        for (ev, m) in events.iter().zip(msgs) {
            assert_eq!(plain.topic_for(ev), m["topic"], "{fixture}");
            if !m["topic_no_namespaces"].is_null() {
                assert_eq!(no_ns.topic_for(ev), m["topic_no_namespaces"], "{fixture}");
            }
            let (payload, retain) = property.payload_for(ev);
            let want = serde_json::to_string(&m["payload"]).unwrap();
            assert_eq!(String::from_utf8(payload).unwrap(), want, "{fixture}");
            assert_eq!(retain, m["retain_under_property"], "{fixture}");
            let kind = match ev.kind {
                EventKind::Event => "event",
                EventKind::Analytics => "analytics",
                EventKind::Ptz => "ptz",
            };
            assert_eq!(exp["kind"], kind, "{fixture}");
        }
    }

    pub(crate) fn metadata_fixtures() -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(FIXTURES)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("rtsp-metadata-") && n.ends_with(".xml"))
            .map(|n| {
                let b = std::fs::read(format!("{FIXTURES}{n}")).unwrap();
                (n, b)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_fixture_gives_exactly_its_expected_messages() {
        let all = metadata_fixtures();
        assert_eq!(all.len(), 13);
        for (name, xml) in all {
            let mut out = Vec::new();
            parse_document(&xml, &ctx(), &mut out).unwrap();
            check_expected(&name, &out);
        }
    }

    #[test]
    fn file_02_equals_websocket_line_2() {
        let xml = std::fs::read(format!("{FIXTURES}rtsp-metadata-02-pir-changed.xml")).unwrap();
        let mut out = Vec::new();
        parse_document(&xml, &ctx(), &mut out).unwrap();
        let expected = std::fs::read_to_string(format!("{FIXTURES}expected-mqtt.jsonl")).unwrap();
        let line2: serde_json::Value =
            serde_json::from_str(expected.lines().nth(1).unwrap()).unwrap();
        let r = rule("include_serial = true");
        assert_eq!(r.topic_for(&out[0]), line2["topic"]);
        assert_eq!(
            out[0].payload(true),
            serde_json::to_string(&line2["payload"]).unwrap()
        );
        assert_eq!(out[0].operation, Some(Operation::Changed));
        assert!(out[0].stateful);
    }

    #[test]
    fn canonical_topics_and_older_class_candidates() {
        let xml = std::fs::read(format!(
            "{FIXTURES}rtsp-metadata-10-virtualinput-other-prefixes.xml"
        ))
        .unwrap();
        let mut out = Vec::new();
        parse_document(&xml, &ctx(), &mut out).unwrap();
        assert_eq!(out[0].topic, "tns1:Device/tnsaxis:IO/VirtualInput");
        let old = r#"<tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics>
            <tt:Frame UtcTime="2025-06-17T08:20:34.1339Z" Source="vs1"><tt:Object ObjectId="3"><tt:Appearance><tt:Class>
            <tt:ClassCandidate><tt:Type>Vehicle</tt:Type><tt:Likelihood>0.4</tt:Likelihood></tt:ClassCandidate>
            <tt:ClassCandidate><tt:Type>Human</tt:Type><tt:Likelihood>0.6</tt:Likelihood></tt:ClassCandidate>
            </tt:Class></tt:Appearance></tt:Object></tt:Frame><tt:Frame UtcTime="2025-06-17T08:20:35Z"/></tt:VideoAnalytics>
            <acme:Thing xmlns:acme="urn:x"/></tt:MetadataStream>"#;
        out.clear();
        parse_document(old.as_bytes(), &ctx(), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].payload(false),
            r#"{"timestamp":1750148434133,"source":"vs1","objects":[{"id":"3","class":"Human","score":0.6}]}"#
        );
        assert_eq!(
            out[1].payload(false),
            r#"{"timestamp":1750148435000,"objects":[]}"#
        );
    }

    #[test]
    fn malformed_documents_are_errors() {
        let mut out = Vec::new();
        for bad in [
            &b"<tt:MetadataStream"[..],
            b"",
            b"\xff\xfe",
            b"<a/>",
            b"<x:MetadataStream xmlns:x=\"urn:no\"/>",
        ] {
            assert!(parse_document(bad, &ctx(), &mut out).is_err());
        }
        assert!(out.is_empty());
    }

    #[test]
    fn an_event_over_the_caps_is_skipped_and_the_rest_of_its_document_kept() {
        let two =
            std::fs::read_to_string(format!("{FIXTURES}rtsp-metadata-11-two-notifications.xml"))
                .unwrap();
        let long = format!("tns1:PTZController/{}", "x".repeat(200 * 1024));
        let doc = two.replacen("tns1:PTZController/tnsaxis:Move/Channel_1", &long, 1);
        let mut out = Vec::new();
        let e = parse_document(doc.as_bytes(), &ctx(), &mut out).unwrap_err();
        assert!(e.0.contains("topic of 204819 bytes"), "{e}");
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].topic,
            "tns1:PTZController/tnsaxis:PTZPresets/Channel_1"
        );

        let items: String = (0..=limits::MAX_ITEMS)
            .map(|i| format!(r#"<tt:SimpleItem Name="i{i}" Value="1"/>"#))
            .collect();
        let doc = two.replacen(r#"<tt:SimpleItem Name="is_moving" Value="0"/>"#, &items, 1);
        out.clear();
        let e = parse_document(doc.as_bytes(), &ctx(), &mut out).unwrap_err();
        assert!(e.0.contains("data list of more than"), "{e}");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn documents_of_countless_nodes_are_refused() {
        let head = r#"<tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema">"#;
        let doc = format!(
            "{head}{}</tt:MetadataStream>",
            "<a/>".repeat(MAX_XML_NODES as usize)
        );
        let mut out = Vec::new();
        let e = parse_document(doc.as_bytes(), &ctx(), &mut out).unwrap_err();
        assert!(e.0.contains("nodes limit"), "{e}");
        let objects = format!(
            r#"{head}<tt:VideoAnalytics><tt:Frame UtcTime="2025-06-17T08:21:05Z">{}</tt:Frame></tt:VideoAnalytics></tt:MetadataStream>"#,
            r#"<tt:Object ObjectId="1"/>"#.repeat(MAX_OBJECTS + 1)
        );
        let e = parse_document(objects.as_bytes(), &ctx(), &mut out).unwrap_err();
        assert!(e.0.contains("objects list"), "{e}");
        assert!(out.is_empty());
    }

    #[test]
    fn random_and_mutated_documents_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let fixtures = metadata_fixtures();
        let mut out = Vec::new();
        for round in 0..3_000 {
            let mut bytes = fixtures[round % fixtures.len()].1.clone();
            if round % 4 == 0 {
                bytes = (0..rng.random_range(0..512))
                    .map(|_| rng.random())
                    .collect();
            } else {
                for _ in 0..rng.random_range(1..6) {
                    match rng.random_range(0..3) {
                        0 if !bytes.is_empty() => {
                            let i = rng.random_range(0..bytes.len());
                            bytes[i] = rng.random();
                        }
                        1 if !bytes.is_empty() => {
                            let i = rng.random_range(0..bytes.len());
                            bytes.truncate(i);
                        }
                        _ => {
                            let i = rng.random_range(0..=bytes.len());
                            bytes.insert(i, b"<>&;:/\"'="[rng.random_range(0..9)]);
                        }
                    }
                }
            }
            out.clear();
            let _ = parse_document(&bytes, &ctx(), &mut out);
        }
    }
}
