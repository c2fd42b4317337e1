//! The camera's event catalog (VAPIX `GetEventInstances`): which topics are stateful and
//! which data item is their state. The WebSocket stream carries no `PropertyOperation`, so
//! this is how the relay knows what to retain and what `only_changes` compares. It also
//! gives each item's declared type (`xsd:boolean`, `xsd:int`, ...), which `typed_values`
//! and Home Assistant discovery use.

use std::collections::HashMap;

use std::sync::Arc;

use crate::event::{ItemTypes, Namespace, ValueType};
use crate::sources::limits::MAX_TOPIC_BYTES;

const AEV: &str = "http://www.axis.com/vapix/ws/event1";
const WSTOP: &str = "http://docs.oasis-open.org/wsn/t-1";
/// Topic trees are a handful of levels deep; elements nested deeper than this below
/// `wstop:TopicSet` are not walked, so a hostile reply can neither overflow the stack nor
/// make the topic paths (joined once per topic) quadratic.
const MAX_TOPIC_DEPTH: usize = 32;
/// Most topics kept from one catalog (a camera with many applications lists a few hundred);
/// with topics of at most [`MAX_TOPIC_BYTES`], a catalog holds at most a few MiB.
pub const MAX_CATALOG_TOPICS: usize = 4096;
/// Most XML nodes parsed in a catalog reply (a few hundred topics take about 20,000): the
/// reply may be 8 MiB, and parsed nodes cost several times their text.
const MAX_CATALOG_NODES: u32 = 400_000;

/// What the catalog says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// `isProperty="true"`: a property with a state.
    pub stateful: bool,
    /// Name of the data item with `isPropertyState="true"` (shared: every event carries it).
    pub state_item: Option<Arc<str>>,
    /// Declared types of the source, key and data items (shared: every event carries it).
    pub item_types: Arc<ItemTypes>,
}

/// Topic (canonical spelling) → what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    topics: HashMap<String, TopicInfo>,
    virtual_inputs: Option<u32>,
}

/// The virtual input topic, as the catalog spells it.
pub const VIRTUAL_INPUT_TOPIC: &str = "tns1:Device/tnsaxis:IO/VirtualInput";

/// Why a catalog reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not XML.
    #[error("event catalog is not XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// XML without a `wstop:TopicSet`.
    #[error("event catalog has no wstop:TopicSet")]
    NoTopicSet,
}

