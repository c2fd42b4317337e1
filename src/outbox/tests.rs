use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn opts() -> OutboxOptions {
    OutboxOptions::default()
}

fn small_segments(max_bytes: u64, when_full: WhenFull) -> OutboxOptions {
    OutboxOptions {
        max_bytes,
        when_full,
        segment_bytes: 4096,
        ..opts()
    }
}

fn rec(i: u64, len: usize) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(len.max(8), (i % 251) as u8);
    v
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| format::parse_segment_name(p).is_some())
        .collect();
    v.sort();
    v
}

fn read_all(ob: &mut Outbox) -> Vec<Entry> {
    ob.read(0, usize::MAX).unwrap()
}

fn seqs(es: &[Entry]) -> Vec<u64> {
    es.iter().map(|e| e.seq).collect()
}

#[test]
fn appended_records_are_read_in_order_and_acknowledged_ones_never_again() {
    let d = tempfile::tempdir().unwrap();
    let (mut ob, rep) = Outbox::open(d.path(), opts()).unwrap();
    assert_eq!(rep.next_seq, 0);
    let o = ob.append(&[b"a", b"bb", b"ccc"], 100).unwrap();
    assert_eq!(
        o,
        AppendOutcome {
            first_seq: 0,
            count_accepted: 3,
            rejected: 0,
            dropped_oldest: 0,
            refused: vec![],
        }
    );
    let o = ob.append(&[b"d"], 200).unwrap();
    assert_eq!(o.first_seq, 3);

    let es = ob.read(0, 2).unwrap();
    assert_eq!(seqs(&es), [0, 1]);
    assert_eq!(es[1].data, b"bb");
    assert_eq!(es[1].time_ms, 100);
    assert_eq!(seqs(&ob.read(2, 10).unwrap()), [2, 3]);
    assert_eq!(
        seqs(&ob.read(1, 1).unwrap()),
        [1],
        "re-reading an unacked record"
    );
    assert_eq!(ob.stats().depth, 4);
    assert_eq!(ob.stats().bytes, 4 * 24 + 7);
    assert_eq!(ob.stats().oldest_time_ms, Some(100));

    ob.ack_through(1).unwrap();
    assert_eq!(seqs(&read_all(&mut ob)), [2, 3]);
    assert_eq!(ob.stats().depth, 2);
    assert_eq!(ob.stats().bytes, 2 * 24 + 4);
    ob.ack_through(2).unwrap();
    assert_eq!(ob.stats().oldest_time_ms, Some(200));
    ob.ack_through(0).unwrap(); // going back is a no-op
    ob.ack_through(99).unwrap(); // beyond the end acknowledges everything
    assert!(read_all(&mut ob).is_empty());
    let s = ob.stats();
    assert_eq!(
        (s.depth, s.bytes, s.oldest_time_ms, s.next_seq),
        (0, 0, None, 4)
    );
    assert_eq!(ob.append(&[b"e"], 300).unwrap().first_seq, 4);
}

#[test]
fn seq_and_ack_position_survive_reopen_even_after_everything_was_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) =
            Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
        for i in 0..10 {
            ob.append(&[&rec(i, 100)], i as i64).unwrap();
        }
        ob.ack_through(3).unwrap();
    }
    let (mut ob, rep) =
        Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    assert_eq!((rep.recovered_entries, rep.next_seq), (6, 10));
    assert_eq!(rep.recovered_bytes, 6 * 124);
    let es = read_all(&mut ob);
    assert_eq!(seqs(&es), (4..10).collect::<Vec<_>>());
    assert_eq!(es[0].data, rec(4, 100));
    assert_eq!(ob.stats().oldest_time_ms, Some(4));
    ob.ack_through(9).unwrap();
    drop(ob);

    let (mut ob, rep) =
        Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    assert_eq!((rep.recovered_entries, rep.next_seq), (0, 10));
    assert_eq!(ob.append(&[b"x"], 0).unwrap().first_seq, 10);
    // Roll past the acknowledged tail: the old segments go, the seq does not restart.
    for i in 0..100 {
        ob.append(&[&rec(i, 100)], 0).unwrap();
    }
    ob.ack_through(u64::MAX).unwrap();
    drop(ob);
    assert_eq!(segment_files(d.path()).len(), 1);
    let (_, rep) = Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    assert_eq!((rep.recovered_entries, rep.next_seq), (0, 111));
}

