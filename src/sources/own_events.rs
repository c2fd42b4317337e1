//! The relay's own events about its sources, in the camera event format, so dashboards learn
//! through the same rules and topics that events may be missing.

use std::sync::Arc;

use crate::event::{Event, Items};

/// Topic of the event sent after a camera connection came back. No namespace prefix: it is
/// the relay's, not the camera's.
pub const CONNECTION_TOPIC: &str = "EdgeRelay/CameraConnection";

/// A camera stream is back after a gap: events of that gap may be missing (the camera re-sends
/// its current states, but not the changes in between).
pub fn reconnected(camera: &Arc<str>, serial: &Arc<str>, lost_ms: i64, now_ms: i64) -> Event {
    let mut ev = Event::new(
        camera.clone(),
        serial.clone(),
        CONNECTION_TOPIC.to_string(),
        now_ms,
    );
    ev.source = Items::from([("camera".to_string(), camera.to_string())]);
    ev.data = Items::from([
        ("connected".to_string(), "1".to_string()),
        ("gap_ms".to_string(), (now_ms - lost_ms).max(0).to_string()),
        ("lost".to_string(), lost_ms.to_string()),
    ]);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_event_in_camera_format() {
        let ev = reconnected(&"lobby".into(), &"B8A44F3E9D21".into(), 1_000, 4_500);
        assert_eq!(
            ev.payload(false),
            r#"{"topic":"EdgeRelay/CameraConnection","timestamp":4500,"message":{"source":{"camera":"lobby"},"key":{},"data":{"connected":"1","gap_ms":"3500","lost":"1000"}}}"#
        );
        assert!(!ev.stateful);
    }
}
