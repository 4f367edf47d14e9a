//! The writer: one thread that merges the hot path's multi-tree writes into shared transactions.
//!
//! sled 0.34 runs every transaction (and every atomic batch) under a process-wide write lock, and
//! `Db::flush` holds the read side of that lock until its fsync is done. With the listener's
//! group commit flushing continuously under load, each transaction waited for a whole fsync, and
//! so did every plain read or write queued behind it: profiled, the daemon sat idle at 1,000
//! events/s with its threads parked on that lock (BENCHMARKS.md, "What the profile showed").
//!
//! So the normalizers' commits, the delivery attempts' records and the operator's redeliveries
//! are not transactions of their own: they are jobs sent here. The writer takes every job
//! waiting, applies them all in one transaction (a job sees the writes of the jobs before it, as
//! sled transactions read their own writes), and answers each. One fsync-wait then covers
//! hundreds of jobs. If the merged transaction fails for one job's sake, each job is applied
//! alone, so one bad job fails only itself.
//!
//! Durability before effect: what a transaction adds to the due index reaches the in-memory
//! mirror (and so the scheduler) only after the group commit's flush covering it, so no event is
//! delivered before the commit that created it is on disk, and a crash can never make a receiver
//! hold an event the store forgot. A normalizer's job is answered as soon as it is committed (its
//! next run reads the state it wrote); attempt and redelivery jobs are answered after the flush,
//! so a delivery leaves the scheduler's in-flight set only once its outcome is durable. The thread
//! ends when the last [`Store`] handle is dropped.

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
    /// An operator's redelivery: dead letters revived in place (they keep the head of their
    /// lane) and new deliveries of already delivered events (they join the tail).
    Redeliver { revived: Vec<Delivery>, added: Vec<Delivery> },
    /// An operator gave up on a dead letter: it is cancelled and its lane goes on.
    Discard { discarded: Delivery, now_ms: u64 },
}

/// A delivery attempt's outcome: the delivery before and after, and the attempt's log entry.
pub(super) struct AttemptJob {
    pub(super) previous: Delivery,
    pub(super) next: Delivery,
    pub(super) attempt: Option<Attempt>,
    pub(super) now_ms: u64,
    /// Keep a dead-lettered delivery at the head of its lane (see `dead_letters_hold_lane`).
    pub(super) hold_lane: bool,
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// The handle that sends jobs to the writer thread.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: Sender<(Job, Reply)>,
}

/// What the writer thread owns besides its trees.
pub(super) struct Publish {
    pub(super) mirror: DueMirror,
    pub(super) commit: GroupCommit,
    pub(super) fault: Fault,
    /// Notified when deliveries became due (after the flush that made them durable).
    pub(super) due_changed: Arc<tokio::sync::Notify>,
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
    pub(super) fn start(trees: Trees, publish: Publish) -> std::io::Result<Self> {
        let (jobs, queue) = unbounded();
        std::thread::Builder::new().name("stayhook-writer".into()).spawn(move || run(&trees, &publish, queue))?;
        Ok(Self { jobs })
    }

    /// Queue a job; the receiver answers once it is committed (a normalized run) or once it is
    /// also on disk (every other job).
    pub(super) fn submit(&self, job: Job) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(crossbeam_channel::SendError((_, reply))) = self.jobs.send((job, reply)) {
            let _ = reply.send(Err(StoreError::Stopped));
        }
        answer
    }
}

/// A job with its values encoded, ready to be applied (encoding happens outside the
/// transaction, which sled may run more than once).
enum Encoded {
    Normalized(Vec<EncodedBatch>),
    Attempt(Box<EncodedAttempt>),
    Redeliver { revived: Vec<(Delivery, Vec<u8>)>, added: Vec<Delivery> },
    Discard { discarded: Delivery, value: Vec<u8>, now_ms: u64 },
}

impl Encoded {
    /// Whether the job's answer waits for the flush (see the module header).
    fn answers_when_durable(&self) -> bool {
        !matches!(self, Encoded::Normalized(_))
    }
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
        Job::Redeliver { revived, added } => Encoded::Redeliver {
            revived: revived
                .into_iter()
                .map(|delivery| {
                    let value = encode_json(&delivery);
                    (delivery, value)
                })
                .collect(),
            added,
        },
        Job::Discard { discarded, now_ms } => {
            let value = encode_json(&discarded);
            Encoded::Discard { discarded, value, now_ms }
        }
    }
}