#[test]
fn a_damaged_ack_file_resends_rather_than_loses() {
    let d = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = Outbox::open(d.path(), opts()).unwrap();
        ob.append(&[b"a", b"b", b"c"], 0).unwrap();
        ob.ack_through(1).unwrap();
    }
    fs::write(
        d.path().join("ack"),
        b"garbage that is not an ack file at all, 64 bytes or more......",
    )
    .unwrap();
    let (mut ob, rep) = Outbox::open(d.path(), opts()).unwrap();
    assert!(rep.ack_file_lost);
    assert_eq!(seqs(&read_all(&mut ob)), [0, 1, 2]);
    assert_eq!(rep.next_seq, 3);
}

#[test]
fn a_segment_listed_but_missing_is_skipped_and_the_outbox_opens() {
    // After a power cut a file system can keep a segment's name and lose its file; a dangling
    // link stands for it here. Refusing to open would be a crash loop.
    let d = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) = Outbox::open(d.path(), opts()).unwrap();
        ob.append(&[b"a", b"b"], 100).unwrap();
    }
    let ghost = d.path().join(format::segment_name(1_000));
    std::os::unix::fs::symlink(d.path().join("gone"), &ghost).unwrap();
    let (mut ob, _) = Outbox::open(d.path(), opts()).unwrap();
    assert_eq!(seqs(&read_all(&mut ob)), vec![0, 1]);
    // The lost segment's numbers are not reused.
    ob.append(&[b"c"], 100).unwrap();
    assert_eq!(seqs(&read_all(&mut ob)), vec![0, 1, 1_000]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (_ob, _) = Outbox::open(d.path(), opts()).unwrap();
    let e = Outbox::open(d.path(), opts()).unwrap_err();
    assert!(matches!(e, OutboxError::Locked(_)), "{e}");
    assert!(!e.is_retryable());
}

/// Record ends (byte offsets) of a single-segment outbox holding records of these lengths.
fn record_ends(lens: &[usize]) -> Vec<u64> {
    let mut off = format::SEGMENT_HEADER;
    lens.iter()
        .map(|&l| {
            off += format::framed_len(l);
            off
        })
        .collect()
}

#[test]
fn a_segment_cut_at_any_byte_keeps_every_whole_record_before_the_cut() {
    let src = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let lens: Vec<usize> = (0..40).map(|_| rng.random_range(0..60)).collect();
    {
        let (mut ob, _) = Outbox::open(src.path(), opts()).unwrap();
        let mut i = 0;
        while i < lens.len() {
            let k = rng.random_range(1..4).min(lens.len() - i);
            let batch: Vec<Vec<u8>> = (i..i + k).map(|j| vec![j as u8; lens[j]]).collect();
            let refs: Vec<&[u8]> = batch.iter().map(|v| &v[..]).collect();
            ob.append(&refs, i as i64).unwrap();
            i += k;
        }
    }
    let seg = segment_files(src.path()).pop().unwrap();
    let full = fs::read(&seg).unwrap();
    let ends = record_ends(&lens);
    assert_eq!(*ends.last().unwrap(), full.len() as u64);

    let mut cuts: Vec<u64> = (0..60)
        .map(|_| rng.random_range(0..full.len() as u64))
        .collect();
    cuts.extend([0, 5, 16, 17, 39, 40, full.len() as u64 - 1]);
    for cut in cuts {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(seg.file_name().unwrap());
        fs::write(&p, &full[..cut as usize]).unwrap();
        let (mut ob, rep) = Outbox::open(d.path(), opts()).unwrap();
        let kept = ends.iter().filter(|&&e| e <= cut).count();
        let es = read_all(&mut ob);
        assert_eq!(es.len(), kept, "cut at {cut}");
        for (j, e) in es.iter().enumerate() {
            assert_eq!(
                (e.seq, &e.data),
                (j as u64, &vec![j as u8; lens[j]]),
                "cut at {cut}"
            );
        }
        assert!(
            rep.corrupt_paths.is_empty(),
            "a torn tail is not moved aside (cut {cut})"
        );
        // Appending continues cleanly after the cut.
        let o = ob.append(&[b"after"], 0).unwrap();
        assert_eq!(o.first_seq, kept as u64);
        drop(ob);
        let (mut ob, rep) = Outbox::open(d.path(), opts()).unwrap();
        assert_eq!(rep.truncated_bytes, 0);
        assert_eq!(read_all(&mut ob).last().unwrap().data, b"after");
    }
}

