//! The batcher: outbox entries in, closed objects out. Pure (no I/O, no clock of its own).
//!
//! An object closes at whichever limit comes first: `max_events`, `max_bytes` (of the
//! uncompressed NDJSON) or `max_age` (measured from the first entry's outbox time). With a
//! `{camera}` key template it also closes when the camera changes, so an object never holds
//! another camera's events under its key.
//!
//! Determinism is what makes re-uploads safe: for the same outbox contents the batcher cuts
//! the same objects, so after a crash the object in flight is cut again from the same first
//! sequence number (its key) with at least the entries it had, and overwrites the old one.
//! The one closing that depends on wall-clock time ([`Batcher::close_if_due`]) is only taken
//! when no more entries are waiting, and a restart reads every waiting entry first.

use std::io::Write as _;

use crate::config::Compression;
use crate::delivery::Delivery;

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
}

/// Collects entries into [`Batch`]es.
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    split_on_camera: bool,
    open: Option<Batch>,
    line: Vec<u8>,
}

impl Batcher {
    /// A batcher; `split_on_camera` closes the object when the camera changes.
    pub fn new(limits: Limits, split_on_camera: bool) -> Self {
        Self {
            limits,
            split_on_camera,
            open: None,
            line: Vec::new(),
        }
    }

    /// Adds one entry; objects it closes are appended to `out` (zero, one or two).
    pub fn push(&mut self, seq: u64, time_ms: i64, d: &Delivery, out: &mut Vec<Batch>) {
        self.line.clear();
        ndjson_line(d, &mut self.line);
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
        });
        open.ndjson.extend_from_slice(&self.line);
        open.last_seq = seq;
        open.count += 1;
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

    /// Whether nothing is collected.
    pub fn is_empty(&self) -> bool {
        self.open.is_none()
    }
}

