//! The archive writer: a thread committing staged batches in order, so
//! the next batch is decrypted while the last is made durable; whoever
//! waits for it hears when it stops, however it stops.

use std::sync::{Arc, Condvar, Mutex};

use keepwire_client::DeferredWrites;

use super::{Captured, StagedBatch};
use crate::archive::Archive;
use crate::RecordsError;

/// What the capturing thread and the writer thread share.
#[derive(Default)]
struct WriterState {
    /// Batches handed over and not finished.
    in_flight: usize,
    /// Why the writer stopped, if it did: nothing more can become durable.
    failed: Option<String>,
}

/// A thread committing staged batches in order ([`super::Capture::with_writer`]).
pub(super) struct Writer {
    jobs: Option<std::sync::mpsc::SyncSender<StagedBatch>>,
    state: Arc<(Mutex<WriterState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(m: &Mutex<WriterState>) -> std::sync::MutexGuard<'_, WriterState> {
    // The writer's state is two plain fields; a panic cannot tear them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Writer {
    pub(super) fn spawn(
        mut archive: Archive,
        writes: DeferredWrites,
        mut on_done: Box<dyn FnMut(Result<Captured, RecordsError>) + Send>,
    ) -> Result<Self, RecordsError> {
        // One batch being written and one waiting: staging blocks beyond
        // that, which bounds what is held in memory.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<StagedBatch>(1);
        let state: Arc<(Mutex<WriterState>, Condvar)> = Arc::default();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || {
                // However the thread ends (a panic included), whoever waits
                // for it hears that it stopped instead of waiting forever.
                let _exit = ExitNotice(Arc::clone(&shared));
                for batch in rx {
                    let result = batch.commit(&mut archive, &writes);
                    let failed = result.as_ref().err().map(|e| e.to_string());
                    on_done(result);
                    let (m, cv) = &*shared;
                    let mut s = lock(m);
                    s.in_flight -= 1;
                    if let Some(e) = failed {
                        s.failed = Some(e);
                        cv.notify_all();
                        return;
                    }
                    cv.notify_all();
                }
            })
            .map_err(|e| RecordsError::Archive(format!("cannot start the archive writer: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            state,
            thread: Some(thread),
        })
    }

    fn stopped(e: &str) -> RecordsError {
        RecordsError::Archive(format!("the archive writer stopped: {e}"))
    }

    pub(super) fn submit(&mut self, batch: StagedBatch) -> Result<(), RecordsError> {
        {
            let mut s = lock(&self.state.0);
            if let Some(e) = &s.failed {
                return Err(Self::stopped(e));
            }
            s.in_flight += 1;
        }
        let sent = self.jobs.as_ref().map(|j| j.send(batch));
        if !matches!(sent, Some(Ok(()))) {
            let mut s = lock(&self.state.0);
            s.in_flight -= 1;
            return Err(Self::stopped(s.failed.as_deref().unwrap_or("it exited")));
        }
        Ok(())
    }

    /// Wait until every batch handed over is durable (or the writer failed).
    pub(super) fn wait_idle(&self) -> Result<(), RecordsError> {
        let (m, cv) = &*self.state;
        let mut s = lock(m);
        while s.in_flight > 0 && s.failed.is_none() {
            s = cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match &s.failed {
            Some(e) => Err(Self::stopped(e)),
            None => Ok(()),
        }
    }
}

/// Marks the writer stopped when its thread ends, if nothing else did.
struct ExitNotice(Arc<(Mutex<WriterState>, Condvar)>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let (m, cv) = &*self.0;
        let mut s = lock(m);
        if s.failed.is_none() {
            s.failed = Some(if std::thread::panicking() {
                "it panicked".into()
            } else {
                "it exited".into()
            });
        }
        cv.notify_all();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the batch in hand is
        // written; waiting for it keeps two writers off the same archive
        // when the service reconnects.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
