//! Durable state behind four interfaces, one per concern, and the backends that implement them.
//!
//! - [`Catalog`]: accounts, subscriptions and daemon-wide values (rare writes by operators).
//! - [`Inbox`]: raw webhooks as received, their duplicate digests, what is pending and each
//!   entry's outcome.
//! - [`Ledger`]: the event log and the current state of each record, written together with the
//!   inbox outcome and the deliveries by one commit.
//! - [`DeliveryQueue`]: deliveries in lanes (per subscription and record), what is due, attempts
//!   and dead letters.
//!
//! [`Backend`] is all four plus [`Retention`] (deleting what retention no longer keeps), health and durability; [`Store`] is the shared handle. Signatures
//! say whether a call waits: a plain `fn` answers from memory or the page cache and never waits
//! for the disk; a `fn` returning [`StoreFuture`] resolves once its effect is durable; a `*_blocking`
//! `fn` waits on the calling thread (call it from a worker thread, never the tokio runtime). No
//! type of a storage engine appears here.
//!
//! Backends: [`sled_backend::SledStore`] (the embedded store, durable) and
//! [`memory::MemoryStore`] (in memory; the reference the model test holds the sled backend to).
//! Invariants every backend keeps: the listener answers 2xx only once [`Inbox::append_inbox`] has resolved (durable); a
//! normalized run's events, state, deliveries and inbox outcomes become visible together, with the
//! entries leaving `pending` (so a crash replays normalization exactly for what is still pending);
//! no delivery is due before the commit that created it is durable; only a lane's head is ever
//! due. A crash may repeat a delivery; it never loses one.

pub mod memory;
pub mod nats;
pub mod records;
pub mod sled_backend;
pub mod sync;

#[cfg(test)]
mod model_test;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

pub use records::*;
pub use sync::{ListedPage, PassKind, SYNC_METHOD, SyncPass, SyncState, SyncStates};

use crate::model::RecordKind;

/// What a call that waits for the disk returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The shared handle to the daemon's storage.
pub type Store = Arc<dyn Backend>;

/// Open (or create) the embedded store in `dir`, with at most `cache_bytes` of page cache.
pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
    Ok(Arc::new(sled_backend::SledStore::open(dir, cache_bytes)?))
}

/// Open the embedded store of a data dir (`<data_dir>/store`), migrating a store of an older
/// format first (see [`sled_backend::migrate`]).
pub fn open_data_dir(data_dir: &Path, cache_bytes: u64, segment_bytes: u64) -> Result<Store, StoreError> {
    Ok(Arc::new(sled_backend::open_data_dir(data_dir, cache_bytes, segment_bytes)?))
}

/// The id of an inbox entry: increasing in arrival order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboxId(pub u64);

impl std::fmt::Display for InboxId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk refused a write or a flush (full, read-only, failing), or an earlier such error
    /// put the store out of service (sled 0.34 refuses every write after its first I/O error).
    /// Nothing was acknowledged; the caller answers 503 and the daemon stops (see [`Fault`]).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend reported something other than an I/O error (a bug, an unsupported operation).
    #[error("storage: {0}")]
    Backend(String),
    /// A stored value did not decode (a bug or a corrupted file).
    #[error("stored value in {tree} does not decode: {message}")]
    Codec {
        /// The tree.
        tree: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The store's writer or flusher thread has stopped (the daemon is shutting down).
    #[error("the store has stopped")]
    Stopped,
    /// A state write's [`Expected`] did not hold: another writer changed the record since the
    /// decision read it. Nothing of the commit was written; decide again from the new state.
    #[error("the state of {record} changed since it was read")]
    Conflict {
        /// The record (`account/kind/record id`).
        record: String,
    },
}

impl StoreError {
    /// Whether the store itself is out of service (as opposed to one bad value).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The store's health: the first I/O error it met, if any.
///
/// sled 0.34 keeps its first I/O error and refuses every later write until the process opens the
/// store anew, also after the disk has space again. So the first such error is final for this
/// process: the store records it here, the listener answers 503 `storage_unavailable` from then
/// on, health and readiness report it, the scheduler stops dispatching, and `run` stops the daemon
/// with exit code 75 so a supervisor starts it again (reopening the store).
#[derive(Clone)]
pub struct Fault(Arc<tokio::sync::watch::Sender<Option<String>>>);

impl Default for Fault {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(None)))
    }
}