/// One NDJSON line: the payload's JSON object plus `"mqtt_topic"`; a payload that is not a
/// JSON object becomes `{"payload":"<text>","mqtt_topic":...}`.
pub fn ndjson_line(d: &Delivery, out: &mut Vec<u8>) {
    let p = d.payload.as_slice();
    let topic = serde_json::to_string(&d.topic).expect("a string serializes");
    // Fast path for the usual compact object: splice the key in before the closing brace.
    let compact_object = p.first() == Some(&b'{')
        && p.last() == Some(&b'}')
        && !p.contains(&b'\n')
        && !p.contains(&b'\r')
        && !contains(p, b"\"mqtt_topic\"")
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
        out.extend_from_slice(b"}\n");
        return;
    }
    let value = match serde_json::from_slice::<serde_json::Value>(p) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("mqtt_topic".into(), d.topic.clone().into());
            serde_json::Value::Object(m)
        }
        _ => serde_json::json!({
            "payload": String::from_utf8_lossy(p),
            "mqtt_topic": d.topic,
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
    FirstSeq,
    Destination,
}

/// Digits of `{first_seq}`: every u64 fits, and keys sort in sequence order.
const SEQ_DIGITS: usize = 20;

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
            parts.push(match name {
                "camera" => Part::Camera,
                "yyyy" => Part::Year,
                "mm" => Part::Month,
                "dd" => Part::Day,
                "hh" => Part::Hour,
                "first_seq" => Part::FirstSeq,
                "destination" => Part::Destination,
                other => {
                    return Err(format!(
                        "\"{text}\": unknown placeholder {{{other}}} (known: camera, yyyy, mm, dd, hh, first_seq, destination)"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts.contains(&Part::FirstSeq) {
            return Err(format!(
                "\"{text}\": needs {{first_seq}}, or every object would overwrite the last"
            ));
        }
        Ok(Self(parts))
    }

    /// Whether the key names the camera.
    pub fn uses_camera(&self) -> bool {
        self.0.contains(&Part::Camera)
    }

    /// The key of `batch` in destination `destination`.
    pub fn render(&self, batch: &Batch, destination: &str) -> String {
        let (y, mo, d, h) = utc_ymdh(batch.first_time_ms);
        let mut k = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => k.push_str(t),
                Part::Camera if batch.camera.is_empty() => k.push_str("unknown"),
                Part::Camera => k.push_str(&key_safe(&batch.camera)),
                Part::Year => k.push_str(&format!("{y:04}")),
                Part::Month => k.push_str(&format!("{mo:02}")),
                Part::Day => k.push_str(&format!("{d:02}")),
                Part::Hour => k.push_str(&format!("{h:02}")),
                Part::FirstSeq => k.push_str(&format!("{:0w$}", batch.first_seq, w = SEQ_DIGITS)),
                Part::Destination => k.push_str(&key_safe(destination)),
            }
        }
        k
    }
}

/// A name used as one key segment: `/` would add levels.
fn key_safe(s: &str) -> String {
    s.replace('/', "%2F")
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
    /// First and last outbox sequence numbers.
    pub first_seq: u64,
    /// Acknowledged through this once stored.
    pub last_seq: u64,
    /// Events in it.
    pub count: usize,
}

/// `Content-Type` of every object.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// Turns batches into objects: key, compression.
#[derive(Debug, Clone)]
pub struct ObjectFormat {
    /// Destination name (`{destination}`).
    pub destination: String,
    /// Put before every key.
    pub prefix: String,
    /// Key template.
    pub template: KeyTemplate,
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
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            count: batch.count,
        })
    }
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
    fn lines_are_the_payload_plus_mqtt_topic() {
        let mut out = Vec::new();
        ndjson_line(&d("a", r#"{"topic":"x","n":1}"#), &mut out);
        ndjson_line(&d("a", "{}"), &mut out);
        ndjson_line(&d("a", "42"), &mut out);
        ndjson_line(&d("a", "not \"json\""), &mut out);
        ndjson_line(&d("a", "{\n \"pretty\": true\n}"), &mut out);
        ndjson_line(&d("a", r#"{"mqtt_topic":"mine"}"#), &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"topic":"x","n":1,"mqtt_topic":"axis/X/a"}"#,
                r#"{"mqtt_topic":"axis/X/a"}"#,
                r#"{"payload":"42","mqtt_topic":"axis/X/a"}"#,
                r#"{"payload":"not \"json\"","mqtt_topic":"axis/X/a"}"#,
                r#"{"pretty":true,"mqtt_topic":"axis/X/a"}"#,
                r#"{"mqtt_topic":"axis/X/a"}"#,
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
            ndjson_line(&d("a", "{}"), &mut l);
            l.len()
        };
        let mut b = Batcher::new(
            Limits {
                max_bytes: line_len * 2 + 1,
                ..BIG
            },
            true,
        );
        let items: Vec<_> = (0..5).map(|i| (i, 0, d("a", "{}"))).collect();
        let out = feed(&mut b, &items);
        let ranges: Vec<_> = out.iter().map(|o| (o.first_seq, o.last_seq)).collect();
        assert_eq!(ranges, [(0, 1), (2, 3)]);
        assert!(out.iter().all(|o| o.ndjson.len() <= line_len * 2 + 1));
    }

    #[test]
    fn closes_on_age_by_entry_time_then_by_clock() {
        let mut b = Batcher::new(BIG, true);
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
        let mut b = Batcher::new(BIG, true);
        let out = feed(&mut b, &items);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].camera, "a");
        let mut b = Batcher::new(BIG, false);
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
        let mut b1 = Batcher::new(limits, true);
        let first = feed(&mut b1, &items);
        // A restart begins at the first unacknowledged object's first entry.
        let mut b2 = Batcher::new(limits, true);
        let again = feed(&mut b2, &items[first[0].count..]);
        assert_eq!(&first[1..], &again[..first.len() - 1]);
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
    fn compression_round_trips() {
        let raw = b"{\"a\":1}\n".repeat(100);
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let (body, enc) = compress(c, raw.clone()).unwrap();
            assert_eq!(decompress(enc, &body).unwrap(), raw);
        }
    }
}
