//! What the core asks its shell to do. The core never touches a socket,
//! a channel or a thread: handling a request (or a durable batch, or a
//! collection tick) leaves a list of [`Effect`]s — frames for sessions,
//! entries to make durable, garbage to delete — which the shell carries
//! out in order ([`crate::shell`]), the way quinn-proto hands its
//! transmits to quinn.
//!
//! Order is the contract. Effects are taken in the order they were made,
//! under the same lock turn, so a session gets a replay before the live
//! pushes that follow it, an entry's pushes before the answer to the next
//! request, and the log writer gets entries in the order their numbers
//! were given.

use keepwire_protocol::{ServerBody, ServerFrame};

use super::Core;
use crate::store::{Collectable, LogEntry, RosterUpdate};

/// One thing for the shell to do.
#[derive(Debug)]
pub enum Effect {
    /// Queue `text` for session `session` (a push, or the answer to its
    /// request). A session the shell no longer knows is skipped.
    Send { session: u64, text: String },
    /// Make `job`'s entry durable in the next group commit, then give the
    /// job back to [`Core::durable`] and send its answer.
    Write(Box<Job>),
    /// Relay garbage that may be deleted (the latest passes cover the
    /// earlier ones: bounds only grow).
    Collect(Vec<Collectable>),
}

/// A frame for a device's live sessions, sent once its entry is durable.
#[derive(Debug)]
pub(crate) struct Push {
    pub(crate) device: String,
    pub(crate) frame: String,
}

/// One entry on its way to durability, with what to push and whom to
/// answer once it is durable.
#[derive(Debug)]
pub struct Job {
    pub(crate) entry: LogEntry,
    pub(crate) roster: Option<OwnedRosterUpdate>,
    pub(crate) create: bool,
    /// The attachment blobs the entry carries, bound to it as it is written.
    pub(crate) blobs: Vec<keepwire_protocol::attachment::BlobId>,
    /// Pushes, in order.
    pub(crate) effects: Vec<Push>,
    pub(crate) answer: Option<Answer>,
}

/// The answer to the request that appended an entry: `reply` once it is
/// durable, `failed` if writing it failed.
#[derive(Debug)]
pub struct Answer {
    pub session: u64,
    pub reply: String,
    pub failed: String,
}

#[derive(Debug)]
pub(crate) struct OwnedRosterUpdate {
    pub(crate) snapshot: Vec<u8>,
    pub(crate) group_info: Option<Vec<u8>>,
    pub(crate) added: Vec<(String, u64)>,
    pub(crate) welcome: Option<Vec<u8>>,
}

impl OwnedRosterUpdate {
    pub(crate) fn view(&self) -> RosterUpdate<'_> {
        RosterUpdate {
            snapshot: &self.snapshot,
            group_info: self.group_info.as_deref(),
            added: &self.added,
            welcome: self.welcome.as_deref(),
        }
    }
}

impl Job {
    /// The session to answer, if the request that made it is answered.
    pub fn answer_session(&self) -> Option<u64> {
        self.answer.as_ref().map(|a| a.session)
    }

    /// Writing the entry failed: the refusal owed to its sender, if any.
    pub fn failed(self) -> Option<Answer> {
        self.answer
    }
}

impl Core {
    /// The effects made since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Answer the request just handled ([`Core::handle`]) on `session`.
    /// If it appended to the log, the answer may only leave once the entry
    /// is durable: it goes with the entry to the log writer, which sends
    /// `reply` right after its group commit (or `failed` if the commit
    /// fails). Otherwise it goes now.
    pub fn answer(&mut self, session: u64, reply: String, failed: impl FnOnce() -> String) {
        match self.pending.take() {
            Some(mut job) => {
                job.answer = Some(Answer {
                    session,
                    reply,
                    failed: failed(),
                });
                self.effects.push(Effect::Write(Box::new(job)));
            }
            None => self.effects.push(Effect::Send {
                session,
                text: reply,
            }),
        }
    }

    /// Hand an append with no answer attached to the log writer (a caller
    /// that never called [`Core::answer`]): it still goes, in order.
    pub(super) fn release_pending(&mut self) {
        if let Some(job) = self.pending.take() {
            self.effects.push(Effect::Write(Box::new(job)));
        }
    }

    /// `job`'s entry is durable: push it (the records member's copies, and
    /// its Welcome) and move the conversation's durable mark. Returns the
    /// answer owed, which the shell sends after these pushes.
    pub fn durable(&mut self, job: Job) -> Option<Answer> {
        for p in &job.effects {
            self.push_text(&p.device, &p.frame);
        }
        if let Some(c) = self.convs.get_mut(&job.entry.conv) {
            c.gate.durable(job.entry.seq);
        }
        for b in &job.blobs {
            self.blobs_in_flight.remove(b);
        }
        job.answer
    }

    pub(super) fn push(&mut self, device_id: &str, body: ServerBody) {
        let text = ServerFrame::push(body).to_json();
        self.push_text(device_id, &text);
    }

    pub(super) fn push_text(&mut self, device_id: &str, text: &str) {
        self.push_text_except(device_id, None, text);
    }

    pub(super) fn is_live(&self, device_id: &str) -> bool {
        self.live.get(device_id).is_some_and(|l| !l.is_empty())
    }

    /// Push to every live session of `device_id` but `skip`.
    pub(super) fn push_text_except(&mut self, device_id: &str, skip: Option<u64>, text: &str) {
        if let Some(list) = self.live.get(device_id) {
            for &session in list {
                if Some(session) != skip {
                    self.effects.push(Effect::Send {
                        session,
                        text: text.to_string(),
                    });
                }
            }
        }
    }
}
