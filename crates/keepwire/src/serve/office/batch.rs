//! When the records office signs a checkpoint for the actions it took:
//! a pure state machine over instants, so the batching is tested without
//! a clock.

use std::time::{Duration, Instant};

use super::BATCH;

/// When the next checkpoint for actions may be signed: the first action
/// after a quiet [`BATCH`] at once, the others at most once per
/// [`BATCH`], together.
#[derive(Debug, Default)]
pub struct Batch {
    last: Option<Instant>,
    waiting: usize,
}

impl Batch {
    /// An answer now waits for a checkpoint.
    pub fn wait(&mut self) {
        self.waiting += 1;
    }

    /// Whether a checkpoint is to be signed now.
    pub fn due(&self, now: Instant) -> bool {
        self.waiting > 0 && self.last.is_none_or(|l| now >= l + BATCH)
    }

    /// How long the office may wait for requests before one is due.
    pub fn idle(&self, now: Instant) -> Option<Duration> {
        (self.waiting > 0).then(|| match self.last {
            Some(l) => (l + BATCH).saturating_duration_since(now),
            None => Duration::ZERO,
        })
    }

    /// A checkpoint was signed (or tried) at `now`: nothing waits.
    pub fn signed(&mut self, now: Instant) {
        self.last = Some(now);
        self.waiting = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn actions_are_covered_at_once_after_a_quiet_second_and_together_within_one() {
        let t0 = Instant::now();
        let mut b = Batch::default();
        assert_eq!(
            b.idle(t0),
            None,
            "nothing waits: the office sleeps until asked"
        );
        b.wait();
        assert!(b.due(t0), "the first action is covered at once");
        b.signed(t0);
        // Two more within the second wait for the next checkpoint together.
        b.wait();
        b.wait();
        let soon = t0 + Duration::from_millis(300);
        assert!(!b.due(soon));
        assert_eq!(b.idle(soon), Some(Duration::from_millis(700)));
        let later = t0 + BATCH;
        assert!(b.due(later));
        b.signed(later);
        assert_eq!(b.idle(later), None);
        // After a quiet second, at once again.
        b.wait();
        assert!(b.due(later + BATCH + Duration::from_millis(1)));
    }
}