impl Fault {
    /// Record `error` if it puts the store out of service (the first one wins).
    pub fn note(&self, error: &StoreError) {
        if let StoreError::Unavailable(reason) = error {
            self.0.send_if_modified(|current| {
                if current.is_some() {
                    return false;
                }
                tracing::error!(%reason, "the store met an I/O error and refuses writes from now on; stopping");
                *current = Some(reason.clone());
                true
            });
        }
    }

    /// The error that put the store out of service, if any.
    pub fn reason(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// Resolve once the store is out of service.
    pub async fn wait(&self) -> String {
        let mut receiver = self.0.subscribe();
        let reason = receiver.wait_for(Option::is_some).await.map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // The sender lives in `self`, so the channel cannot close while we wait.
            Err(_) => std::future::pending().await,
        }
    }
}

/// The outcome of inserting something whose id must be new.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    Created,
    /// Something with that id exists already; nothing was written.
    AlreadyExists,
}

/// The version of a record's state that [`Ledger::get_state`] read. Opaque: only compared with
/// what the store holds when a write expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Revision(pub u64);

/// What a state write expects to find (compare-and-set): a decision made on state that another
/// writer changed meanwhile must not be committed, so two nodes deciding the same record can never
/// both announce `created`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Expected {
    /// Whatever is there: the decision did not read the record (a deletion by webhook), an earlier
    /// write of the same commit checked it already, or the write is an import.
    #[default]
    Any,
    /// No state: the decision read none.
    Absent,
    /// The state at this revision.
    At(Revision),
}

/// A state change written with a normalization: set or remove one record.
#[derive(Debug, Clone)]
pub struct StateWrite {
    /// The account.
    pub account_id: String,
    /// The record's kind.
    pub kind: RecordKind,
    /// The record id (for calendars: property id, `/`, date).
    pub record_id: String,
    /// The new record, or `None` to remove it (shared with the decisions of the same run that
    /// read it back, so it is not copied).
    pub record: Option<std::sync::Arc<serde_json::Value>>,
    /// What the record's state must be for the write to apply.
    pub expected: Expected,
}

/// Everything one normalization writes, atomically with taking its inbox entry out of pending.
#[derive(Debug)]
pub struct NormalizedBatch {
    /// The inbox entry that was normalized.
    pub inbox_id: InboxId,
    /// What became of it.
    pub outcome: InboxOutcome,
    /// New events for the log.
    pub events: Vec<StoredEvent>,
    /// Record state to set or remove.
    pub state: Vec<StateWrite>,
    /// One delivery per event and matching subscription.
    pub deliveries: Vec<Delivery>,
}

/// Duplicate suppression of one append ([`Inbox::append_inbox`]).
#[derive(Debug, Clone, Copy)]
pub struct Dedup<'a> {
    /// What duplicate suppression compares (the listener's replay digest).
    pub digest: &'a [u8],
    /// How long a digest is remembered: an entry whose digest was stored longer ago is new.
    pub window_ms: u64,
}

/// What [`Inbox::append_inbox`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored as this entry.
    New(InboxId),
    /// A duplicate of this entry (`None`: a digest remembered by an older version, without it).
    Duplicate(Option<InboxId>),
}

/// An inbox entry's place in [`Inbox::list_inbox`], without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxListing {
    /// The entry.
    pub id: InboxId,
    /// Its account.
    pub account_id: String,
    /// When it was received (Unix ms).
    pub received_at_ms: u64,
}

/// A remembered duplicate digest ([`Inbox::list_digests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    /// The account.
    pub account_id: String,
    /// The digest as [`Inbox::append_inbox`] got it.
    pub digest: Vec<u8>,
    /// When it was seen (Unix ms).
    pub seen_ms: u64,
}

/// One record's committed state ([`Ledger::list_state`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    /// The record's kind.
    pub kind: RecordKind,
    /// The record id.
    pub record_id: String,
    /// The record.
    pub record: serde_json::Value,
}

