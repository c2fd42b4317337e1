//! Events received per camera and topic, counted by the router (it sees every event once) and
//! read by `/metrics`. Bounded: a source inventing topics (an MQTT source can) gets at most
//! [`MAX_TOPICS`] of its own rows, each at most [`MAX_TOPIC_BYTES`] long (camera topics are
//! capped at parse; an MQTT source's may run to 64 KiB), so at most 256 KiB of keys per
//! camera; the rest count under `topic="other"`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::event::{Event, EventKind};
use crate::sources::limits::MAX_TOPIC_BYTES;

/// Distinct topics counted per camera before the rest go to `"other"`.
pub const MAX_TOPICS: usize = 256;

/// Camera → topic → events.
#[derive(Debug, Default)]
pub struct TopicCounts(Mutex<HashMap<Arc<str>, HashMap<String, u64>>>);

/// The counts held for a batch of events (one lock per batch, not per event).
pub struct Counting<'a>(MutexGuard<'a, HashMap<Arc<str>, HashMap<String, u64>>>);

impl TopicCounts {
    /// Locks the counts for one batch of events.
    pub fn batch(&self) -> Counting<'_> {
        Counting(self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// (camera, topic, count), sorted, for a scrape.
    pub fn rows(&self) -> Vec<(String, String, u64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = map
            .iter()
            .flat_map(|(cam, topics)| {
                topics
                    .iter()
                    .map(move |(t, n)| (cam.to_string(), t.clone(), *n))
            })
            .collect();
        rows.sort();
        rows
    }
}

impl Counting<'_> {
    /// Counts one event.
    pub fn count(&mut self, ev: &Event) {
        let topic = match ev.kind {
            EventKind::Event => ev.topic.as_str(),
            EventKind::Analytics => "analytics",
            EventKind::Ptz => "ptz",
        };
        let topics = self.0.entry(ev.camera.clone()).or_default();
        if let Some(n) = topics.get_mut(topic) {
            *n += 1;
        } else if topics.len() < MAX_TOPICS && topic.len() <= MAX_TOPIC_BYTES {
            topics.insert(topic.to_string(), 1);
        } else {
            *topics.entry("other".to_string()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(camera: &str, topic: &str) -> Event {
        Event::new(camera.into(), "S".into(), topic.into(), 0)
    }

    #[test]
    fn counts_per_camera_and_topic_with_frames_by_kind() {
        let c = TopicCounts::default();
        let mut b = c.batch();
        b.count(&ev("a", "tns1:Device/tnsaxis:IO/VirtualInput"));
        b.count(&ev("a", "tns1:Device/tnsaxis:IO/VirtualInput"));
        b.count(&ev("b", "tns1:VideoSource/tnsaxis:Tampering"));
        let mut frame = ev("a", "");
        frame.kind = EventKind::Analytics;
        b.count(&frame);
        drop(b);
        assert_eq!(
            c.rows(),
            vec![
                ("a".into(), "analytics".into(), 1),
                ("a".into(), "tns1:Device/tnsaxis:IO/VirtualInput".into(), 2),
                ("b".into(), "tns1:VideoSource/tnsaxis:Tampering".into(), 1),
            ]
        );
    }

    #[test]
    fn endless_topics_stop_at_the_cap_and_count_as_other() {
        let c = TopicCounts::default();
        let mut b = c.batch();
        for i in 0..MAX_TOPICS + 10 {
            b.count(&ev("sensors", &format!("site/{i}")));
        }
        drop(b);
        let rows = c.rows();
        assert_eq!(rows.len(), MAX_TOPICS + 1);
        assert!(rows.contains(&("sensors".into(), "other".into(), 10)));
    }

    #[test]
    fn a_topic_longer_than_the_cap_counts_as_other() {
        let c = TopicCounts::default();
        let mut b = c.batch();
        b.count(&ev("sensors", &"t".repeat(MAX_TOPIC_BYTES + 1)));
        b.count(&ev("sensors", "ok"));
        drop(b);
        assert_eq!(
            c.rows(),
            vec![
                ("sensors".into(), "ok".into(), 1),
                ("sensors".into(), "other".into(), 1)
            ]
        );
    }
}
