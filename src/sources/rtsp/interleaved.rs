//! The RTSP TCP byte stream, incrementally: `$`-framed interleaved packets (RFC 2326 §10.12)
//! and RTSP text replies between them, RTP headers, and one metadata document per marker bit
//! (fixtures/README.md §2.4). Pure and bounded: feed any chunks of any bytes, it never panics
//! and never holds more than one frame, one reply or one capped document.

/// A document larger than this is dropped (and counted), not collected.
pub const MAX_DOCUMENT: usize = 4 * 1024 * 1024;
/// RTSP reply headers longer than this are not a reply: the bytes are skipped as garbage.
const MAX_REPLY_HEAD: usize = 64 * 1024;
/// RTSP reply bodies (SDP) larger than this are not believed.
const MAX_REPLY_BODY: usize = 1024 * 1024;

/// What the stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One whole RTSP reply (status line, headers, body), as received.
    Reply(Vec<u8>),
    /// One reassembled metadata document (payloads up to and including a marker packet).
    Document(Vec<u8>),
}

/// Counters of what was skipped or lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Documents yielded.
    pub documents: u64,
    /// Documents dropped because a sequence number was skipped (at least one per gap).
    pub dropped_gap: u64,
    /// Documents dropped for exceeding [`MAX_DOCUMENT`].
    pub dropped_oversize: u64,
    /// Packets on our channel that are not valid RTP.
    pub malformed_rtp: u64,
    /// Frames on other channels (RTCP, channels we did not set up).
    pub other_channel: u64,
    /// Bytes that were neither a frame nor a reply.
    pub garbage_bytes: u64,
}

/// A parsed RTP packet header (RFC 3550 §5.1) and where its payload lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit: ends a metadata document.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload byte range within the packet (after CSRCs and extension, before padding).
    pub payload: (usize, usize),
}

/// Parses an RTP header honouring CC, X and P; `None` when the packet is not valid RTP.
pub fn parse_rtp(p: &[u8]) -> Option<RtpHeader> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(p[0] & 0x0f);
    let mut start = 12 + 4 * cc;
    if p[0] & 0x10 != 0 {
        let ext = p.get(start..start + 4)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        start += 4 + 4 * words;
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        let pad = usize::from(*p.last()?);
        if pad == 0 {
            return None;
        }
        end = end.checked_sub(pad)?;
    }
    if start > end {
        return None;
    }
    Some(RtpHeader {
        marker: p[1] & 0x80 != 0,
        payload_type: p[1] & 0x7f,
        sequence: u16::from_be_bytes([p[2], p[3]]),
        timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        payload: (start, end),
    })
}

/// Incremental reader of the stream after (and before) PLAY.
#[derive(Debug)]
pub struct Depacketizer {
    channel: u8,
    buf: Vec<u8>,
    doc: Vec<u8>,
    next_seq: Option<u16>,
    /// After a gap or an oversized document: discard until after the next marker.
    resync: bool,
    /// Bytes of the pending reply (at the buffer's start) already searched for the end of its
    /// head: a camera sending a byte at a time must not make every read search it all again.
    reply_scanned: usize,
    /// What was skipped or lost so far.
    pub stats: Stats,
}

impl Depacketizer {
    /// A reader keeping RTP on interleaved `channel` (from the SETUP reply).
    pub fn new(channel: u8) -> Self {
        Self {
            channel,
            buf: Vec::with_capacity(8 * 1024),
            doc: Vec::new(),
            next_seq: None,
            resync: false,
            reply_scanned: 0,
            stats: Stats::default(),
        }
    }

    /// Changes the RTP channel (after SETUP tells us which one the server chose).
    pub fn set_channel(&mut self, channel: u8) {
        self.channel = channel;
    }

