//! Delivery waits for capture: promise 1, by construction.
//!
//! Every log entry passes three marks, per conversation, in order:
//!
//! 1. **durable** — the log writer committed it. The sender gets its
//!    receipt, and the records member (only it) gets the entry.
//! 2. **archived** — the records service reported it archived: decrypted,
//!    the sender's signature verified, the record durable (or, when it
//!    could not, archived as *withheld*).
//! 3. **released** — pushed to the other members' devices, with the
//!    Welcomes it carries, and a `captured` notice to its sender.
//!
//! A [`Gate`] holds what has passed the first mark and waits for the
//! second; [`Gate::archived`] hands back what may be released, never an
//! entry that was withheld. Nothing else in the server pushes an entry to
//! a member, and `sync` replays only up to [`Gate::released`], so no
//! modified client, crash or records outage can put an entry in front of
//! a reader before the archive holds it: whatever the sender did, the
//! records member either captured the entry or it reaches no one.
//!
//! Plain data: the core does the reading and pushing.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// An entry waiting for the records service.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub seq: u64,
    /// When it was appended (the server's time): how long capture has
    /// kept it waiting.
    pub at_ms: u64,
    pub sender_device: String,
    /// The members it goes to once archived (the records member aside):
    /// the roster it was appended under, shared by every entry of that
    /// roster rather than copied per entry (a 5,000-member conversation
    /// with a full backlog would hold fifty million names).
    pub members: Arc<[String]>,
    /// Whether the sender's own device gets it too: `Some(s)`, on every
    /// session but `s` (a sender's commit goes to its other sessions);
    /// `None`, not at all (its own message).
    pub sender_gets: Option<u64>,
    /// Devices a commit adds; their Welcome goes out with it.
    pub welcomed: Vec<String>,
}

impl Held {
    /// Where it goes: (device, a session of it not to push to).
    pub fn recipients(&self) -> impl Iterator<Item = (&str, Option<u64>)> + '_ {
        self.members.iter().filter_map(move |d| {
            if *d == self.sender_device {
                self.sender_gets.map(|s| (d.as_str(), Some(s)))
            } else {
                Some((d.as_str(), None))
            }
        })
    }
}

/// What one conversation's entries wait for (see the module docs).
#[derive(Debug, Default)]
pub struct Gate {
    held: VecDeque<Held>,
    durable: u64,
    archived: u64,
    released: u64,
    withheld: BTreeSet<u64>,
}

impl Gate {
    /// A conversation as found at startup: the log durable up to
    /// `durable`, archived up to `archived`, `withheld` never to go out.
    /// Everything archived counts as released (devices catch up by sync).
    pub fn new(durable: u64, archived: u64, withheld: impl IntoIterator<Item = u64>) -> Self {
        Self {
            held: VecDeque::new(),
            durable,
            archived,
            released: archived.min(durable),
            withheld: withheld.into_iter().collect(),
        }
    }

    /// Hold an entry just appended (entries come in sequence order).
    pub fn hold(&mut self, h: Held) {
        debug_assert!(self.held.back().is_none_or(|b| b.seq < h.seq));
        self.held.push_back(h);
    }

    /// The log writer made everything up to `seq` durable.
    pub fn durable(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
    }

    /// The records service archived everything up to `to`, of which
    /// `withheld` could not be captured. Returns the entries now released,
    /// in order, without the withheld ones.
    pub fn archived(&mut self, to: u64, withheld: &[u64]) -> Vec<Held> {
        self.withheld.extend(withheld.iter().copied());
        self.archived = self.archived.max(to);
        let upto = self.archived.min(self.durable);
        let mut out = Vec::new();
        while self.held.front().is_some_and(|h| h.seq <= upto) {
            if let Some(h) = self.held.pop_front() {
                if !self.withheld.contains(&h.seq) {
                    out.push(h);
                }
            }
        }
        self.released = self.released.max(upto);
        out
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable
    }

    pub fn archived_seq(&self) -> u64 {
        self.archived
    }

    /// When the oldest entry still waiting for the records service was
    /// appended: what capture lag is measured from.
    pub fn waiting_since(&self) -> Option<u64> {
        self.held.front().map(|h| h.at_ms)
    }

    /// The last entry members may have: `sync` replays up to here.
    pub fn released(&self) -> u64 {
        self.released
    }

    pub fn is_withheld(&self, seq: u64) -> bool {
        self.withheld.contains(&seq)
    }

    /// Entries waiting for the records service.
    pub fn waiting(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seq: u64) -> Held {
        Held {
            seq,
            at_ms: seq * 10,
            sender_device: "a".into(),
            members: Arc::from(vec!["a".to_string(), "b".to_string()]),
            sender_gets: None,
            welcomed: Vec::new(),
        }
    }

    #[test]
    fn an_entry_goes_to_the_others_and_a_commit_to_the_senders_other_sessions() {
        let mut h = held(1);
        let r: Vec<_> = h.recipients().collect();
        assert_eq!(r, [("b", None)]);
        h.sender_gets = Some(7);
        let r: Vec<_> = h.recipients().collect();
        assert_eq!(r, [("a", Some(7)), ("b", None)]);
    }

    fn seqs(v: &[Held]) -> Vec<u64> {
        v.iter().map(|h| h.seq).collect()
    }

    #[test]
    fn nothing_goes_out_before_it_is_archived() {
        let mut g = Gate::new(0, 0, []);
        for s in 1..=5 {
            g.hold(held(s));
        }
        g.durable(5);
        assert!(g.archived(0, &[]).is_empty(), "durable is not enough");
        assert_eq!(g.released(), 0);
        assert_eq!(g.waiting_since(), Some(10), "the first entry's time");
        assert_eq!(seqs(&g.archived(3, &[])), [1, 2, 3]);
        assert_eq!(g.released(), 3);
        assert_eq!(g.waiting_since(), Some(40), "then the fourth's");
        assert_eq!(seqs(&g.archived(5, &[])), [4, 5]);
        assert_eq!(g.waiting(), 0);
    }

    #[test]
    fn withheld_entries_never_go_out_and_do_not_stop_the_rest() {
        let mut g = Gate::new(0, 0, []);
        for s in 1..=4 {
            g.hold(held(s));
        }
        g.durable(4);
        assert_eq!(seqs(&g.archived(4, &[2])), [1, 3, 4]);
        assert!(g.is_withheld(2));
        assert_eq!(g.released(), 4);
    }

    #[test]
    fn an_archive_report_ahead_of_the_disk_waits_for_the_disk() {
        // The records service only sees durable entries; if a report ever
        // ran ahead, nothing past the durable mark would go out.
        let mut g = Gate::new(0, 0, []);
        g.hold(held(1));
        g.hold(held(2));
        g.durable(1);
        assert_eq!(seqs(&g.archived(2, &[])), [1]);
        assert_eq!(g.released(), 1);
        g.durable(2);
        assert_eq!(seqs(&g.archived(2, &[])), [2]);
    }

    #[test]
    fn after_a_restart_what_was_archived_counts_as_released() {
        let g = Gate::new(10, 7, [5]);
        assert_eq!(g.released(), 7);
        assert!(g.is_withheld(5));
        assert_eq!(g.durable_seq(), 10);
    }
}
