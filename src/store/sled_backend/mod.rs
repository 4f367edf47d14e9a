//! The embedded backend: sled trees, a group commit, and one writer thread for the hot path.
//!
//! Tree names and key layouts live here and nowhere else. A raw webhook is two plain writes
//! (entry, pending mark) made durable by the group commit the listener awaits; everything
//! downstream of the inbox is written by the writer thread in transactions that also move the
//! entry out of `pending`, so a crash replays normalization from `pending` and deliveries from
//! `due`.

mod commit;
mod keys;
mod retention;
mod writer;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use super::*;

use commit::GroupCommit;
use writer::{AttemptJob, Job, Writer};

/// Tree names: one place, so key layouts can be found from them.
mod tree {
    pub const ACCOUNTS: &str = "accounts";
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    pub const INBOX: &str = "inbox";
    pub const PENDING: &str = "pending";
    pub const OUTCOMES: &str = "outcomes";
    pub const DEDUP: &str = "dedup";
    pub const EVENTS: &str = "events";
    pub const EVENT_DELIVERIES: &str = "event_deliveries";
    pub const STATE: &str = "state";
    pub const DELIVERIES: &str = "deliveries";
    pub const DUE: &str = "due";
    pub const LANES: &str = "lanes";
    pub const ATTEMPTS: &str = "attempts";
    pub const DEAD: &str = "dead";
    pub const META: &str = "meta";
}

/// The sled backend.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    accounts: Tree,
    subscriptions: Tree,
    inbox: Tree,
    pending: Tree,
    outcomes: Tree,
    dedup: Tree,
    events: Tree,
    event_deliveries: Tree,
    state: Tree,
    deliveries: Tree,
    lanes: Tree,
    attempts: Tree,
    dead: Tree,
    meta: Tree,
    commit: GroupCommit,
    due_mirror: DueMirror,
    due_changed: Arc<tokio::sync::Notify>,
    fault: Fault,
    writer: Writer,
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(_) | sled::Error::Corruption { .. } => StoreError::Unavailable(error.to_string()),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// The `due` tree's keys, mirrored in memory: `(due_ms, delivery_id)`.
///
/// The scheduler asks "what is due now?" after every finished attempt. Answering from sled meant
/// walking the tree past every delivery still in flight (they stay in `due` until recorded) and
/// cost more than the delivery itself at a few hundred in flight; the mirror answers in
/// microseconds. sled stays the truth: the mirror is loaded from it at open and updated after
/// every transaction that changes it commits, with the keys that transaction's last (successful)
/// run wrote. A key enters the mirror before any scheduler can see it and leaves it only through
/// the attempt the scheduler started, so applying two transactions' changes out of order never
/// loses one.
#[derive(Clone, Default)]
struct DueMirror(Arc<Mutex<BTreeSet<(u64, u64)>>>);

/// Keys a transaction added to and removed from `due`.
#[derive(Default)]
struct DueChanges {
    added: Vec<(u64, u64)>,
    removed: Vec<(u64, u64)>,
}

impl DueMirror {
    fn load(due: &Tree) -> Result<Self, StoreError> {
        let mut keys = BTreeSet::new();
        for key in due.iter().keys() {
            if let Some(entry) = keys::read_due(&key?) {
                keys.insert(entry);
            }
        }
        Ok(Self(Arc::new(Mutex::new(keys))))
    }

    fn apply(&self, changes: &DueChanges) {
        let mut keys = self.0.lock().expect("due mirror lock poisoned");
        for entry in &changes.removed {
            keys.remove(entry);
        }
        keys.extend(changes.added.iter().copied());
    }
}

impl DueChanges {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    fn insert(&mut self, due: &TransactionalTree, due_ms: u64, delivery_id: u64) -> TxResult<()> {
        due.insert(keys::due(due_ms, delivery_id), &[])?;
        self.added.push((due_ms, delivery_id));
        Ok(())
    }

