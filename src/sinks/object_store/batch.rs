//! The batcher: outbox entries in, closed objects out. Pure (no I/O, no clock of its own).
//!
//! An object closes at whichever limit comes first: `max_events`, `max_bytes` (of the
//! uncompressed NDJSON) or `max_age` (measured from the first entry's outbox time). With a
//! `{camera}` key template it also closes when the camera changes, so an object never holds
//! another camera's events under its key. A snapshot entry closes the open object too: the
//! snapshot goes up as its own object, and acknowledgements stay in outbox order.
//!
//! Determinism is what makes re-uploads safe: for the same outbox contents the batcher cuts
//! the same objects, so after a crash the object in flight is cut again from the same first
//! sequence number (its key) with at least the entries it had, and overwrites the old one.
//! The one closing that depends on wall-clock time ([`Batcher::close_if_due`]) is only taken
//! when no more entries are waiting, and a restart reads every waiting entry first.

use std::io::Write as _;
use std::sync::Arc;

use crate::config::Compression;
use crate::delivery::{Delivery, Snapshot};

/// Limits of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events per object.
    pub max_events: usize,
    /// Uncompressed NDJSON bytes per object (an object with one larger line still closes).
    pub max_bytes: usize,
    /// Milliseconds from the first entry's outbox time.
    pub max_age_ms: i64,
}

/// A closed batch: NDJSON lines and what its key needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Sequence number of its first entry: names the object.
    pub first_seq: u64,
    /// Sequence number of its last entry: acknowledged once the object is stored.
    pub last_seq: u64,
    /// Outbox time of its first entry (epoch ms): the date in the key.
    pub first_time_ms: i64,
    /// Camera of its first entry.
    pub camera: String,
    /// Lines in it.
    pub count: usize,
    /// NDJSON, one line per event, each ending in `\n`.
    pub ndjson: Vec<u8>,
    /// Outbox time of each entry (epoch ms): end-to-end latency once stored.
    pub accepted_ms: Vec<i64>,
}

/// Collects entries into [`Batch`]es.
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    split_on_camera: bool,
    open: Option<Batch>,
    line: Vec<u8>,
    /// This relay's id, for the `event_id` of each line.
    relay_id: Arc<str>,
}

impl Batcher {
    /// A batcher; `split_on_camera` closes the object when the camera changes; lines carry
    /// event ids of the relay `relay_id`.
    pub fn new(limits: Limits, split_on_camera: bool, relay_id: Arc<str>) -> Self {
        Self {
            limits,
            split_on_camera,
            open: None,
            line: Vec::new(),
            relay_id,
        }
    }

    /// Adds one entry; objects it closes are appended to `out` (zero, one or two).
    pub fn push(&mut self, seq: u64, time_ms: i64, d: &Delivery, out: &mut Vec<Batch>) {
        self.line.clear();
        let id = crate::identity::event_id(&self.relay_id, seq);
        ndjson_line(d, &id, &mut self.line);
        if let Some(open) = &self.open {
            let too_old = time_ms >= open.first_time_ms.saturating_add(self.limits.max_age_ms);
            let too_big = open.ndjson.len() + self.line.len() > self.limits.max_bytes;
            let other_camera = self.split_on_camera && open.camera != d.camera;
            if too_old || too_big || other_camera {
                out.extend(self.open.take());
            }
        }
        let open = self.open.get_or_insert_with(|| Batch {
            first_seq: seq,
            last_seq: seq,
            first_time_ms: time_ms,
            camera: d.camera.clone(),
            count: 0,
            ndjson: Vec::new(),
            accepted_ms: Vec::new(),
        });
        open.ndjson.extend_from_slice(&self.line);
        open.last_seq = seq;
        open.count += 1;
        open.accepted_ms.push(time_ms);
        if open.count >= self.limits.max_events || open.ndjson.len() >= self.limits.max_bytes {
            out.extend(self.open.take());
        }
    }

    /// When the open object reaches `max_age` (epoch ms), if one is open.
    pub fn deadline_ms(&self) -> Option<i64> {
        self.open
            .as_ref()
            .map(|o| o.first_time_ms.saturating_add(self.limits.max_age_ms))
    }

