//! Where the core's [`Effect`]s meet the world: each session's outbox,
//! the log writer's channel, its garbage slot.
//!
//! The [`Core`] decides and the shell does. Both sit behind one mutex
//! ([`Shell`]); a [`CoreGuard`] is that lock, and when it is dropped the
//! effects made while it was held are carried out in order, still under
//! the lock. So frames reach each session in the order the core made
//! them (a replay before the live pushes after it, an entry's pushes
//! before the answer that follows), and entries reach the log writer in
//! the order their numbers were given — without the core ever holding a
//! channel.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::MutexGuard;

use crate::log_writer::Garbage;
use crate::outbox::Outbox;
use crate::service::{Effect, Job, Session};
use crate::Core;

/// The core and what its effects need.
pub struct Shell {
    core: Core,
    /// The outgoing queue of every open connection, by session.
    outboxes: HashMap<u64, Outbox>,
    writer: Sender<Queued>,
    garbage: Garbage,
}

/// An entry on its way to the log writer, with the queue its answer goes
/// to. The log writer holds that queue until it has answered, so a
/// connection that is closing still gets the receipts of the group commit
/// in flight before its close frame (its writer task ends only when every
/// holder of its queue has let go).
pub struct Queued {
    pub(crate) job: Box<Job>,
    answer_to: Option<Outbox>,
}

impl Queued {
    /// Writing the entry failed: tell its sender it was not accepted.
    pub(crate) fn refuse(self) {
        if let (Some(a), Some(out)) = (self.job.failed(), self.answer_to) {
            out.send(a.failed);
        }
    }
}

impl Shell {
    pub fn new(core: Core, writer: Sender<Queued>, garbage: Garbage) -> Self {
        Self {
            core,
            outboxes: HashMap::new(),
            writer,
            garbage,
        }
    }

    /// Carry out the core's effects, in order.
    fn dispatch(&mut self) {
        for effect in self.core.take_effects() {
            match effect {
                Effect::Send { session, text } => {
                    if let Some(out) = self.outboxes.get(&session) {
                        // Refused: the peer fell too far behind (or is
                        // gone) and its connection is closing; nothing
                        // more goes to it, and it catches up by sync.
                        if !out.send(text) {
                            self.outboxes.remove(&session);
                        }
                    }
                }
                Effect::Write(job) => {
                    let answer_to = job
                        .answer_session()
                        .and_then(|s| self.outboxes.get(&s).cloned());
                    if let Err(refused) = self.writer.send(Queued { job, answer_to }) {
                        // The writer only stops after a storage failure,
                        // which stops the server; the entry is not
                        // durable, and its sender is told so.
                        tracing::error!("the server's log writer has stopped");
                        refused.0.refuse();
                    }
                }
                Effect::Collect(passes) => self.garbage.hand_over(passes),
            }
        }
    }

    /// `q`'s entry is durable: its pushes, then its answer.
    pub(crate) fn durable(&mut self, q: Queued) {
        let answer = self.core.durable(*q.job);
        self.dispatch();
        if let (Some(a), Some(out)) = (answer, q.answer_to) {
            out.send(a.reply);
        }
    }
}

/// The core, locked; its effects are carried out when this is dropped.
pub struct CoreGuard<'a>(pub(crate) MutexGuard<'a, Shell>);

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0.core
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.0.core
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        self.0.dispatch();
    }
}

impl CoreGuard<'_> {
    /// A connection opened: frames for `session` go to `out`.
    pub fn open(&mut self, session: u64, out: Outbox) {
        self.0.outboxes.insert(session, out);
    }

    /// A connection closed: the core forgets its session, and nothing more
    /// is queued for it (answers already on their way with the log writer
    /// still arrive).
    pub fn close(&mut self, session: &Session) {
        self.0.core.disconnect(session);
        self.0.outboxes.remove(&session.id);
    }
}
