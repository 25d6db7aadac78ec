//! When each message was captured: the server's record of what the
//! records service acknowledged, polled from its store on a thread of its
//! own while the traffic runs.

use super::*;

/// Watches the server's record of what the records service acknowledged
/// (it does so only once a record is durable in the archive), every 2 ms,
/// from a thread of its own.
pub(super) struct CapturePoller {
    stop: Arc<AtomicBool>,
    /// Set when the phase failed and nobody will wait for the poller.
    abandoned: Arc<AtomicBool>,
    targets: Arc<Mutex<Option<Vec<u64>>>>,
    handle: Option<tokio::task::JoinHandle<Result<Captured>>>,
}

impl Drop for CapturePoller {
    fn drop(&mut self) {
        // Without this, a failed phase would leave the thread polling and
        // the runtime waiting for it at exit, hiding the error.
        self.abandoned.store(true, Ordering::Release);
    }
}

/// Per conversation, (acknowledged seq, first seen at), increasing.
pub struct Captured(pub(super) Vec<Vec<(u64, Instant)>>);

impl Captured {
    pub(super) fn when(&self, conv: usize, seq: u64) -> Option<Instant> {
        let steps = self.0.get(conv)?;
        let i = steps.partition_point(|(acked, _)| *acked < seq);
        steps.get(i).map(|(_, at)| *at)
    }
}

impl CapturePoller {
    pub(super) fn start(server: &ServerProc, convs: Vec<String>) -> Result<Self> {
        let database = super::super::server::databases(&server.data_dir)?.map(|d| d.0);
        let store = crate::serve::open_server_store(&server.data_dir, database.as_deref())?;
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Arc<Mutex<Option<Vec<u64>>>> = Arc::new(Mutex::new(None));
        let abandoned = Arc::new(AtomicBool::new(false));
        let (stop2, targets2, abandoned2) = (stop.clone(), targets.clone(), abandoned.clone());
        let handle = tokio::task::spawn_blocking(move || {
            let index: HashMap<String, usize> = convs
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i))
                .collect();
            let mut steps: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); convs.len()];
            let mut deadline: Option<Instant> = None;
            loop {
                if abandoned2.load(Ordering::Acquire) {
                    bail!("capture polling abandoned");
                }
                let now = Instant::now();
                for (conv, acked) in store.records_progress()? {
                    if let Some(&i) = index.get(&conv) {
                        if steps[i].last().map(|(a, _)| *a) < Some(acked) {
                            steps[i].push((acked, now));
                        }
                    }
                }
                if stop2.load(Ordering::Acquire) {
                    let targets = lock(&targets2).clone().unwrap_or_default();
                    let done = targets
                        .iter()
                        .zip(&steps)
                        .all(|(t, s)| s.last().map(|(a, _)| *a).unwrap_or(0) >= *t);
                    if done {
                        return Ok(Captured(steps));
                    }
                    let d = *deadline.get_or_insert(now + Duration::from_secs(300));
                    if now > d {
                        bail!("the records service did not capture everything within 5 minutes");
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Ok(Self {
            stop,
            abandoned,
            targets,
            handle: Some(handle),
        })
    }

    pub(super) async fn finish(mut self, targets: Vec<u64>) -> Result<Captured> {
        *lock(&self.targets) = Some(targets);
        self.stop.store(true, Ordering::Release);
        self.handle
            .take()
            .context("capture poller already finished")?
            .await?
    }
}
