//! Routing: which events go where, in what shape (DESIGN.md §4, §5).
//!
//! Rules are compiled once from the config and evaluated in file order. Every matching rule
//! adds one delivery per destination it names; `drop = true` silences an event for the rules
//! after it, `stop = true` ends matching after a rule.
//!
//! A rule matches an event when its cameras, its topic filter and its `when` condition (a
//! JSONPath over [`Event::json_view`], compiled once) all agree. The JSON view is built once
//! per event and only if a matching rule needs it. A matching rule then passes the event
//! through `only_changes` and `max_rate` ([`state`]) before it delivers; those never change
//! which later rules see the event (`drop` and `stop` do).
//!
//! A rule with `snapshot = true` that delivers an event as it arrives (not a held
//! `max_rate_keep = "latest"` one, whose moment has passed) also asks for a picture: one
//! [`SnapshotRequest`] per event, naming every object-store destination of every such rule.
//!
//! The default payload is the camera's, byte for byte; `typed_values = true` ([`typed`]) writes
//! catalog-typed items as JSON booleans and numbers instead. Destinations with
//! `home_assistant = true` get a discovery config before an instance's first delivery
//! ([`discovery`]).

pub mod bench;
pub mod discovery;
pub mod state;
pub mod template;
pub mod topic_filter;
pub mod typed;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::{Config, DestinationConfig, RetainPolicy, RuleConfig, units};
use crate::delivery::Delivery;
use crate::event::{Event, EventKind, Operation, mqtt_path, payload_topic, push_level};
use crate::sinks::object_store::batch::ObjectFormat;
use crate::sinks::object_store::object_format;
use state::{ChangeFilter, Decision, RateLimiter};
use template::{JsonPathExpr, Template, TemplateError, View};
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
    /// Bad `when`, `payload` JSON or `max_rate`.
    #[error("rule {rule:?}: {field}: {message}")]
    Invalid {
        /// Rule name.
        rule: String,
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// How a rule shapes the payload.
#[derive(Debug, Clone)]
enum PayloadShape {
    /// The camera's own MQTT payload.
    Axis,
    /// Analytics frames summarised (object counts per class); the camera payload otherwise.
    Summary,
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
    when: Option<JsonPathExpr>,
    to: Vec<Arc<str>>,
    prefix: Template,
    mqtt_topic: Option<Template>,
    include_namespaces: bool,
    include_condition_name: bool,
    include_serial: bool,
    typed_values: bool,
    payload: PayloadShape,
    qos: u8,
    retain: RetainPolicy,
    drop: bool,
    stop: bool,
    only_changes: bool,
    max_rate: Option<units::Rate>,
    max_rate_keep: state::Keep,
    snapshot: bool,
    /// The object-store destinations of `to` when `snapshot = true` (set by
    /// [`RuleSet::compile`], which knows the destinations' kinds).
    snapshot_to: Vec<Arc<str>>,
    /// Where the event's snapshot is named from (the first of `snapshot_to`): its key goes
    /// into `{snapshot_key}` and the default payload's `snapshot` field.
    snapshot_ref: Option<(Arc<str>, Arc<ObjectFormat>)>,
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
        let invalid = |field: &'static str, message: String| RuleError::Invalid {
            rule: rc.name.clone(),
            field,
            message,
        };
        let payload = if rc.payload == "axis" {
            PayloadShape::Axis
        } else if rc.payload == "summary" {
            PayloadShape::Summary
        } else {
            let t = Template::parse_payload(&rc.payload).map_err(|source| RuleError::Template {
                rule: rc.name.clone(),
                field: "payload",
                source,
            })?;
            t.check_json().map_err(|m| invalid("payload", m))?;
            PayloadShape::Template(t)
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
            when: rc
                .when
                .as_deref()
                .map(JsonPathExpr::parse)
                .transpose()
                .map_err(|m| invalid("when", m))?,
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
            typed_values: rc.typed_values,
            payload,
            qos: rc.qos,
            retain: rc.retain,
            drop: rc.drop,
            stop: rc.stop,
            only_changes: rc.only_changes,
            max_rate: rc
                .max_rate
                .as_deref()
                .map(units::parse_rate)
                .transpose()
                .map_err(|m| invalid("max_rate", m))?,
            max_rate_keep: rc.max_rate_keep,
            snapshot: rc.snapshot,
            snapshot_to: Vec::new(),
            snapshot_ref: None,
        })
    }

    /// Whether this rule applies to a camera at all (used to build its camera filter list).
    pub fn applies_to_camera(&self, camera: &str) -> bool {
        self.cameras.as_ref().is_none_or(|c| c.contains(camera))
    }

    /// Camera and topic filter: the part that depends only on (camera, topic), cached.
    /// Analytics frames and PTZ status have no event topic (empty): only rules taking "all"
    /// see them.
    fn matches_stream(&self, camera: &str, topic: &str) -> bool {
        let topic_ok = if topic.is_empty() {
            self.filter.is_all()
        } else {
            self.filter.matches(topic)
        };
        self.applies_to_camera(camera) && topic_ok
    }

    fn matches_when(&self, view: &View<'_>) -> bool {
        self.when.as_ref().is_none_or(|w| w.matches(view.json()))
    }

    /// Every placeholder of this rule's templates that renders empty when an event lacks
    /// it, with the field it is in (for `check` warnings).
    pub fn optional_fields(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(t) = &self.mqtt_topic {
            out.extend(t.optional_fields().into_iter().map(|f| ("mqtt_topic", f)));
        } else {
            out.extend(
                self.prefix
                    .optional_fields()
                    .into_iter()
                    .map(|f| ("prefix", f)),
            );
        }
        if let PayloadShape::Template(t) = &self.payload {
            out.extend(t.optional_fields().into_iter().map(|f| ("payload", f)));
        }
        out
    }

    /// The deliveries of one event under this rule; `snapshot`: a picture is taken for it
    /// (live events only, not those `max_rate` held back).
    fn deliver(&self, ev: &Event, now_ms: i64, snapshot: bool, out: &mut Vec<Routed>) {
        let Some((last, others)) = self.to.split_last() else {
            return;
        };
        let topic = self.topic_for(ev);
        let reference = self
            .snapshot_ref
            .as_ref()
            .filter(|_| snapshot && ev.kind == EventKind::Event)
            .and_then(|(dest, format)| {
                let key =
                    format.snapshot_key_ahead(&ev.camera, ev.time_ms, &payload_topic(&ev.topic))?;
                Some(SnapshotRef {
                    destination: dest,
                    key,
                })
            });
        let (payload, retain) = self.payload_with(ev, reference.as_ref());
        let delivery = |topic, payload| Delivery {
            topic,
            payload,
            qos: self.qos,
            retain,
            created_ms: now_ms,
            camera: ev.camera.to_string(),
        };
        for dest in others {
            out.push(Routed {
                destination: dest.clone(),
                delivery: delivery(topic.clone(), payload.clone()),
                change: None,
            });
        }
        // The last destination takes the rendered topic and payload without a copy.
        out.push(Routed {
            destination: last.clone(),
            delivery: delivery(topic, payload),
            change: None,
        });
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
        self.payload_with(ev, None)
    }

    /// The same for an event whose snapshot is `snapshot`.
    fn payload_with(&self, ev: &Event, snapshot: Option<&SnapshotRef<'_>>) -> (Vec<u8>, bool) {
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
            PayloadShape::Summary if ev.kind == EventKind::Analytics => {
                ev.summary_payload(self.include_serial)
            }
            PayloadShape::Axis | PayloadShape::Summary => {
                let mut p = if self.typed_values && ev.kind == EventKind::Event {
                    typed::payload(ev, self.include_serial)
                } else {
                    ev.payload(self.include_serial)
                };
                if let Some(r) = snapshot {
                    r.append_to(&mut p);
                }
                p
            }
            PayloadShape::Template(t) => {
                let mut view = View::new(ev);
                view.snapshot_key = snapshot.map(|r| r.key.as_str());
                let mut s = String::new();
                t.render_view(&view, self.include_namespaces, false, &mut s);
                s
            }
        };
        (body.into_bytes(), retain)
    }
}