#[test]
fn a_flipped_byte_mid_segment_keeps_earlier_records_moves_the_rest_aside_and_keeps_later_segments()
{
    let d = tempfile::tempdir().unwrap();
    let o = small_segments(1 << 20, WhenFull::DropOldest);
    {
        let (mut ob, _) = Outbox::open(d.path(), o.clone()).unwrap();
        for i in 0..100 {
            ob.append(&[&rec(i, 100)], 0).unwrap();
        }
    }
    let segs = segment_files(d.path());
    assert!(segs.len() >= 3, "{segs:?}");
    // (4096 - 16 header) / 124 = 32 records per segment.
    let first1 = format::parse_segment_name(&segs[1]).unwrap();
    assert_eq!(first1, 32);
    let mut b = fs::read(&segs[1]).unwrap();
    let victim = 5; // the 6th record of segment 1
    let at = 16 + victim * 124 + 24 + 50;
    b[at] ^= 0x40;
    fs::write(&segs[1], &b).unwrap();

    let (mut ob, rep) = Outbox::open(d.path(), o.clone()).unwrap();
    assert_eq!(rep.corrupt_paths.len(), 1);
    let moved = &rep.corrupt_paths[0];
    assert!(moved.starts_with(d.path().join("corrupt")));
    assert_eq!(fs::read(moved).unwrap(), b[16 + victim * 124..]);
    assert_eq!(rep.corrupt_bytes, (b.len() - 16 - victim * 124) as u64);
    let es = read_all(&mut ob);
    let lost: Vec<u64> = (first1 + victim as u64..first1 + 32).collect();
    let want: Vec<u64> = (0..100).filter(|s| !lost.contains(s)).collect();
    assert_eq!(seqs(&es), want);
    for e in &es {
        assert_eq!(e.data, rec(e.seq, 100));
    }
    // New seqs stay above every seq the damaged part could have held.
    let next = ob.append(&[b"new"], 0).unwrap().first_seq;
    assert!(next >= 100, "{next}");
    drop(ob);
    let (mut ob, rep) = Outbox::open(d.path(), o).unwrap();
    assert!(rep.corrupt_paths.is_empty());
    assert_eq!(read_all(&mut ob).len(), want.len() + 1);
}

#[test]
fn a_segment_with_a_bad_header_is_moved_aside_whole() {
    let d = tempfile::tempdir().unwrap();
    {
        let (mut ob, _) =
            Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
        for i in 0..50 {
            ob.append(&[&rec(i, 100)], 0).unwrap();
        }
    }
    let segs = segment_files(d.path());
    let mut b = fs::read(&segs[0]).unwrap();
    b[0] = b'X';
    fs::write(&segs[0], &b).unwrap();
    let (mut ob, rep) =
        Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    assert_eq!(rep.corrupt_paths.len(), 1);
    assert_eq!(seqs(&read_all(&mut ob)), (32..50).collect::<Vec<_>>());
}

#[test]
fn damage_found_while_reading_skips_the_rest_of_that_segment() {
    let d = tempfile::tempdir().unwrap();
    let (mut ob, _) =
        Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    for i in 0..50 {
        ob.append(&[&rec(i, 100)], 0).unwrap();
    }
    let segs = segment_files(d.path());
    let mut b = fs::read(&segs[0]).unwrap();
    b[16 + 10 * 124 + 30] ^= 1;
    fs::write(&segs[0], &b).unwrap();
    let es = read_all(&mut ob);
    let want: Vec<u64> = (0..10).chain(32..50).collect();
    assert_eq!(seqs(&es), want);
    let s = ob.stats();
    assert_eq!((s.lost_corrupt, s.depth), (22, 28));
    ob.ack_through(49).unwrap();
    assert_eq!(ob.stats().depth, 0);
}

#[test]
fn a_segment_shortened_under_a_running_outbox_is_damage_not_an_endless_error() {
    let d = tempfile::tempdir().unwrap();
    let (mut ob, _) =
        Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    for i in 0..50 {
        ob.append(&[&rec(i, 100)], 0).unwrap();
    }
    let segs = segment_files(d.path());
    let f = fs::OpenOptions::new().write(true).open(&segs[0]).unwrap();
    f.set_len(16 + 10 * 124 + 60).unwrap();
    let want: Vec<u64> = (0..10).chain(32..50).collect();
    assert_eq!(seqs(&read_all(&mut ob)), want);
    assert_eq!(ob.stats().lost_corrupt, 22);
}

#[test]
fn fsync_mode_stores_and_recovers_the_same_way() {
    let d = tempfile::tempdir().unwrap();
    let o = OutboxOptions {
        fsync: true,
        ..small_segments(1 << 20, WhenFull::DropOldest)
    };
    {
        let (mut ob, _) = Outbox::open(d.path(), o.clone()).unwrap();
        for i in 0..40 {
            ob.append(&[&rec(i, 100), &rec(i, 10)], i as i64).unwrap();
        }
        ob.ack_through(9).unwrap();
    }
    let (mut ob, rep) = Outbox::open(d.path(), o).unwrap();
    assert_eq!((rep.recovered_entries, rep.next_seq), (70, 80));
    assert_eq!(seqs(&read_all(&mut ob)), (10..80).collect::<Vec<_>>());
}

