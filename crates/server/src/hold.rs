//! Holding the log still for a consistent backup.
//!
//! A backup must cut the server's log, the records member's state and the
//! archive at one point: taken one after the other while messages flow,
//! the archive would hold entries the copied log does not (a restored
//! server would receipt new messages at those sequence numbers again), or
//! the log would count as archived what the copied archive lacks. So
//! while a backup copies the three, the log writer commits nothing: new
//! messages wait for their receipts (they are not refused), the records
//! service captures what was already durable, and nothing new arrives.
//!
//! The hold is a lease: it ends by itself after the time asked for, so a
//! backup that dies cannot stop the server for good. [`WriterHold::hold`]
//! returns only once the writer is actually still — nothing half written.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Held until then (None: writing).
    until: Option<Instant>,
    /// The writer saw the hold and is waiting, nothing in progress.
    still: bool,
}

/// Shared by the log writer and whoever takes a backup.
#[derive(Default)]
pub struct WriterHold {
    state: Mutex<State>,
    changed: Condvar,
}

/// The longest hold that may be asked for.
pub const MAX_HOLD: Duration = Duration::from_secs(600);

impl WriterHold {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold the writer for at most `lease` (capped at [`MAX_HOLD`]);
    /// returns once it is still, or an error if it is not within `wait`
    /// (the hold is then given up).
    pub fn hold(&self, lease: Duration, wait: Duration) -> Result<(), String> {
        let mut s = self.lock();
        s.until = Some(Instant::now() + lease.min(MAX_HOLD));
        s.still = false;
        self.changed.notify_all();
        let deadline = Instant::now() + wait;
        while !s.still {
            let now = Instant::now();
            if now >= deadline {
                s.until = None;
                self.changed.notify_all();
                return Err(format!(
                    "the log writer did not come to rest within {} s",
                    wait.as_secs()
                ));
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        tracing::info!(lease_secs = lease.as_secs(), "log held for a backup");
        Ok(())
    }

    /// End the hold: the writer goes on with what waited.
    pub fn release(&self) {
        let mut s = self.lock();
        if s.until.take().is_some() {
            tracing::info!("log hold released");
        }
        self.changed.notify_all();
    }

    /// The writer's side, between batches: while held, wait (still).
    pub(crate) fn wait_while_held(&self) {
        let mut s = self.lock();
        while let Some(until) = s.until {
            let now = Instant::now();
            if now >= until {
                s.until = None;
                tracing::warn!("the backup's hold on the log ran out; writing again");
                break;
            }
            if !s.still {
                s.still = true;
                self.changed.notify_all();
            }
            s = self
                .changed
                .wait_timeout(s, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.still = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_hold_stops_the_writer_between_batches_and_ends_by_release_or_lease() {
        let hold = Arc::new(WriterHold::default());
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (hold, written, stop) = (hold.clone(), written.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    hold.wait_while_held();
                    written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::yield_now();
                }
            })
        };
        let count = || written.load(std::sync::atomic::Ordering::SeqCst);
        hold.hold(Duration::from_secs(60), Duration::from_secs(10))
            .unwrap();
        let at = count();
        // Still: a batch after the hold was granted would show here.
        for _ in 0..1000 {
            std::thread::yield_now();
        }
        assert_eq!(count(), at, "nothing written while held");
        hold.release();
        while count() == at {
            std::thread::yield_now();
        }
        // A lease ends by itself.
        hold.hold(Duration::from_millis(50), Duration::from_secs(10))
            .unwrap();
        let at = count();
        while count() == at {
            std::thread::yield_now();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
    }
}
