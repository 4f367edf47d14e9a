//! The writer: one thread that applies the hot path's index writes in order, and owns the lanes.
//!
//! Normalizers' commits, delivery attempts' records and the operator's redeliveries are jobs sent
//! here. The writer takes every job waiting, applies them one after the other with plain writes
//! (no transactions: each job orders its writes so a crash between two is repaired by a replay,
//! see the backend's header), writes the floors once for the round, and answers each job.
//!
//! Durability before effect: what a round adds to the due set reaches the in-memory mirror (and
//! so the scheduler) only after the group commit's flush covering it, so no event is delivered
//! before the commit that created it is on disk. A normalizer's job is answered as soon as it is
//! applied (its next run reads the state it wrote); attempt and redelivery jobs are answered
//! after the flush, so a delivery leaves the scheduler's in-flight set only once its outcome is
//! durable. The thread ends when the last [`SledStore`] handle is dropped.

use crossbeam_channel::{Receiver, Sender, unbounded};
use tokio::sync::oneshot;

use super::*;

/// Most jobs taken in one round.
const MAX_JOBS_PER_ROUND: usize = 512;

/// One unit of work for the writer.
pub(super) enum Job {
    /// Normalized webhooks, in order, their event bodies already in a segment.
    Normalized(Vec<PreparedBatch>),
    /// A delivery attempt's outcome.
    Attempt(Box<AttemptJob>),
    /// An operator's redelivery: dead letters revived in place (they keep the head of their
    /// lane) and new deliveries of already delivered events (they join the tail).
    Redeliver { revived: Vec<Delivery>, added: Vec<Delivery> },
    /// An operator gave up on a dead letter: it is cancelled and its lane goes on.
    Discard { discarded: Delivery, now_ms: u64 },
}

impl Job {
    /// Whether the job's answer waits for the flush (see the module header).
    fn answers_when_durable(&self) -> bool {
        !matches!(self, Job::Normalized(_))
    }
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

/// A normalized webhook with its records encoded.
pub(super) struct PreparedBatch {
    inbox_id: InboxId,
    outcome: InboxOutcome,
    events: Vec<(Vec<u8>, Vec<u8>)>,
    state: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Per state write: what it expects, and the record it names (for the conflict's message).
    expected: Vec<(Expected, String)>,
    deliveries: Vec<Delivery>,
}

/// Encode a commit's records and append its event bodies to a segment (on the caller's thread,
/// so normalizers do this work in parallel).
pub(super) fn prepare_normalized(index: &Index, batches: Vec<NormalizedBatch>) -> Result<Job, StoreError> {
    let mut prepared = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut events = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            let loc = index.noting(index.segments.append(&encode_json(event)))?;
            let record = EventRecord {
                loc,
                inbox_id: batch.inbox_id.0,
                account_id: event.integration_account_id.clone(),
                event_type: event.event_type,
                record_id: event.record_id.clone(),
                result: event.result,
                timestamp: event.timestamp.clone(),
                deliveries: batch.deliveries.iter().filter(|delivery| delivery.event_id == event.id).map(|delivery| delivery.id).collect(),
            };
            events.push((keys::event(&event.id), encode_record(&record)));
        }
        let state = batch
            .state
            .iter()
            .map(|write| (keys::state(&write.account_id, write.kind, &write.record_id), write.record.as_deref().map(encode_state)))
            .collect();
        let expected = batch
            .state
            .iter()
            .map(|write| (write.expected, format!("{}/{}/{}", write.account_id, write.kind.as_str(), write.record_id)))
            .collect();
        prepared.push(PreparedBatch {
            inbox_id: batch.inbox_id,
            outcome: batch.outcome,
            events,
            state,
            expected,
            deliveries: batch.deliveries,
        });
    }
    Ok(Job::Normalized(prepared))
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// The handle that sends jobs to the writer thread.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: Sender<(Job, Reply)>,
}