    /// Closes the open object if it reached `max_age` by `now_ms`. Call only when no more
    /// entries are waiting (see the module doc).
    pub fn close_if_due(&mut self, now_ms: i64) -> Option<Batch> {
        match self.deadline_ms() {
            Some(at) if now_ms >= at => self.open.take(),
            _ => None,
        }
    }

    /// Closes the open object now, whatever its limits (a snapshot follows it).
    pub fn close(&mut self) -> Option<Batch> {
        self.open.take()
    }

    /// Whether nothing is collected.
    pub fn is_empty(&self) -> bool {
        self.open.is_none()
    }
}

/// One NDJSON line: the payload's JSON object plus `"mqtt_topic"` and `"event_id"` (the same
/// on every resend: [`crate::identity::event_id`]); a payload that is not a JSON object
/// becomes `{"payload":"<text>","mqtt_topic":...,"event_id":...}`. Keys of those names in the
/// payload are replaced.
pub fn ndjson_line(d: &Delivery, event_id: &str, out: &mut Vec<u8>) {
    let p = d.payload.as_slice();
    let topic = serde_json::to_string(&d.topic).expect("a string serializes");
    let id = serde_json::to_string(event_id).expect("a string serializes");
    // Fast path for the usual compact object: splice the key in before the closing brace.
    let compact_object = p.first() == Some(&b'{')
        && p.last() == Some(&b'}')
        && !p.contains(&b'\n')
        && !p.contains(&b'\r')
        && !contains(p, b"\"mqtt_topic\"")
        && !contains(p, b"\"event_id\"")
        && serde_json::from_slice::<serde::de::IgnoredAny>(p).is_ok();
    if compact_object {
        let inner = &p[1..p.len() - 1];
        out.push(b'{');
        out.extend_from_slice(inner);
        if !inner.iter().all(u8::is_ascii_whitespace) {
            out.push(b',');
        }
        out.extend_from_slice(b"\"mqtt_topic\":");
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(b",\"event_id\":");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"}\n");
        return;
    }
    let value = match serde_json::from_slice::<serde_json::Value>(p) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("mqtt_topic".into(), d.topic.clone().into());
            m.insert("event_id".into(), event_id.into());
            serde_json::Value::Object(m)
        }
        _ => serde_json::json!({
            "payload": String::from_utf8_lossy(p),
            "mqtt_topic": d.topic,
            "event_id": event_id,
        }),
    };
    serde_json::to_writer(&mut *out, &value).expect("writing to a Vec");
    out.push(b'\n');
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Camera,
    Year,
    Month,
    Day,
    Hour,
    /// `{first_seq}` of a batch, `{seq}` of a snapshot.
    FirstSeq,
    Destination,
    /// Snapshots: the event's epoch ms.
    Timestamp,
    /// Snapshots: the event topic, path-safe.
    Topic,
}

/// Digits of `{first_seq}`: every u64 fits, and keys sort in sequence order.
const SEQ_DIGITS: usize = 20;

/// The default key of snapshots: beside the camera's NDJSON objects, one per event.
pub const DEFAULT_SNAPSHOT_KEY: &str =
    "{camera}/snapshots/{yyyy}/{mm}/{dd}/{hh}/{timestamp}_{topic}.jpg";

/// What one key names: a batch or a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct KeyFields<'a> {
    /// Config name of the camera (empty: `unknown`).
    pub camera: &'a str,
    /// Epoch ms the date parts come from.
    pub time_ms: i64,
    /// `{first_seq}` / `{seq}`.
    pub seq: u64,
    /// The event topic of a snapshot (payload spelling); empty for batches.
    pub topic: &'a str,
}

