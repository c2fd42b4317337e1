//! Routing: which events go where, in what shape (DESIGN.md §4, §5).
//!
//! Rules are compiled once from the config and evaluated in file order. Every matching rule
//! adds one delivery per destination it names; `drop = true` silences an event for the rules
//! after it, `stop = true` ends matching after a rule.

pub mod template;
pub mod topic_filter;

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Config, RetainPolicy, RuleConfig};
use crate::delivery::Delivery;
use crate::event::{Event, EventKind, Operation, mqtt_path, push_level};
use template::{Template, TemplateError};
use topic_filter::{TopicFilter, TopicFilterError};

/// Why a rule does not compile (config validation reports these with file and line first).
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// Bad `topic`.
    #[error("rule {rule:?}: topic: {source}")]
    Topic {
        /// Rule name.
        rule: String,
        /// Parse error.
        source: TopicFilterError,
    },
    /// Bad `prefix`, `mqtt_topic` or `payload` template.
    #[error("rule {rule:?}: {field}: {source}")]
    Template {
        /// Rule name.
        rule: String,
        /// Which field.
        field: &'static str,
        /// Parse error.
        source: TemplateError,
    },
}

/// How a rule shapes the payload.
#[derive(Debug, Clone)]
enum PayloadShape {
    /// The camera's own MQTT payload.
    Axis,
    /// A template.
    Template(Template),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Rule name.
    pub name: Arc<str>,
    cameras: Option<HashSet<String>>,
    /// The topic filter, also sent to cameras in `events:configure`.
    pub filter: TopicFilter,
    to: Vec<Arc<str>>,
    prefix: Template,
    mqtt_topic: Option<Template>,
    include_namespaces: bool,
    include_condition_name: bool,
    include_serial: bool,
    payload: PayloadShape,
    qos: u8,
    retain: RetainPolicy,
    drop: bool,
    stop: bool,
}

impl Rule {
    /// Compiles one `[[rule]]`.
    pub fn compile(rc: &RuleConfig) -> Result<Self, RuleError> {
        let tmpl = |field: &'static str, s: &str| {
            Template::parse(s).map_err(|source| RuleError::Template {
                rule: rc.name.clone(),
                field,
                source,
            })
        };
        Ok(Self {
            name: rc.name.as_str().into(),
            cameras: rc.cameras.as_ref().map(|c| c.iter().cloned().collect()),
            filter: TopicFilter::parse(rc.topic.as_deref().unwrap_or("")).map_err(|source| {
                RuleError::Topic {
                    rule: rc.name.clone(),
                    source,
                }
            })?,
            to: rc.to.iter().map(|s| s.as_str().into()).collect(),
            prefix: tmpl("prefix", &rc.prefix)?,
            mqtt_topic: rc
                .mqtt_topic
                .as_deref()
                .map(|t| tmpl("mqtt_topic", t))
                .transpose()?,
            include_namespaces: rc.include_namespaces,
            include_condition_name: rc.include_condition_name,
            include_serial: rc.include_serial,
            payload: if rc.payload == "axis" {
                PayloadShape::Axis
            } else {
                PayloadShape::Template(tmpl("payload", &rc.payload)?)
            },
            qos: rc.qos,
            retain: rc.retain,
            drop: rc.drop,
            stop: rc.stop,
        })
    }

    /// Whether this rule applies to a camera at all (used to build its camera filter list).
    pub fn applies_to_camera(&self, camera: &str) -> bool {
        self.cameras.as_ref().is_none_or(|c| c.contains(camera))
    }

    fn matches(&self, ev: &Event) -> bool {
        // Analytics frames and PTZ status have no event topic: only rules taking "all" see them.
        let topic_ok = match ev.kind {
            EventKind::Event => self.filter.matches(&ev.topic),
            EventKind::Analytics | EventKind::Ptz => self.filter.is_all(),
        };
        self.applies_to_camera(&ev.camera) && topic_ok
    }

    /// The MQTT topic of an event under this rule (DESIGN.md §4).
    pub fn topic_for(&self, ev: &Event) -> String {
        let mut t = String::with_capacity(64 + ev.topic.len());
        if let Some(tmpl) = &self.mqtt_topic {
            tmpl.render(ev, self.include_namespaces, true, &mut t);
            return t;
        }
        self.prefix
            .render(ev, self.include_namespaces, true, &mut t);
        match ev.kind {
            EventKind::Event => {}
            EventKind::Analytics => {
                t.push_str("/analytics/frame");
                return t;
            }
            EventKind::Ptz => {
                t.push_str("/ptz/status");
                return t;
            }
        }
        if self.include_condition_name {
            t.push_str("/event/");
            mqtt_path(&ev.topic, self.include_namespaces, &mut t);
            for (name, value) in &ev.source {
                t.push_str("/$source/");
                push_level(&mut t, name);
                t.push('/');
                push_level(&mut t, value);
            }
        }
        t
    }

    /// The payload and retain flag of an event under this rule.
    pub fn payload_for(&self, ev: &Event) -> (Vec<u8>, bool) {
        let retain = match self.retain {
            RetainPolicy::None => false,
            RetainPolicy::All => true,
            RetainPolicy::Property => ev.stateful,
        };
        // A deleted property clears its retained state: an empty retained message does that.
        if retain && ev.operation == Some(Operation::Deleted) {
            return (Vec::new(), true);
        }
        let body = match &self.payload {
            PayloadShape::Axis => ev.payload(self.include_serial),
            PayloadShape::Template(t) => {
                let mut s = String::new();
                t.render(ev, self.include_namespaces, false, &mut s);
                s
            }
        };
        (body.into_bytes(), retain)
    }
}