impl Writer {
    pub(super) fn start(index: Arc<Index>, commit: GroupCommit) -> std::io::Result<Self> {
        let (jobs, queue) = unbounded();
        std::thread::Builder::new().name("stayhook-writer".into()).spawn(move || run(&index, &commit, queue))?;
        Ok(Self { jobs })
    }

    /// Queue a job; the receiver answers once it is applied (a normalized run) or once it is
    /// also on disk (every other job).
    pub(super) fn submit(&self, job: Job) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        if let Err(crossbeam_channel::SendError((_, reply))) = self.jobs.send((job, reply)) {
            let _ = reply.send(Err(StoreError::Stopped));
        }
        answer
    }
}

fn run(index: &Index, commit: &GroupCommit, queue: Receiver<(Job, Reply)>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter().take(MAX_JOBS_PER_ROUND - 1));
        let mut changes = DueChanges::default();
        let mut answers = Vec::with_capacity(jobs.len());
        for (job, reply) in jobs {
            let when_durable = job.answers_when_durable();
            let outcome = index.noting(apply(index, job, &mut changes));
            answers.push((reply, when_durable, outcome));
        }
        if let Err(error) = index.noting(index.write_floors()) {
            for (_, _, outcome) in &mut answers {
                if outcome.is_ok() {
                    *outcome = Err(error.clone());
                }
            }
        }
        answer(index, commit, changes, answers);
    }
}

/// Answer a round's jobs: a normalizer's at once, the others after the flush that makes them
/// durable, which is also when the round's due-set changes reach the mirror and the scheduler.
fn answer(index: &Index, commit: &GroupCommit, changes: DueChanges, answers: Vec<(Reply, bool, Result<(), StoreError>)>) {
    let (now, after_flush): (Vec<_>, Vec<_>) =
        answers.into_iter().partition(|(_, when_durable, outcome)| !when_durable || outcome.is_err());
    // What waits for the flush is queued before the immediate answers go out, so a normalizer
    // that awaits durability after its answer also sees its deliveries due.
    if !changes.is_empty() || !after_flush.is_empty() {
        let mirror = index.due.clone();
        let notify = index.due_changed.clone();
        commit.after_flush(move |flushed| {
            if flushed.is_ok() && !changes.is_empty() {
                mirror.apply(&changes);
                notify.notify_one();
            }
            for (reply, _, _) in after_flush {
                let _ = reply.send(flushed.clone());
            }
        });
    }
    for (reply, _, outcome) in now {
        let _ = reply.send(outcome);
    }
}

fn apply(index: &Index, job: Job, changes: &mut DueChanges) -> Result<(), StoreError> {
    match job {
        Job::Normalized(batches) => {
            check_expected(index, &batches)?;
            for batch in batches {
                apply_normalized(index, batch, changes)?;
            }
            Ok(())
        }
        Job::Attempt(job) => apply_attempt(index, *job, changes),
        Job::Redeliver { revived, added } => apply_redeliver(index, revived, added, changes),
        Job::Discard { discarded, now_ms } => {
            index.dead.remove(discarded.id.to_be_bytes())?;
            let mut record = index.delivery_record(discarded.id)?.unwrap_or_else(|| DeliveryRecord::new(discarded.clone()));
            record.delivery = discarded.clone();
            index.put_delivery_record(&record)?;
            index.open_state().unsettled.remove(&discarded.id);
            leave_lane(index, &discarded, now_ms, changes)
        }
    }
}

/// Check a commit's state writes against the state before any of them is applied (the writer
/// thread is the only writer of state while the daemon runs, so nothing changes in between).
fn check_expected(index: &Index, batches: &[PreparedBatch]) -> Result<(), StoreError> {
    if index.test_faults.conflict_pending() {
        write_as_another_writer(index, batches)?;
    }
    // Records written earlier in the commit: whether each is there after that write.
    let mut written: HashMap<&[u8], bool> = HashMap::new();
    for batch in batches {
        for ((key, value), (expected, record)) in batch.state.iter().zip(&batch.expected) {
            let holds = match (expected, written.get(key.as_slice())) {
                (Expected::Any, _) => true,
                (Expected::Absent, Some(present)) => !present,
                (Expected::At(_), Some(_)) => false,
                (Expected::Absent, None) => !index.state.contains_key(key)?,
                (Expected::At(revision), None) => index.state.get(key)?.is_some_and(|stored| state_revision(&stored) == *revision),
            };
            if !holds {
                return Err(StoreError::Conflict { record: record.clone() });
            }
            written.insert(key, value.is_some());
        }
    }
    Ok(())
}