/// Filter of the event log listing.
#[derive(Debug, Default)]
pub struct EventFilter {
    /// Only this account's events.
    pub account_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<crate::model::EventType>,
    /// Only events of this record.
    pub record_id: Option<String>,
    /// Only complete (SUCCESS) or incomplete (FAILURE) events.
    pub result: Option<crate::model::EventResult>,
    /// Only events produced at or after this time (rendered, `YYYY-MM-DDTHH:MM:SS.sssZ`).
    pub from: Option<String>,
    /// Only events produced before this time (rendered).
    pub to: Option<String>,
    /// Events after this id (exclusive), for paging.
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl EventFilter {
    /// Whether `event` passes every condition but `after` and `limit`. Rendered times order as
    /// text, so the time range compares the strings.
    pub fn matches(&self, event: &StoredEvent) -> bool {
        self.matches_fields(&event.integration_account_id, event.event_type, &event.record_id, event.result, &event.timestamp)
    }

    /// [`EventFilter::matches`] on an event's filtered fields alone (a backend that keeps them
    /// apart from the body filters without reading it).
    pub fn matches_fields(
        &self,
        account_id: &str,
        event_type: crate::model::EventType,
        record_id: &str,
        result: crate::model::EventResult,
        timestamp: &str,
    ) -> bool {
        self.account_id.as_ref().is_none_or(|wanted| wanted == account_id)
            && self.event_type.is_none_or(|wanted| wanted == event_type)
            && self.record_id.as_ref().is_none_or(|wanted| wanted == record_id)
            && self.result.is_none_or(|wanted| wanted == result)
            && self.from.as_ref().is_none_or(|from| timestamp >= from.as_str())
            && self.to.as_ref().is_none_or(|to| timestamp < to.as_str())
    }
}

/// Accounts, subscriptions and daemon-wide values.
pub trait Catalog: Send + Sync {
    /// A daemon-wide value (the generated admin token, cached OAuth2 tokens).
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Set a daemon-wide value.
    fn insert_meta<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()>;
    /// Remove a daemon-wide value.
    fn remove_meta<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    /// A daemon-wide value as the store holds it now, for a compare-and-set to decide on: a
    /// backend whose plain reads answer from this node's copy (JetStream) asks the store itself.
    fn get_meta_latest<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        let value = self.get_meta(key);
        Box::pin(async move { value })
    }
    /// Set (or with `None` remove) a daemon-wide value if it is `expected` now (`None`: absent),
    /// compare-and-set; whether it was. Resolves once durable.
    fn swap_meta<'a>(&'a self, key: &'a str, expected: Option<&'a str>, value: Option<&'a str>) -> StoreFuture<'a, bool>;
    /// Store a new account; refuses an existing id.
    fn insert_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, Inserted>;
    /// Replace an account.
    fn put_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, ()>;
    /// The account with this id.
    fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError>;
    /// Every account, by id.
    fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Remove an account and its subscriptions. Whether it existed.
    fn remove_account<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, bool>;
    /// Store or replace a subscription.
    fn put_subscription<'a>(&'a self, subscription: &'a Subscription) -> StoreFuture<'a, ()>;
    /// One subscription of an account.
    fn get_subscription(&self, account_id: &str, subscription_id: &str) -> Result<Option<Subscription>, StoreError>;
    /// An account's subscriptions, by id.
    fn list_subscriptions(&self, account_id: &str) -> Result<Vec<Subscription>, StoreError>;
    /// Remove a subscription. Whether it existed.
    fn remove_subscription<'a>(&'a self, account_id: &'a str, subscription_id: &'a str) -> StoreFuture<'a, bool>;
}

/// Where a backend hands the inbox entries to normalize: the normalizer's queues
/// (`normalize::Submit`).
pub trait Feed: Send + Sync {
    /// Normalize `inbox_id` of `account_id` as its `generation`th normalization, after the
    /// account's entries handed over before it. `resumed`: a run of it may have stopped midway
    /// (it was pending when the daemon started, or another node held it), so what that run wrote
    /// is looked for.
    fn dispatch(&self, account_id: &str, inbox_id: InboxId, generation: u32, resumed: bool);
}