impl Catalog {
    /// Parses a `GetEventInstancesResponse`.
    pub fn parse(xml: &str) -> Result<Self, CatalogError> {
        let options = roxmltree::ParsingOptions {
            nodes_limit: MAX_CATALOG_NODES,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(xml, options)?;
        let set = doc
            .descendants()
            .find(|n| n.has_tag_name((WSTOP, "TopicSet")))
            .ok_or(CatalogError::NoTopicSet)?;
        let mut topics = HashMap::new();
        let mut path = Vec::new();
        for child in set.children().filter(|n| n.is_element()) {
            walk(child, &mut path, &mut topics);
        }
        let virtual_inputs = virtual_input_ports(set);
        Ok(Self {
            topics,
            virtual_inputs,
        })
    }

    /// How many virtual inputs the camera has: the highest `port` its catalog lists for the
    /// virtual input topic (Axis lists every port, 1 to N); `None` when it lists none.
    pub fn virtual_inputs(&self) -> Option<u32> {
        self.virtual_inputs
    }

    /// What the catalog says about a topic; `None` when it does not list it.
    pub fn get(&self, topic: &str) -> Option<&TopicInfo> {
        self.topics.get(topic)
    }

    /// Whether a topic is a property (a topic missing from the catalog counts as stateless).
    pub fn is_stateful(&self, topic: &str) -> bool {
        self.get(topic).is_some_and(|t| t.stateful)
    }

    /// Number of topics listed.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// True when it lists no topic.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// The highest `aev:Value` of the `port` source item under the `VirtualInput` topic of the
/// `tnsaxis:IO` element.
fn virtual_input_ports(set: roxmltree::Node) -> Option<u32> {
    let topic = set.descendants().find(|n| {
        n.tag_name().name() == "VirtualInput"
            && n.attribute((WSTOP, "topic")) == Some("true")
            && n.parent_element()
                .is_some_and(|p| p.tag_name().name() == "IO")
    })?;
    topic
        .descendants()
        .filter(|n| n.has_tag_name((AEV, "SourceInstance")))
        .flat_map(|s| s.children())
        .filter(|n| n.attribute("Name") == Some("port"))
        .flat_map(|item| item.children())
        .filter(|v| v.has_tag_name((AEV, "Value")))
        .filter_map(|v| v.text()?.trim().parse::<u32>().ok())
        .max()
}

fn walk(node: roxmltree::Node, path: &mut Vec<String>, out: &mut HashMap<String, TopicInfo>) {
    if node.tag_name().namespace() == Some(AEV)
        || path.len() >= MAX_TOPIC_DEPTH
        || out.len() >= MAX_CATALOG_TOPICS
    {
        return;
    }
    let local = node.tag_name().name();
    let seg = match node.tag_name().namespace().and_then(Namespace::from_uri) {
        Some(ns) => format!("{}:{local}", ns.camera_prefix()),
        None => local.to_string(),
    };
    path.push(seg);
    if node.attribute((WSTOP, "topic")) == Some("true") {
        let msg = node
            .children()
            .find(|n| n.has_tag_name((AEV, "MessageInstance")));
        let stateful = msg.is_some_and(|m| m.attribute((AEV, "isProperty")) == Some("true"));
        let state_item = msg
            .and_then(|m| m.children().find(|n| n.has_tag_name((AEV, "DataInstance"))))
            .and_then(|d| {
                d.children()
                    .find(|n| n.attribute("isPropertyState") == Some("true"))
            })
            .and_then(|n| n.attribute("Name"))
            .map(Arc::from);
        let types = |part: &str| {
            msg.and_then(|m| m.children().find(|n| n.has_tag_name((AEV, part))))
                .into_iter()
                .flat_map(|d| d.children().filter(|n| n.is_element()))
                .filter_map(|n| {
                    let name = n.attribute("Name")?;
                    let ty = n
                        .attribute("Type")
                        .map_or(ValueType::Other, ValueType::from_xsd);
                    Some((name.to_string(), ty))
                })
                .collect()
        };
        let item_types = Arc::new(ItemTypes {
            source: types("SourceInstance"),
            key: types("KeyInstance"),
            data: types("DataInstance"),
        });
        let topic = path.join("/");
        // A longer topic is refused at parse anyway: nothing would look it up.
        if topic.len() <= MAX_TOPIC_BYTES {
            out.insert(
                topic,
                TopicInfo {
                    stateful,
                    state_item,
                    item_types,
                },
            );
        }
    }
    for child in node.children().filter(|n| n.is_element()) {
        walk(child, path, out);
    }
    path.pop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_catalog_says_what_is_stateful() {
        let c = Catalog::parse(include_str!("../../tests/fixtures/event-instances.xml")).unwrap();
        let vi = c.get("tns1:Device/tnsaxis:IO/VirtualInput").unwrap();
        assert!(vi.stateful);
        assert_eq!(vi.state_item.as_deref(), Some("active"));
        assert!(!c.is_stateful("tns1:VideoSource/tnsaxis:Tampering"));
        assert_eq!(
            c.get("tnsaxis:Storage/Alert")
                .unwrap()
                .state_item
                .as_deref(),
            Some("alert")
        );
        assert!(c.is_stateful("tnsaxis:CameraApplicationPlatform/FenceGuard/Camera1Profile2"));
        assert!(c.is_stateful("tns1:RuleEngine/MotionRegionDetector/Motion"));
        assert!(!c.is_stateful("tns1:Not/Listed"));
        assert_eq!(c.len(), 7);
        let types = &c.get("tnsaxis:Storage/Alert").unwrap().item_types;
        assert_eq!(types.source["disk_id"], ValueType::String);
        assert_eq!(types.data["alert"], ValueType::Boolean);
        assert_eq!(types.data["wear"], ValueType::Integer);
        let light = &c
            .get("tns1:Device/tnsaxis:Light/Status")
            .unwrap()
            .item_types;
        assert_eq!(light.data["state"], ValueType::String);
        let motion = &c
            .get("tns1:RuleEngine/MotionRegionDetector/Motion")
            .unwrap();
        assert_eq!(motion.item_types.source["VideoSource"], ValueType::Other);
        assert!(vi.item_types.key.is_empty());
        assert_eq!(c.virtual_inputs(), Some(8));
        assert_eq!(Catalog::default().virtual_inputs(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Catalog::parse("<a>").is_err());
        assert!(Catalog::parse("<a/>").is_err());
    }

    #[test]
    fn topic_count_and_length_are_bounded() {
        let mut xml = String::from(r#"<t:TopicSet xmlns:t="http://docs.oasis-open.org/wsn/t-1">"#);
        for i in 0..MAX_CATALOG_TOPICS + 10 {
            xml.push_str(&format!(r#"<a{i} t:topic="true"/>"#));
        }
        let long = "x".repeat(MAX_TOPIC_BYTES + 1);
        xml.insert_str(
            xml.find('>').unwrap() + 1,
            &format!(r#"<{long} t:topic="true"/><short t:topic="true"/>"#),
        );
        xml.push_str("</t:TopicSet>");
        let c = Catalog::parse(&xml).unwrap();
        assert_eq!(c.len(), MAX_CATALOG_TOPICS);
        assert!(c.get("short").is_some());
        assert!(c.get(&long).is_none());
    }

    /// A reply nesting elements 100 000 deep under the TopicSet (every one a topic) was
    /// walked recursively and joined once per level: a stack overflow on a 2 MiB runtime
    /// thread, and quadratic time. Now the walk stops at `MAX_TOPIC_DEPTH`.
    #[test]
    fn deep_nesting_is_bounded() {
        let depth = 100_000;
        let mut xml = String::from(
            r#"<t:TopicSet xmlns:t="http://docs.oasis-open.org/wsn/t-1"><a t:topic="true">"#,
        );
        xml.push_str(&r#"<a t:topic="true">"#.repeat(depth));
        xml.push_str(&"</a>".repeat(depth + 1));
        xml.push_str("</t:TopicSet>");
        let c = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Catalog::parse(&xml).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(c.len(), MAX_TOPIC_DEPTH);
        assert!(c.get("a").is_some());
        assert!(c.get(&["a"; MAX_TOPIC_DEPTH].join("/")).is_some());
    }
}