impl KeyTemplate {
    /// The default template for a compression.
    pub fn default_for(c: Compression) -> &'static str {
        match c {
            Compression::Gzip => "{camera}/{yyyy}/{mm}/{dd}/{hh}/{first_seq}.ndjson.gz",
            Compression::Zstd => "{camera}/{yyyy}/{mm}/{dd}/{hh}/{first_seq}.ndjson.zst",
            Compression::None => "{camera}/{yyyy}/{mm}/{dd}/{hh}/{first_seq}.ndjson",
        }
    }

    /// Parses `text`; unknown placeholders and a template without `{first_seq}` (which would
    /// make objects overwrite each other) are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = Self::parse_with(text, false)?;
        if !t.0.contains(&Part::FirstSeq) {
            return Err(format!(
                "\"{text}\": needs {{first_seq}}, or every object would overwrite the last"
            ));
        }
        Ok(t)
    }

    /// Parses a `snapshot_key`: it needs `{timestamp}` or `{seq}`, or every snapshot of a
    /// camera would overwrite the last.
    pub fn parse_snapshot(text: &str) -> Result<Self, String> {
        let t = Self::parse_with(text, true)?;
        if !t.0.contains(&Part::FirstSeq) && !t.0.contains(&Part::Timestamp) {
            return Err(format!(
                "\"{text}\": needs {{timestamp}} or {{seq}}, or every snapshot would overwrite the last"
            ));
        }
        Ok(t)
    }

    fn parse_with(text: &str, snapshot: bool) -> Result<Self, String> {
        let known = match snapshot {
            false => "camera, yyyy, mm, dd, hh, first_seq, destination",
            true => "camera, yyyy, mm, dd, hh, timestamp, topic, seq, destination",
        };
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("\"{text}\": unclosed {{"))?;
            let name = &rest[open + 1..open + close];
            parts.push(match (name, snapshot) {
                ("camera", _) => Part::Camera,
                ("yyyy", _) => Part::Year,
                ("mm", _) => Part::Month,
                ("dd", _) => Part::Day,
                ("hh", _) => Part::Hour,
                ("first_seq", false) | ("seq", true) => Part::FirstSeq,
                ("destination", _) => Part::Destination,
                ("timestamp", true) => Part::Timestamp,
                ("topic", true) => Part::Topic,
                (other, _) => {
                    return Err(format!(
                        "\"{text}\": unknown placeholder {{{other}}} (known: {known})"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self(parts))
    }

    /// Whether the key names the camera.
    pub fn uses_camera(&self) -> bool {
        self.0.contains(&Part::Camera)
    }

    /// The key of `batch` in destination `destination`.
    pub fn render(&self, batch: &Batch, destination: &str) -> String {
        self.render_fields(
            &KeyFields {
                camera: &batch.camera,
                time_ms: batch.first_time_ms,
                seq: batch.first_seq,
                topic: "",
            },
            destination,
        )
    }

    /// The key of anything described by `f` in destination `destination`.
    pub fn render_fields(&self, f: &KeyFields<'_>, destination: &str) -> String {
        let (y, mo, d, h) = utc_ymdh(f.time_ms);
        let mut k = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => k.push_str(t),
                Part::Camera if f.camera.is_empty() => k.push_str("unknown"),
                Part::Camera => k.push_str(&key_safe(f.camera)),
                Part::Year => k.push_str(&format!("{y:04}")),
                Part::Month => k.push_str(&format!("{mo:02}")),
                Part::Day => k.push_str(&format!("{d:02}")),
                Part::Hour => k.push_str(&format!("{h:02}")),
                Part::FirstSeq => k.push_str(&format!("{:0w$}", f.seq, w = SEQ_DIGITS)),
                Part::Destination => k.push_str(&key_safe(destination)),
                Part::Timestamp => k.push_str(&f.time_ms.to_string()),
                Part::Topic => push_topic_name(&mut k, f.topic),
            }
        }
        cap_key(k)
    }
}

/// An event topic as one file-name-safe key segment: namespace prefixes dropped, levels
/// joined by `.`, anything but ASCII letters, digits, `-` and `_` as `_`
/// (`onvif:Device/axis:IO/VirtualInput` → `Device.IO.VirtualInput`).
fn push_topic_name(k: &mut String, topic: &str) {
    if topic.is_empty() {
        k.push_str("unknown");
        return;
    }
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            k.push('.');
        }
        let local = level.split_once(':').map_or(level, |(_, l)| l);
        k.extend(local.chars().map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        }));
    }
}

/// A name used as one key segment: `/` would add levels, `#`, `+`, `%` and control
/// characters break URLs and listings; all are percent-encoded.
fn key_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    crate::event::push_level(&mut out, s);
    out
}

/// Longest object key S3 and Azure Blob accept, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Bytes kept from the end of a key that is too long (sequence number and extension live
/// there, and keep keys unique).
const KEY_TAIL_BYTES: usize = 200;

