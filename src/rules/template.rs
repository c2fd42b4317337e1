//! `{placeholder}` templates for topics and payloads.
//!
//! Placeholders: `{camera}`, `{serial}`, `{topic}` (MQTT topic-path spelling as the rule
//! configures namespaces), `{topic_raw}` (camera spelling), `{timestamp}` (epoch ms),
//! `{source.NAME}`, `{key.NAME}`, `{data.NAME}`. `{{` and `}}` are literal braces. A missing
//! value renders empty. Values put into topics are made safe for MQTT topic levels.

use crate::event::{Event, mqtt_path, push_level};

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Camera,
    Serial,
    Topic,
    TopicRaw,
    Timestamp,
    Source(String),
    Key(String),
    Data(String),
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
    /// Compiles a template string.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|x| x.1) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|x| x.1) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let rest = &s[i + 1..];
                    let end = rest.find('}').ok_or_else(|| TemplateError {
                        position: i,
                        reason: "unclosed '{'".into(),
                    })?;
                    let name = &rest[..end];
                    let part = match name {
                        "camera" => Part::Camera,
                        "serial" => Part::Serial,
                        "topic" => Part::Topic,
                        "topic_raw" => Part::TopicRaw,
                        "timestamp" => Part::Timestamp,
                        _ => match name.split_once('.') {
                            Some(("source", n)) if !n.is_empty() => Part::Source(n.into()),
                            Some(("key", n)) if !n.is_empty() => Part::Key(n.into()),
                            Some(("data", n)) if !n.is_empty() => Part::Data(n.into()),
                            _ => {
                                return Err(TemplateError {
                                    position: i,
                                    reason: format!("unknown placeholder {{{name}}}"),
                                });
                            }
                        },
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(part);
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
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// Renders into `out`. `for_topic` makes substituted values safe as MQTT topic levels.
    pub fn render(&self, ev: &Event, include_namespaces: bool, for_topic: bool, out: &mut String) {
        let value = |out: &mut String, v: &str| {
            if for_topic {
                push_level(out, v)
            } else {
                out.push_str(v)
            }
        };
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Camera => value(out, &ev.camera),
                Part::Serial => value(out, &ev.serial),
                Part::Topic => mqtt_path(&ev.topic, include_namespaces, out),
                Part::TopicRaw => value(out, &ev.topic),
                Part::Timestamp => out.push_str(&ev.time_ms.to_string()),
                Part::Source(n) => value(out, ev.source.get(n).map_or("", |s| s)),
                Part::Key(n) => value(out, ev.key.get(n).map_or("", |s| s)),
                Part::Data(n) => value(out, ev.data.get(n).map_or("", |s| s)),
            }
        }
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
}
