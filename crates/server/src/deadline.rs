//! A deadline on whatever a peer has started to send.
//!
//! A WebSocket frame, or the HTTP request before it, that has started
//! arriving must finish within [`crate::Limits::frame_timeout_ms`], or the
//! connection is closed. Without it a peer that sends the first half of an
//! 8 MiB frame and stops holds the buffer for it as long as it likes
//! (measured before this existed: 20 such connections held 160 MB, with no
//! timeout), and a peer that opens a TCP connection and sends nothing, or
//! an HTTP request one byte a minute, holds a socket and a task forever.
//!
//! The WebSocket layer (tungstenite, inside axum) does not say when a frame
//! starts, so the watch sits under it, on the connection's bytes
//! ([`Watched`]): the first byte read after the last complete message
//! starts the clock, and the connection's handler stops it
//! ([`Watch::complete`]) each time a message comes out. Until the
//! WebSocket starts, the HTTP request counts as one message, pending from
//! the moment the connection was accepted; a plain HTTP connection (the
//! receipt keys, the checkpoint) therefore lives at most that long.
//! The clock is checked only while the reader waits for bytes, so a peer
//! that keeps sending, however large its frame, is never cut off: the
//! frame size limit bounds that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// When the message being received started arriving, shared by the
/// connection's bytes ([`Watched`]) and its handler.
#[derive(Debug)]
pub struct Watch {
    /// Milliseconds since [`origin`] plus one; 0 while nothing is pending.
    started: AtomicU64,
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn stamp(at: Instant) -> u64 {
    at.saturating_duration_since(origin()).as_millis() as u64 + 1
}

impl Watch {
    fn pending_since(now: Instant) -> Arc<Self> {
        Arc::new(Self {
            started: AtomicU64::new(stamp(now)),
        })
    }

    /// A whole message came out: nothing is pending until more bytes come.
    pub fn complete(&self) {
        self.started.store(0, Ordering::Release);
    }

    /// Bytes arrived: a message is pending from now, unless one already was.
    fn arrived(&self, now: Instant) {
        let _ = self
            .started
            .compare_exchange(0, stamp(now), Ordering::AcqRel, Ordering::Relaxed);
    }

    fn started(&self) -> Option<Instant> {
        match self.started.load(Ordering::Acquire) {
            0 => None,
            ms => Some(origin() + Duration::from_millis(ms - 1)),
        }
    }
}

/// A connection's bytes, closed (a read fails with `TimedOut`) when a
/// pending message misses its deadline.
pub struct Watched<Io> {
    inner: Io,
    watch: Arc<Watch>,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<Io> Watched<Io> {
    pub fn new(inner: Io, limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            watch: Watch::pending_since(now),
            limit,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    pub fn watch(&self) -> &Arc<Watch> {
        &self.watch
    }
}

fn late() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "a frame (or HTTP request) did not finish arriving in time",
    )
}

impl<Io: AsyncRead + Unpin> AsyncRead for Watched<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.arrived(Instant::now());
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // Waiting for bytes: wake up at the pending message's deadline, if
        // there is one. A wake-up after the handler completed the message
        // finds nothing pending and waits on.
        let Some(started) = this.watch.started() else {
            return Poll::Pending;
        };
        let deadline = started + this.limit;
        if Instant::now() >= deadline {
            return Poll::Ready(Err(late()));
        }
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(late())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Watched<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A listener whose connections are [`Watched`].
pub struct WatchedListener<L> {
    inner: L,
    limit: Duration,
}

impl<L> WatchedListener<L> {
    pub fn new(inner: L, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<L: Listener> Listener for WatchedListener<L>
where
    L::Io: Unpin,
{
    type Io = Watched<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (Watched::new(io, self.limit), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The watch of the connection a request came on, for its handler
/// (axum's `ConnectInfo`).
#[derive(Clone, Debug)]
pub struct ConnWatch(pub Arc<Watch>);

impl<L: Listener> Connected<IncomingStream<'_, WatchedListener<L>>> for ConnWatch
where
    L::Io: Unpin,
{
    fn connect_info(stream: IncomingStream<'_, WatchedListener<L>>) -> Self {
        Self(Arc::clone(stream.io().watch()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_message_left_half_sent_closes_the_connection_at_its_deadline() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut conn = Watched::new(ours, Duration::from_secs(5));
        conn.watch().complete(); // as the handler does once the WebSocket starts
        let mut buf = [0u8; 16];
        // Nothing pending: an idle connection waits as long as it likes.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), conn.read(&mut buf))
                .await
                .is_err()
        );
        peer.write_all(b"half a frame").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 12);
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut buf))
            .await
            .expect("closed at the deadline, not left open")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_message_stops_the_clock_and_the_next_starts_it_afresh() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut conn = Watched::new(ours, Duration::from_secs(5));
        conn.watch().complete();
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            peer.write_all(b"frame").await.unwrap();
            assert_eq!(conn.read(&mut buf).await.unwrap(), 5);
            tokio::time::advance(Duration::from_secs(4)).await;
            conn.watch().complete();
        }
        // 12 s since the first byte, never 5 s with a message pending.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_completes_its_request_is_closed() {
        let (_peer, ours) = tokio::io::duplex(1024);
        let mut conn = Watched::new(ours, Duration::from_secs(5));
        let mut buf = [0u8; 16];
        let err = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut buf))
            .await
            .expect("closed at the deadline, not left open")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