/// A key of at most [`MAX_KEY_BYTES`]: a longer one keeps its start and end around `~` and a
/// CRC-32 of the whole, so it stays deterministic (a re-upload overwrites) and distinct.
fn cap_key(k: String) -> String {
    if k.len() <= MAX_KEY_BYTES {
        return k;
    }
    let crc = format!("~{:08x}", crc32fast::hash(k.as_bytes()));
    let mut head = MAX_KEY_BYTES - KEY_TAIL_BYTES - crc.len();
    while !k.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = k.len() - KEY_TAIL_BYTES;
    while !k.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{crc}{}", &k[..head], &k[tail..])
}

/// UTC year, month, day, hour of epoch milliseconds (proleptic Gregorian).
pub fn utc_ymdh(ms: i64) -> (i64, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3600) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

/// A finished object, ready to PUT.
#[derive(Debug, Clone)]
pub struct Object {
    /// Full key (prefix included).
    pub key: String,
    /// Compressed body (cheap to clone for a retry).
    pub body: bytes::Bytes,
    /// `Content-Encoding`, if compressed.
    pub content_encoding: Option<&'static str>,
    /// `Content-Type`: [`CONTENT_TYPE`], or [`SNAPSHOT_CONTENT_TYPE`] for a snapshot.
    pub content_type: &'static str,
    /// User metadata (`x-amz-meta-*`, `x-ms-meta-*`): names are lower-case identifiers,
    /// values ASCII (S3 sends them as HTTP headers).
    pub metadata: Vec<(&'static str, String)>,
    /// First and last outbox sequence numbers.
    pub first_seq: u64,
    /// Acknowledged through this once stored.
    pub last_seq: u64,
    /// Events in it.
    pub count: usize,
    /// Outbox time of each event in it (epoch ms); empty for snapshots.
    pub accepted_ms: Vec<i64>,
}

/// `Content-Type` of NDJSON objects.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// `Content-Type` of snapshots.
pub const SNAPSHOT_CONTENT_TYPE: &str = "image/jpeg";

/// Turns batches into objects: key, compression.
#[derive(Debug, Clone)]
pub struct ObjectFormat {
    /// Destination name (`{destination}`).
    pub destination: String,
    /// Put before every key.
    pub prefix: String,
    /// Key template.
    pub template: KeyTemplate,
    /// Key template of snapshots.
    pub snapshot_template: KeyTemplate,
    /// Body compression.
    pub compression: Compression,
}

/// zstd level: 3 is the library default, fast with a good ratio on JSON.
const ZSTD_LEVEL: i32 = 3;

impl ObjectFormat {
    /// The object of `batch`.
    pub fn finish(&self, batch: Batch) -> std::io::Result<Object> {
        let key = format!(
            "{}{}",
            self.prefix,
            self.template.render(&batch, &self.destination)
        );
        let (body, content_encoding) = compress(self.compression, batch.ndjson)?;
        Ok(Object {
            key,
            body: body.into(),
            content_encoding,
            content_type: CONTENT_TYPE,
            metadata: Vec::new(),
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            count: batch.count,
            accepted_ms: batch.accepted_ms,
        })
    }

    /// The key of the snapshot `f` describes, prefix included.
    pub fn snapshot_key(&self, f: &KeyFields<'_>) -> String {
        format!(
            "{}{}",
            self.prefix,
            self.snapshot_template.render_fields(f, &self.destination)
        )
    }

    /// The key a snapshot of the event (`camera`, `event_ms`, payload-spelling `topic`) will
    /// have, known before it is taken: `None` when the template holds `{seq}` (the outbox
    /// position, known only once stored).
    pub fn snapshot_key_ahead(&self, camera: &str, event_ms: i64, topic: &str) -> Option<String> {
        if self.snapshot_template.0.contains(&Part::FirstSeq) {
            return None;
        }
        Some(self.snapshot_key(&KeyFields {
            camera,
            time_ms: event_ms,
            seq: 0,
            topic,
        }))
    }

