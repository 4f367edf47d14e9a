//! The writer: one thread that merges the hot path's multi-tree writes into shared transactions.
//!
//! sled 0.34 runs every transaction (and every atomic batch) under a process-wide write lock, and
//! `Db::flush` holds the read side of that lock until its fsync is done. With the listener's
//! group commit flushing continuously under load, each transaction waited for a whole fsync, and
//! so did every plain read or write queued behind it: profiled, the daemon sat idle at 1,000
//! events/s with its threads parked on that lock (BENCHMARKS.md, "What the profile showed").
//!
//! So the normalizers' commits and the delivery attempts' records are not transactions of their
//! own: they are jobs sent here. The writer takes every job waiting, applies them all in one
//! transaction (a job sees the writes of the jobs before it, as sled transactions read their own
//! writes), and answers each. One fsync-wait then covers hundreds of jobs. If the merged
//! transaction fails, each job is applied alone, so one bad job fails only itself. The thread ends
//! when the last [`Store`] handle is dropped.

use crossbeam_channel::{Receiver, Sender, unbounded};
use sled::Transactional;
use tokio::sync::oneshot;

use super::*;

/// Most jobs merged into one transaction (bounds the transaction's memory).
const MAX_JOBS_PER_TRANSACTION: usize = 512;

/// One unit of work for the writer.
pub(super) enum Job {
    /// Normalized webhooks, in order.
    Normalized(Vec<NormalizedBatch>),
    /// A delivery attempt's outcome.
    Attempt(Box<AttemptJob>),
}

/// A delivery attempt's outcome: the delivery before and after, and the attempt's log entry.
pub(super) struct AttemptJob {
    pub(super) previous: Delivery,
    pub(super) next: Delivery,
    pub(super) attempt: Option<Attempt>,
    pub(super) now_ms: u64,
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// The handle that sends jobs to the writer thread.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: Sender<(Job, Reply)>,
}

/// The trees a job writes, cloned for the writer thread (not the [`Store`], whose handle would
/// keep the thread's own queue open).
#[derive(Clone)]
pub(super) struct Trees {
    pub(super) pending: Tree,
    pub(super) outcomes: Tree,
    pub(super) events: Tree,
    pub(super) state: Tree,
    pub(super) deliveries: Tree,
    pub(super) event_deliveries: Tree,
    pub(super) due: Tree,
    pub(super) lanes: Tree,
    pub(super) attempts: Tree,
    pub(super) dead: Tree,
}

impl Writer {
    pub(super) fn start(trees: Trees, mirror: DueMirror) -> std::io::Result<Self> {
        let (jobs, queue) = unbounded();
        std::thread::Builder::new().name("stayhook-writer".into()).spawn(move || run(&trees, &mirror, queue))?;
        Ok(Self { jobs })
    }

    /// Queue a job; the receiver answers once it is committed (not yet flushed).
    pub(super) fn submit(&self, job: Job) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(crossbeam_channel::SendError((_, reply))) = self.jobs.send((job, reply)) {
            let _ = reply.send(Err(StoreError::Flush("the store's writer has stopped".into())));
        }
        answer
    }
}

/// A job with its values encoded, ready to be applied (encoding happens outside the
/// transaction, which sled may run more than once).
enum Encoded {
    Normalized(Vec<EncodedBatch>),
    Attempt(Box<EncodedAttempt>),
}

struct EncodedAttempt {
    job: AttemptJob,
    next_value: Vec<u8>,
    attempt: Option<(Vec<u8>, Vec<u8>)>,
}

struct EncodedBatch {
    inbox_key: Vec<u8>,
    outcome: Vec<u8>,
    events: Vec<(Vec<u8>, Vec<u8>)>,
    state: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    deliveries: Vec<Delivery>,
}

