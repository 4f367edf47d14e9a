//! Group commit: one sync of the segments and one flush of sled acknowledge every write made
//! before them.
//!
//! A listener request appends its raw event to sled and then waits here until that append is on
//! disk; the writer thread hands over what must wait for durability (the due index changes of a
//! committed run, an attempt's answer) as a callback. Requests arriving while a flush runs queue
//! up; when the flush finishes, the flusher thread takes the whole queue and covers it with one
//! more flush. Under load, one fsync acknowledges tens or hundreds of requests; alone, a request
//! waits for exactly one. If a flush fails, every waiter of that round gets the error (the
//! listener answers 503, so nothing is acknowledged that might not be on disk) and the store's
//! [`Fault`] records it. The thread ends when the last sender is dropped.

use crossbeam_channel::{Receiver, Sender, unbounded};
use tokio::sync::oneshot;

use super::segments::Segments;
use super::{Fault, StoreError};

/// What to do once the flush covering the writes before it has finished (or failed).
type Waiter = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A handle that asks the flusher thread for durability.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    requests: Sender<Waiter>,
}

impl GroupCommit {
    /// Start the flusher thread for `db`; a failed flush is recorded in `fault`.
    pub(crate) fn start(db: sled::Db, segments: Segments, fault: Fault) -> std::io::Result<Self> {
        let (requests, queue) = unbounded();
        std::thread::Builder::new().name("stayhook-flush".into()).spawn(move || flusher(&db, &segments, &fault, queue))?;
        Ok(Self { requests })
    }

    /// Resolve once every write this task made before the call is on disk.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.after_flush(move |outcome| {
            // A waiter whose request went away no longer needs the answer.
            let _ = done.send(outcome);
        });
        wait.await.unwrap_or(Err(StoreError::Stopped))
    }

    /// Run `then` on the flusher thread once every write made before the call is on disk, with
    /// the flush's outcome. `then` must be quick: the next flush waits for it.
    pub(crate) fn after_flush(&self, then: impl FnOnce(Result<(), StoreError>) + Send + 'static) {
        if let Err(crossbeam_channel::SendError(then)) = self.requests.send(Box::new(then)) {
            then(Err(StoreError::Stopped));
        }
    }
}

fn flusher(db: &sled::Db, segments: &Segments, fault: &Fault, queue: Receiver<Waiter>) {
    let mut waiters = Vec::new();
    while let Ok(first) = queue.recv() {
        waiters.push(first);
        waiters.extend(queue.try_iter());
        // The segments first: an index record made durable always points at a durable body.
        let outcome = segments
            .sync()
            .and_then(|()| db.flush().map(|_| ()).map_err(|error| StoreError::Unavailable(format!("flush failed: {error}"))));
        if let Err(error) = &outcome {
            tracing::error!(%error, n_waiters = waiters.len(), "group commit failed");
            fault.note(error);
        }
        for waiter in waiters.drain(..) {
            waiter(outcome.clone());
        }
    }
}