#[test]
fn drop_oldest_drops_exactly_enough_old_records() {
    let d = tempfile::tempdir().unwrap();
    // 10 records of 100 framed bytes fit.
    let o = OutboxOptions {
        max_bytes: 1000,
        ..small_segments(1000, WhenFull::DropOldest)
    };
    let (mut ob, _) = Outbox::open(d.path(), o).unwrap();
    let r = rec(0, 76);
    for i in 0..10 {
        let o = ob.append(&[&r], i).unwrap();
        assert_eq!(o.dropped_oldest, 0);
    }
    assert_eq!(ob.stats().bytes, 1000);
    let o = ob.append(&[&r, &r, &r], 10).unwrap();
    assert_eq!(
        (o.first_seq, o.count_accepted, o.dropped_oldest, o.rejected),
        (10, 3, 3, 0)
    );
    assert_eq!(seqs(&read_all(&mut ob)), (3..13).collect::<Vec<_>>());
    assert_eq!(ob.stats().oldest_time_ms, Some(3));
    // A bigger record pushes out as many as needed.
    let big = rec(0, 276); // 300 framed
    let o = ob.append(&[&big], 11).unwrap();
    assert_eq!(o.dropped_oldest, 3);
    // A batch larger than the cap keeps its newest records.
    let o = ob.append(&[&r[..]; 12], 12).unwrap();
    assert_eq!((o.count_accepted, o.dropped_oldest), (12, 8 + 2));
    assert_eq!(seqs(&read_all(&mut ob)), (16..26).collect::<Vec<_>>());
    // A record larger than the whole cap is refused, alone.
    let o = ob.append(&[&r, &rec(0, 1000), &r], 13).unwrap();
    assert_eq!((o.count_accepted, o.rejected, o.dropped_oldest), (2, 1, 2));
    let s = ob.stats();
    assert_eq!(
        (s.dropped_full, s.rejected, s.depth, s.bytes),
        (3 + 3 + 10 + 2, 1, 10, 1000)
    );
    drop(ob);
    let (mut ob, rep) = Outbox::open(d.path(), small_segments(1000, WhenFull::DropOldest)).unwrap();
    assert_eq!(rep.recovered_entries, 10);
    assert_eq!(seqs(&read_all(&mut ob)), (18..28).collect::<Vec<_>>());
}

#[test]
fn reject_new_refuses_exactly_the_records_that_do_not_fit() {
    let d = tempfile::tempdir().unwrap();
    let (mut ob, _) = Outbox::open(d.path(), small_segments(1000, WhenFull::RejectNew)).unwrap();
    let r = rec(0, 76);
    let o = ob.append(&[&r[..]; 7], 0).unwrap();
    assert_eq!((o.count_accepted, o.rejected), (7, 0));
    let o = ob.append(&[&r[..]; 5], 0).unwrap();
    assert_eq!(
        (o.first_seq, o.count_accepted, o.rejected, o.dropped_oldest),
        (7, 3, 2, 0)
    );
    assert!(matches!(
        o.all_accepted(),
        Err(OutboxError::Full { rejected: 2 })
    ));
    let o = ob.append(&[&r], 0).unwrap();
    assert_eq!((o.first_seq, o.count_accepted, o.rejected), (10, 0, 1));
    ob.ack_through(1).unwrap();
    let o = ob.append(&[&r[..]; 3], 0).unwrap();
    assert_eq!((o.first_seq, o.count_accepted, o.rejected), (10, 2, 1));
    let s = ob.stats();
    assert_eq!(
        (s.rejected, s.dropped_full, s.depth, s.bytes),
        (4, 0, 10, 1000)
    );
    assert_eq!(seqs(&read_all(&mut ob)), (2..12).collect::<Vec<_>>());
}

#[test]
fn expire_drops_records_older_than_max_age() {
    let d = tempfile::tempdir().unwrap();
    let o = OutboxOptions {
        max_age_ms: Some(1000),
        ..small_segments(1 << 20, WhenFull::DropOldest)
    };
    let (mut ob, _) = Outbox::open(d.path(), o).unwrap();
    for t in 0..100 {
        ob.append(&[&rec(t, 100)], t as i64 * 100).unwrap();
    }
    assert_eq!(ob.expire(1000).unwrap(), 0);
    assert_eq!(ob.expire(1050).unwrap(), 1); // t=0 is older than 50
    assert_eq!(ob.expire(5000).unwrap(), 39);
    let s = ob.stats();
    assert_eq!(
        (s.dropped_age, s.depth, s.oldest_time_ms),
        (40, 60, Some(4000))
    );
    assert_eq!(read_all(&mut ob)[0].seq, 40);
    assert_eq!(ob.expire(100_000).unwrap(), 60);
    assert_eq!(ob.stats().oldest_time_ms, None);
    assert_eq!(segment_files(d.path()).len(), 1);
}