/// The snapshot an event will have: the one place the default payload goes beyond the
/// camera's format (README "Payload").
struct SnapshotRef<'a> {
    destination: &'a str,
    key: String,
}

impl SnapshotRef<'_> {
    /// Adds `"snapshot":{"destination":..,"key":..}` as the last field of a JSON object.
    fn append_to(&self, payload: &mut String) {
        // The camera payload is always a JSON object; anything else is left as it is.
        if !payload.ends_with('}') {
            return;
        }
        payload.pop();
        let dest = serde_json::to_string(self.destination).expect("a string serializes");
        let key = serde_json::to_string(&self.key).expect("a string serializes");
        payload.push_str(&format!(
            r#","snapshot":{{"destination":{dest},"key":{key}}}}}"#
        ));
    }
}

/// All rules of a config, in order, with their `only_changes` and `max_rate` state.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    changes: ChangeFilter,
    /// One per rule with `max_rate`, by rule index.
    limiters: Vec<Option<RateLimiter<Event>>>,
    flushed: Vec<Event>,
    streams: StreamCache,
    snapshots: Vec<SnapshotRequest>,
    discovery: discovery::Discovery,
}

/// Which rules' cameras and topic filters match a (camera, topic): a handful of topics per
/// camera recur, so each pair is worked out once. Bounded: cleared when it grows past
/// [`StreamCache::MAX`] (MQTT sources may bring topics of unbounded variety).
#[derive(Debug, Clone, Default)]
struct StreamCache {
    /// Camera → topic → index into `bits`.
    by_camera: HashMap<Arc<str>, HashMap<String, usize, state::FxBuild>, state::FxBuild>,
    bits: Vec<Box<[u64]>>,
}