    fn remove(&mut self, due: &TransactionalTree, due_ms: u64, delivery_id: u64) -> TxResult<()> {
        due.remove(keys::due(due_ms, delivery_id))?;
        self.removed.push((due_ms, delivery_id));
        Ok(())
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl SledStore {
    /// Open (or create) the store in `dir`, with at most `cache_bytes` of sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(cache_bytes).open()?;
        let fault = Fault::default();
        let commit = GroupCommit::start(db.clone(), fault.clone()).map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let trees = writer::Trees {
            pending: db.open_tree(tree::PENDING)?,
            outcomes: db.open_tree(tree::OUTCOMES)?,
            events: db.open_tree(tree::EVENTS)?,
            state: db.open_tree(tree::STATE)?,
            deliveries: db.open_tree(tree::DELIVERIES)?,
            event_deliveries: db.open_tree(tree::EVENT_DELIVERIES)?,
            due: db.open_tree(tree::DUE)?,
            lanes: db.open_tree(tree::LANES)?,
            attempts: db.open_tree(tree::ATTEMPTS)?,
            dead: db.open_tree(tree::DEAD)?,
        };
        let due_mirror = DueMirror::load(&trees.due)?;
        let due_changed = Arc::new(tokio::sync::Notify::new());
        let publish =
            writer::Publish { mirror: due_mirror.clone(), commit: commit.clone(), fault: fault.clone(), due_changed: due_changed.clone() };
        let writer = Writer::start(trees.clone(), publish).map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let writer::Trees { pending, outcomes, events, state, deliveries, event_deliveries, due: _, lanes, attempts, dead } = trees;
        Ok(Self {
            accounts: db.open_tree(tree::ACCOUNTS)?,
            subscriptions: db.open_tree(tree::SUBSCRIPTIONS)?,
            inbox: db.open_tree(tree::INBOX)?,
            dedup: db.open_tree(tree::DEDUP)?,
            meta: db.open_tree(tree::META)?,
            pending,
            outcomes,
            events,
            event_deliveries,
            state,
            deliveries,
            lanes,
            attempts,
            dead,
            db,
            commit,
            due_mirror,
            due_changed,
            fault,
            writer,
        })
    }

    /// Pass `outcome` through, recording an I/O error as the store's fault.
    fn noting<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &outcome {
            self.fault.note(error);
        }
        outcome
    }
}

impl Backend for SledStore {
    fn fault(&self) -> &Fault {
        &self.fault
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.noting(self.db.flush().map(|_| ()).map_err(StoreError::from))
    }
}

impl Catalog for SledStore {
    // ---- meta --------------------------------------------------------------------------------

    /// A daemon-wide value (the generated admin token).
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.meta.get(key)?.map(|value| String::from_utf8_lossy(&value).into_owned()))
    }

    /// Set a daemon-wide value.
    fn insert_meta<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.noting(self.meta.insert(key, value.as_bytes()).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    /// Remove a daemon-wide value.
    fn remove_meta<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.noting(self.meta.remove(key).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    // ---- accounts and subscriptions ----------------------------------------------------------

    /// Store a new account; refuses an existing id.
    fn insert_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, Inserted> {
        Box::pin(async move {
            let value = encode_json(account);
            let swapped = self.noting(
                self.accounts.compare_and_swap(account.id.as_bytes(), None as Option<&[u8]>, Some(value)).map_err(StoreError::from),
            )?;
            self.commit.durable().await?;
            Ok(if swapped.is_ok() { Inserted::Created } else { Inserted::AlreadyExists })
        })
    }

    /// Replace an account.
    fn put_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.noting(self.accounts.insert(account.id.as_bytes(), encode_json(account)).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    /// The account with this id.
    fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError> {
        self.accounts.get(account_id)?.map(|value| decode_json(tree::ACCOUNTS, &value)).transpose()
    }

    /// Every account, by id.
    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.accounts.iter().values().map(|value| decode_json(tree::ACCOUNTS, &value?)).collect()
    }

    /// Remove an account and its subscriptions. Returns whether it existed.
    fn remove_account<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let existed = self.noting((|| {
                let existed = self.accounts.remove(account_id)?.is_some();
                for key in self.subscriptions.scan_prefix(keys::account_prefix(account_id)).keys() {
                    self.subscriptions.remove(key?)?;
                }
                Ok(existed)
            })())?;
            self.commit.durable().await?;
            Ok(existed)
        })
    }

    /// Store or replace a subscription.
    fn put_subscription<'a>(&'a self, subscription: &'a Subscription) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = keys::subscription(&subscription.account_id, &subscription.id);
            self.noting(self.subscriptions.insert(key, encode_json(subscription)).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    /// One subscription of an account.
    fn get_subscription(&self, account_id: &str, subscription_id: &str) -> Result<Option<Subscription>, StoreError> {
        let key = keys::subscription(account_id, subscription_id);
        self.subscriptions.get(key)?.map(|value| decode_json(tree::SUBSCRIPTIONS, &value)).transpose()
    }

    /// An account's subscriptions, by id.
    fn list_subscriptions(&self, account_id: &str) -> Result<Vec<Subscription>, StoreError> {
        self.subscriptions
            .scan_prefix(keys::account_prefix(account_id))
            .values()
            .map(|value| decode_json(tree::SUBSCRIPTIONS, &value?))
            .collect()
    }

    /// Remove a subscription. Returns whether it existed.
    fn remove_subscription<'a>(&'a self, account_id: &'a str, subscription_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let removed = self.subscriptions.remove(keys::subscription(account_id, subscription_id)).map_err(StoreError::from);
            let existed = self.noting(removed)?.is_some();
            self.commit.durable().await?;
            Ok(existed)
        })
    }
}

