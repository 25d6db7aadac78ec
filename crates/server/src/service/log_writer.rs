//! The log writer: one thread turning concurrent appends into group
//! commits (one transaction, one fsync), then — under the core's lock, in
//! order — pushing each entry and sending each receipt. Receipts thus
//! never precede durability, and connections keep reading while theirs
//! wait.

use super::Core;
use crate::outbox::Outbox;
use crate::store::{Append, LogEntry, RosterUpdate, ServerStore};
use crate::ServerError;

/// Relay garbage on its way from the core to the log writer: the latest
/// passes only (bounds only grow, so newer passes cover older ones).
#[derive(Clone, Default)]
pub struct Garbage(std::sync::Arc<std::sync::Mutex<Option<Vec<crate::store::Collectable>>>>);

/// A frame for a device's live sessions, sent once its entry is durable.
pub(super) struct Push {
    pub(super) device: String,
    pub(super) frame: String,
}

/// One entry on its way to the log writer, with what to push and whom
/// to answer once it is durable.
pub struct Job {
    pub(super) entry: LogEntry,
    pub(super) roster: Option<OwnedRosterUpdate>,
    pub(super) create: bool,
    /// Pushes, in order.
    pub(super) effects: Vec<Push>,
    pub(super) answer: Option<Answer>,
}

/// The answer to the request that appended an entry: `reply` once it is
/// durable, `failed` if writing it failed.
pub(super) struct Answer {
    pub(super) out: Outbox,
    pub(super) reply: String,
    pub(super) failed: String,
}

pub(super) struct OwnedRosterUpdate {
    pub(super) snapshot: Vec<u8>,
    pub(super) group_info: Option<Vec<u8>>,
    pub(super) added: Vec<(String, u64)>,
    pub(super) welcome: Option<Vec<u8>>,
}

/// Most entries one group commit takes.
pub(super) const MAX_BATCH: usize = 1024;

/// The log writer: takes every entry queued since its last commit, writes
/// them in one transaction on its own connection (one fsync), then, under
/// the core's lock, pushes them and releases their receipts, in order.
/// Each commit also deletes a little relay garbage (a bounded number of
/// entries, in proportion to the batch, so collection keeps ahead of
/// appends without lengthening any commit much); when no entries come, it
/// collects on its own. Runs on its own thread until the core drops its
/// sender. A storage failure ends it with the error, after telling the
/// senders of that batch their messages were not accepted; the shell must
/// then stop the server, since the in-memory state ran ahead of the disk.
pub fn run_log_writer(
    mut store: Box<dyn ServerStore>,
    jobs: std::sync::mpsc::Receiver<Job>,
    core: std::sync::Arc<std::sync::Mutex<Core>>,
    garbage: Garbage,
    on_failure: impl FnOnce(&ServerError),
) -> Result<(), ServerError> {
    use std::sync::mpsc::RecvTimeoutError;
    let mut pending: std::collections::VecDeque<crate::store::Collectable> = Default::default();
    loop {
        if let Some(newer) = garbage.take() {
            pending = newer.into();
        }
        // Idle with garbage waiting: collect soon; otherwise look for new
        // garbage now and then.
        let wait = if pending.is_empty() {
            GC_IDLE_POLL
        } else {
            std::time::Duration::from_millis(10)
        };
        let first = match jobs.recv_timeout(wait) {
            Ok(j) => Some(j),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let mut batch: Vec<Job> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if batch.is_empty() && pending.is_empty() {
            continue;
        }
        let result = write_batch(&mut *store, &batch, &mut pending);
        match result {
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::debug!(deleted, "relay entries deleted");
                }
                if batch.is_empty() {
                    continue;
                }
                let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
                now_durable(&mut core, batch);
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "log write failed; stopping the server");
                for a in batch.into_iter().filter_map(|j| j.answer) {
                    let _ = a.out.send(a.failed);
                }
                // Nothing more is written: the core's state ran ahead of the
                // disk, and only a restart from the durable log is safe. The
                // shell stops the server (`ws::serve`); until the core lets
                // go, every append still on its way is refused, so no sender
                // is left without an answer (a failed collection with no
                // batch of its own left queued appends unanswered before).
                on_failure(&e);
                for a in jobs.iter().filter_map(|j| j.answer) {
                    let _ = a.out.send(a.failed);
                }
                return Err(e);
            }
        }
    }
}

/// One group commit: `batch` appended, and some of the relay garbage in
/// `pending` deleted, in one transaction (one fsync). Returns how many
/// relay entries went.
pub(super) fn write_batch(
    store: &mut dyn ServerStore,
    batch: &[Job],
    pending: &mut std::collections::VecDeque<crate::store::Collectable>,
) -> Result<usize, ServerError> {
    let views: Vec<Option<RosterUpdate<'_>>> = batch
        .iter()
        .map(|j| j.roster.as_ref().map(|r| r.view()))
        .collect();
    let appends: Vec<Append<'_>> = batch
        .iter()
        .zip(&views)
        .map(|(j, v)| Append {
            entry: &j.entry,
            roster: v.as_ref(),
            create: j.create,
        })
        .collect();
    let limit = if batch.is_empty() {
        GC_IDLE_CHUNK
    } else {
        GC_PER_COMMIT + 2 * batch.len()
    };
    store.append_collecting(&appends, pending, limit)
}

/// A batch is durable: push its entries (the records member's copies) and
/// send their receipts, in order, under the core's lock.
pub(super) fn now_durable(core: &mut Core, batch: Vec<Job>) {
    for j in batch {
        core.apply_effects(&j.entry.conv, j.entry.seq, &j.effects);
        if let Some(a) = j.answer {
            let _ = a.out.send(a.reply);
        }
    }
}

/// Relay entries deleted with each group commit, beyond twice its size.
pub(super) const GC_PER_COMMIT: usize = 64;

/// Entries deleted per transaction when no appends come.
pub(super) const GC_IDLE_CHUNK: usize = 1024;

/// How often an idle log writer looks for garbage handed over.
pub(super) const GC_IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl Garbage {
    pub(super) fn hand_over(&self, passes: Vec<crate::store::Collectable>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(passes);
    }

    pub(super) fn take(&self) -> Option<Vec<crate::store::Collectable>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl OwnedRosterUpdate {
    pub(super) fn view(&self) -> RosterUpdate<'_> {
        RosterUpdate {
            snapshot: &self.snapshot,
            group_info: self.group_info.as_deref(),
            added: &self.added,
            welcome: self.welcome.as_deref(),
        }
    }
}