fn encode(job: Job) -> Encoded {
    match job {
        Job::Normalized(batches) => Encoded::Normalized(
            batches
                .into_iter()
                .map(|batch| EncodedBatch {
                    inbox_key: batch.inbox_id.key().to_vec(),
                    outcome: encode_json(&batch.outcome),
                    events: batch.events.iter().map(|event| (keys::event(&event.id), encode_json(event))).collect(),
                    state: batch
                        .state
                        .iter()
                        .map(|write| (keys::state(&write.account_id, write.kind, &write.record_id), write.record.as_ref().map(encode_json)))
                        .collect(),
                    deliveries: batch.deliveries,
                })
                .collect(),
        ),
        Job::Attempt(job) => {
            let next_value = encode_json(&job.next);
            let attempt =
                job.attempt.as_ref().map(|attempt| (keys::attempt(&job.next.event_id, job.next.id, attempt.attempt), encode_json(attempt)));
            Encoded::Attempt(Box::new(EncodedAttempt { job: *job, next_value, attempt }))
        }
    }
}

fn run(trees: &Trees, mirror: &DueMirror, queue: Receiver<(Job, Reply)>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter().take(MAX_JOBS_PER_TRANSACTION - 1));
        let (encoded, replies): (Vec<Encoded>, Vec<Reply>) = jobs.into_iter().map(|(job, reply)| (encode(job), reply)).unzip();
        match apply(trees, &encoded) {
            Ok(changes) => {
                mirror.apply(&changes);
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(error) if encoded.len() == 1 => {
                let _ = replies.into_iter().next().map(|reply| reply.send(Err(error)));
            }
            Err(error) => {
                tracing::warn!(%error, n_jobs = encoded.len(), "a merged transaction failed; applying its jobs one by one");
                for (job, reply) in encoded.iter().zip(replies) {
                    let outcome = apply(trees, std::slice::from_ref(job)).map(|changes| mirror.apply(&changes));
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// Apply `jobs` in order in one transaction; the `due` keys it changed.
fn apply(trees: &Trees, jobs: &[Encoded]) -> Result<DueChanges, StoreError> {
    let all = (
        &trees.pending,
        &trees.outcomes,
        &trees.events,
        &trees.state,
        &trees.deliveries,
        &trees.event_deliveries,
        &trees.due,
        &trees.lanes,
        &trees.attempts,
        &trees.dead,
    );
    all.transaction(|(pending, outcomes, events, state, deliveries, event_deliveries, due, lanes, attempts, dead)| {
        let mut changes = DueChanges::default();
        for job in jobs {
            match job {
                Encoded::Normalized(batches) => {
                    for batch in batches {
                        pending.remove(batch.inbox_key.as_slice())?;
                        outcomes.insert(batch.inbox_key.as_slice(), batch.outcome.as_slice())?;
                        for (key, value) in &batch.events {
                            events.insert(key.as_slice(), value.as_slice())?;
                        }
                        for (key, value) in &batch.state {
                            match value {
                                Some(value) => state.insert(key.as_slice(), value.as_slice())?,
                                None => state.remove(key.as_slice())?,
                            };
                        }
                        for delivery in &batch.deliveries {
                            enqueue_delivery(deliveries, event_deliveries, due, lanes, delivery, &mut changes)?;
                        }
                    }
                }
                Encoded::Attempt(encoded) => {
                    let EncodedAttempt { job: AttemptJob { previous, next, now_ms, .. }, next_value, attempt } = encoded.as_ref();
                    changes.remove(due, previous.next_attempt_at_ms, previous.id)?;
                    deliveries.insert(&next.id.to_be_bytes(), next_value.as_slice())?;
                    if let Some((key, value)) = attempt {
                        attempts.insert(key.as_slice(), value.as_slice())?;
                    }
                    match next.status {
                        DeliveryStatus::Pending => changes.insert(due, next.next_attempt_at_ms, next.id)?,
                        finished => {
                            if finished == DeliveryStatus::Dead {
                                dead.insert(&next.id.to_be_bytes(), &[])?;
                            }
                            leave_lane(deliveries, due, lanes, next, *now_ms, &mut changes)?;
                        }
                    }
                }
            }
        }
        Ok(changes)
    })
    .map_err(flatten)
}