impl Inbox for SledStore {
    // ---- inbox -------------------------------------------------------------------------------

    /// Whether the same body reached the same account within `window_ms`, without recording.
    fn is_duplicate(&self, account_id: &str, body_digest: &[u8], now_ms: u64, window_ms: u64) -> Result<bool, StoreError> {
        let key = keys::dedup(account_id, body_digest);
        Ok(self.dedup.get(key)?.is_some_and(|seen| keys::read_u64(&seen).is_some_and(|seen_ms| now_ms.saturating_sub(seen_ms) < window_ms)))
    }

    /// Remember a body digest for duplicate suppression. Written before the flush that makes the
    /// entry durable, and only ever after the entry itself, so a digest that survives a crash
    /// always has its entry (sled recovers a prefix of the writes).
    fn remember_digest(&self, account_id: &str, body_digest: &[u8], now_ms: u64) -> Result<(), StoreError> {
        self.noting(self.dedup.insert(keys::dedup(account_id, body_digest), &now_ms.to_be_bytes()).map_err(StoreError::from))?;
        Ok(())
    }

    /// Forget a digest whose entry could not be made durable, so the PMS's retry is stored anew.
    fn forget_digest(&self, account_id: &str, body_digest: &[u8]) -> Result<(), StoreError> {
        self.dedup.remove(keys::dedup(account_id, body_digest))?;
        Ok(())
    }

    /// Drop digests older than `window_ms`; returns how many.
    fn expire_digests_blocking(&self, now_ms: u64, window_ms: u64) -> Result<usize, StoreError> {
        let mut n_removed = 0;
        for entry in self.dedup.iter() {
            let (key, seen) = entry?;
            if keys::read_u64(&seen).is_none_or(|seen_ms| now_ms.saturating_sub(seen_ms) >= window_ms) {
                self.dedup.remove(key)?;
                n_removed += 1;
            }
        }
        Ok(n_removed)
    }

    /// Append a raw event to the inbox and mark it pending. Not yet durable: await
    /// [`Inbox::durable`] before acknowledging it.
    ///
    /// Two plain writes, not a transaction (a transaction would wait for the flush in progress,
    /// see [`writer`]): the entry first, then its pending mark. A crash between them, before the
    /// flush the listener waits for, leaves an entry that was never acknowledged and is never
    /// normalized; the PMS sends it again.
    fn append_inbox(&self, entry: &InboxEntry) -> Result<InboxId, StoreError> {
        let value = postcard::to_stdvec(entry).map_err(|error| StoreError::Codec { tree: tree::INBOX, message: error.to_string() })?;
        self.noting((|| {
            let inbox_id = InboxId(self.db.generate_id()?);
            let key = inbox_id.key();
            self.inbox.insert(key.as_slice(), value)?;
            self.pending.insert(key.as_slice(), keys::generation(0))?;
            Ok(inbox_id)
        })())
    }

