//! The in-flight window of an MQTT destination: which outbox entries have been handed to the
//! MQTT client, which packet id each got, and which the broker acknowledged.
//!
//! rumqttc gives a publish no completion of its own: it reports `Outgoing::Publish(pkid)` in
//! the order it writes publishes, then `PubAck(pkid)` / `PubComp(pkid)`. So slots are matched
//! in FIFO order to outgoing packet ids, then to acknowledgements. Only the contiguous done
//! prefix is released to the outbox, keeping order: an entry leaves the outbox only when it
//! and everything before it were acknowledged. Pure state; the sink loop drives it.

use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    /// Outbox sequence; `None` for the relay's own messages (connect message).
    seq: Option<u64>,
    /// When the outbox accepted it (epoch ms), for the latency of delivered entries.
    accepted_ms: Option<i64>,
    qos: u8,
    pkid: Option<u16>,
    /// When the client wrote it (epoch ms of the sink's clock).
    written_ms: Option<i64>,
    done: bool,
}

/// Publishes handed to the client and not yet released.
#[derive(Debug, Clone)]
pub struct AckWindow {
    slots: VecDeque<Slot>,
    capacity: usize,
    /// Slots before this index are written or done: where the next write is looked for, so a
    /// window of thousands is not scanned on every publish.
    written: usize,
}

impl AckWindow {
    /// A window of `capacity` outbox entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            written: 0,
        }
    }

    /// Changes how many entries may be in flight (entries already in flight stay).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// How many more outbox entries may be handed to the client.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.slots.len())
    }

    /// Entries in flight.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A publish was handed to the client (in the same order the client will write it).
    pub fn push(&mut self, seq: Option<u64>, qos: u8) {
        self.slots.push_back(Slot {
            seq,
            accepted_ms: None,
            qos,
            pkid: None,
            written_ms: None,
            done: false,
        });
    }

    /// An outbox entry handed to the client, accepted at `accepted_ms`: its latency is
    /// reported when it is released.
    pub fn push_entry(&mut self, seq: u64, qos: u8, accepted_ms: i64) {
        self.slots.push_back(Slot {
            seq: Some(seq),
            accepted_ms: Some(accepted_ms),
            qos,
            pkid: None,
            written_ms: None,
            done: false,
        });
    }

    /// An entry that needs no broker acknowledgement (moved to the dead-letter file).
    pub fn push_done(&mut self, seq: u64) {
        self.slots.push_back(Slot {
            seq: Some(seq),
            accepted_ms: None,
            qos: 0,
            pkid: None,
            written_ms: None,
            done: true,
        });
    }

    /// The client wrote the next publish with this packet id at `now_ms` (0 for QoS 0, which
    /// is then done).
    pub fn on_outgoing(&mut self, pkid: u16, now_ms: i64) {
        while self
            .slots
            .get(self.written)
            .is_some_and(|s| s.pkid.is_some() || s.done)
        {
            self.written += 1;
        }
        if let Some(s) = self.slots.get_mut(self.written) {
            self.written += 1;
            s.written_ms = Some(now_ms);
            if s.qos == 0 {
                s.done = true;
            } else {
                s.pkid = Some(pkid);
            }
        }
    }

    /// The broker acknowledged a packet id (PUBACK for QoS 1, PUBCOMP for QoS 2); returns
    /// when the client wrote that publish, for the round trip that paces the window.
    pub fn on_ack(&mut self, pkid: u16) -> Option<i64> {
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.pkid == Some(pkid) && !s.done)?;
        s.done = true;
        s.written_ms
    }

    /// The oldest outbox entry not yet acknowledged, and when the client wrote it (`None`: not
    /// written yet): the publish a broker that closes the connection is most likely refusing.
    pub fn head(&self) -> Option<(u64, Option<i64>)> {
        self.slots
            .iter()
            .find(|s| !s.done && s.seq.is_some())
            .and_then(|s| Some((s.seq?, s.written_ms)))
    }

    /// The newest outbox entry handed to the client.
    pub fn last_seq(&self) -> Option<u64> {
        self.slots.iter().rev().find_map(|s| s.seq)
    }

    /// Outbox entries in flight (handed to the client, not acknowledged).
    pub fn pending(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !s.done && s.seq.is_some())
            .count()
    }

    /// Releases the acknowledged prefix; returns the last outbox sequence released (if any)
    /// and how many outbox entries that released.
    pub fn release(&mut self) -> (Option<u64>, u64) {
        self.release_observing(|_| {})
    }

    /// [`AckWindow::release`], calling `delivered` with the accept time of every released
    /// entry the broker took (not dead letters, not the relay's own messages).
    pub fn release_observing(&mut self, mut delivered: impl FnMut(i64)) -> (Option<u64>, u64) {
        let (mut last, mut count) = (None, 0);
        while self.slots.front().is_some_and(|s| s.done) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.written = self.written.saturating_sub(1);
            if let Some(seq) = slot.seq {
                last = Some(seq);
                count += 1;
            }
            if let Some(t) = slot.accepted_ms {
                delivered(t);
            }
        }
        (last, count)
    }

    /// After a lost connection: nothing in flight any more (the outbox resends from its head).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_the_acknowledged_prefix_in_order() {
        let mut w = AckWindow::new(3);
        w.push(Some(10), 1);
        w.push(Some(11), 1);
        w.push(Some(12), 0);
        assert_eq!(w.room(), 0);
        w.on_outgoing(1, 0);
        w.on_outgoing(2, 0);
        w.on_outgoing(0, 0);
        w.on_ack(2);
        assert_eq!(
            w.release(),
            (None, 0),
            "11 acked before 10: nothing leaves yet"
        );
        w.on_ack(1);
        assert_eq!(w.release(), (Some(12), 3));
        assert!(w.is_empty());
    }

    #[test]
    fn own_messages_take_a_slot_but_release_no_sequence() {
        let mut w = AckWindow::new(4);
        w.push(None, 1);
        w.push(Some(1), 1);
        w.on_outgoing(7, 0);
        w.on_outgoing(8, 0);
        w.on_ack(7);
        assert_eq!(w.release(), (None, 0));
        w.push_done(2);
        w.on_ack(8);
        assert_eq!(w.release(), (Some(2), 2));
        w.on_ack(8);
        assert_eq!(w.release(), (None, 0), "a duplicate ack is harmless");
    }

    #[test]
    fn released_entries_report_their_accept_time_dead_letters_do_not() {
        let mut w = AckWindow::new(4);
        w.push_entry(1, 1, 1_000);
        w.push_done(2);
        w.push_entry(3, 0, 3_000);
        w.on_outgoing(5, 0);
        w.on_outgoing(0, 0);
        let mut seen = Vec::new();
        assert_eq!(w.release_observing(|t| seen.push(t)), (None, 0));
        w.on_ack(5);
        assert_eq!(w.release_observing(|t| seen.push(t)), (Some(3), 3));
        assert_eq!(seen, vec![1_000, 3_000]);
    }
}
