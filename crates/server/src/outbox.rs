//! A connection's outgoing queue, bounded in bytes.
//!
//! Pushes are queued for a connection's writer task, which sends them as
//! fast as the peer reads. A peer that stops reading would otherwise make
//! the server hold every push for it (measured before this bound: ~300 MB
//! per slow reader). Past the limit the queue refuses, the core forgets the
//! session, and the writer ends, which closes the connection: the device
//! reconnects and catches up by `sync`, from its cursor, losing nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// The sending half, held by the core (one per session).
/// One frame for the connection: JSON, or blob bytes a device asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

impl Frame {
    fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Frame>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
}

/// The receiving half, held by the connection's writer task.
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Frame>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// A queue that holds at most `limit` bytes of frames not yet written
    /// (one frame larger than that still goes when the queue is empty).
    pub fn new(limit: usize) -> (Self, OutboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
        });
        (
            Self {
                tx,
                shared: Arc::clone(&shared),
            },
            OutboxReceiver { rx, shared },
        )
    }

    /// Queue a frame. False when the peer has fallen more than the limit
    /// behind (the connection is then closed) or is gone: the caller
    /// forgets this session.
    pub fn send(&self, text: String) -> bool {
        self.send_frame(Frame::Text(text))
    }

    /// Blob bytes (a `blob_fetch` answer), bounded with everything else.
    pub fn send_binary(&self, bytes: Vec<u8>) -> bool {
        self.send_frame(Frame::Binary(bytes))
    }

    fn send_frame(&self, frame: Frame) -> bool {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let n = frame.len();
        let before = self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if before > 0 && before + n > self.shared.limit {
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
            self.shared.overflowed.store(true, Ordering::Relaxed);
            tracing::info!(
                queued = before,
                limit = self.shared.limit,
                "a connection fell too far behind reading; closing it (the device catches up by sync)"
            );
            return false;
        }
        if self.tx.send(frame).is_err() {
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The most this queue holds.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }
}

impl OutboxReceiver {
    /// The next frame to write; `None` once the queue overflowed (the
    /// connection must close) or every sender is gone.
    pub async fn recv(&mut self) -> Option<Frame> {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return None;
        }
        let frame = self.rx.recv().await?;
        self.shared.queued.fetch_sub(frame.len(), Ordering::Relaxed);
        if self.shared.overflowed.load(Ordering::Relaxed) {
            return None;
        }
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_cut_off_and_the_queue_stays_bounded() {
        let (out, mut rx) = Outbox::new(100);
        assert!(out.send("x".repeat(60)));
        assert!(out.send("x".repeat(40)));
        assert_eq!(out.queued(), 100);
        assert!(!out.send("x".to_string()), "past the limit: refused");
        assert!(!out.send(String::new()), "and from then on");
        assert_eq!(out.queued(), 100, "nothing more was held");
        assert_eq!(
            rx.recv().await,
            None,
            "the writer stops: the connection closes"
        );
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_everything_in_order() {
        let (out, mut rx) = Outbox::new(100);
        for i in 0..1000 {
            assert!(out.send(format!("{i:050}")));
            assert_eq!(rx.recv().await.unwrap(), Frame::Text(format!("{i:050}")));
        }
        assert_eq!(out.queued(), 0);
        // One frame larger than the limit still goes through an empty queue.
        assert!(out.send_binary(vec![1; 500]), "bytes count as text does");
        assert_eq!(rx.recv().await.unwrap(), Frame::Binary(vec![1; 500]));
    }
}