    /// A raw event.
    fn get_inbox(&self, inbox_id: InboxId) -> Result<Option<InboxEntry>, StoreError> {
        self.inbox
            .get(inbox_id.key())?
            .map(|value| postcard::from_bytes(&value).map_err(|error| StoreError::Codec { tree: tree::INBOX, message: error.to_string() }))
            .transpose()
    }

    /// Inbox entries of one account received in `[from_ms, to_ms)`, oldest first.
    ///
    /// Scans the inbox (keys are in arrival order); renormalization is an operator's action,
    /// rare next to ingest, so it carries no index of its own.
    fn inbox_of_account(&self, account_id: &str, from_ms: u64, to_ms: u64) -> Result<Vec<InboxId>, StoreError> {
        let mut found = Vec::new();
        for entry in self.inbox.iter() {
            let (key, value) = entry?;
            let entry: InboxEntry =
                postcard::from_bytes(&value).map_err(|error| StoreError::Codec { tree: tree::INBOX, message: error.to_string() })?;
            if entry.account_id == account_id && entry.received_at_ms >= from_ms && entry.received_at_ms < to_ms {
                found.push(InboxId::from_key(&key).unwrap_or_default());
            }
        }
        Ok(found)
    }

    /// Mark a finished inbox entry pending again so it is normalized anew, as the next
    /// generation (its events get new ids). `None` when it is already pending (in flight: it will
    /// be normalized once, by the plugin loaded then); otherwise the generation to run.
    fn requeue_inbox(&self, inbox_id: InboxId) -> Result<Option<u32>, StoreError> {
        let key = inbox_id.key();
        let generation = self.inbox_outcome(inbox_id)?.map_or(0, |outcome| outcome.generation.saturating_add(1));
        (&self.pending,)
            .transaction(|(pending,)| {
                if pending.get(key.as_slice())?.is_some() {
                    return Ok(None);
                }
                pending.insert(key.as_slice(), keys::generation(generation))?;
                Ok(Some(generation))
            })
            .map_err(flatten)
    }

    /// Inbox entries not yet normalized, oldest first, with the generation each is to run as
    /// (recovery after a restart).
    fn pending_inbox(&self) -> Result<Vec<(InboxId, u32)>, StoreError> {
        self.pending
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((InboxId::from_key(&key).unwrap_or_default(), keys::read_generation(&value)))
            })
            .collect()
    }

    /// What became of an inbox entry: pending, or its outcome.
    fn inbox_outcome(&self, inbox_id: InboxId) -> Result<Option<InboxOutcome>, StoreError> {
        self.outcomes.get(inbox_id.key())?.map(|value| decode_json(tree::OUTCOMES, &value)).transpose()
    }

    /// Outcomes with this status, newest first, at most `limit`.
    fn list_outcomes(&self, status: InboxStatus, limit: usize) -> Result<Vec<(InboxId, InboxOutcome)>, StoreError> {
        let mut found = Vec::new();
        for entry in self.outcomes.iter().rev() {
            let (key, value) = entry?;
            let outcome: InboxOutcome = decode_json(tree::OUTCOMES, &value)?;
            if outcome.status == status {
                found.push((InboxId::from_key(&key).unwrap_or_default(), outcome));
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn durable(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.commit.durable())
    }

    /// Mark an inbox entry as skipped or failed (no events), taking it out of `pending`.
    fn finish_inbox(&self, inbox_id: InboxId, outcome: &InboxOutcome) -> Result<(), StoreError> {
        let key = inbox_id.key();
        let value = encode_json(outcome);
        (&self.pending, &self.outcomes)
            .transaction(|(pending, outcomes)| {
                pending.remove(key.as_slice())?;
                outcomes.insert(key.as_slice(), value.as_slice())?;
                Ok(())
            })
            .map_err(flatten)
    }
}

impl Ledger for SledStore {
    // ---- normalization -----------------------------------------------------------------------

    /// The stored state of one record.
    fn get_state(&self, account_id: &str, kind: RecordKind, record_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.state.get(keys::state(account_id, kind, record_id))?.map(|value| decode_json(tree::STATE, &value)).transpose()
    }

    /// Write everything some normalizations produced and take their inbox entries out of
    /// `pending`, atomically, in order. Deliveries join their lane; the first of a lane becomes
    /// due now. Blocks until committed (call it from a normalizer thread, not the runtime).
    fn commit_normalized_blocking(&self, batches: Vec<NormalizedBatch>) -> Result<(), StoreError> {
        self.writer.submit(Job::Normalized(batches)).blocking_recv().unwrap_or(Err(StoreError::Stopped))
    }

    // ---- events ------------------------------------------------------------------------------

    /// One event of the log.
    fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.events.get(keys::event(event_id))?.map(|value| decode_json(tree::EVENTS, &value)).transpose()
    }

    /// One event of the log as its stored JSON bytes (deliveries borrow from them, see
    /// [`crate::deliver::envelope::EventView`]).
    fn get_event_bytes(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.events.get(keys::event(event_id))?.map(|value| value.to_vec()))
    }

    /// Events in log order (oldest first), filtered.
    fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let start = match &filter.after {
            Some(after) => {
                let mut key = keys::event(after);
                key.push(0);
                key
            }
            None => Vec::new(),
        };
        let mut found = Vec::new();
        for value in self.events.range(start..).values() {
            let event: StoredEvent = decode_json(tree::EVENTS, &value?)?;
            if !filter.matches(&event) {
                continue;
            }
            found.push(event);
            if found.len() >= filter.limit {
                break;
            }
        }
        Ok(found)
    }
}