    /// The object of the snapshot at outbox sequence `seq`: the JPEG as is, named and
    /// described by its event.
    pub fn snapshot(&self, seq: u64, s: Snapshot) -> Object {
        let key = self.snapshot_key(&KeyFields {
            camera: &s.camera,
            time_ms: s.event_ms,
            seq,
            topic: &s.topic,
        });
        let mut metadata = vec![
            ("camera", header_safe(&s.camera)),
            ("topic", header_safe(&s.topic)),
            ("timestamp", s.event_ms.to_string()),
        ];
        if !s.serial.is_empty() {
            metadata.push(("serial", header_safe(&s.serial)));
        }
        Object {
            key,
            body: s.jpeg.into(),
            content_encoding: None,
            content_type: SNAPSHOT_CONTENT_TYPE,
            metadata,
            first_seq: seq,
            last_seq: seq,
            count: 1,
            accepted_ms: Vec::new(),
        }
    }
}

/// A metadata value both stores accept as an HTTP header: printable ASCII, the rest (and
/// `%`) percent-encoded.
fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Compresses a body; returns it with its `Content-Encoding`.
pub fn compress(c: Compression, raw: Vec<u8>) -> std::io::Result<(Vec<u8>, Option<&'static str>)> {
    match c {
        Compression::None => Ok((raw, None)),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(raw.len() / 4),
                flate2::Compression::default(),
            );
            e.write_all(&raw)?;
            Ok((e.finish()?, Some("gzip")))
        }
        Compression::Zstd => Ok((zstd::bulk::compress(&raw, ZSTD_LEVEL)?, Some("zstd"))),
    }
}

