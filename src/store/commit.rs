//! Group commit: one fsync acknowledges every write made before it.
//!
//! A listener request appends its raw event to sled and then waits here until that append is on
//! disk. Requests arriving while a flush runs queue up; when the flush finishes, the flusher thread
//! takes the whole queue and covers it with one more flush. Under load, one fsync acknowledges
//! tens or hundreds of requests; alone, a request waits for exactly one. If a flush fails, every
//! waiter of that round gets the error and answers 503, so nothing is acknowledged that might not
//! be on disk. The thread ends when the last sender is dropped.

use crossbeam_channel::{Receiver, Sender, unbounded};
use tokio::sync::oneshot;

/// A handle that asks the flusher thread for durability.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    requests: Sender<oneshot::Sender<Result<(), String>>>,
}

impl GroupCommit {
    /// Start the flusher thread for `db`.
    pub(crate) fn start(db: sled::Db) -> std::io::Result<Self> {
        let (requests, queue) = unbounded();
        std::thread::Builder::new().name("stayhook-flush".into()).spawn(move || flusher(db, queue))?;
        Ok(Self { requests })
    }

    /// Resolve once every write this task made before the call is on disk.
    pub(crate) async fn durable(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.requests.send(done).map_err(|_| "the flusher has stopped".to_string())?;
        wait.await.map_err(|_| "the flusher has stopped".to_string())?
    }
}

fn flusher(db: sled::Db, queue: Receiver<oneshot::Sender<Result<(), String>>>) {
    let mut waiters = Vec::new();
    while let Ok(first) = queue.recv() {
        waiters.push(first);
        waiters.extend(queue.try_iter());
        let outcome = db.flush().map(|_| ()).map_err(|error| format!("flush failed: {error}"));
        if let Err(error) = &outcome {
            tracing::error!(%error, n_waiters = waiters.len(), "group commit failed");
        }
        for waiter in waiters.drain(..) {
            // A waiter whose request went away no longer needs the answer.
            let _ = waiter.send(outcome.clone());
        }
    }
}