fn run(trees: &Trees, publish: &Publish, queue: Receiver<(Job, Reply)>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter().take(MAX_JOBS_PER_TRANSACTION - 1));
        let (encoded, replies): (Vec<Encoded>, Vec<Reply>) = jobs.into_iter().map(|(job, reply)| (encode(job), reply)).unzip();
        match apply(trees, &encoded) {
            Err(error) if encoded.len() > 1 && !error.is_unavailable() => {
                tracing::warn!(%error, n_jobs = encoded.len(), "a merged transaction failed; applying its jobs one by one");
                for (job, reply) in encoded.iter().zip(replies) {
                    let outcome = apply(trees, std::slice::from_ref(job));
                    answer(publish, outcome, vec![(reply, job.answers_when_durable())]);
                }
            }
            outcome => {
                let replies =
                    encoded.iter().map(Encoded::answers_when_durable).zip(replies).map(|(durable, reply)| (reply, durable)).collect();
                answer(publish, outcome, replies);
            }
        }
    }
}

/// Answer the jobs of one transaction: at once, or after the flush that makes it durable, which
/// is also when its due-index changes reach the mirror and the scheduler.
fn answer(publish: &Publish, outcome: Result<DueChanges, StoreError>, replies: Vec<(Reply, bool)>) {
    let changes = match outcome {
        Ok(changes) => changes,
        Err(error) => {
            publish.fault.note(&error);
            for (reply, _) in replies {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let (now, after_flush): (Vec<_>, Vec<_>) = replies.into_iter().partition(|(_, when_durable)| !when_durable);
    // What waits for the flush is queued before the immediate answers go out, so a normalizer
    // that awaits durability after its answer also sees its deliveries due.
    if !changes.is_empty() || !after_flush.is_empty() {
        let mirror = publish.mirror.clone();
        let due_changed = publish.due_changed.clone();
        publish.commit.after_flush(move |flushed| {
            if flushed.is_ok() && !changes.is_empty() {
                mirror.apply(&changes);
                due_changed.notify_one();
            }
            for (reply, _) in after_flush {
                let _ = reply.send(flushed.clone());
            }
        });
    }
    for (reply, _) in now {
        let _ = reply.send(Ok(()));
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
                    let EncodedAttempt { job: AttemptJob { previous, next, now_ms, hold_lane, .. }, next_value, attempt } =
                        encoded.as_ref();
                    changes.remove(due, previous.next_attempt_at_ms, previous.id)?;
                    deliveries.insert(&next.id.to_be_bytes(), next_value.as_slice())?;
                    if let Some((key, value)) = attempt {
                        attempts.insert(key.as_slice(), value.as_slice())?;
                    }
                    match next.status {
                        DeliveryStatus::Pending => changes.insert(due, next.next_attempt_at_ms, next.id)?,
                        DeliveryStatus::Dead => {
                            dead.insert(&next.id.to_be_bytes(), &[])?;
                            // Held: the dead letter stays the head of its lane, out of `due`,
                            // until it is redelivered or discarded.
                            if !hold_lane {
                                leave_lane(deliveries, due, lanes, next, *now_ms, &mut changes)?;
                            }
                        }
                        DeliveryStatus::Delivered | DeliveryStatus::Cancelled => {
                            leave_lane(deliveries, due, lanes, next, *now_ms, &mut changes)?;
                        }
                    }
                }
                Encoded::Redeliver { revived, added } => {
                    for (delivery, value) in revived {
                        dead.remove(&delivery.id.to_be_bytes())?;
                        let lane_key = keys::lane(&delivery.subscription_id, &delivery.lane);
                        let head = lanes.get(&lane_key)?.and_then(|value| keys::decode_ids(&value).first().copied());
                        if head == Some(delivery.id) {
                            deliveries.insert(&delivery.id.to_be_bytes(), value.as_slice())?;
                            changes.insert(due, delivery.next_attempt_at_ms, delivery.id)?;
                        } else {
                            // A dead letter that released its lane (written by an older release,
                            // or with `dead_letters_hold_lane` off) joins the lane's tail.
                            enqueue_delivery(deliveries, event_deliveries, due, lanes, delivery, &mut changes)?;
                        }
                    }
                    for delivery in added {
                        enqueue_delivery(deliveries, event_deliveries, due, lanes, delivery, &mut changes)?;
                    }
                }
                Encoded::Discard { discarded, value, now_ms } => {
                    dead.remove(&discarded.id.to_be_bytes())?;
                    deliveries.insert(&discarded.id.to_be_bytes(), value.as_slice())?;
                    leave_lane(deliveries, due, lanes, discarded, *now_ms, &mut changes)?;
                }
            }
        }
        Ok(changes)
    })
    .map_err(flatten)
}
