//! Size limits on what a camera sends, checked where it is parsed, so that one hostile or
//! broken camera cannot make the relay hold more than a bounded number of bytes: a frame or
//! document is capped before it is read (WebSocket message size, RTSP document size), and what
//! it holds is capped here before it becomes an [`Event`](crate::event::Event). An event over
//! a limit is malformed: counted per camera, logged once per burst, skipped; the stream goes on.
//!
//! The figures are far above what cameras send (topics of a few dozen bytes, a handful of
//! items of a few bytes each) and far below what would hurt: an event holds at most about a
//! MiB (a WebSocket message; an RTSP document's events are capped the same way), and the
//! queue to the router is bounded in bytes as well ([`crate::sources::queue`]).

use crate::event::Items;

/// Longest topic accepted, in bytes. Real topics are under 200 bytes; MQTT topics built from
/// them must stay under 64 KiB and cloud brokers allow 256 bytes, so anything longer is broken.
pub const MAX_TOPIC_BYTES: usize = 1024;
/// Most items in one of an event's source, key and data lists (devices send one to five).
pub const MAX_ITEMS: usize = 64;
/// Longest item name, in bytes.
pub const MAX_ITEM_NAME_BYTES: usize = 256;
/// Longest item value, in bytes: as long as a WebSocket message may be, so over WebSocket
/// only the message cap applies (analytics apps put object lists and base64 blobs in values;
/// the archive tests send 700 KiB ones); an RTSP document (up to 4 MiB) may not hold longer.
pub const MAX_ITEM_VALUE_BYTES: usize = MAX_WS_MESSAGE_BYTES;
/// Most objects in one analytics frame (a crowded scene has a few dozen).
pub const MAX_OBJECTS: usize = 512;
/// Largest WebSocket message or frame read from a camera: an event is a few hundred bytes, and
/// tungstenite refuses a longer one from its header, before reading it.
pub const MAX_WS_MESSAGE_BYTES: usize = 1 << 20;
/// Most XML nodes parsed in one RTSP metadata document (an analytics frame with 100 objects is
/// about 2,000); roxmltree refuses a document with more before it holds them all, so a 4 MiB
/// document of empty elements cannot cost 60 bytes of nodes per byte.
pub const MAX_XML_NODES: u32 = 50_000;

/// Most JSON values (objects, arrays, members, elements) in one message: a notification has a
/// few dozen; [`MAX_ITEMS`] items in each of three lists stay far below. Parsed JSON costs tens
/// of bytes per value, so a 1 MiB message of `[0,0,...]` would otherwise cost 16 MiB.
pub const MAX_JSON_NODES: usize = 4096;

/// Why an event was refused at parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The topic is longer than [`MAX_TOPIC_BYTES`].
    #[error("topic of {0} bytes (at most {MAX_TOPIC_BYTES})")]
    Topic(usize),
    /// A list has more than [`MAX_ITEMS`] items.
    #[error("{list} list of more than {MAX_ITEMS} items")]
    ItemCount {
        /// `source`, `key` or `data`.
        list: &'static str,
    },
    /// An item name or value is too long.
    #[error("{list} item {what} of {len} bytes (at most {max})")]
    ItemSize {
        /// `source`, `key` or `data`.
        list: &'static str,
        /// `name` or `value`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
}

/// Values in a JSON text, counted by their separators and openers outside strings (an upper
/// bound: `,` `:` `[` `{`), without parsing it.
pub fn json_nodes(text: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (0, false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b':' | b'[' | b'{' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Checks an event's topic and item lists.
pub fn check_event(ev: &crate::event::Event) -> Result<(), LimitError> {
    check_topic(&ev.topic)?;
    check_items("source", &ev.source)?;
    check_items("key", &ev.key)?;
    check_items("data", &ev.data)
}

/// Checks a topic's length.
pub fn check_topic(topic: &str) -> Result<(), LimitError> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(LimitError::Topic(topic.len()));
    }
    Ok(())
}

/// Checks one item list against the count and size caps.
pub fn check_items(list: &'static str, items: &Items) -> Result<(), LimitError> {
    if items.len() > MAX_ITEMS {
        return Err(LimitError::ItemCount { list });
    }
    for (name, value) in items {
        check_item(list, name, value)?;
    }
    Ok(())
}

/// Checks one item's name and value sizes.
pub fn check_item(list: &'static str, name: &str, value: &str) -> Result<(), LimitError> {
    let size = |what, len, max| {
        if len > max {
            Err(LimitError::ItemSize {
                list,
                what,
                len,
                max,
            })
        } else {
            Ok(())
        }
    };
    size("name", name.len(), MAX_ITEM_NAME_BYTES)?;
    size("value", value.len(), MAX_ITEM_VALUE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_up_to_the_cap_pass_and_longer_ones_are_refused() {
        assert_eq!(check_topic(&"a".repeat(MAX_TOPIC_BYTES)), Ok(()));
        assert_eq!(
            check_topic(&"a".repeat(MAX_TOPIC_BYTES + 1)),
            Err(LimitError::Topic(MAX_TOPIC_BYTES + 1))
        );
    }

    #[test]
    fn item_lists_are_capped_in_count_and_size() {
        let mut items: Items = (0..MAX_ITEMS)
            .map(|i| (i.to_string(), "v".into()))
            .collect();
        assert_eq!(check_items("data", &items), Ok(()));
        items.insert("one more".into(), "v".into());
        assert_eq!(
            check_items("data", &items),
            Err(LimitError::ItemCount { list: "data" })
        );
        let long = Items::from([("x".into(), "v".repeat(MAX_ITEM_VALUE_BYTES + 1))]);
        assert!(matches!(
            check_items("source", &long),
            Err(LimitError::ItemSize { what: "value", .. })
        ));
        let long = Items::from([("n".repeat(MAX_ITEM_NAME_BYTES + 1), "v".into())]);
        assert!(matches!(
            check_items("key", &long),
            Err(LimitError::ItemSize { what: "name", .. })
        ));
    }
}