impl DeliveryQueue for SledStore {
    // ---- deliveries --------------------------------------------------------------------------

    /// Deliveries due at or before `now_ms` for which `wanted` holds, earliest first, at most
    /// `limit`; and when the earliest delivery due after `now_ms` is due (Unix ms).
    fn due_deliveries(&self, now_ms: u64, limit: usize, wanted: &mut dyn FnMut(u64) -> bool) -> (Vec<u64>, Option<u64>) {
        let keys = self.due_mirror.0.lock().expect("due mirror lock poisoned");
        let found = keys.range(..=(now_ms, u64::MAX)).map(|&(_, delivery_id)| delivery_id).filter(|&id| wanted(id)).take(limit).collect();
        let next_ms = keys.range((now_ms.saturating_add(1), 0)..).next().map(|&(due_ms, _)| due_ms);
        (found, next_ms)
    }

    /// A delivery.
    fn get_delivery(&self, delivery_id: u64) -> Result<Option<Delivery>, StoreError> {
        self.deliveries.get(delivery_id.to_be_bytes())?.map(|value| decode_json(tree::DELIVERIES, &value)).transpose()
    }

    /// Every delivery of an event.
    fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let mut found = Vec::new();
        for key in self.event_deliveries.scan_prefix(keys::event(event_id)).keys() {
            let key = key?;
            let Some(delivery_id) = keys::read_u64(&key[key.len() - 8..]) else { continue };
            if let Some(delivery) = self.get_delivery(delivery_id)? {
                found.push(delivery);
            }
        }
        Ok(found)
    }

    /// Record an attempt and move the delivery on: `next` is the updated delivery (status and
    /// next attempt time). A delivered or cancelled delivery leaves its lane and the next
    /// delivery of the lane becomes due at `now_ms`; a dead one stays the head of its lane when
    /// `hold_lane` is set (until redelivered or discarded) and leaves it otherwise. Merged with
    /// other writes by the store's writer thread; resolves once the outcome is on disk.
    fn record_attempt<'a>(
        &'a self,
        previous: &'a Delivery,
        next: &'a Delivery,
        attempt: Option<&'a Attempt>,
        now_ms: u64,
        hold_lane: bool,
    ) -> StoreFuture<'a, ()> {
        let job = Job::Attempt(Box::new(AttemptJob {
            previous: previous.clone(),
            next: next.clone(),
            attempt: attempt.cloned(),
            now_ms,
            hold_lane,
        }));
        let answer = self.writer.submit(job);
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Stopped)) })
    }

    /// Redeliver: `revived` are dead letters set pending again (each keeps the head of its lane
    /// if it holds it, so the record's later events still wait behind it), `added` are new
    /// deliveries of events already delivered (they join their lane's tail). Resolves once on disk.
    fn redeliver(&self, revived: Vec<Delivery>, added: Vec<Delivery>) -> StoreFuture<'_, ()> {
        let answer = self.writer.submit(Job::Redeliver { revived, added });
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Stopped)) })
    }

    /// Give up on a dead letter: `discarded` (status cancelled) leaves the dead letters and its
    /// lane, whose next delivery becomes due at `now_ms`. Resolves once on disk.
    fn discard_dead_letter(&self, discarded: Delivery, now_ms: u64) -> StoreFuture<'_, ()> {
        let answer = self.writer.submit(Job::Discard { discarded, now_ms });
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Stopped)) })
    }

    /// The delivery at the head of a lane (the one being attempted, or the dead letter holding it).
    fn lane_head(&self, subscription_id: &str, lane: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lanes.get(keys::lane(subscription_id, lane))?.and_then(|value| keys::decode_ids(&value).first().copied()))
    }

    /// A fresh delivery id.
    fn new_delivery_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// The attempts of every delivery of an event, in order.
    fn attempts_of_event(&self, event_id: &str) -> Result<Vec<Attempt>, StoreError> {
        self.attempts.scan_prefix(keys::event(event_id)).values().map(|value| decode_json(tree::ATTEMPTS, &value?)).collect()
    }

    /// Dead-lettered deliveries, newest first, at most `limit`.
    fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut found = Vec::new();
        for entry in self.dead.iter().rev() {
            let (key, _) = entry?;
            let Some(delivery_id) = keys::read_u64(&key) else { continue };
            if let Some(delivery) = self.get_delivery(delivery_id)?
                && delivery.status == DeliveryStatus::Dead
            {
                found.push(delivery);
            }
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }
    fn due_changed(&self) -> &tokio::sync::Notify {
        &self.due_changed
    }
}

