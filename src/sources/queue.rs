//! The queue from the sources to the router, bounded twice: in events (the channel's
//! capacity) and in bytes (a budget of [`EVENT_QUEUE_BYTES`] shared by every source). A
//! count alone lets 8,192 events of a megabyte each sit in memory; the byte budget makes a
//! source that sends big events wait for the router like one that sends many.
//!
//! Each event takes permits worth its estimated heap size ([`event_bytes`]) before it enters
//! the channel and gives them back when the router takes it out: one semaphore acquire per
//! event, uncontended in the usual case. An event larger than the whole budget takes the whole
//! budget, so it passes alone.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::event::{Event, Items};

/// Bytes of events waiting for the router, all sources together. Ordinary events are a few
/// hundred bytes, so the item bound is reached first; this only holds back big ones.
pub const EVENT_QUEUE_BYTES: usize = 16 << 20;

/// The receiver is gone: the relay is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the router is gone")]
pub struct Closed;

/// An event with its share of the byte budget.
struct Queued {
    ev: Event,
    _bytes: OwnedSemaphorePermit,
}

/// A source's end of the queue (cheap to clone, one per source).
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    max: u32,
}

impl std::fmt::Debug for EventSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSender")
            .field("free_bytes", &self.budget.available_permits())
            .finish()
    }
}

/// The router's end.
pub struct EventReceiver {
    rx: mpsc::Receiver<Queued>,
}

/// A queue of at most `events` events and `bytes` bytes.
pub fn channel(events: usize, bytes: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(events);
    let max = bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
    let sender = EventSender {
        tx,
        budget: Arc::new(Semaphore::new(max as usize)),
        max,
    };
    (sender, EventReceiver { rx })
}

impl EventSender {
    /// Waits for room (events and bytes), then queues the event.
    pub async fn send(&self, ev: Event) -> Result<(), Closed> {
        let n = event_bytes(&ev).min(self.max as usize) as u32;
        let bytes = self
            .budget
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Queued { ev, _bytes: bytes })
            .await
            .map_err(|_| Closed)
    }

    /// True once the router is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl EventReceiver {
    /// The next event, blocking the thread (the router runs on its own thread).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        self.rx.blocking_recv().map(|q| q.ev)
    }

    /// The next event.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await.map(|q| q.ev)
    }

    /// An event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        self.rx.try_recv().map(|q| q.ev)
    }
}

/// Per-string overhead counted on top of its bytes (the `String` itself).
const STRING: usize = std::mem::size_of::<String>();
/// Per-item overhead in an [`Items`] map (two strings and the index entry).
const ITEM: usize = 2 * STRING + 16;

/// The heap an event holds, estimated from its strings and items (within a small factor of
/// the allocator's figure; what matters is that it grows with what the camera sent).
pub fn event_bytes(ev: &Event) -> usize {
    let items = |m: &Items| {
        m.iter()
            .map(|(k, v)| ITEM + k.len() + v.len())
            .sum::<usize>()
    };
    let frame = ev.analytics.as_ref().map_or(0, |f| {
        f.objects
            .iter()
            .map(|o| {
                std::mem::size_of_val(o) + o.id.len() + o.class.as_ref().map_or(0, String::len)
            })
            .sum::<usize>()
            + f.source.as_ref().map_or(0, String::len)
    });
    std::mem::size_of::<Event>()
        + ev.topic.len()
        + items(&ev.source)
        + items(&ev.key)
        + items(&ev.data)
        + frame
        + ev.ptz.as_ref().map_or(0, |_| 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(data_bytes: usize) -> Event {
        let mut ev = Event::new("cam".into(), "S".into(), "tns1:A".into(), 0);
        ev.data.insert("v".into(), "x".repeat(data_bytes));
        ev
    }

    #[tokio::test]
    async fn big_events_wait_for_the_byte_budget_small_ones_for_the_count() {
        let (tx, mut rx) = channel(1000, 64 * 1024);
        // Two 40 KiB events do not fit in 64 KiB: the second waits until the first is taken.
        tx.send(event(40 * 1024)).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(100), tx.send(event(40 * 1024)));
        assert!(blocked.await.is_err(), "over the byte budget");
        let first = rx.recv().await.unwrap();
        assert_eq!(first.data["v"].len(), 40 * 1024);
        tokio::time::timeout(Duration::from_secs(5), tx.send(event(40 * 1024)))
            .await
            .expect("room again once the router took one")
            .unwrap();
        rx.recv().await.unwrap();
        // Small events are bounded by the count.
        let (tx, mut rx) = channel(3, 64 * 1024);
        for _ in 0..3 {
            tx.send(event(10)).await.unwrap();
        }
        let blocked = tokio::time::timeout(Duration::from_millis(100), tx.send(event(10)));
        assert!(blocked.await.is_err(), "over the event count");
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn an_event_larger_than_the_budget_passes_alone() {
        let (tx, mut rx) = channel(10, 1024);
        tx.send(event(1 << 20)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().data["v"].len(), 1 << 20);
        drop(rx);
        assert_eq!(tx.send(event(1)).await, Err(Closed));
        assert!(tx.is_closed());
    }

    #[test]
    fn the_estimate_grows_with_what_the_camera_sent() {
        let small = event_bytes(&event(0));
        assert!(small < 1024, "{small}");
        assert_eq!(event_bytes(&event(200 * 1024)), small + 200 * 1024);
    }
}