#[test]
fn fully_acknowledged_segments_are_deleted_and_their_space_reclaimed() {
    let d = tempfile::tempdir().unwrap();
    let (mut ob, _) =
        Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    for i in 0..330 {
        ob.append(&[&rec(i, 100)], 0).unwrap();
    }
    let disk = |d: &Path| {
        segment_files(d)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    };
    // (4096 - 16 header) / 124 = 32 records per segment.
    assert_eq!(segment_files(d.path()).len(), 11);
    assert_eq!(disk(d.path()), 330 * 124 + 11 * 16);
    ob.ack_through(30).unwrap();
    assert_eq!(segment_files(d.path()).len(), 11);
    ob.ack_through(31).unwrap(); // exactly the first segment
    assert_eq!(segment_files(d.path()).len(), 10);
    assert_eq!(disk(d.path()), 298 * 124 + 10 * 16);
    ob.ack_through(200).unwrap();
    assert_eq!(segment_files(d.path()).len(), 5);
    assert_eq!(ob.stats().segments, 5);
    ob.ack_through(329).unwrap();
    let files = segment_files(d.path());
    assert_eq!(files.len(), 1, "the newest segment stays");
    assert!(disk(d.path()) <= 4096);
    // It fills up, a new one starts, and acknowledging its records deletes the full one.
    for i in 0..40 {
        ob.append(&[&rec(i, 100)], 0).unwrap();
    }
    assert_eq!(segment_files(d.path()).len(), 2);
    ob.ack_through(351).unwrap();
    assert!(!files[0].exists());
    assert_eq!(segment_files(d.path()).len(), 1);
}

/// Random appends, reads, acks, expiries and reopens against a `VecDeque` model.
fn model_run(seed: u64, when_full: WhenFull) {
    let d = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let o = OutboxOptions {
        max_bytes: 20_000,
        when_full,
        max_age_ms: Some(500),
        fsync: false,
        segment_bytes: 4096,
    };
    let (mut ob, _) = Outbox::open(d.path(), o.clone()).unwrap();
    let mut model: VecDeque<(u64, i64, Vec<u8>)> = VecDeque::new();
    let mut next = 0u64;
    let mut now = 0i64;
    let bytes =
        |m: &VecDeque<(u64, i64, Vec<u8>)>| m.iter().map(|e| 24 + e.2.len() as u64).sum::<u64>();
    let (mut dropped, mut rejected, mut aged) = (0, 0, 0);
    for step in 0..1500 {
        now += rng.random_range(0..20);
        match rng.random_range(0..100) {
            0..45 => {
                let k = rng.random_range(0..6);
                let recs: Vec<Vec<u8>> = (0..k)
                    .map(|_| vec![rng.random(); rng.random_range(0..400)])
                    .collect();
                let refs: Vec<&[u8]> = recs.iter().map(|v| &v[..]).collect();
                let out = ob.append(&refs, now).unwrap();
                let mut acc = 0;
                for r in &recs {
                    if when_full == WhenFull::RejectNew
                        && bytes(&model) + 24 + r.len() as u64 > 20_000
                    {
                        break;
                    }
                    model.push_back((next, now, r.clone()));
                    next += 1;
                    acc += 1;
                }
                let mut d = 0;
                while bytes(&model) > 20_000 {
                    model.pop_front();
                    d += 1;
                }
                assert_eq!(out.count_accepted, acc, "step {step}");
                assert_eq!(out.rejected, k - acc, "step {step}");
                assert_eq!(out.dropped_oldest, d, "step {step}");
                dropped += d;
                rejected += k - acc;
            }
            45..75 => {
                let lo = model.front().map_or(next, |e| e.0).saturating_sub(3);
                let from = rng.random_range(lo..=next + 2);
                let max = rng.random_range(0..30);
                let got = ob.read(from, max).unwrap();
                let want: Vec<Entry> = model
                    .iter()
                    .filter(|e| e.0 >= from)
                    .take(max)
                    .map(|e| Entry {
                        seq: e.0,
                        time_ms: e.1,
                        data: e.2.clone(),
                    })
                    .collect();
                assert_eq!(got, want, "step {step} read({from}, {max})");
            }
            75..90 => {
                let lo = model.front().map_or(next, |e| e.0).saturating_sub(2);
                let s = rng.random_range(lo..=next + 1);
                ob.ack_through(s).unwrap();
                while model.front().is_some_and(|e| e.0 <= s) {
                    model.pop_front();
                }
            }
            90..95 => {
                let n = ob.expire(now).unwrap();
                let mut m = 0;
                while model.front().is_some_and(|e| e.1 < now - 500) {
                    model.pop_front();
                    m += 1;
                }
                assert_eq!(n, m, "step {step}");
                aged += m;
            }
            _ => {
                drop(ob);
                let (o2, rep) = Outbox::open(d.path(), o.clone()).unwrap();
                ob = o2;
                assert_eq!(rep.recovered_entries, model.len() as u64, "step {step}");
                assert!(rep.corrupt_paths.is_empty() && rep.truncated_bytes == 0);
                (dropped, rejected, aged) = (0, 0, 0);
            }
        }
        let s = ob.stats();
        assert_eq!(s.depth, model.len() as u64, "step {step}");
        assert_eq!(s.bytes, bytes(&model), "step {step}");
        assert_eq!(s.oldest_time_ms, model.front().map(|e| e.1), "step {step}");
        assert_eq!(s.next_seq, next, "step {step}");
        assert_eq!(
            (s.dropped_full, s.rejected, s.dropped_age),
            (dropped, rejected, aged)
        );
        assert!(
            s.segments <= 20_000 / 4096 + 3,
            "step {step}: {} segments",
            s.segments
        );
    }
}

