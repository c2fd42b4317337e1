//! ONVIF topic expressions, as the camera's `events:configure` understands them.
//!
//! Grammar (ONVIF "ConcreteSet" dialect, the subset Axis documents):
//! - `A|B` alternatives;
//! - `X//.` matches `X` and every topic below it; `//.` alone matches every topic;
//! - `*` matches any one segment;
//! - a segment with a prefix (`tns1:Device`, also `onvif:`/`axis:`/`tnsaxis:`) matches only
//!   that namespace; without a prefix (`Device`) it matches the name in any namespace.
//!
//! An empty expression means "all topics".

use crate::event::{Namespace, split_segment};

/// A compiled topic expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Alternative {
    segments: Vec<Segment>,
    descendants: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Name { ns: Option<NsMatch>, local: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NsMatch {
    Known(Namespace),
    Other(String),
}

/// Why a topic expression is invalid; `position` is a byte offset into the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic expression at position {position}: {reason}")]
pub struct TopicFilterError {
    /// Byte offset of the problem.
    pub position: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl TopicFilter {
    /// A filter that matches every topic.
    pub fn all() -> Self {
        Self {
            alternatives: vec![Alternative {
                segments: vec![],
                descendants: true,
            }],
        }
    }

    /// Compiles an expression; `""` means every topic.
    pub fn parse(expr: &str) -> Result<Self, TopicFilterError> {
        if expr.trim().is_empty() {
            return Ok(Self::all());
        }
        let mut alternatives = Vec::new();
        let mut offset = 0;
        for alt in expr.split('|') {
            alternatives.push(parse_alternative(alt, offset)?);
            offset += alt.len() + 1;
        }
        Ok(Self { alternatives })
    }

    /// True when this filter takes every topic (sent to the camera as one `//.`).
    pub fn is_all(&self) -> bool {
        self.alternatives
            .iter()
            .any(|a| a.segments.is_empty() && a.descendants)
    }

    /// Does a topic (any known prefix spelling) match?
    pub fn matches(&self, topic: &str) -> bool {
        self.alternatives.iter().any(|a| a.matches(topic))
    }

    /// Whether everything `other` matches is also matched by `self` (used to send the camera
    /// filters that do not overlap: it sends one copy per matching filter).
    pub fn covers(&self, other: &TopicFilter) -> bool {
        other
            .alternatives
            .iter()
            .all(|o| self.alternatives.iter().any(|s| s.covers(o)))
    }

    /// The expression in the camera's `tns1:`/`tnsaxis:` spelling, one string per alternative.
    pub fn camera_expressions(&self) -> Vec<String> {
        self.alternatives.iter().map(|a| a.to_camera()).collect()
    }
}

fn parse_alternative(alt: &str, offset: usize) -> Result<Alternative, TopicFilterError> {
    let alt = alt.trim();
    if alt == "//." {
        return Ok(Alternative {
            segments: vec![],
            descendants: true,
        });
    }
    let (body, descendants) = match alt.strip_suffix("//.") {
        Some(b) => (b, true),
        None => (alt, false),
    };
    if body.is_empty() {
        return Err(TopicFilterError {
            position: offset,
            reason: "empty alternative",
        });
    }
    let mut segments = Vec::new();
    let mut pos = offset;
    for seg in body.split('/') {
        if seg.is_empty() {
            return Err(TopicFilterError {
                position: pos,
                reason: "empty segment ('//' is only allowed as the '//.' suffix)",
            });
        }
        if seg == "*" {
            segments.push(Segment::Any);
        } else {
            let (prefix, local) = split_segment(seg);
            if local.is_empty() || local.contains(':') {
                return Err(TopicFilterError {
                    position: pos,
                    reason: "a segment is [prefix:]name",
                });
            }
            if local
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '+' | '#'))
                && local != "."
            {
                return Err(TopicFilterError {
                    position: pos,
                    reason: "segment names cannot hold whitespace, '.', '*', '+' or '#'",
                });
            }
            let ns = match prefix {
                None => None,
                Some("") => {
                    return Err(TopicFilterError {
                        position: pos,
                        reason: "empty namespace prefix",
                    });
                }
                Some(p) => Some(match Namespace::from_prefix(p) {
                    Some(n) => NsMatch::Known(n),
                    None => NsMatch::Other(p.to_string()),
                }),
            };
            segments.push(Segment::Name {
                ns,
                local: local.to_string(),
            });
        }
        pos += seg.len() + 1;
    }
    Ok(Alternative {
        segments,
        descendants,
    })
}

