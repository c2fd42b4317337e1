//! `typed_values = true`: the camera payload (DESIGN.md §4) with catalog-typed items as JSON
//! booleans and numbers instead of the strings the camera sends, for consumers that compute
//! with them. Only the item values change; key order and everything else stay as in
//! [`Event::payload`], which remains the default.
//!
//! An item is converted only when the catalog declares its type and its text is a valid
//! value of that type (`xsd:boolean`: `true`, `false`, `1`, `0`; integers that fit 64 bits;
//! finite decimals). Anything else, and every item of a topic the catalog does not list,
//! stays a string as received: a camera sending something unexpected never loses data.

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use crate::event::{Event, EventKind, Items, ValueType, payload_topic};

/// The payload of `ev` with typed values (events only; other kinds are returned as usual).
pub fn payload(ev: &Event, include_serial: bool) -> String {
    let Some(types) = ev
        .item_types
        .as_deref()
        .filter(|_| ev.kind == EventKind::Event)
    else {
        return ev.payload(include_serial);
    };
    let p = Payload {
        topic: payload_topic(&ev.topic),
        timestamp: ev.time_ms,
        serial: include_serial.then_some(&*ev.serial),
        message: Message {
            source: typed(&ev.source, &types.source),
            key: typed(&ev.key, &types.key),
            data: typed(&ev.data, &types.data),
        },
    };
    serde_json::to_string(&p).expect("serializing strings, numbers and booleans cannot fail")
}

/// The same keys in the same order as the camera payload.
#[derive(Serialize)]
struct Payload<'a> {
    topic: String,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<&'a str>,
    message: Message,
}

#[derive(Serialize)]
struct Message {
    source: IndexMap<String, Value>,
    key: IndexMap<String, Value>,
    data: IndexMap<String, Value>,
}

fn typed(items: &Items, types: &IndexMap<String, ValueType>) -> IndexMap<String, Value> {
    items
        .iter()
        .map(|(name, text)| {
            let v = types
                .get(name)
                .and_then(|t| convert(*t, text))
                .unwrap_or_else(|| Value::String(text.clone()));
            (name.clone(), v)
        })
        .collect()
}

/// The JSON value of `text` under type `t`, or `None` when it is not a valid one.
pub fn convert(t: ValueType, text: &str) -> Option<Value> {
    match t {
        ValueType::Boolean => match text {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        ValueType::Integer => text
            .parse::<i64>()
            .ok()
            .map(Value::from)
            .or_else(|| text.parse::<u64>().ok().map(Value::from)),
        ValueType::Decimal => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
        ValueType::String | ValueType::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::ItemTypes;

    fn storage_alert() -> Event {
        let mut ev = Event::new(
            "lobby".into(),
            "B8A44F3E9D21".into(),
            "tnsaxis:Storage/Alert".into(),
            1_750_148_043_512,
        );
        ev.source = Items::from([("disk_id".into(), "SD_DISK".into())]);
        ev.data = Items::from([
            ("temperature".into(), "41".into()),
            ("alert".into(), "1".into()),
            ("wear".into(), "n/a".into()),
            ("ratio".into(), "0.25".into()),
            ("untyped".into(), "7".into()),
        ]);
        ev.item_types = Some(Arc::new(ItemTypes {
            source: IndexMap::from([("disk_id".into(), ValueType::String)]),
            key: IndexMap::new(),
            data: IndexMap::from([
                ("temperature".into(), ValueType::Integer),
                ("alert".into(), ValueType::Boolean),
                ("wear".into(), ValueType::Integer),
                ("ratio".into(), ValueType::Decimal),
            ]),
        }));
        ev
    }

    #[test]
    fn typed_items_become_booleans_and_numbers_in_camera_key_order() {
        assert_eq!(
            payload(&storage_alert(), true),
            r#"{"topic":"axis:Storage/Alert","timestamp":1750148043512,"serial":"B8A44F3E9D21","message":{"source":{"disk_id":"SD_DISK"},"key":{},"data":{"temperature":41,"alert":true,"wear":"n/a","ratio":0.25,"untyped":"7"}}}"#
        );
    }

    #[test]
    fn without_catalog_types_the_payload_is_the_camera_payload() {
        let mut ev = storage_alert();
        ev.item_types = None;
        assert_eq!(payload(&ev, false), ev.payload(false));
    }

    #[test]
    fn only_valid_values_of_the_declared_type_convert() {
        use ValueType::*;
        for (t, text, want) in [
            (Boolean, "true", Some(Value::Bool(true))),
            (Boolean, "0", Some(Value::Bool(false))),
            (Boolean, "yes", None),
            (Boolean, "TRUE", None),
            (Integer, "-12", Some(Value::from(-12))),
            (Integer, "18446744073709551615", Some(Value::from(u64::MAX))),
            (Integer, "18446744073709551616", None),
            (Integer, "1.5", None),
            (Integer, "", None),
            (Decimal, "1e3", Some(Value::from(1000.0))),
            (Decimal, "NaN", None),
            (Decimal, "inf", None),
            (String, "1", None),
            (Other, "1", None),
        ] {
            assert_eq!(convert(t, text), want, "{t:?} {text:?}");
        }
    }
}