    /// Feeds bytes as they arrive; complete items are appended to `out` in stream order.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Item>) {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        while pos < self.buf.len() {
            match self.step(pos, out) {
                Some(n) => pos += n,
                None => break, // need more bytes
            }
        }
        self.buf.drain(..pos);
    }

    /// Consumes one unit at `pos`; returns how many bytes, or `None` when more are needed.
    fn step(&mut self, pos: usize, out: &mut Vec<Item>) -> Option<usize> {
        let b = &self.buf[pos..];
        match b[0] {
            b'$' => {
                if b.len() < 4 {
                    return None;
                }
                let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
                // An RTP/RTCP packet starts with version 2; anything else is a stray '$'.
                if len > 0 {
                    let first = *b.get(4)?;
                    if first >> 6 != 2 {
                        self.stats.garbage_bytes += 1;
                        return Some(1);
                    }
                }
                if b.len() < 4 + len {
                    return None;
                }
                let channel = b[1];
                let packet = b[4..4 + len].to_vec();
                self.packet(channel, &packet, out);
                Some(4 + len)
            }
            b'R' => {
                const MAGIC: &[u8] = b"RTSP/";
                let n = b.len().min(MAGIC.len());
                if b[..n] != MAGIC[..n] {
                    self.stats.garbage_bytes += 1;
                    return Some(1);
                }
                if b.len() < MAGIC.len() {
                    return None;
                }
                // A pending reply is always at the buffer's start (`feed` drains up to it).
                let from = if pos == 0 {
                    self.reply_scanned.saturating_sub(3)
                } else {
                    0
                };
                let Some(head_end) = find(&b[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
                    if b.len() > MAX_REPLY_HEAD {
                        self.stats.garbage_bytes += 1;
                        self.reply_scanned = 0;
                        return Some(1);
                    }
                    self.reply_scanned = b.len();
                    return None;
                };
                let body = content_length(&b[..head_end]).unwrap_or(0);
                if body > MAX_REPLY_BODY {
                    self.stats.garbage_bytes += 1;
                    self.reply_scanned = 0;
                    return Some(1);
                }
                if b.len() < head_end + body {
                    self.reply_scanned = head_end - 4;
                    return None;
                }
                self.reply_scanned = 0;
                out.push(Item::Reply(b[..head_end + body].to_vec()));
                Some(head_end + body)
            }
            _ => {
                // Skip to the next byte that can start a frame or a reply.
                let n = b
                    .iter()
                    .position(|&c| c == b'$' || c == b'R')
                    .unwrap_or(b.len());
                self.stats.garbage_bytes += n as u64;
                Some(n)
            }
        }
    }

    fn packet(&mut self, channel: u8, p: &[u8], out: &mut Vec<Item>) {
        if channel != self.channel {
            self.stats.other_channel += 1;
            return;
        }
        let Some(h) = parse_rtp(p) else {
            self.stats.malformed_rtp += 1;
            return;
        };
        if let Some(expected) = self.next_seq
            && h.sequence != expected
        {
            // Lost packets: whatever is being collected is broken, and the next packet may
            // be the middle of a document: wait for a marker before collecting again.
            self.stats.dropped_gap += 1;
            self.doc.clear();
            self.resync = true;
        }
        self.next_seq = Some(h.sequence.wrapping_add(1));
        if self.resync {
            if h.marker {
                self.resync = false;
                self.doc.clear();
            }
            return;
        }
        let payload = &p[h.payload.0..h.payload.1];
        if self.doc.len() + payload.len() > MAX_DOCUMENT {
            self.stats.dropped_oversize += 1;
            self.doc = Vec::new();
            self.resync = !h.marker;
            return;
        }
        self.doc.extend_from_slice(payload);
        if h.marker {
            self.stats.documents += 1;
            out.push(Item::Document(std::mem::take(&mut self.doc)));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Content-Length` of a reply head, if present and numeric.
fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// One `$` frame around a packet (used by the emulator and tests).
pub fn frame(channel: u8, packet: &[u8]) -> Vec<u8> {
    let len = u16::try_from(packet.len()).expect("interleaved packets are at most 65535 bytes");
    let mut f = Vec::with_capacity(4 + packet.len());
    f.extend_from_slice(&[b'$', channel]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(packet);
    f
}

/// A plain RTP packet (CC=0, X=0, P=0, payload type 98).
pub fn rtp(marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(if marker { 0x80 | 98 } else { 98 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}")).unwrap()
    }

    fn docs(items: &[Item]) -> Vec<&[u8]> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Document(d) => Some(&d[..]),
                Item::Reply(_) => None,
            })
            .collect()
    }

    #[test]
    fn fixture_stream_gives_its_two_documents_in_any_chunking() {
        let bin = fixture("rtp-interleaved.bin");
        let d0 = fixture("rtsp-metadata-00-empty.xml");
        let d2 = fixture("rtsp-metadata-02-pir-changed.xml");
        for chunk in [1, 2, 3, 7, 100, 141, 452, bin.len()] {
            let mut d = Depacketizer::new(0);
            let mut out = Vec::new();
            for c in bin.chunks(chunk) {
                d.feed(c, &mut out);
            }
            assert_eq!(docs(&out), vec![&d0[..], &d2[..]], "chunk {chunk}");
            assert_eq!(out.len(), 2);
            assert_eq!(
                d.stats.other_channel, 1,
                "the RTCP sender report is skipped"
            );
            assert_eq!((d.stats.dropped_gap, d.stats.garbage_bytes), (0, 0));
        }
    }

    #[test]
    fn a_reply_trickling_in_a_byte_at_a_time_is_searched_once() {
        let mut reply = b"RTSP/1.0 200 OK\r\nCSeq: 7\r\n".to_vec();
        for i in 0..1000 {
            reply.extend(format!("X-Padding-{i}: {}\r\n", "y".repeat(20)).as_bytes());
        }
        reply.extend(b"Content-Length: 4\r\n\r\nbody");
        let mut d = Depacketizer::new(0);
        let mut out = Vec::new();
        for (i, b) in reply.iter().enumerate() {
            d.feed(std::slice::from_ref(b), &mut out);
            // Never more than a few bytes behind: each byte is looked at a bounded number of times.
            assert!(out.is_empty() || i + 1 == reply.len());
            assert!(d.reply_scanned + 8 >= d.buf.len().min(i + 1) || !out.is_empty());
        }
        assert!(reply.len() < MAX_REPLY_HEAD);
        assert!(out == [Item::Reply(reply.clone())], "one reply, whole");
        assert_eq!((d.reply_scanned, d.buf.len()), (0, 0));
    }

    #[test]
    fn replies_between_frames_and_garbage_are_separated() {
        let mut s = Vec::new();
        s.extend(frame(0, &rtp(false, 10, 1, 7, b"<a>")));
        s.extend(b"RTSP/1.0 200 OK\r\nCSeq: 6\r\nContent-Length: 3\r\n\r\nabc");
        s.extend(b"junk RTX \x00\x01 $\x00"); // stray bytes, a stray "R" and a stray "$"
        s.extend(frame(0, &rtp(true, 11, 1, 7, b"</a>")));
        let mut d = Depacketizer::new(0);
        let mut out = Vec::new();
        for c in s.chunks(5) {
            d.feed(c, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Item::Reply(b"RTSP/1.0 200 OK\r\nCSeq: 6\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
                Item::Document(b"<a></a>".to_vec())
            ]
        );
        assert!(d.stats.garbage_bytes > 0);
    }

    #[test]
    fn csrc_extension_and_padding_are_honoured() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 2, 0xe2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        p.extend([1, 1, 1, 1, 2, 2, 2, 2]); // two CSRCs
        p.extend([0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        p.extend(b"<doc/>");
        p.extend([0, 0, 3]); // three bytes of padding
        let h = parse_rtp(&p).unwrap();
        assert_eq!(&p[h.payload.0..h.payload.1], b"<doc/>");
        assert!(h.marker && h.payload_type == 98 && h.sequence == 1);
        let mut d = Depacketizer::new(0);
        let mut out = Vec::new();
        d.feed(&frame(0, &p), &mut out);
        assert_eq!(out, vec![Item::Document(b"<doc/>".to_vec())]);
        // Padding longer than the packet, extension past the end: not RTP.
        assert!(parse_rtp(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200]).is_none());
        assert!(parse_rtp(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn a_gap_drops_only_the_broken_document_and_resyncs_after_the_marker() {
        let mut s = Vec::new();
        s.extend(frame(0, &rtp(false, 1, 1, 7, b"<one>")));
        // seq 2 lost: document one is broken
        s.extend(frame(0, &rtp(true, 3, 1, 7, b"</one>")));
        s.extend(frame(0, &rtp(true, 4, 2, 7, b"<two/>")));
        // seq 5 lost while between documents: 6 may be a middle, wait for its marker
        s.extend(frame(0, &rtp(false, 6, 3, 7, b"ree>")));
        s.extend(frame(0, &rtp(true, 7, 3, 7, b"</three>")));
        s.extend(frame(0, &rtp(true, 8, 4, 7, b"<four/>")));
        let mut d = Depacketizer::new(0);
        let mut out = Vec::new();
        d.feed(&s, &mut out);
        assert_eq!(docs(&out), vec![&b"<two/>"[..], b"<four/>"]);
        assert_eq!(d.stats.dropped_gap, 2);
    }

    #[test]
    fn oversized_documents_are_dropped_and_counted() {
        let mut d = Depacketizer::new(0);
        let mut out = Vec::new();
        let chunk = vec![b'x'; 60_000];
        let mut seq = 0u16;
        for _ in 0..(MAX_DOCUMENT / chunk.len() + 2) {
            d.feed(&frame(0, &rtp(false, seq, 1, 7, &chunk)), &mut out);
            seq += 1;
        }
        d.feed(&frame(0, &rtp(true, seq, 1, 7, b"end")), &mut out);
        d.feed(&frame(0, &rtp(true, seq + 1, 2, 7, b"<ok/>")), &mut out);
        assert_eq!(docs(&out), vec![&b"<ok/>"[..]]);
        assert_eq!(d.stats.dropped_oversize, 1);
    }

    #[test]
    fn random_streams_never_panic_and_stay_bounded() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let bin = fixture("rtp-interleaved.bin");
        for round in 0..2_000 {
            let mut d = Depacketizer::new(rng.random_range(0..3));
            let mut out = Vec::new();
            let len = rng.random_range(0..4096);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if round % 3 == 0 {
                // Mutated real streams reach the deeper paths.
                bytes = bin.clone();
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] = rng.random();
                }
            }
            if round % 5 == 0 {
                bytes.splice(
                    0..0,
                    b"RTSP/1.0 200 OK\r\nContent-Length: 9999999\r\n\r\n"
                        .iter()
                        .copied(),
                );
            }
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(700));
                d.feed(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            assert!(d.buf.len() <= MAX_REPLY_HEAD + MAX_REPLY_BODY + 8);
        }
    }
}