impl Segment {
    fn matches(&self, seg: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Name { ns, local } => {
                let (p, l) = split_segment(seg);
                if l != local {
                    return false;
                }
                match (ns, p) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(NsMatch::Known(n)), Some(p)) => Namespace::from_prefix(p) == Some(*n),
                    (Some(NsMatch::Other(o)), Some(p)) => o == p,
                }
            }
        }
    }

    /// Everything `other` matches, `self` matches too.
    fn covers(&self, other: &Segment) -> bool {
        match (self, other) {
            (Segment::Any, _) => true,
            (Segment::Name { .. }, Segment::Any) => false,
            (Segment::Name { ns: a, local: la }, Segment::Name { ns: b, local: lb }) => {
                la == lb && (a.is_none() || a == b)
            }
        }
    }

    fn to_camera(&self) -> String {
        match self {
            Segment::Any => "*".into(),
            Segment::Name { ns: None, local } => local.clone(),
            Segment::Name {
                ns: Some(NsMatch::Known(n)),
                local,
            } => format!("{}:{local}", n.camera_prefix()),
            Segment::Name {
                ns: Some(NsMatch::Other(p)),
                local,
            } => format!("{p}:{local}"),
        }
    }
}

impl Alternative {
    fn matches(&self, topic: &str) -> bool {
        let mut segs = topic.split('/');
        for want in &self.segments {
            match segs.next() {
                Some(s) if want.matches(s) => {}
                _ => return false,
            }
        }
        self.descendants || segs.next().is_none()
    }

    fn covers(&self, other: &Alternative) -> bool {
        if self.segments.len() > other.segments.len() {
            return false;
        }
        if !self.descendants && (other.descendants || self.segments.len() != other.segments.len()) {
            return false;
        }
        self.segments
            .iter()
            .zip(&other.segments)
            .all(|(a, b)| a.covers(b))
    }

    /// What the camera can be asked for. It matches prefixes literally, while a segment without
    /// a prefix here means "any namespace". Every real topic starts with a namespaced segment
    /// and most inner segments have none (`tnsaxis:Storage/Alert`), so an expression that
    /// starts without a prefix asks for everything, and a `*` cuts it to "everything below";
    /// the rule still filters exactly in the relay.
    fn for_camera(&self) -> Alternative {
        let cut = self.segments.iter().enumerate().position(|(i, s)| match s {
            Segment::Any => true,
            Segment::Name { ns, .. } => i == 0 && ns.is_none(),
        });
        match cut {
            None => self.clone(),
            Some(n) => Alternative {
                segments: self.segments[..n].to_vec(),
                descendants: true,
            },
        }
    }

    fn to_camera(&self) -> String {
        let body: Vec<String> = self.segments.iter().map(Segment::to_camera).collect();
        match (body.is_empty(), self.descendants) {
            (true, _) => "//.".into(),
            (false, true) => format!("{}//.", body.join("/")),
            (false, false) => body.join("/"),
        }
    }
}