/// Raw webhooks, their duplicate digests, what is pending and what became of each.
pub trait Inbox: Send + Sync {
    /// Start handing the entries to normalize to `feed`: those pending now, oldest first (as
    /// resumed), then each entry as it becomes pending (once [`Inbox::append_inbox`] has made it
    /// durable, or [`Inbox::requeue_inbox`] made it pending again). The backend decides what
    /// this process normalizes: the listener, the API and sync passes only append and requeue.
    /// Called once, before anything appends; without it nothing is dispatched (offline commands).
    fn feed(&self, feed: Arc<dyn Feed>) -> Result<(), StoreError>;
    /// Append a raw webhook, pending as generation 0, unless `dedup` finds the same digest stored
    /// for the same account within its window: then nothing is written and the answer names the
    /// original. Resolves once the entry (for a duplicate: the original) is durable, so either
    /// answer may be acknowledged. Of two appends of one digest at once, one stores the entry and
    /// the other waits for it and is the duplicate. An entry that could not be made durable
    /// leaves no digest behind: the PMS's retry is stored anew.
    fn append_inbox<'a>(&'a self, entry: &'a InboxEntry, dedup: Option<Dedup<'a>>) -> StoreFuture<'a, Appended>;
    /// Drop digests older than `window_ms`; how many. Walks every digest: call it off the runtime.
    fn expire_digests_blocking(&self, now_ms: u64, window_ms: u64) -> Result<usize, StoreError>;
    /// Resolve once every write made before the call is durable (a backend whose every write is
    /// durable when it returns resolves at once).
    fn durable(&self) -> StoreFuture<'_, ()>;
    /// Append a raw webhook outside the listener (an import), pending as generation 0, without
    /// duplicate suppression. Durable once [`Inbox::durable`] resolves.
    fn import_inbox(&self, entry: &InboxEntry) -> Result<InboxId, StoreError>;
    /// Remember a digest outside the listener (an import): a later webhook with this digest
    /// within the window is a duplicate. Durable once [`Inbox::durable`] resolves.
    fn import_digest(&self, digest: &DigestRecord) -> Result<(), StoreError>;
    /// A raw webhook.
    fn get_inbox(&self, inbox_id: InboxId) -> Result<Option<InboxEntry>, StoreError>;
    /// Entries of one account received in `[from_ms, to_ms)`, oldest first.
    fn inbox_of_account(&self, account_id: &str, from_ms: u64, to_ms: u64) -> Result<Vec<InboxId>, StoreError>;
    /// Mark a finished entry pending again as its next generation (and hand it to the feed);
    /// `None` when it is pending.
    fn requeue_inbox(&self, inbox_id: InboxId) -> Result<Option<u32>, StoreError>;
    /// Entries not yet normalized, oldest first, with the generation each is to run as.
    fn pending_inbox(&self) -> Result<Vec<(InboxId, u32)>, StoreError>;
    /// What became of an entry (none while it was never finished).
    fn inbox_outcome(&self, inbox_id: InboxId) -> Result<Option<InboxOutcome>, StoreError>;
    /// Outcomes with this status, newest first, at most `limit`.
    fn list_outcomes(&self, status: InboxStatus, limit: usize) -> Result<Vec<(InboxId, InboxOutcome)>, StoreError>;
    /// Record a skipped or failed entry (no events), taking it out of pending.
    fn finish_inbox(&self, inbox_id: InboxId, outcome: &InboxOutcome) -> Result<(), StoreError>;
    /// Entries after `after` (exclusive; from the first when `None`) in id order, at most
    /// `limit`, without their bodies: a whole inbox is walked page by page (export).
    fn list_inbox(&self, after: Option<InboxId>, limit: usize) -> Result<Vec<InboxListing>, StoreError>;
    /// Remembered digests after `after` (an account and a digest, exclusive) in (account, digest)
    /// byte order, at most `limit`: every digest is walked page by page (export).
    fn list_digests(&self, after: Option<(&str, &[u8])>, limit: usize) -> Result<Vec<DigestRecord>, StoreError>;
}