/// All rules of a config, in order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// A delivery bound for one named destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Destination name.
    pub destination: Arc<str>,
    /// What to send.
    pub delivery: Delivery,
}

impl RuleSet {
    /// Compiles every rule of a config.
    pub fn compile(cfg: &Config) -> Result<Self, RuleError> {
        Ok(Self {
            rules: cfg
                .rule
                .iter()
                .map(Rule::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The topic filters to ask a camera for: those of every rule that can match it.
    pub fn camera_filters(&self, camera: &str) -> Vec<String> {
        topic_filter::camera_filter_list(
            self.rules
                .iter()
                .filter(|r| r.applies_to_camera(camera) && !r.drop)
                .map(|r| &r.filter),
        )
    }

    /// Evaluates the rules for one event, appending its deliveries to `out`.
    pub fn route(&self, ev: &Event, now_ms: i64, out: &mut Vec<Routed>) {
        for rule in &self.rules {
            if !rule.matches(ev) {
                continue;
            }
            if rule.drop {
                return;
            }
            if !rule.to.is_empty() {
                let topic = rule.topic_for(ev);
                let (payload, retain) = rule.payload_for(ev);
                for dest in &rule.to {
                    out.push(Routed {
                        destination: dest.clone(),
                        delivery: Delivery {
                            topic: topic.clone(),
                            payload: payload.clone(),
                            qos: rule.qos,
                            retain,
                            created_ms: now_ms,
                            camera: ev.camera.to_string(),
                        },
                    });
                }
            }
            if rule.stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Frame, Items, PtzStatus};

    fn rule(toml_body: &str) -> Rule {
        let rc: RuleConfig =
            toml::from_str(&format!("name = \"r\"\nto = [\"d\"]\n{toml_body}")).unwrap();
        Rule::compile(&rc).unwrap()
    }

    fn vi(operation: Option<Operation>) -> Event {
        Event {
            camera: "lobby".into(),
            serial: "B8A44F3E9D21".into(),
            kind: EventKind::Event,
            topic: "tns1:Device/tnsaxis:IO/VirtualInput".into(),
            time_ms: 1_750_148_043_512,
            operation,
            stateful: true,
            source: Items::from([("port".into(), "7".into())]),
            key: Items::new(),
            data: Items::from([("active".into(), "1".into())]),
            analytics: None,
            ptz: None,
        }
    }

    #[test]
    fn default_topic_and_its_options() {
        let e = vi(None);
        assert_eq!(
            rule("").topic_for(&e),
            "axis/B8A44F3E9D21/event/tns:onvif/Device/tns:axis/IO/VirtualInput/$source/port/7"
        );
        assert_eq!(
            rule("include_namespaces = false").topic_for(&e),
            "axis/B8A44F3E9D21/event/Device/IO/VirtualInput/$source/port/7"
        );
        assert_eq!(
            rule("include_condition_name = false").topic_for(&e),
            "axis/B8A44F3E9D21"
        );
        assert_eq!(
            rule("mqtt_topic = \"site/{camera}/{topic}\"").topic_for(&e),
            "site/lobby/tns:onvif/Device/tns:axis/IO/VirtualInput"
        );
    }

    #[test]
    fn retain_policies_and_deleted_clears() {
        let (_, r) = rule("").payload_for(&vi(None));
        assert!(!r);
        let (_, r) = rule("retain = \"property\"").payload_for(&vi(None));
        assert!(r);
        let mut stateless = vi(None);
        stateless.stateful = false;
        assert!(!rule("retain = \"property\"").payload_for(&stateless).1);
        assert!(rule("retain = \"all\"").payload_for(&stateless).1);
        let (p, r) = rule("retain = \"property\"").payload_for(&vi(Some(Operation::Deleted)));
        assert!(p.is_empty() && r);
    }

    #[test]
    fn drop_and_stop_end_matching() {
        let cfg: Config = toml::from_str(
            r#"
            [[rule]]
            name = "silence"
            topic = "tnsaxis:Storage//."
            drop = true
            [[rule]]
            name = "first"
            topic = "tns1:Device//."
            to = ["a"]
            stop = true
            [[rule]]
            name = "all"
            to = ["b"]
            "#,
        )
        .unwrap();
        let rs = RuleSet::compile(&cfg).unwrap();
        let mut out = Vec::new();
        rs.route(&vi(None), 0, &mut out);
        assert_eq!(
            out.iter().map(|r| &*r.destination).collect::<Vec<_>>(),
            ["a"]
        );
        out.clear();
        let mut storage = vi(None);
        storage.topic = "tnsaxis:Storage/Alert".into();
        rs.route(&storage, 0, &mut out);
        assert!(out.is_empty());
        storage.topic = "tns1:VideoSource/tnsaxis:Tampering".into();
        rs.route(&storage, 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(rs.camera_filters("lobby"), vec!["//."]);
    }

    #[test]
    fn analytics_and_ptz_topics_and_matching() {
        let mut a = vi(None);
        a.kind = EventKind::Analytics;
        a.topic = String::new();
        a.analytics = Some(Frame::default().into());
        let mut p = vi(None);
        p.kind = EventKind::Ptz;
        p.topic = String::new();
        p.ptz = Some(PtzStatus::default().into());
        assert_eq!(rule("").topic_for(&a), "axis/B8A44F3E9D21/analytics/frame");
        assert_eq!(
            rule("include_condition_name = false").topic_for(&p),
            "axis/B8A44F3E9D21/ptz/status"
        );
        assert_eq!(
            rule("mqtt_topic = \"site/{camera}\"").topic_for(&p),
            "site/lobby"
        );
        assert!(rule("").matches(&a) && rule("topic = \"\"").matches(&p));
        let io = rule("topic = \"tns1:Device//.\"");
        assert!(io.matches(&vi(None)));
        assert!(!io.matches(&a) && !io.matches(&p));
        assert_eq!(
            rule("").payload_for(&p).0,
            br#"{"timestamp":1750148043512}"#
        );
    }
}