impl StreamCache {
    const MAX: usize = 16_384;

    /// Bit `i` is set when rule `i` matches the camera and topic.
    fn get(&mut self, rules: &[Rule], camera: &Arc<str>, topic: &str) -> &[u64] {
        if let Some(&i) = self.by_camera.get(&**camera).and_then(|t| t.get(topic)) {
            return &self.bits[i];
        }
        if self.bits.len() >= Self::MAX {
            self.by_camera.clear();
            self.bits.clear();
        }
        let mut bits = vec![0u64; rules.len().div_ceil(64)].into_boxed_slice();
        for (i, r) in rules.iter().enumerate() {
            if r.matches_stream(camera, topic) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        self.by_camera
            .entry(camera.clone())
            .or_default()
            .insert(topic.to_string(), self.bits.len());
        self.bits.push(bits);
        self.bits.last().expect("just pushed")
    }
}

/// A picture to take for an event a rule with `snapshot = true` delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// Config name of the camera.
    pub camera: Arc<str>,
    /// The camera's serial.
    pub serial: Arc<str>,
    /// The event topic in payload spelling.
    pub topic: String,
    /// The event's timestamp (epoch ms).
    pub event_ms: i64,
    /// Object-store destinations to store it in, each once, in rule order.
    pub destinations: Vec<Arc<str>>,
}

/// A delivery bound for one named destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Destination name.
    pub destination: Arc<str>,
    /// What to send.
    pub delivery: Delivery,
    /// The `only_changes` state this delivery makes remembered: if an outbox refuses it, pass
    /// it to [`RuleSet::refuse_change`].
    pub change: Option<state::ChangeId>,
}