/// The event log and the current state of each record.
pub trait Ledger: Send + Sync {
    /// The committed state of one record, with its revision.
    fn get_state(&self, account_id: &str, kind: RecordKind, record_id: &str) -> Result<Option<(serde_json::Value, Revision)>, StoreError>;
    /// Write normalized runs in order: events, state, deliveries (joining their lanes) and inbox
    /// outcomes, each entry leaving pending with them. Waits on the calling thread until
    /// committed (its deliveries become due only once durable).
    ///
    /// Every state write's [`Expected`] is checked first, in order, against the committed state
    /// with the commit's earlier writes applied (a record written earlier in the commit has no
    /// revision a caller can know: only [`Expected::Any`], or [`Expected::Absent`] after a
    /// removal, holds for it). If one does not hold, nothing is written, the entries stay pending,
    /// and the answer is [`StoreError::Conflict`].
    fn commit_normalized_blocking(&self, batches: Vec<NormalizedBatch>) -> Result<(), StoreError>;
    /// One event of the log.
    fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError>;
    /// One event as its stored JSON (deliveries render from it without parsing the record).
    fn get_event_bytes(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Events in log order (oldest first), filtered.
    fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError>;
    /// An account's record states after `after` (a kind and a record id, exclusive) in order of
    /// the kind's name ([`RecordKind::as_str`]) and then the record id, at most `limit`: an
    /// account's state is walked page by page (export).
    fn list_state(&self, account_id: &str, after: Option<(RecordKind, &str)>, limit: usize) -> Result<Vec<StateRecord>, StoreError>;
    /// Set or remove records' state outside a normalization (an import), in order; waits on the
    /// calling thread until durable. Only while no normalizer writes the same accounts (offline).
    fn put_state_blocking(&self, writes: Vec<StateWrite>) -> Result<(), StoreError>;
    /// Add events to the log without deliveries and outside a normalization (an import of events
    /// whose webhook is not imported with them); an event of an existing id is replaced. Waits on
    /// the calling thread until durable.
    fn put_events_blocking(&self, events: Vec<StoredEvent>) -> Result<(), StoreError>;
}

/// A delivery handed to this process for one attempt ([`DeliveryQueue::next_work`]): no other
/// attempt of it starts while the lease is held. [`DeliveryQueue::record_attempt`] moves it on;
/// dropping the lease gives it back (due again if nothing was recorded). A JetStream backend's
/// lease is the work message, acknowledged by the recorded attempt.
pub struct Leased {
    /// The delivery as it was when leased.
    pub delivery: Delivery,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Leased {
    /// A lease of `delivery` that runs `release` when dropped.
    pub fn new(delivery: Delivery, release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self { delivery, release: Some(Box::new(release)) }
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Leased {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Leased").field("delivery", &self.delivery.id).finish()
    }
}

/// The leases of a backend that keeps its due set in this process (both embedded backends): the
/// ids leased, and the due ids found without a record (reported once each).
#[derive(Clone, Default)]
pub struct Leases(Arc<std::sync::Mutex<LeaseSets>>);

#[derive(Default)]
struct LeaseSets {
    /// Deliveries leased now.
    held: std::collections::HashSet<u64>,
    /// Due deliveries found without a record, reported once each.
    reported: std::collections::HashSet<u64>,
}

impl Leases {
    /// [`DeliveryQueue::next_work`] over `queue`'s due set.
    pub fn lease_due(&self, queue: &dyn DeliveryQueue, now_ms: u64, limit: usize) -> Result<(Vec<Leased>, Option<u64>), StoreError> {
        let (ids, next_ms) = {
            let mut held = self.0.lock().expect("lease set lock poisoned");
            let (ids, next_ms): (Vec<u64>, _) = queue.due_deliveries(now_ms, limit, &mut |id| !held.held.contains(&id));
            held.held.extend(ids.iter().copied());
            (ids, next_ms)
        };
        let mut leased = Vec::with_capacity(ids.len());
        for (position, &id) in ids.iter().enumerate() {
            let found = queue.get_delivery(id);
            match found {
                Ok(Some(delivery)) => {
                    let leases = self.0.clone();
                    leased.push(Leased::new(delivery, move || {
                        leases.lock().expect("lease set lock poisoned").held.remove(&id);
                    }));
                }
                Ok(None) => {
                    let mut held = self.0.lock().expect("lease set lock poisoned");
                    held.held.remove(&id);
                    // No write path leaves one; if one did, its lane would wait behind it for good.
                    if held.reported.insert(id) {
                        tracing::error!(
                            delivery_id = id,
                            "a due delivery has no record, so its lane cannot go on; this is a bug, please report it"
                        );
                    }
                }
                Err(error) => {
                    // This one and those not read yet go back (those read go with `leased`).
                    let mut held = self.0.lock().expect("lease set lock poisoned");
                    for id in &ids[position..] {
                        held.held.remove(id);
                    }
                    return Err(error);
                }
            }
        }
        Ok((leased, next_ms))
    }
}

/// Deliveries in lanes, what is due, attempts and dead letters.
pub trait DeliveryQueue: Send + Sync {
    /// Deliveries due at or before `now_ms` for which `wanted` holds, earliest first, at most
    /// `limit`; and when the earliest delivery due after `now_ms` is due. From memory. An
    /// inspection (the console's backlog, the model test): the scheduler leases its work with
    /// [`DeliveryQueue::next_work`].
    fn due_deliveries(&self, now_ms: u64, limit: usize, wanted: &mut dyn FnMut(u64) -> bool) -> (Vec<u64>, Option<u64>);
    /// Lease deliveries due at or before `now_ms` that no lease holds, earliest first, at most
    /// `limit`; and when the earliest delivery due after `now_ms` is due.
    fn next_work(&self, now_ms: u64, limit: usize) -> Result<(Vec<Leased>, Option<u64>), StoreError>;
    /// Notified whenever deliveries became due (after the write that made them durable).
    fn due_changed(&self) -> &tokio::sync::Notify;
    /// A delivery.
    fn get_delivery(&self, delivery_id: u64) -> Result<Option<Delivery>, StoreError>;
    /// Every delivery of an event.
    fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Record an attempt of a leased delivery and move it on (`next`: its new status and due
    /// time). A delivered or cancelled delivery leaves its lane and the lane's next becomes due at
    /// `now_ms`; a dead one keeps the head of its lane when `hold_lane` is set. Resolves once the
    /// outcome is durable; drop the lease after it.
    fn record_attempt<'a>(
        &'a self,
        leased: &'a Leased,
        next: &'a Delivery,
        attempt: Option<&'a Attempt>,
        now_ms: u64,
        hold_lane: bool,
    ) -> StoreFuture<'a, ()>;
    /// Redeliver: `revived` dead letters pending again (in place when they hold their lane's
    /// head, else at its tail), `added` new deliveries at their lanes' tails.
    fn redeliver(&self, revived: Vec<Delivery>, added: Vec<Delivery>) -> StoreFuture<'_, ()>;
    /// Give up on a dead letter: cancelled, it leaves its lane, whose next becomes due at `now_ms`.
    fn discard_dead_letter(&self, discarded: Delivery, now_ms: u64) -> StoreFuture<'_, ()>;
    /// The delivery at the head of a lane.
    fn lane_head(&self, subscription_id: &str, lane: &str) -> Result<Option<u64>, StoreError>;
    /// The id of the delivery a normalization makes of `event_id` to `subscription_id`. A backend
    /// whose commit may be repeated elsewhere (another node taking a run over) must answer the
    /// same id for the same pair, so the repeat adds nothing twice; one whose commits are atomic
    /// and local may hand out a fresh id (the sled backend: its ids grow, which its floors need).
    fn delivery_id(&self, event_id: &str, subscription_id: &str) -> Result<u64, StoreError>;
    /// A fresh delivery id (a delivery added by an operator's redelivery).
    fn new_delivery_id(&self) -> Result<u64, StoreError>;
    /// The attempts of every delivery of an event, in order.
    fn attempts_of_event(&self, event_id: &str) -> Result<Vec<Attempt>, StoreError>;
    /// Dead letters, newest first, at most `limit`.
    fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// The delivery backlog: how many deliveries are due or waiting for a retry (at most `cap`
    /// counted), and the creation time (Unix ms) of the oldest among the first `sample` of them by
    /// due time (the console's overview).
    fn delivery_backlog(&self, cap: usize, sample: usize) -> Result<(usize, Option<u64>), StoreError> {
        let (ids, _) = self.due_deliveries(u64::MAX, cap, &mut |_| true);
        let mut oldest: Option<u64> = None;
        for id in ids.iter().take(sample) {
            if let Some(delivery) = self.get_delivery(*id)? {
                oldest = Some(oldest.map_or(delivery.created_at_ms, |known| known.min(delivery.created_at_ms)));
            }
        }
        Ok((ids.len(), oldest))
    }
}

/// What retention keeps: items older than these instants (Unix ms) may be deleted.
///
/// `0` keeps everything of that kind (nothing is older than the epoch).
#[derive(Debug, Default, Clone)]
pub struct RetentionCutoffs {
    /// Events (by their id's UUID v7 time) whose deliveries are all delivered or cancelled.
    pub events_before_ms: u64,
    /// Inbox entries (by `received_at_ms`) no longer pending, with their outcomes.
    pub inbox_before_ms: u64,
    /// An event with a dead letter also waits until the dead letter died (`updated_at_ms`) before this.
    pub dead_letters_before_ms: u64,
    /// Now: a dead letter that still holds its lane is discarded first, and its lane's next
    /// delivery becomes due at this time (as [`DeliveryQueue::discard_dead_letter`] does).
    pub now_ms: u64,
}

/// What one pruning pass did.
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    /// Events deleted (with their attempts).
    pub events: u64,
    /// Deliveries deleted with their events.
    pub deliveries: u64,
    /// Inbox entries deleted (with their outcomes).
    pub inbox: u64,
    /// Bytes of keys and values deleted (the files shrink as the backend reclaims them).
    pub bytes_freed: u64,
    /// The budget ran out before the cutoffs were reached: call again.
    pub more: bool,
}

/// The store's size and reach.
#[derive(Debug, Default, Clone)]
pub struct StorageStats {
    /// What the store's files take on disk (0 for a store in memory).
    pub bytes_on_disk: u64,
    /// The time (Unix ms, from its UUID v7 id) of the oldest event kept.
    pub oldest_event_ms: Option<u64>,
    /// `received_at_ms` of the oldest inbox entry kept.
    pub oldest_inbox_ms: Option<u64>,
    /// The id of the oldest inbox entry kept (a smaller unknown id was deleted).
    pub oldest_inbox_id: Option<InboxId>,
    /// The highest inbox id retention ever deleted (kept across restarts): an unknown id at or
    /// below it expired, also once the inbox is empty.
    pub inbox_pruned_through: Option<InboxId>,
}

/// Deleting what retention no longer keeps, and an account's data.
pub trait Retention: Send + Sync {
    /// Delete, oldest first, at most about `budget` items past the cutoffs. Never deletes an event with a delivery
    /// still pending, nor an inbox entry still pending; an event with a dead letter lives until
    /// `dead_letters_before_ms`. State is never pruned. Call off the runtime.
    ///
    /// Every backend does the same, so the model test can compare them: events in id order
    /// (time order) while their time is before `events_before_ms`, skipping those
    /// [`event_is_prunable`] keeps, at most `budget` of them; then inbox entries in id order
    /// while `received_at_ms` is before `inbox_before_ms`, skipping pending ones, at most
    /// `budget`. An event goes with its deliveries, attempts and dead-letter marks, the event
    /// itself last (a crash in between leaves it for the next pass); a dead letter still at its
    /// lane's head is discarded first, so the lane goes on.
    fn prune_blocking(&self, cutoffs: &RetentionCutoffs, budget: usize) -> Result<PruneReport, StoreError>;
    /// The store's size, its oldest event and its oldest inbox entry.
    fn storage_stats(&self) -> Result<StorageStats, StoreError>;
    /// Delete everything of an account (inbox, events, deliveries, state, digests); how many items. Call off the runtime.
    ///
    /// Entries still pending, and events with a delivery still pending, are kept: the normalizer
    /// and the scheduler finish them (a deleted account's deliveries are cancelled when next due)
    /// and retention deletes them later. A dead letter at its lane's head is discarded first.
    fn remove_account_data_blocking(&self, account_id: &str) -> Result<u64, StoreError>;
}

/// The time of an event (Unix ms) from its id: event ids are UUID v7 (`normalize::event_id`).
/// `None` for any other id.
pub fn event_time_ms(event_id: &str) -> Option<u64> {
    let uuid = uuid::Uuid::try_parse(event_id).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(secs.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000)))
}