#[test]
fn random_operations_match_an_in_memory_model_drop_oldest() {
    for seed in 0..6 {
        model_run(seed, WhenFull::DropOldest);
    }
}

#[test]
fn random_operations_match_an_in_memory_model_reject_new() {
    for seed in 100..106 {
        model_run(seed, WhenFull::RejectNew);
    }
}

#[tokio::test]
async fn wait_for_data_wakes_on_append() {
    let d = tempfile::tempdir().unwrap();
    let (ob, _) = Outbox::open(d.path(), opts()).unwrap();
    let shared = SharedOutbox::new(ob);
    let s2 = Arc::clone(&shared);
    let waiter = tokio::spawn(async move {
        s2.wait_for_data(0).await;
        let got = s2.read(0, 10).unwrap();
        s2.ack_through(got.last().unwrap().seq).unwrap();
        s2.wait_for_data(1).await;
        s2.read(1, 10).unwrap()
    });
    tokio::task::yield_now().await;
    shared.append(&[b"one"], 1).unwrap();
    tokio::task::yield_now().await;
    shared.append(&[b"two"], 2).unwrap();
    let got = waiter.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, b"two");
    // Already there: returns at once.
    shared.wait_for_data(1).await;
    assert_eq!(shared.stats().depth, 1);
}

#[test]
fn dead_letters_append_lines_and_count_across_reopen() {
    let d = tempfile::tempdir().unwrap();
    let mut dl = DeadLetters::open(d.path(), "cloud").unwrap();
    dl.put(7, 123, b"\x00\x01payload", "payload over 128 KB")
        .unwrap();
    dl.put(8, 124, b"x", "topic too long").unwrap();
    assert_eq!(dl.count(), 2);
    let path = d.path().join("dead-letter/cloud.ndjson");
    assert_eq!(dl.path(), path);
    drop(dl);
    let text = fs::read_to_string(&path).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 7);
    assert_eq!(first["time_ms"], 123);
    assert_eq!(first["reason"], "payload over 128 KB");
    assert_eq!(first["record_b64"], "AAFwYXlsb2Fk");
    // A torn last line is ended, and counted.
    fs::write(&path, format!("{text}{{\"seq\":9,")).unwrap();
    let mut dl = DeadLetters::open(d.path(), "cloud").unwrap();
    assert_eq!(dl.count(), 3);
    dl.put(10, 1, b"", "r").unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["seq"], 10);
}

#[test]
fn bench_runs_and_reports_rates() {
    let d = tempfile::tempdir().unwrap();
    let r = bench(d.path(), 2000, 200, false, 50).unwrap();
    assert!(r.appends_per_s > 0.0 && r.drains_per_s > 0.0, "{r:?}");
}

/// `cargo test --release --lib outbox::tests::bench_numbers -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_numbers() {
    for (fsync, n, batch) in [
        (false, 200_000, 1),
        (false, 1_000_000, 100),
        (true, 2_000, 1),
        (true, 200_000, 100),
    ] {
        let d = tempfile::tempdir_in(".").unwrap();
        let r = bench(d.path(), n, 200, fsync, batch).unwrap();
        println!(
            "fsync={fsync} batch={batch} n={n} record=200B: {:.0} appends/s, {:.0} drains/s",
            r.appends_per_s, r.drains_per_s
        );
    }
}