impl RuleSet {
    /// Compiles every rule of a config.
    pub fn compile(cfg: &Config) -> Result<Self, RuleError> {
        let mut rules: Vec<Rule> = cfg
            .rule
            .iter()
            .map(Rule::compile)
            .collect::<Result<_, _>>()?;
        for r in rules.iter_mut().filter(|r| r.snapshot) {
            r.snapshot_to =
                r.to.iter()
                    .filter(|d| {
                        matches!(
                            cfg.destination.get(&***d),
                            Some(DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_))
                        )
                    })
                    .cloned()
                    .collect();
            r.snapshot_ref = r.snapshot_to.first().and_then(|d| {
                let format = object_format(d, cfg.destination.get(&**d)?)?.ok()?;
                Some((d.clone(), Arc::new(format)))
            });
        }
        let limiters = rules
            .iter()
            .map(|r| {
                r.max_rate
                    .map(|rate| RateLimiter::new(rate, r.max_rate_keep))
            })
            .collect();
        Ok(Self {
            rules,
            changes: ChangeFilter::default(),
            limiters,
            flushed: Vec::new(),
            streams: StreamCache::default(),
            snapshots: Vec::new(),
            discovery: discovery::Discovery::from_config(cfg),
        })
    }

    /// The pictures asked for by the events routed since the last call.
    pub fn take_snapshots(&mut self) -> Vec<SnapshotRequest> {
        std::mem::take(&mut self.snapshots)
    }

    /// Whether [`RuleSet::due`] can ever return something, or state needs saving: the router
    /// must then wake up regularly even without events.
    pub fn has_timers(&self) -> bool {
        self.limiters.iter().flatten().any(RateLimiter::holds)
            || self.rules.iter().any(|r| r.only_changes)
    }

    /// Deliveries held by `max_rate_keep = "latest"` whose window ended by `now_ms`.
    pub fn due(&mut self, now_ms: i64) -> Vec<Routed> {
        let mut out = Vec::new();
        for (rule, limiter) in self.rules.iter().zip(&mut self.limiters) {
            let Some(l) = limiter.as_mut().filter(|l| l.holds()) else {
                continue;
            };
            for ev in l.due(now_ms) {
                rule.deliver(&ev, now_ms, false, &mut out);
            }
        }
        out
    }

    /// Entries `only_changes` forgot and `max_rate` windows closed early to stay within
    /// their bounds ([`state::MAX_CHANGE_ENTRIES`], [`state::MAX_RATE_WINDOWS`]), since start.
    pub fn state_evictions(&self) -> u64 {
        self.changes.evictions()
            + self
                .limiters
                .iter()
                .flatten()
                .map(RateLimiter::evictions)
                .sum::<u64>()
    }

    /// A delivery carrying `id` was refused: its state is not remembered once the batch is
    /// settled.
    pub fn refuse_change(&mut self, id: state::ChangeId) {
        self.changes.refuse(id);
    }

    /// Ends a batch of routed events whose deliveries the outboxes answered.
    pub fn settle_changes(&mut self) {
        self.changes.settle();
    }

    /// The `only_changes` state as JSON when it changed since the last call.
    pub fn state_to_save(&mut self) -> Option<String> {
        self.changes.take_dirty().then(|| self.changes.to_json())
    }

    /// Restores `only_changes` state saved by [`RuleSet::state_to_save`]; `false` if unreadable.
    pub fn restore_state(&mut self, json: &str) -> bool {
        self.changes.restore(json)
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

    /// Evaluates the rules for one event at `now_ms`, appending its deliveries to `out` (and
    /// its picture, if a rule asks for one, to [`RuleSet::take_snapshots`]).
    pub fn route(&mut self, ev: &Event, now_ms: i64, out: &mut Vec<Routed>) {
        let mut snapshot_to = Vec::new();
        let from = out.len();
        self.route_rules(ev, now_ms, out, &mut snapshot_to);
        if self.discovery.is_active() && out.len() > from {
            self.discovery.announce(ev, out, from);
        }
        if !snapshot_to.is_empty() && ev.kind == EventKind::Event {
            self.snapshots.push(SnapshotRequest {
                camera: ev.camera.clone(),
                serial: ev.serial.clone(),
                topic: payload_topic(&ev.topic),
                event_ms: ev.time_ms,
                destinations: snapshot_to,
            });
        }
    }

    fn route_rules(
        &mut self,
        ev: &Event,
        now_ms: i64,
        out: &mut Vec<Routed>,
        snapshot_to: &mut Vec<Arc<str>>,
    ) {
        let view = View::new(ev);
        let matching = self.streams.get(&self.rules, &ev.camera, &ev.topic);
        for (i, rule) in self.rules.iter().enumerate() {
            if matching[i / 64] & (1 << (i % 64)) == 0 || !rule.matches_when(&view) {
                continue;
            }
            if rule.drop {
                return;
            }
            let admitted = if rule.to.is_empty() {
                None
            } else {
                admit(rule, &mut self.changes, ev)
            };
            if let Some(change) = admitted {
                let live = match &mut self.limiters[i] {
                    None => true,
                    Some(l) => {
                        let key = l.key((&*ev.camera, ev.topic.as_str()));
                        let decision = l.admit(key, now_ms, || ev.clone(), &mut self.flushed);
                        for held in self.flushed.drain(..) {
                            rule.deliver(&held, now_ms, false, out);
                        }
                        decision == Decision::Pass
                    }
                };
                if live {
                    let from = out.len();
                    rule.deliver(ev, now_ms, true, out);
                    for r in &mut out[from..] {
                        r.change = change;
                    }
                    for d in &rule.snapshot_to {
                        if !snapshot_to.contains(d) {
                            snapshot_to.push(d.clone());
                        }
                    }
                }
            }
            if rule.stop {
                return;
            }
        }
    }
}