/// Undoes [`compress`] (tests, tools).
pub fn decompress(encoding: Option<&str>, body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    match encoding {
        None | Some("") | Some("identity") => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out)?;
        }
        Some("zstd") => {
            zstd::stream::read::Decoder::new(body)?.read_to_end(&mut out)?;
        }
        Some(other) => {
            return Err(std::io::Error::other(format!(
                "unknown content encoding {other}"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(camera: &str, payload: &str) -> Delivery {
        Delivery {
            topic: format!("axis/X/{camera}"),
            payload: payload.as_bytes().to_vec(),
            qos: 1,
            retain: false,
            created_ms: 0,
            camera: camera.into(),
        }
    }

    const RELAY: &str = "0123456789abcdef";

    const BIG: Limits = Limits {
        max_events: 1000,
        max_bytes: 1 << 20,
        max_age_ms: 60_000,
    };

    fn feed(b: &mut Batcher, items: &[(u64, i64, Delivery)]) -> Vec<Batch> {
        let mut out = Vec::new();
        for (seq, t, d) in items {
            b.push(*seq, *t, d, &mut out);
        }
        out
    }

    #[test]
    fn lines_are_the_payload_plus_mqtt_topic_and_event_id() {
        let mut out = Vec::new();
        ndjson_line(&d("a", r#"{"topic":"x","n":1}"#), "r-1", &mut out);
        ndjson_line(&d("a", "{}"), "r-2", &mut out);
        ndjson_line(&d("a", "42"), "r-3", &mut out);
        ndjson_line(&d("a", "not \"json\""), "r-4", &mut out);
        ndjson_line(&d("a", "{\n \"pretty\": true\n}"), "r-5", &mut out);
        ndjson_line(&d("a", r#"{"mqtt_topic":"mine"}"#), "r-6", &mut out);
        ndjson_line(&d("a", r#"{"event_id":"mine"}"#), "r-7", &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"topic":"x","n":1,"mqtt_topic":"axis/X/a","event_id":"r-1"}"#,
                r#"{"mqtt_topic":"axis/X/a","event_id":"r-2"}"#,
                r#"{"payload":"42","mqtt_topic":"axis/X/a","event_id":"r-3"}"#,
                r#"{"payload":"not \"json\"","mqtt_topic":"axis/X/a","event_id":"r-4"}"#,
                r#"{"pretty":true,"mqtt_topic":"axis/X/a","event_id":"r-5"}"#,
                r#"{"mqtt_topic":"axis/X/a","event_id":"r-6"}"#,
                r#"{"event_id":"r-7","mqtt_topic":"axis/X/a"}"#,
            ]
        );
    }

    #[test]
    fn every_line_carries_the_event_id_of_its_outbox_sequence() {
        let mut b = Batcher::new(BIG, true, "00000000000000ab".into());
        let mut out = feed(&mut b, &[(5, 0, d("a", "{}")), (6, 0, d("a", "7"))]);
        out.extend(b.close());
        let text = String::from_utf8(out[0].ndjson.clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"].to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "\"00000000000000ab-0000000000000005\"",
                "\"00000000000000ab-0000000000000006\""
            ]
        );
    }

    #[test]
    fn closes_on_count() {
        let mut b = Batcher::new(
            Limits {
                max_events: 3,
                ..BIG
            },
            true,
            RELAY.into(),
        );
        let items: Vec<_> = (0..7).map(|i| (i, 1000, d("a", "{}"))).collect();
        let out = feed(&mut b, &items);
        let ranges: Vec<_> = out
            .iter()
            .map(|o| (o.first_seq, o.last_seq, o.count))
            .collect();
        assert_eq!(ranges, [(0, 2, 3), (3, 5, 3)]);
        assert_eq!(b.deadline_ms(), Some(61_000));
    }

    #[test]
    fn closes_on_bytes_before_overflowing() {
        let line_len = {
            let mut l = Vec::new();
            ndjson_line(&d("a", "{}"), &crate::identity::event_id(RELAY, 0), &mut l);
            l.len()
        };
        let mut b = Batcher::new(
            Limits {
                max_bytes: line_len * 2 + 1,
                ..BIG
            },
            true,
            RELAY.into(),
        );
        let items: Vec<_> = (0..5).map(|i| (i, 0, d("a", "{}"))).collect();
        let out = feed(&mut b, &items);
        let ranges: Vec<_> = out.iter().map(|o| (o.first_seq, o.last_seq)).collect();
        assert_eq!(ranges, [(0, 1), (2, 3)]);
        assert!(out.iter().all(|o| o.ndjson.len() <= line_len * 2 + 1));
    }

    #[test]
    fn closes_on_age_by_entry_time_then_by_clock() {
        let mut b = Batcher::new(BIG, true, RELAY.into());
        let out = feed(
            &mut b,
            &[
                (10, 1_000, d("a", "{}")),
                (11, 60_999, d("a", "{}")),
                (12, 61_000, d("a", "{}")),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].first_seq, out[0].last_seq), (10, 11));
        assert_eq!(b.close_if_due(120_999), None);
        let last = b.close_if_due(121_000).unwrap();
        assert_eq!((last.first_seq, last.last_seq), (12, 12));
        assert!(b.is_empty());
    }

    #[test]
    fn closes_when_the_camera_changes_if_the_key_names_it() {
        let items = [
            (0, 0, d("a", "{}")),
            (1, 0, d("b", "{}")),
            (2, 0, d("b", "{}")),
        ];
        let mut b = Batcher::new(BIG, true, RELAY.into());
        let out = feed(&mut b, &items);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].camera, "a");
        let mut b = Batcher::new(BIG, false, RELAY.into());
        assert!(feed(&mut b, &items).is_empty());
    }

    #[test]
    fn same_outbox_same_objects_after_a_restart() {
        let items: Vec<_> = (0..25).map(|i| (i, i as i64 * 100, d("a", "{}"))).collect();
        let limits = Limits {
            max_events: 10,
            max_bytes: 1 << 20,
            max_age_ms: 1_000,
        };
        let mut b1 = Batcher::new(limits, true, RELAY.into());
        let first = feed(&mut b1, &items);
        // A restart begins at the first unacknowledged object's first entry.
        let mut b2 = Batcher::new(limits, true, RELAY.into());
        let again = feed(&mut b2, &items[first[0].count..]);
        assert_eq!(&first[1..], &again[..first.len() - 1]);
    }

    #[test]
    fn keys_longer_than_stores_allow_are_capped_deterministically() {
        let t = KeyTemplate::parse("{camera}/{first_seq}.ndjson.gz").unwrap();
        let f = |camera: &'static str, seq| KeyFields {
            camera,
            time_ms: 0,
            seq,
            topic: "",
        };
        let long: &'static str = "ü".repeat(700).leak();
        let k = t.render_fields(&f(long, 7), "d");
        assert!(k.len() <= MAX_KEY_BYTES, "{}", k.len());
        assert!(k.ends_with("00000000000000000007.ndjson.gz"), "{k}");
        assert_eq!(k, t.render_fields(&f(long, 7), "d"));
        assert_ne!(k, t.render_fields(&f(long, 8), "d"));
        let short = t.render_fields(&f("gate#1+x%\u{7}", 7), "d");
        assert_eq!(short, "gate%231%2Bx%25%07/00000000000000000007.ndjson.gz");
    }

    #[test]
    fn keys_follow_the_template() {
        let t = KeyTemplate::parse(KeyTemplate::default_for(Compression::Gzip)).unwrap();
        let batch = Batch {
            first_seq: 42,
            last_seq: 50,
            // 2025-01-01T12:00:00.123Z
            first_time_ms: 1_735_732_800_123,
            camera: "lobby".into(),
            count: 9,
            ndjson: Vec::new(),
            accepted_ms: Vec::new(),
        };
        assert_eq!(
            t.render(&batch, "archive"),
            "lobby/2025/01/01/12/00000000000000000042.ndjson.gz"
        );
        let t = KeyTemplate::parse("{destination}/{first_seq}").unwrap();
        assert_eq!(t.render(&batch, "arch"), "arch/00000000000000000042");
        assert!(KeyTemplate::parse("{camera}/x").is_err());
        assert!(KeyTemplate::parse("{nope}/{first_seq}").is_err());
        assert!(KeyTemplate::parse("{first_seq").is_err());
        assert_eq!(utc_ymdh(0), (1970, 1, 1, 0));
        assert_eq!(utc_ymdh(951_782_400_000), (2000, 2, 29, 0));
        assert_eq!(utc_ymdh(1_767_225_599_000), (2025, 12, 31, 23));
    }

    #[test]
    fn snapshot_keys_and_objects_name_the_event() {
        let format = ObjectFormat {
            destination: "archive".into(),
            prefix: "site1/".into(),
            template: KeyTemplate::parse(KeyTemplate::default_for(Compression::Gzip)).unwrap(),
            snapshot_template: KeyTemplate::parse_snapshot(DEFAULT_SNAPSHOT_KEY).unwrap(),
            compression: Compression::Gzip,
        };
        let snap = Snapshot {
            created_ms: 0,
            // 2025-01-01T12:00:00.123Z
            event_ms: 1_735_732_800_123,
            topic: "onvif:Device/axis:IO/Virtual Input+ü".into(),
            camera: "gate/2".into(),
            serial: "ACCC8E012345".into(),
            jpeg: vec![0xFF, 0xD8, 0xFF, 0xD9],
        };
        let o = format.snapshot(7, snap);
        assert_eq!(
            o.key,
            "site1/gate%2F2/snapshots/2025/01/01/12/1735732800123_Device.IO.Virtual_Input__.jpg"
        );
        assert_eq!(
            (o.content_type, o.content_encoding, &o.body[..]),
            ("image/jpeg", None, &[0xFF, 0xD8, 0xFF, 0xD9][..])
        );
        assert_eq!((o.first_seq, o.last_seq, o.count), (7, 7, 1));
        assert_eq!(
            o.metadata,
            [
                ("camera", "gate/2".to_string()),
                ("topic", "onvif:Device/axis:IO/Virtual Input+%C3%BC".into()),
                ("timestamp", "1735732800123".into()),
                ("serial", "ACCC8E012345".into()),
            ]
        );
        let t = KeyTemplate::parse_snapshot("{destination}/{seq}.jpg").unwrap();
        let f = KeyFields {
            camera: "",
            time_ms: 0,
            seq: 3,
            topic: "",
        };
        assert_eq!(t.render_fields(&f, "a"), "a/00000000000000000003.jpg");
        assert!(KeyTemplate::parse_snapshot("{camera}/x.jpg").is_err());
        assert!(KeyTemplate::parse_snapshot("{first_seq}.jpg").is_err());
        assert!(KeyTemplate::parse("{timestamp}/{first_seq}").is_err());
    }

    #[test]
    fn close_ends_the_open_object_early() {
        let mut b = Batcher::new(BIG, true, RELAY.into());
        assert!(feed(&mut b, &[(0, 0, d("a", "{}")), (1, 0, d("a", "{}"))]).is_empty());
        let o = b.close().unwrap();
        assert_eq!((o.first_seq, o.last_seq), (0, 1));
        assert!(b.is_empty() && b.close().is_none());
    }

    #[test]
    fn compression_round_trips() {
        let raw = b"{\"a\":1}\n".repeat(100);
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let (body, enc) = compress(c, raw.clone()).unwrap();
            assert_eq!(decompress(enc, &body).unwrap(), raw);
        }
    }
}