fn enqueue_delivery(
    deliveries: &TransactionalTree,
    event_deliveries: &TransactionalTree,
    due: &TransactionalTree,
    lanes: &TransactionalTree,
    delivery: &Delivery,
    changes: &mut DueChanges,
) -> TxResult<()> {
    deliveries.insert(&delivery.id.to_be_bytes(), encode_json(delivery))?;
    event_deliveries.insert(keys::event_delivery(&delivery.event_id, delivery.id), &[])?;
    let lane_key = keys::lane(&delivery.subscription_id, &delivery.lane);
    let mut queue = lanes.get(&lane_key)?.map(|value| keys::decode_ids(&value)).unwrap_or_default();
    if queue.is_empty() {
        changes.insert(due, delivery.next_attempt_at_ms, delivery.id)?;
    }
    queue.push(delivery.id);
    lanes.insert(lane_key, keys::encode_ids(&queue))?;
    Ok(())
}

/// Take a finished delivery out of its lane; the next one (if any) becomes due now.
fn leave_lane(
    deliveries: &TransactionalTree,
    due: &TransactionalTree,
    lanes: &TransactionalTree,
    finished: &Delivery,
    now_ms: u64,
    changes: &mut DueChanges,
) -> TxResult<()> {
    let lane_key = keys::lane(&finished.subscription_id, &finished.lane);
    let mut queue = lanes.get(&lane_key)?.map(|value| keys::decode_ids(&value)).unwrap_or_default();
    let was_head = queue.first() == Some(&finished.id);
    queue.retain(|id| *id != finished.id);
    if queue.is_empty() {
        lanes.remove(lane_key)?;
        return Ok(());
    }
    if was_head {
        let next_id = queue[0];
        if let Some(value) = deliveries.get(next_id.to_be_bytes())? {
            let mut next: Delivery = serde_json::from_slice(&value).map_err(|error| {
                ConflictableTransactionError::Abort(StoreError::Codec { tree: tree::DELIVERIES, message: error.to_string() })
            })?;
            next.next_attempt_at_ms = next.next_attempt_at_ms.min(now_ms);
            deliveries.insert(&next_id.to_be_bytes(), encode_json(&next))?;
            changes.insert(due, next.next_attempt_at_ms, next_id)?;
        }
    }
    lanes.insert(lane_key, keys::encode_ids(&queue))?;
    Ok(())
}

fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records (strings, numbers, maps with string keys) cannot fail.
    serde_json::to_vec(value).expect("records serialize to JSON")
}

fn decode_json<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Codec { tree, message: error.to_string() })
}

fn flatten(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::from(error),
    }
}