/// Whether retention deletes an event of time `event_ms` with these deliveries: it is before the
/// events cutoff, no delivery is pending, and every dead letter died before the dead-letters cutoff.
pub fn event_is_prunable(event_ms: u64, deliveries: &[Delivery], cutoffs: &RetentionCutoffs) -> bool {
    event_ms < cutoffs.events_before_ms
        && deliveries.iter().all(|delivery| match delivery.status {
            DeliveryStatus::Delivered | DeliveryStatus::Cancelled => true,
            DeliveryStatus::Dead => delivery.updated_at_ms < cutoffs.dead_letters_before_ms,
            DeliveryStatus::Pending => false,
        })
}

/// Fault injection for the tests, read from the environment when a backend opens; every backend
/// has the same two, so the shared tests run against each.
#[derive(Debug, Default)]
pub struct TestFaults {
    /// `STAYHOOK_TEST_ABORT_AFTER_STATE`: a normalized run's events and state are made durable and
    /// the process aborts before the run's inbox entry leaves pending, the window a crash or a full
    /// disk can stop a commit in.
    pub abort_after_state: bool,
    /// `STAYHOOK_TEST_CONFLICT_ONCE`: the first normalized commit that checks a record finds it
    /// changed by another writer ([`TestFaults::another_writer`]), as a second node committing the
    /// same record would leave it.
    conflict_once: std::sync::atomic::AtomicBool,
}