/// `STAYHOOK_TEST_CONFLICT_ONCE`: write the first checked record of the commit as another writer
/// would, once (a version of what this commit writes with `arrivalDate` 2000-01-01).
fn write_as_another_writer(index: &Index, batches: &[PreparedBatch]) -> Result<(), StoreError> {
    let checked = batches
        .iter()
        .flat_map(|batch| batch.state.iter().zip(&batch.expected))
        .find(|((_, value), (expected, _))| value.is_some() && *expected != Expected::Any);
    let Some(((key, Some(value)), (_, record))) = checked else { return Ok(()) };
    let theirs = index.test_faults.another_writer(&record.to_string(), &decode_state(value)?);
    index.state.insert(key.as_slice(), encode_state(&theirs))?;
    Ok(())
}

/// Events, state, then the inbox entry's fate with the new deliveries in it (they get records of
/// their own when they change): the entry leaves pending last.
fn apply_normalized(index: &Index, batch: PreparedBatch, changes: &mut DueChanges) -> Result<(), StoreError> {
    for (key, value) in batch.events {
        index.events.insert(key, value)?;
    }
    for (key, value) in batch.state {
        match value {
            Some(value) => index.state.insert(key, value)?,
            None => index.state.remove(key)?,
        };
    }
    if index.test_faults.abort_after_state {
        let _ = index.segments.sync();
        let _ = index.db.flush();
        index.test_faults.abort_after_state(batch.inbox_id);
    }
    let Some(mut record) = index.inbox_record(batch.inbox_id)? else {
        return Err(StoreError::Backend(format!("inbox entry {} does not exist", batch.inbox_id)));
    };
    if batch.deliveries.is_empty() {
        record.fate = Fate::Finished(batch.outcome);
        index.inbox.insert(batch.inbox_id.key(), encode_record(&record))?;
        index.open_state().pending.remove(&batch.inbox_id.0);
        return Ok(());
    }
    record.fate = Fate::Normalized { outcome: batch.outcome, deliveries: batch.deliveries };
    index.inbox.insert(batch.inbox_id.key(), encode_record(&record))?;
    let Fate::Normalized { deliveries, .. } = record.fate else { unreachable!("set above") };
    {
        let mut unwritten = index.unwritten();
        for delivery in &deliveries {
            unwritten.add(batch.inbox_id.0, delivery.id);
        }
    }
    index.open_state().pending.remove(&batch.inbox_id.0);
    for delivery in &deliveries {
        join_lane(index, delivery, changes);
    }
    Ok(())
}

fn apply_attempt(index: &Index, job: AttemptJob, changes: &mut DueChanges) -> Result<(), StoreError> {
    let AttemptJob { previous, next, attempt, now_ms, hold_lane } = job;
    changes.removed.push((previous.next_attempt_at_ms, previous.id));
    // A delivery never attempted has the record it was enqueued with (no attempts, ordered by its
    // id: only a revived dead letter, attempted before, is reordered), so its first attempt, the
    // hot path's, writes without reading it back.
    let stored = if previous.attempts == 0 { None } else { index.delivery_record(next.id)? };
    let mut record = stored.unwrap_or_else(|| DeliveryRecord::new(next.clone()));
    record.delivery = next.clone();
    if let Some(attempt) = attempt {
        record.attempts.retain(|known| known.attempt != attempt.attempt);
        let at = record.attempts.partition_point(|known| known.attempt < attempt.attempt);
        record.attempts.insert(at, attempt);
    }
    index.put_delivery_record(&record)?;
    match next.status {
        DeliveryStatus::Pending => changes.added.push((next.next_attempt_at_ms, next.id)),
        DeliveryStatus::Dead => {
            index.dead.insert(next.id.to_be_bytes(), &layout::dead_value(hold_lane))?;
            index.open_state().unsettled.remove(&next.id);
            // Held: the dead letter stays the head of its lane, out of the due set, until it is
            // redelivered or discarded.
            if !hold_lane {
                leave_lane(index, &next, now_ms, changes)?;
            }
        }
        DeliveryStatus::Delivered | DeliveryStatus::Cancelled => {
            index.open_state().unsettled.remove(&next.id);
            leave_lane(index, &next, now_ms, changes)?;
        }
    }
    Ok(())
}