/// The non-overlapping filter list for `events:configure`: one `//.` when any filter takes
/// everything, else every alternative not covered by another (devices send one copy of an
/// event per filter it matches).
pub fn camera_filter_list<'a>(filters: impl IntoIterator<Item = &'a TopicFilter>) -> Vec<String> {
    let alts: Vec<TopicFilter> = filters
        .into_iter()
        .flat_map(|f| {
            f.alternatives.iter().map(|a| TopicFilter {
                alternatives: vec![a.for_camera()],
            })
        })
        .collect();
    if alts.is_empty() || alts.iter().any(TopicFilter::is_all) {
        return vec!["//.".into()];
    }
    let mut kept: Vec<&TopicFilter> = Vec::new();
    for (i, a) in alts.iter().enumerate() {
        let covered = alts.iter().enumerate().any(|(j, b)| {
            j != i && b.covers(a) && (!a.covers(b) || j < i) // equal filters: keep the first
        });
        if !covered {
            kept.push(a);
        }
    }
    kept.iter().flat_map(|f| f.camera_expressions()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VI: &str = "tns1:Device/tnsaxis:IO/VirtualInput";

    #[test]
    fn exact_topic_with_and_without_namespaces() {
        assert!(TopicFilter::parse(VI).unwrap().matches(VI));
        assert!(
            TopicFilter::parse("Device/IO/VirtualInput")
                .unwrap()
                .matches(VI)
        );
        assert!(
            TopicFilter::parse("onvif:Device/axis:IO/VirtualInput")
                .unwrap()
                .matches(VI)
        );
        assert!(
            !TopicFilter::parse("tnsaxis:Device/IO/VirtualInput")
                .unwrap()
                .matches(VI)
        );
        assert!(
            !TopicFilter::parse("tns1:Device/tnsaxis:IO")
                .unwrap()
                .matches(VI)
        );
    }

    #[test]
    fn descendants_wildcards_and_alternatives() {
        assert!(TopicFilter::parse("tns1:Device//.").unwrap().matches(VI));
        assert!(
            TopicFilter::parse("tns1:Device//.")
                .unwrap()
                .matches("tns1:Device")
        );
        assert!(
            !TopicFilter::parse("tns1:Device//.")
                .unwrap()
                .matches("tns1:VideoSource/x")
        );
        assert!(
            TopicFilter::parse("tns1:Device/*/VirtualInput")
                .unwrap()
                .matches(VI)
        );
        let f = TopicFilter::parse("tnsaxis:Storage/Alert|tns1:Device//.").unwrap();
        assert!(f.matches(VI) && f.matches("tnsaxis:Storage/Alert"));
        assert!(TopicFilter::parse("").unwrap().is_all());
        assert!(TopicFilter::parse("//.").unwrap().matches(VI));
    }

    #[test]
    fn invalid_expressions_name_a_position() {
        let e = TopicFilter::parse("tns1:Device//IO").unwrap_err();
        assert_eq!(e.position, 12);
        assert!(TopicFilter::parse("a|").is_err());
        assert!(TopicFilter::parse("tns1:/x").is_err());
        assert!(TopicFilter::parse("a b/c").is_err());
    }

    #[test]
    fn filter_list_has_no_overlaps() {
        let fs = [
            TopicFilter::parse("tns1:Device//.").unwrap(),
            TopicFilter::parse(VI).unwrap(),
            TopicFilter::parse("tnsaxis:Storage/Alert").unwrap(),
            TopicFilter::parse("tnsaxis:Storage/Alert").unwrap(),
        ];
        assert_eq!(
            camera_filter_list(&fs),
            vec!["tns1:Device//.", "tnsaxis:Storage/Alert"]
        );
        let motion = TopicFilter::parse("tns1:RuleEngine/MotionRegionDetector/Motion").unwrap();
        assert_eq!(
            camera_filter_list([&motion]),
            vec!["tns1:RuleEngine/MotionRegionDetector/Motion"]
        );
        let star = TopicFilter::parse("tns1:Device/*/VirtualInput").unwrap();
        assert_eq!(camera_filter_list([&star]), vec!["tns1:Device//."]);
        let bare = TopicFilter::parse("Device/IO/VirtualInput").unwrap();
        assert_eq!(camera_filter_list([&motion, &bare]), vec!["//."]);
        let with_all = [TopicFilter::parse(VI).unwrap(), TopicFilter::all()];
        assert_eq!(camera_filter_list(&with_all), vec!["//."]);
        assert_eq!(camera_filter_list(&[]), vec!["//."]);
    }
}