#[test]
fn random_damage_anywhere_never_panics_and_never_returns_wrong_data() {
    let src = tempfile::tempdir().unwrap();
    let o = small_segments(1 << 20, WhenFull::DropOldest);
    {
        let (mut ob, _) = Outbox::open(src.path(), o.clone()).unwrap();
        for i in 0..120 {
            ob.append(&[&rec(i, 100)], i as i64).unwrap();
        }
        ob.ack_through(20).unwrap();
    }
    let mut files: Vec<PathBuf> = segment_files(src.path());
    files.push(src.path().join("ack"));
    let mut rng = StdRng::seed_from_u64(99);
    for round in 0..40 {
        let d = tempfile::tempdir().unwrap();
        for f in &files {
            fs::copy(f, d.path().join(f.file_name().unwrap())).unwrap();
        }
        for _ in 0..rng.random_range(1..4) {
            let f = d
                .path()
                .join(files[rng.random_range(0..files.len())].file_name().unwrap());
            let mut b = fs::read(&f).unwrap();
            if b.is_empty() {
                continue;
            }
            let at = rng.random_range(0..b.len());
            b[at] ^= 1 << rng.random_range(0..8);
            fs::write(&f, &b).unwrap();
        }
        let (mut ob, _) = Outbox::open(d.path(), o.clone()).unwrap();
        let es = read_all(&mut ob);
        for w in es.windows(2) {
            assert!(w[0].seq < w[1].seq, "round {round}");
        }
        for e in &es {
            assert_eq!(e.data, rec(e.seq, 100), "round {round}");
        }
        let next = ob.append(&[b"after"], 0).unwrap().first_seq;
        assert!(es.last().is_none_or(|e| next > e.seq), "round {round}");
        drop(ob);
        let (mut ob, _) = Outbox::open(d.path(), o.clone()).unwrap();
        assert_eq!(
            read_all(&mut ob).last().unwrap().data,
            b"after",
            "round {round}"
        );
    }
}

#[test]
fn an_oversized_record_is_refused_alone_and_the_rest_of_its_batch_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    let (mut ob, _) = Outbox::open(d.path(), small_segments(1000, WhenFull::DropOldest)).unwrap();
    let (small, huge) = (rec(1, 50), rec(2, 2000));
    let o = ob
        .append(&[&small[..], &huge[..], &small[..], &small[..]], 0)
        .unwrap();
    assert_eq!(
        (o.count_accepted, o.rejected, o.refused.clone()),
        (3, 1, vec![1])
    );
    assert!(o.accepted(0) && !o.accepted(1) && o.accepted(2) && o.accepted(3));
    assert_eq!(seqs(&read_all(&mut ob)), vec![0, 1, 2]);
    // Under reject_new too: only the record that can never fit, then the queue's own limit.
    let d = tempfile::tempdir().unwrap();
    let (mut ob, _) = Outbox::open(d.path(), small_segments(300, WhenFull::RejectNew)).unwrap();
    let o = ob
        .append(
            &[
                &small[..],
                &huge[..],
                &small[..],
                &small[..],
                &small[..],
                &small[..],
            ],
            0,
        )
        .unwrap();
    // 74 bytes framed each: four fit under 300, the fifth finds no room.
    assert_eq!((o.count_accepted, o.refused.clone()), (4, vec![1, 5]));
    assert_eq!(ob.stats().rejected, 2);
}

