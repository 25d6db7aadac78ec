//! The log writer: one thread turning concurrent appends into group
//! commits (one transaction, one fsync), then — under the core's lock, in
//! order — pushing each entry and sending each receipt. Receipts thus
//! never precede durability, and connections keep reading while theirs
//! wait.

use std::sync::{Arc, Mutex};

use crate::service::Job;
use crate::shell::{Queued, Shell};
use crate::store::{Append, Collectable, RosterUpdate, ServerStore};
use crate::ServerError;

/// Relay garbage on its way from the core ([`crate::service::Effect::Collect`])
/// to the log writer: the latest passes only (bounds only grow, so newer
/// passes cover older ones).
#[derive(Clone, Default)]
pub struct Garbage(Arc<Mutex<Option<Vec<Collectable>>>>);

/// Most entries one group commit takes.
pub(crate) const MAX_BATCH: usize = 1024;

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
    jobs: std::sync::mpsc::Receiver<Queued>,
    shell: Arc<Mutex<Shell>>,
    garbage: Garbage,
    times: &crate::ops::CommitTimes,
    hold: &crate::hold::WriterHold,
    on_failure: impl FnOnce(&ServerError),
) -> Result<(), ServerError> {
    use std::sync::mpsc::RecvTimeoutError;
    let mut pending: std::collections::VecDeque<Collectable> = Default::default();
    loop {
        // A backup is copying the stores: nothing is written meanwhile.
        hold.wait_while_held();
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
        let mut batch: Vec<Queued> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if batch.is_empty() && pending.is_empty() {
            continue;
        }
        let jobs_of: Vec<&Job> = batch.iter().map(|q| &*q.job).collect();
        let started = std::time::Instant::now();
        let result = write_batch(&mut *store, &jobs_of, &mut pending);
        if !batch.is_empty() {
            times.observe(started.elapsed());
        }
        match result {
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::debug!(deleted, "relay entries deleted");
                }
                if batch.is_empty() {
                    continue;
                }
                let mut shell = shell.lock().unwrap_or_else(|p| p.into_inner());
                now_durable(&mut shell, batch);
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "log write failed; stopping the server");
                for q in batch {
                    q.refuse();
                }
                // Nothing more is written: the core's state ran ahead of the
                // disk, and only a restart from the durable log is safe. The
                // shell stops the server (`ws::serve`); until the core lets
                // go, every append still on its way is refused, so no sender
                // is left without an answer (a failed collection with no
                // batch of its own left queued appends unanswered before).
                on_failure(&e);
                for q in jobs.iter() {
                    q.refuse();
                }
                return Err(e);
            }
        }
    }
}

/// One group commit: `batch` appended, and some of the relay garbage in
/// `pending` deleted, in one transaction (one fsync). Returns how many
/// relay entries went.
pub(crate) fn write_batch(
    store: &mut dyn ServerStore,
    batch: &[&Job],
    pending: &mut std::collections::VecDeque<Collectable>,
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
            blobs: &j.blobs,
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
fn now_durable(shell: &mut Shell, batch: Vec<Queued>) {
    for q in batch {
        shell.durable(q);
    }
}

/// Relay entries deleted with each group commit, beyond twice its size.
pub(crate) const GC_PER_COMMIT: usize = 64;

/// Entries deleted per transaction when no appends come.
pub(crate) const GC_IDLE_CHUNK: usize = 1024;

/// How often an idle log writer looks for garbage handed over.
pub(crate) const GC_IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl Garbage {
    pub(crate) fn hand_over(&self, passes: Vec<Collectable>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(passes);
    }

    fn take(&self) -> Option<Vec<Collectable>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