impl TestFaults {
    /// The faults the environment asks for (none, outside the tests).
    pub fn from_env() -> TestFaults {
        let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
        TestFaults { abort_after_state: set("STAYHOOK_TEST_ABORT_AFTER_STATE"), conflict_once: set("STAYHOOK_TEST_CONFLICT_ONCE").into() }
    }

    /// Whether the next commit that checks a record meets another writer.
    pub fn conflict_pending(&self) -> bool {
        self.conflict_once.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The version of `ours` another writer stores (`arrivalDate` 2000-01-01), once: later commits
    /// meet no one.
    pub fn another_writer(&self, record: &str, ours: &serde_json::Value) -> serde_json::Value {
        self.conflict_once.store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(%record, "STAYHOOK_TEST_CONFLICT_ONCE: another writer changes the record before the commit");
        let mut theirs = ours.clone();
        theirs["arrivalDate"] = serde_json::Value::String("2000-01-01".into());
        theirs
    }

    /// Abort the process, its run's events and state stored (the caller made them durable).
    pub fn abort_after_state(&self, inbox_id: InboxId) -> ! {
        tracing::warn!(%inbox_id, "STAYHOOK_TEST_ABORT_AFTER_STATE: aborting with this run's events and state on disk");
        std::process::abort();
    }
}

/// A whole storage backend: the four concerns, retention, its health and a final flush.
pub trait Backend: Catalog + Inbox + Ledger + DeliveryQueue + Retention {
    /// The backend's health (see [`Fault`]).
    fn fault(&self) -> &Fault;
    /// Make everything written so far durable, on the calling thread (shutdown).
    fn flush_blocking(&self) -> Result<(), StoreError>;
    /// The daemon stops (its normalizer and scheduler stopped): hand what this node holds to the
    /// other nodes now instead of when its claims run out (a shared backend); nothing by default.
    fn leave_blocking(&self) {}
    /// The largest body a raw webhook may have for the backend to store it (the listener's body
    /// limit is lowered to it); `None`: no limit of its own.
    fn largest_body(&self) -> Option<usize> {
        None
    }
}