#[test]
fn a_segment_that_cannot_be_read_at_open_is_set_aside_and_the_outbox_opens() {
    let d = tempfile::tempdir().unwrap();
    let o = small_segments(1 << 20, WhenFull::DropOldest);
    {
        let (mut ob, _) = Outbox::open(d.path(), o.clone()).unwrap();
        for i in 0..40 {
            ob.append(&[&rec(i, 300)], 0).unwrap();
        }
    }
    let segs = segment_files(d.path());
    assert!(segs.len() >= 3, "{segs:?}");
    // Reading the middle segment fails (EISDIR stands in for a bad sector's EIO).
    let bad = &segs[1];
    let first_after = format::parse_segment_name(&segs[2]).unwrap();
    let first_bad = format::parse_segment_name(bad).unwrap();
    fs::remove_file(bad).unwrap();
    fs::create_dir(bad).unwrap();
    let (mut ob, rep) = Outbox::open(d.path(), o).unwrap();
    assert_eq!(rep.corrupt_paths.len(), 1);
    assert!(!bad.exists(), "moved aside");
    assert_eq!(ob.stats().lost_corrupt, first_after - first_bad);
    let got = seqs(&read_all(&mut ob));
    let want: Vec<u64> = (0..40)
        .filter(|s| *s < first_bad || *s >= first_after)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_read_error_while_draining_is_damage_counted_not_an_endless_error() {
    let d = tempfile::tempdir().unwrap();
    let (mut ob, _) =
        Outbox::open(d.path(), small_segments(1 << 20, WhenFull::DropOldest)).unwrap();
    for i in 0..40 {
        ob.append(&[&rec(i, 300)], 0).unwrap();
    }
    let segs = segment_files(d.path());
    let first_bad = format::parse_segment_name(&segs[1]).unwrap();
    let first_after = format::parse_segment_name(&segs[2]).unwrap();
    fs::remove_file(&segs[1]).unwrap();
    fs::create_dir(&segs[1]).unwrap();
    let got = seqs(&read_all(&mut ob));
    let want: Vec<u64> = (0..40)
        .filter(|s| *s < first_bad || *s >= first_after)
        .collect();
    assert_eq!(got, want);
    assert_eq!(ob.stats().lost_corrupt, first_after - first_bad);
    ob.ack_through(39).unwrap();
    assert_eq!(ob.stats().depth, 0);
}

#[test]
fn with_fsync_every_accepted_record_is_counted_durable_once_its_group_sync_ran() {
    let d = tempfile::tempdir().unwrap();
    let o = OutboxOptions {
        fsync: true,
        ..opts()
    };
    let (ob, _) = Outbox::open(d.path(), o).unwrap();
    let shared = SharedOutbox::new(ob);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = shared.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let r = rec(t * 1000 + i, 100);
                    let out = s.append(&[&r, &r], 0).unwrap();
                    // Returned: covered by a sync already.
                    let st = s.stats();
                    assert!(st.durable >= out.first_seq + 2, "{st:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = shared.stats();
    assert_eq!((st.accepted, st.durable, st.write_errors), (400, 400, 0));
    // Acks are synced by the flusher; nothing stays dirty for long.
    shared.ack_through(199).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while shared.with(|o| o.dirty.ack_since.is_some()) {
        assert!(std::time::Instant::now() < end, "ack never synced");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn without_fsync_nothing_is_counted_durable() {
    let d = tempfile::tempdir().unwrap();
    let o = OutboxOptions {
        fsync: false,
        ..opts()
    };
    let (mut ob, _) = Outbox::open(d.path(), o).unwrap();
    ob.append(&[b"a", b"b"], 0).unwrap();
    assert_eq!((ob.stats().accepted, ob.stats().durable), (2, 0));
}

/// Every file and directory under `root` (not `root` itself), with its permission bits.
fn modes_under(root: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.push((p, m.permissions().mode() & 0o777));
        }
    }
    out.sort();
    out
}

#[test]
fn data_files_are_0600_in_directories_0700() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let dir = data.join("outbox").join("cloud");
    let o = small_segments(1 << 20, WhenFull::DropOldest);
    {
        let (mut ob, _) = Outbox::open(&dir, o.clone()).unwrap();
        for i in 0..100 {
            ob.append(&[&rec(i, 100)], 0).unwrap();
        }
        ob.ack_through(3).unwrap();
    }
    // A damaged record: the rest of its segment goes to corrupt/ on the next open.
    let segs = segment_files(&dir);
    let mut b = fs::read(&segs[1]).unwrap();
    b[16 + 5 * 124 + 30] ^= 0x40;
    fs::write(&segs[1], &b).unwrap();
    let (_ob, rep) = Outbox::open(&dir, o).unwrap();
    assert_eq!(rep.corrupt_paths.len(), 1);
    let mut dead = DeadLetters::open(&data, "cloud").unwrap();
    dead.put(1, 0, b"x", "too big").unwrap();

    let modes = modes_under(d.path());
    let names = |want: u32| -> Vec<String> {
        modes
            .iter()
            .filter(|(_, m)| *m == want)
            .map(|(p, _)| p.strip_prefix(d.path()).unwrap().display().to_string())
            .collect()
    };
    for (p, m) in &modes {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{} is {m:o}; all: {modes:?}", p.display());
    }
    let dirs = names(0o700);
    for want in [
        "data",
        "data/outbox",
        "data/outbox/cloud",
        "data/outbox/cloud/corrupt",
        "data/dead-letter",
    ] {
        assert!(
            dirs.contains(&want.to_string()),
            "{want} not among {dirs:?}"
        );
    }
    let files = names(0o600);
    assert!(
        files.contains(&"data/outbox/cloud/ack".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"data/dead-letter/cloud.ndjson".to_string()),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.contains("/corrupt/")), "{files:?}");
    assert!(
        files.iter().filter(|f| f.ends_with(".log")).count() >= 3,
        "{files:?}"
    );
}
