//! Byte layouts of the outbox files: segment header, record frame, ack file slots.
//! Pure encoding and decoding, no I/O policy (that lives in `mod.rs`).

use std::path::Path;

/// Every segment starts with this magic (format version in the last byte), then its first seq.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"EROUTBX1";
/// Magic + first seq (u64 LE).
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// `crc u32 | len u32 | seq u64 | time_ms i64`, all little-endian, then `len` bytes of data.
pub(crate) const FRAME_HEADER: u64 = 24;
/// A record longer than this is refused: it also bounds what a damaged length field can make
/// the reader allocate.
pub(crate) const MAX_RECORD_LEN: u64 = 64 * 1024 * 1024;

/// The ack file holds two slots written alternately, so a torn write leaves the other intact.
pub(crate) const ACK_SLOT: usize = 32;
/// The slots start this far apart: a page torn by a power cut spoils at most one of them.
pub(crate) const ACK_SLOT_STRIDE: usize = 4096;
/// Where the second slot was before slots were a page apart; still read, so an ack file
/// written by an older relay keeps its position.
const LEGACY_SLOT: usize = ACK_SLOT;
const ACK_MAGIC: [u8; 4] = *b"ERAK";

/// Bytes a record of `len` data bytes takes on disk.
pub(crate) fn framed_len(len: usize) -> u64 {
    FRAME_HEADER + len as u64
}

/// Appends one framed record to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, time_ms: i64, data: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub crc: u32,
    pub len: u32,
    pub seq: u64,
    pub time_ms: i64,
}

impl FrameHeader {
    pub(crate) fn parse(b: &[u8; FRAME_HEADER as usize]) -> Self {
        Self {
            crc: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            len: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            time_ms: i64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        }
    }

    /// Whether `data` (the `len` bytes after this header) matches the checksum.
    pub(crate) fn check(&self, raw_header: &[u8; FRAME_HEADER as usize], data: &[u8]) -> bool {
        let mut h = crc32fast::Hasher::new();
        h.update(&raw_header[4..]);
        h.update(data);
        h.finalize() == self.crc
    }

    pub(crate) fn framed_len(&self) -> u64 {
        FRAME_HEADER + u64::from(self.len)
    }
}

/// The segment header for a segment whose first record has `first_seq`.
pub(crate) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0; SEGMENT_HEADER as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// `seg-<first seq, 20 digits>.log`: names sort in seq order.
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

/// The first seq a segment file name stands for, if it is a segment name.
pub(crate) fn parse_segment_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the ack file records: everything below `acked_below` is acknowledged, and the next
/// append gets a seq of at least `next_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckState {
    pub generation: u64,
    pub acked_below: u64,
    pub next_seq: u64,
}

impl AckState {
    /// Slot bytes: `magic | generation u64 | acked_below u64 | next_seq u64 | crc u32`.
    pub(crate) fn encode(&self) -> [u8; ACK_SLOT] {
        let mut b = [0; ACK_SLOT];
        b[0..4].copy_from_slice(&ACK_MAGIC);
        b[4..12].copy_from_slice(&self.generation.to_le_bytes());
        b[12..20].copy_from_slice(&self.acked_below.to_le_bytes());
        b[20..28].copy_from_slice(&self.next_seq.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < ACK_SLOT || b[0..4] != ACK_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
        if crc32fast::hash(&b[..28]) != crc {
            return None;
        }
        Some(Self {
            generation: u64::from_le_bytes(b[4..12].try_into().ok()?),
            acked_below: u64::from_le_bytes(b[12..20].try_into().ok()?),
            next_seq: u64::from_le_bytes(b[20..28].try_into().ok()?),
        })
    }

    /// The newest valid slot of an ack file's contents.
    pub(crate) fn decode_file(b: &[u8]) -> Option<Self> {
        [0, ACK_SLOT_STRIDE, LEGACY_SLOT]
            .into_iter()
            .filter_map(|at| b.get(at..at + ACK_SLOT).and_then(Self::decode))
            .max_by_key(|s| s.generation)
    }

    /// Byte offset of the slot this generation is written to.
    pub(crate) fn slot_offset(&self) -> u64 {
        (self.generation % 2) * ACK_SLOT_STRIDE as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_checksum_catches_a_flipped_byte() {
        let mut v = Vec::new();
        encode_frame(&mut v, 7, -3, b"hello");
        assert_eq!(v.len() as u64, framed_len(5));
        let raw: [u8; 24] = v[..24].try_into().unwrap();
        let h = FrameHeader::parse(&raw);
        assert_eq!((h.len, h.seq, h.time_ms), (5, 7, -3));
        assert!(h.check(&raw, &v[24..]));
        let mut bad = v[24..].to_vec();
        bad[2] ^= 1;
        assert!(!h.check(&raw, &bad));
    }

    #[test]
    fn ack_file_picks_newest_valid_slot() {
        let s1 = AckState {
            generation: 1,
            acked_below: 10,
            next_seq: 20,
        };
        let s2 = AckState {
            generation: 2,
            acked_below: 15,
            next_seq: 20,
        };
        let mut file = [0u8; ACK_SLOT_STRIDE + ACK_SLOT];
        file[s1.slot_offset() as usize..][..32].copy_from_slice(&s1.encode());
        file[s2.slot_offset() as usize..][..32].copy_from_slice(&s2.encode());
        assert_eq!(AckState::decode_file(&file), Some(s2));
        file[s2.slot_offset() as usize + 13] ^= 0xff;
        assert_eq!(AckState::decode_file(&file), Some(s1));
        assert_eq!(AckState::decode_file(&[0u8; 10]), None);
        // The two slots sit on different pages.
        assert_eq!(s1.slot_offset().abs_diff(s2.slot_offset()), 4096);
    }

    #[test]
    fn ack_file_of_an_older_relay_with_adjacent_slots_is_still_read() {
        let old = AckState {
            generation: 7,
            acked_below: 70,
            next_seq: 80,
        };
        let mut file = [0u8; 64];
        file[32..].copy_from_slice(&old.encode());
        assert_eq!(AckState::decode_file(&file), Some(old));
    }

    #[test]
    fn segment_names_sort_and_parse() {
        let n = segment_name(42);
        assert_eq!(parse_segment_name(Path::new(&n)), Some(42));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name(Path::new("seg-1.log")), None);
    }
}