fn apply_redeliver(index: &Index, revived: Vec<Delivery>, added: Vec<Delivery>, changes: &mut DueChanges) -> Result<(), StoreError> {
    for delivery in revived {
        index.lower_floor(layout::DELIVERY_FLOOR_KEY, delivery.id)?;
        index.open_state().unsettled.insert(delivery.id);
        let mut record = index.delivery_record(delivery.id)?.unwrap_or_else(|| DeliveryRecord::new(delivery.clone()));
        record.delivery = delivery.clone();
        let head = index.lanes().get(&lane_key(&delivery)).and_then(|queue| queue.front().copied());
        if head == Some(delivery.id) {
            index.put_delivery_record(&record)?;
            changes.added.push((delivery.next_attempt_at_ms, delivery.id));
        } else {
            // A dead letter that released its lane joins the lane's tail, after what is there.
            record.seq = {
                let mut open = index.open_state();
                index.next_id(&mut open)?
            };
            enqueue(index, record, changes)?;
        }
        index.dead.remove(delivery.id.to_be_bytes())?;
    }
    for delivery in added {
        if let Some(mut event) = index.event_record(&delivery.event_id)? {
            event.deliveries.push(delivery.id);
            index.events.insert(keys::event(&delivery.event_id), encode_record(&event))?;
        }
        enqueue(index, DeliveryRecord::new(delivery), changes)?;
    }
    Ok(())
}

fn lane_key(delivery: &Delivery) -> (String, String) {
    (delivery.subscription_id.clone(), delivery.lane.clone())
}

/// Write a delivery and put it at its lane's tail.
fn enqueue(index: &Index, record: DeliveryRecord, changes: &mut DueChanges) -> Result<(), StoreError> {
    index.put_delivery_record(&record)?;
    join_lane(index, &record.delivery, changes);
    Ok(())
}

/// Put a delivery at its lane's tail; the head of an empty lane becomes due.
fn join_lane(index: &Index, delivery: &Delivery, changes: &mut DueChanges) {
    let mut lanes = index.lanes();
    let queue = lanes.entry(lane_key(delivery)).or_default();
    if queue.is_empty() {
        changes.added.push((delivery.next_attempt_at_ms, delivery.id));
    }
    queue.push_back(delivery.id);
}

/// Take a finished delivery out of its lane; the next one (if any) becomes due now.
fn leave_lane(index: &Index, finished: &Delivery, now_ms: u64, changes: &mut DueChanges) -> Result<(), StoreError> {
    let next_id = {
        let mut lanes = index.lanes();
        let key = lane_key(finished);
        let Some(queue) = lanes.get_mut(&key) else { return Ok(()) };
        let was_head = queue.front() == Some(&finished.id);
        queue.retain(|id| *id != finished.id);
        match queue.front() {
            None => {
                lanes.remove(&key);
                return Ok(());
            }
            Some(&next_id) if was_head => next_id,
            Some(_) => return Ok(()),
        }
    };
    if let Some(mut record) = index.delivery_record(next_id)? {
        if record.delivery.next_attempt_at_ms > now_ms {
            record.delivery.next_attempt_at_ms = now_ms;
            index.put_delivery_record(&record)?;
        }
        changes.added.push((record.delivery.next_attempt_at_ms, next_id));
    }
    Ok(())
}