/// `only_changes`: whether a stateful event's data differs from the last for its camera,
/// topic and source under this rule (`Some`, with the tentative change when the rule
/// remembers states). Stateless events are occurrences, never repeats.
fn admit(rule: &Rule, changes: &mut ChangeFilter, ev: &Event) -> Option<Option<state::ChangeId>> {
    if !rule.only_changes || !ev.stateful {
        return Some(None);
    }
    let key = state::change_key(&rule.name, &ev.camera, &ev.topic, &ev.source);
    if ev.operation == Some(Operation::Deleted) {
        return Some(Some(changes.forget_tentative(&key)));
    }
    changes
        .admit_tentative(
            &key,
            &serde_json::to_string(&ev.data).expect("strings serialize"),
        )
        .map(Some)
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
            state_item: None,
            item_types: None,
            device: None,
            source: Items::from([("port".into(), "7".into())]),
            key: Items::new(),
            data: Items::from([("active".into(), "1".into())]),
            analytics: None,
            ptz: None,
        }
    }

    #[test]
    fn hostile_camera_values_always_make_topics_a_broker_accepts() {
        use crate::sinks::mqtt::limits::{MAX_PACKET_BYTES, publish_problem};
        // The same rules as the `routed_delivery` fuzz target: every placeholder in a topic.
        let mut rs = ruleset(concat!(
            "[[rule]]\nname = \"default\"\nto = [\"d\"]\n",
            "[[rule]]\nname = \"all\"\nto = [\"d\"]\n",
            "mqtt_topic = \"f/{camera}/{serial}/{topic}/{topic_raw}/{timestamp}/{iso_time}/",
            "{source.port}/{key.k}/{data.active}/{$.message.data.active}/{$.message.source}/{$.timestamp}\"\n",
        ));
        let hostile = [
            "",
            "\0",
            "a/b",
            "+",
            "#",
            "%2F",
            "\u{1b}[31m",
            "\u{85}",
            "x\0/+#%",
        ];
        for (i, v) in hostile.iter().enumerate() {
            let mut ev = vi(None);
            ev.serial = (*v).into();
            ev.topic = format!("tns1:Device/{v}/tnsaxis:{v}");
            ev.source = Items::from([("port".into(), v.to_string()), (v.to_string(), "1".into())]);
            ev.key = Items::from([("k".into(), v.to_string())]);
            ev.data = Items::from([("active".into(), v.to_string())]);
            ev.time_ms = [i64::MIN, -62_500_000_000_000, -1, 0, i64::MAX][i % 5];
            for r in routed(&mut rs, &ev, 0) {
                let d = r.delivery;
                assert_eq!(
                    publish_problem(&d.topic, d.payload.len(), d.qos, MAX_PACKET_BYTES),
                    None,
                    "value {v:?}: topic {:?}",
                    d.topic
                );
            }
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
    fn typed_values_is_asked_for_and_the_default_stays_camera_text() {
        let mut e = vi(None);
        e.item_types = Some(Arc::new(crate::event::ItemTypes {
            source: [("port".to_string(), crate::event::ValueType::Integer)].into(),
            key: Default::default(),
            data: [("active".to_string(), crate::event::ValueType::Boolean)].into(),
        }));
        assert_eq!(rule("").payload_for(&e).0, e.payload(false).into_bytes());
        let typed = String::from_utf8(rule("typed_values = true").payload_for(&e).0).unwrap();
        assert!(
            typed.ends_with(r#""message":{"source":{"port":7},"key":{},"data":{"active":true}}}"#),
            "{typed}"
        );
        let custom = rule("typed_values = true\npayload = \"{data.active}\"");
        assert_eq!(custom.payload_for(&e).0, b"1", "templates see camera text");
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
        let mut rs = RuleSet::compile(&cfg).unwrap();
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
        assert!(
            rule("").matches_stream(&a.camera, &a.topic)
                && rule("topic = \"\"").matches_stream(&p.camera, &p.topic)
        );
        let io = rule("topic = \"tns1:Device//.\"");
        assert!(io.matches_stream("lobby", &vi(None).topic));
        assert!(!io.matches_stream(&a.camera, &a.topic) && !io.matches_stream(&p.camera, &p.topic));
        assert_eq!(
            rule("").payload_for(&p).0,
            br#"{"timestamp":1750148043512}"#
        );
    }

    fn ruleset(toml_text: &str) -> RuleSet {
        RuleSet::compile(&toml::from_str::<Config>(toml_text).unwrap()).unwrap()
    }

    fn routed(rs: &mut RuleSet, ev: &Event, now: i64) -> Vec<Routed> {
        let mut out = Vec::new();
        rs.route(ev, now, &mut out);
        out
    }

    #[test]
    fn when_selects_only_active_inputs() {
        // RFC 9535: a filter selects children, so the condition filters `message`'s children
        // (source, key, data) on their `active` member.
        let mut rs = ruleset(
            "[[rule]]\nname = \"active\"\nto = [\"d\"]\nwhen = \"$.message[?(@.active == '1')]\"\n",
        );
        assert_eq!(routed(&mut rs, &vi(None), 0).len(), 1);
        let mut off = vi(None);
        off.data.insert("active".into(), "0".into());
        assert!(routed(&mut rs, &off, 0).is_empty());
        // The same test on the member itself, and a condition on other parts of the view.
        for (when, on, off_) in [
            ("$.message.data[?(@ == '1')]", true, false),
            ("$[?(@.data.active == '1')]", true, false),
            // DESIGN.md §5's spelling filters the *values* of `data` (strings, no `active`
            // member) and selects nothing under RFC 9535.
            ("$.message.data[?(@.active == '1')]", false, false),
            ("$.message.source[?(@ == '7')]", true, true),
            ("$[?(@ == 'lobby')]", true, true),
            ("$.message.data.nope", false, false),
        ] {
            let mut rs = ruleset(&format!(
                "[[rule]]\nname = \"c\"\nto = [\"d\"]\nwhen = \"{when}\"\n"
            ));
            assert_eq!(routed(&mut rs, &vi(None), 0).len() == 1, on, "{when}");
            assert_eq!(routed(&mut rs, &off, 0).len() == 1, off_, "{when}");
        }
    }

    #[test]
    fn an_invalid_condition_does_not_compile() {
        let cfg: Config =
            toml::from_str("[[rule]]\nname = \"c\"\nto = [\"d\"]\nwhen = \"$.[?(\"\n").unwrap();
        assert!(matches!(
            RuleSet::compile(&cfg),
            Err(RuleError::Invalid { field: "when", .. })
        ));
    }

    #[test]
    fn an_event_matching_several_rules_is_delivered_by_each() {
        let mut rs = ruleset(
            r#"
            [[rule]]
            name = "io"
            topic = "tns1:Device/tnsaxis:IO//."
            to = ["a", "b"]
            [[rule]]
            name = "active"
            when = "$.message[?(@.active == '1')]"
            to = ["a"]
            mqtt_topic = "active/{camera}"
            [[rule]]
            name = "other-camera"
            cameras = ["yard"]
            to = ["c"]
            [[rule]]
            name = "all"
            to = ["c"]
            payload = "{data.active}"
            "#,
        );
        let got: Vec<(String, String, String)> = routed(&mut rs, &vi(None), 0)
            .into_iter()
            .map(|r| {
                (
                    r.destination.to_string(),
                    r.delivery.topic,
                    String::from_utf8(r.delivery.payload).unwrap(),
                )
            })
            .collect();
        let full =
            "axis/B8A44F3E9D21/event/tns:onvif/Device/tns:axis/IO/VirtualInput/$source/port/7";
        let axis = vi(None).payload(false);
        assert_eq!(
            got,
            [
                ("a".into(), full.into(), axis.clone()),
                ("b".into(), full.into(), axis.clone()),
                ("a".into(), "active/lobby".into(), axis),
                ("c".into(), full.into(), "1".into()),
            ]
        );
    }

    #[test]
    fn only_changes_drops_repeats_per_camera_topic_and_source() {
        let mut rs = ruleset("[[rule]]\nname = \"o\"\nto = [\"d\"]\nonly_changes = true\n");
        let on = vi(Some(Operation::Changed));
        assert_eq!(routed(&mut rs, &on, 0).len(), 1);
        assert!(routed(&mut rs, &on, 1).is_empty());
        let mut other_port = on.clone();
        other_port.source.insert("port".into(), "8".into());
        assert_eq!(routed(&mut rs, &other_port, 2).len(), 1);
        let mut other_camera = on.clone();
        other_camera.camera = "yard".into();
        assert_eq!(routed(&mut rs, &other_camera, 2).len(), 1);
        let mut off = on.clone();
        off.data.insert("active".into(), "0".into());
        assert_eq!(routed(&mut rs, &off, 3).len(), 1);
        assert_eq!(routed(&mut rs, &on, 4).len(), 1);
        // Stateless events are occurrences: never repeats.
        let mut tamper = on.clone();
        tamper.stateful = false;
        assert_eq!(routed(&mut rs, &tamper, 5).len(), 1);
        assert_eq!(routed(&mut rs, &tamper, 6).len(), 1);
        // A deleted property forgets its state.
        assert_eq!(routed(&mut rs, &vi(Some(Operation::Deleted)), 7).len(), 1);
        assert_eq!(routed(&mut rs, &on, 8).len(), 1);
        // The state survives a restart through `state_to_save` / `restore_state`.
        let saved = rs.state_to_save().unwrap();
        assert!(rs.state_to_save().is_none(), "nothing new to save");
        let mut again = ruleset("[[rule]]\nname = \"o\"\nto = [\"d\"]\nonly_changes = true\n");
        assert!(again.restore_state(&saved));
        assert!(routed(&mut again, &on, 9).is_empty());
        assert_eq!(routed(&mut again, &off, 10).len(), 1);
    }

    #[test]
    fn only_changes_remembers_a_state_only_once_its_delivery_was_accepted() {
        let mut rs = ruleset("[[rule]]\nname = \"o\"\nto = [\"d\", \"e\"]\nonly_changes = true\n");
        let on = vi(Some(Operation::Changed));
        let mut off = on.clone();
        off.data.insert("active".into(), "0".into());
        // Accepted: the repeat is dropped.
        let r = routed(&mut rs, &on, 0);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.change.is_some()));
        rs.settle_changes();
        assert!(routed(&mut rs, &on, 1).is_empty());
        // One of its two deliveries refused: the state is not remembered, the next "off"
        // goes out again (to both: a duplicate beats a loss).
        let r = routed(&mut rs, &off, 2);
        rs.refuse_change(r[1].change.unwrap());
        rs.settle_changes();
        assert_eq!(routed(&mut rs, &off, 3).len(), 2);
        rs.settle_changes();
        assert!(routed(&mut rs, &off, 4).is_empty());
        // Within one batch: on (refused), off (accepted), on (refused) leaves "off" remembered.
        let a = routed(&mut rs, &on, 5);
        let b = routed(&mut rs, &off, 5);
        let c = routed(&mut rs, &on, 5);
        assert_eq!((a.len(), b.len(), c.len()), (2, 2, 2));
        rs.refuse_change(a[0].change.unwrap());
        rs.refuse_change(c[0].change.unwrap());
        rs.settle_changes();
        assert!(routed(&mut rs, &off, 6).is_empty());
        assert_eq!(routed(&mut rs, &on, 7).len(), 2);
        // The saved state follows the settled one.
        rs.settle_changes();
        let saved = rs.state_to_save().unwrap();
        let mut again =
            ruleset("[[rule]]\nname = \"o\"\nto = [\"d\", \"e\"]\nonly_changes = true\n");
        assert!(again.restore_state(&saved));
        assert!(routed(&mut again, &on, 8).is_empty());
    }

    #[test]
    fn snapshot_rules_ask_for_one_picture_per_delivered_event_for_object_stores_only() {
        let mut rs = ruleset(
            r#"
            [destination.archive]
            kind = "s3"
            bucket = "b"
            [destination.blob]
            kind = "azure-blob"
            sas_url = "https://a.blob.core.windows.net/c?sig=x"
            [destination.cloud]
            kind = "mqtt"
            url = "mqtt://h"
            [[rule]]
            name = "io"
            topic = "tns1:Device/tnsaxis:IO//."
            to = ["cloud", "archive"]
            snapshot = true
            max_rate = "1/s"
            [[rule]]
            name = "again"
            to = ["blob", "archive"]
            snapshot = true
            [[rule]]
            name = "plain"
            to = ["archive"]
            "#,
        );
        let ev = vi(None);
        assert_eq!(routed(&mut rs, &ev, 0).len(), 5);
        let snaps = rs.take_snapshots();
        assert_eq!(
            snaps,
            [SnapshotRequest {
                camera: "lobby".into(),
                serial: "B8A44F3E9D21".into(),
                topic: "onvif:Device/axis:IO/VirtualInput".into(),
                event_ms: ev.time_ms,
                destinations: vec!["archive".into(), "blob".into()],
            }]
        );
        assert!(rs.take_snapshots().is_empty(), "taken once");
        // Held back by max_rate: only the second rule's picture.
        routed(&mut rs, &ev, 10);
        assert_eq!(
            rs.take_snapshots()[0].destinations,
            vec![Arc::<str>::from("blob"), "archive".into()]
        );
        // Not matching a snapshot rule: no picture.
        let mut rs = ruleset(
            "[destination.archive]\nkind = \"s3\"\nbucket = \"b\"\n[[rule]]\nname = \"io\"\ntopic = \"tns1:Device/tnsaxis:IO//.\"\nto = [\"archive\"]\nsnapshot = true\n[[rule]]\nname = \"all\"\nto = [\"archive\"]\n",
        );
        let mut other = vi(None);
        other.topic = "tns1:VideoSource/MotionAlarm".into();
        assert_eq!(routed(&mut rs, &other, 0).len(), 1);
        assert!(rs.take_snapshots().is_empty());
        assert_eq!(routed(&mut rs, &ev, 0).len(), 2);
        assert_eq!(rs.take_snapshots().len(), 1);
    }

    #[test]
    fn a_snapshot_rule_names_the_key_its_picture_will_have() {
        let mut rs = ruleset(
            r#"
            [destination.archive]
            kind = "s3"
            bucket = "b"
            prefix = "site1/"
            [destination.cloud]
            kind = "mqtt"
            url = "mqtt://h"
            [[rule]]
            name = "axis"
            to = ["cloud", "archive"]
            snapshot = true
            stop = false
            [[rule]]
            name = "templated"
            to = ["cloud"]
            mqtt_topic = "t"
            payload = '{{"key":"{snapshot_key}","at":{timestamp}}}'
            "#,
        );
        let ev = vi(None);
        let out = routed(&mut rs, &ev, 0);
        // The key the object-store sink gives the picture (the same function).
        let req = rs.take_snapshots().remove(0);
        let format = crate::sinks::object_store::object_format(
            "archive",
            &toml::from_str::<Config>(
                "[destination.archive]\nkind = \"s3\"\nbucket = \"b\"\nprefix = \"site1/\"\n",
            )
            .unwrap()
            .destination["archive"],
        )
        .unwrap()
        .unwrap();
        let key = format
            .snapshot(
                9,
                crate::delivery::Snapshot {
                    created_ms: 0,
                    event_ms: req.event_ms,
                    topic: req.topic.clone(),
                    camera: req.camera.to_string(),
                    serial: req.serial.to_string(),
                    jpeg: Vec::new(),
                },
            )
            .key;
        assert_eq!(
            key,
            "site1/lobby/snapshots/2025/06/17/08/1750148043512_Device.IO.VirtualInput.jpg"
        );
        let axis = String::from_utf8(out[0].delivery.payload.clone()).unwrap();
        assert_eq!(
            axis,
            format!(
                r#"{}"snapshot":{{"destination":"archive","key":"{key}"}}}}"#,
                ev.payload(false).strip_suffix('}').unwrap().to_string() + ","
            )
        );
        let v: serde_json::Value = serde_json::from_str(&axis).unwrap();
        assert_eq!(v["snapshot"]["key"], key.as_str());
        // The rule without a snapshot: its {snapshot_key} is empty.
        assert_eq!(
            out[2].delivery.payload,
            format!(r#"{{"key":"","at":{}}}"#, ev.time_ms).into_bytes()
        );
        // A {seq} key is known only once stored: no reference then.
        let mut rs = ruleset(
            "[destination.a]\nkind = \"s3\"\nbucket = \"b\"\nsnapshot_key = \"{camera}/{seq}.jpg\"\n[[rule]]\nname = \"r\"\nto = [\"a\"]\nsnapshot = true\n",
        );
        let out = routed(&mut rs, &ev, 0);
        assert_eq!(out[0].delivery.payload, ev.payload(false).into_bytes());
    }

    #[test]
    fn max_rate_limits_per_camera_and_topic_and_latest_comes_when_due() {
        let text =
            "[[rule]]\nname = \"m\"\nto = [\"d\"]\nmax_rate = \"10/s\"\npayload = \"{data.n}\"\n";
        let mut rs = ruleset(text);
        assert!(!rs.has_timers());
        let mut n = 0;
        for i in 0..100 {
            let mut e = vi(None);
            e.data.insert("n".into(), i.to_string());
            n += routed(&mut rs, &e, i * 10).len();
            let mut yard = e.clone();
            yard.camera = "yard".into();
            n += routed(&mut rs, &yard, i * 10).len();
        }
        assert_eq!(n, 20, "10 per camera");

        let mut rs = ruleset(&format!("{text}max_rate_keep = \"latest\"\n"));
        assert!(rs.has_timers());
        let mut got = Vec::new();
        for i in 0..100 {
            let mut e = vi(None);
            e.data.insert("n".into(), i.to_string());
            got.extend(rs.due(i * 10));
            got.extend(routed(&mut rs, &e, i * 10));
        }
        assert_eq!(got.len(), 10);
        assert!(rs.due(999).is_empty());
        let late = rs.due(1000);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].delivery.payload, b"99");
        assert_eq!(late[0].delivery.created_ms, 1000);
    }
}
