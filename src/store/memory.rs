//! The in-memory backend: every interface of [`super`] over plain maps under one lock.
//!
//! It is the reference the model test (`store/model_test.rs`) holds the sled backend to, so it is
//! written for obviousness, not speed: each method says what the interface promises in the most
//! direct way, independently of how the sled backend lays out its trees. Nothing survives the
//! process; "durable" is immediate.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::*;

/// Storage in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Where entries to normalize go ([`Inbox::feed`]).
    feed: std::sync::OnceLock<Arc<dyn Feed>>,
    /// Deliveries leased for an attempt ([`DeliveryQueue::next_work`]).
    leases: Leases,
    due_changed: tokio::sync::Notify,
    fault: Fault,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    meta: BTreeMap<String, String>,
    accounts: BTreeMap<String, Account>,
    /// By (account, subscription id).
    subscriptions: BTreeMap<(String, String), Subscription>,
    /// (account, digest) to when it was seen and its entry (none when imported).
    digests: HashMap<(String, Vec<u8>), (u64, Option<u64>)>,
    inbox: BTreeMap<u64, InboxEntry>,
    /// Entry to the generation it is to run as.
    pending: BTreeMap<u64, u32>,
    outcomes: BTreeMap<u64, InboxOutcome>,
    events: BTreeMap<String, StoredEvent>,
    /// The last revision given to a state.
    next_revision: u64,
    /// Each record's state and revision.
    state: HashMap<(String, RecordKind, String), (serde_json::Value, u64)>,
    deliveries: BTreeMap<u64, Delivery>,
    /// (due time, delivery id).
    due: BTreeSet<(u64, u64)>,
    /// (subscription, lane) to its deliveries, head first.
    lanes: HashMap<(String, String), VecDeque<u64>>,
    /// (event, delivery, attempt number).
    attempts: BTreeMap<(String, u64, u32), Attempt>,
    dead: BTreeSet<u64>,
    /// The highest inbox id retention deleted.
    inbox_pruned_through: Option<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store lock poisoned")
    }
}

impl Inner {
    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Set or remove a record's state, under a new revision.
    fn set_state(&mut self, write: StateWrite) {
        let key = (write.account_id, write.kind, write.record_id);
        match write.record {
            Some(record) => {
                self.next_revision += 1;
                let revision = self.next_revision;
                self.state.insert(key, (std::sync::Arc::unwrap_or_clone(record), revision));
            }
            None => {
                self.state.remove(&key);
            }
        }
    }

    /// A new inbox entry, pending as generation 0.
    fn append(&mut self, entry: &InboxEntry) -> u64 {
        let id = self.id();
        self.inbox.insert(id, entry.clone());
        self.pending.insert(id, 0);
        id
    }

    fn enqueue(&mut self, delivery: &Delivery) {
        self.deliveries.insert(delivery.id, delivery.clone());
        let lane = self.lanes.entry((delivery.subscription_id.clone(), delivery.lane.clone())).or_default();
        if lane.is_empty() {
            self.due.insert((delivery.next_attempt_at_ms, delivery.id));
        }
        lane.push_back(delivery.id);
    }

    /// `finished` leaves its lane; when it was the head, the next becomes due by `now_ms`.
    fn leave_lane(&mut self, finished: &Delivery, now_ms: u64) {
        let key = (finished.subscription_id.clone(), finished.lane.clone());
        let Some(lane) = self.lanes.get_mut(&key) else { return };
        let was_head = lane.front() == Some(&finished.id);
        lane.retain(|id| *id != finished.id);
        let Some(&next_id) = lane.front() else {
            self.lanes.remove(&key);
            return;
        };
        if was_head && let Some(next) = self.deliveries.get_mut(&next_id) {
            next.next_attempt_at_ms = next.next_attempt_at_ms.min(now_ms);
            self.due.insert((next.next_attempt_at_ms, next_id));
        }
    }

    fn lane_head(&self, subscription_id: &str, lane: &str) -> Option<u64> {
        self.lanes.get(&(subscription_id.to_string(), lane.to_string())).and_then(|lane| lane.front().copied())
    }
}

fn ready<'a, T: Send + 'a>(value: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Catalog for MemoryStore {
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().meta.get(key).cloned())
    }

    fn insert_meta<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        self.lock().meta.insert(key.into(), value.into());
        ready(Ok(()))
    }

    fn remove_meta<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.lock().meta.remove(key);
        ready(Ok(()))
    }

    fn swap_meta<'a>(&'a self, key: &'a str, expected: Option<&'a str>, value: Option<&'a str>) -> StoreFuture<'a, bool> {
        let mut inner = self.lock();
        if inner.meta.get(key).map(String::as_str) != expected {
            return ready(Ok(false));
        }
        match value {
            Some(value) => inner.meta.insert(key.into(), value.into()),
            None => inner.meta.remove(key),
        };
        ready(Ok(true))
    }

    fn insert_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, Inserted> {
        let mut inner = self.lock();
        let inserted = if inner.accounts.contains_key(&account.id) {
            Inserted::AlreadyExists
        } else {
            inner.accounts.insert(account.id.clone(), account.clone());
            Inserted::Created
        };
        ready(Ok(inserted))
    }

    fn put_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, ()> {
        self.lock().accounts.insert(account.id.clone(), account.clone());
        ready(Ok(()))
    }

    fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.lock().accounts.get(account_id).cloned())
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        Ok(self.lock().accounts.values().cloned().collect())
    }

    fn remove_account<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, bool> {
        let mut inner = self.lock();
        let existed = inner.accounts.remove(account_id).is_some();
        inner.subscriptions.retain(|(account, _), _| account != account_id);
        ready(Ok(existed))
    }

    fn put_subscription<'a>(&'a self, subscription: &'a Subscription) -> StoreFuture<'a, ()> {
        self.lock().subscriptions.insert((subscription.account_id.clone(), subscription.id.clone()), subscription.clone());
        ready(Ok(()))
    }

    fn get_subscription(&self, account_id: &str, subscription_id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.lock().subscriptions.get(&(account_id.to_string(), subscription_id.to_string())).cloned())
    }

    fn list_subscriptions(&self, account_id: &str) -> Result<Vec<Subscription>, StoreError> {
        Ok(self.lock().subscriptions.values().filter(|subscription| subscription.account_id == account_id).cloned().collect())
    }

    fn remove_subscription<'a>(&'a self, account_id: &'a str, subscription_id: &'a str) -> StoreFuture<'a, bool> {
        let existed = self.lock().subscriptions.remove(&(account_id.to_string(), subscription_id.to_string())).is_some();
        ready(Ok(existed))
    }
}

impl Inbox for MemoryStore {
    fn feed(&self, feed: Arc<dyn Feed>) -> Result<(), StoreError> {
        let pending: Vec<(String, u64, u32)> = {
            let inner = self.lock();
            if self.feed.set(feed.clone()).is_err() {
                return Err(StoreError::Backend("the store's feed is set already".into()));
            }
            inner.pending.iter().filter_map(|(id, generation)| Some((inner.inbox.get(id)?.account_id.clone(), *id, *generation))).collect()
        };
        for (account_id, id, generation) in pending {
            feed.dispatch(&account_id, InboxId(id), generation, true);
        }
        Ok(())
    }

    fn append_inbox<'a>(&'a self, entry: &'a InboxEntry, dedup: Option<Dedup<'a>>) -> StoreFuture<'a, Appended> {
        let mut inner = self.lock();
        let id = match dedup {
            Some(dedup) => {
                let key = (entry.account_id.clone(), dedup.digest.to_vec());
                if let Some((seen_ms, original)) = inner.digests.get(&key).copied()
                    && entry.received_at_ms.saturating_sub(seen_ms) < dedup.window_ms
                {
                    return ready(Ok(Appended::Duplicate(original.map(InboxId))));
                }
                let id = inner.append(entry);
                inner.digests.insert(key, (entry.received_at_ms, Some(id)));
                id
            }
            None => inner.append(entry),
        };
        // Under the lock the feed is set under, so the entry is handed over once.
        if let Some(feed) = self.feed.get() {
            feed.dispatch(&entry.account_id, InboxId(id), 0, false);
        }
        ready(Ok(Appended::New(InboxId(id))))
    }

    fn expire_digests_blocking(&self, now_ms: u64, window_ms: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.digests.len();
        inner.digests.retain(|_, (seen_ms, _)| now_ms.saturating_sub(*seen_ms) < window_ms);
        Ok(before - inner.digests.len())
    }

    fn import_inbox(&self, entry: &InboxEntry) -> Result<InboxId, StoreError> {
        Ok(InboxId(self.lock().append(entry)))
    }

    fn durable(&self) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }

    fn import_digest(&self, digest: &DigestRecord) -> Result<(), StoreError> {
        self.lock().digests.insert((digest.account_id.clone(), digest.digest.clone()), (digest.seen_ms, None));
        Ok(())
    }

    fn get_inbox(&self, inbox_id: InboxId) -> Result<Option<InboxEntry>, StoreError> {
        Ok(self.lock().inbox.get(&inbox_id.0).cloned())
    }

    fn inbox_of_account(&self, account_id: &str, from_ms: u64, to_ms: u64) -> Result<Vec<InboxId>, StoreError> {
        let inner = self.lock();
        let wanted = |entry: &InboxEntry| entry.account_id == account_id && (from_ms..to_ms).contains(&entry.received_at_ms);
        Ok(inner.inbox.iter().filter(|(_, entry)| wanted(entry)).map(|(id, _)| InboxId(*id)).collect())
    }

    fn requeue_inbox(&self, inbox_id: InboxId) -> Result<Option<u32>, StoreError> {
        let mut inner = self.lock();
        if inner.pending.contains_key(&inbox_id.0) {
            return Ok(None);
        }
        let generation = inner.outcomes.get(&inbox_id.0).map_or(0, |outcome| outcome.generation.saturating_add(1));
        inner.pending.insert(inbox_id.0, generation);
        if let (Some(feed), Some(entry)) = (self.feed.get(), inner.inbox.get(&inbox_id.0)) {
            feed.dispatch(&entry.account_id, inbox_id, generation, false);
        }
        Ok(Some(generation))
    }

    fn pending_inbox(&self) -> Result<Vec<(InboxId, u32)>, StoreError> {
        Ok(self.lock().pending.iter().map(|(id, generation)| (InboxId(*id), *generation)).collect())
    }

    fn inbox_outcome(&self, inbox_id: InboxId) -> Result<Option<InboxOutcome>, StoreError> {
        Ok(self.lock().outcomes.get(&inbox_id.0).cloned())
    }

    fn list_outcomes(&self, status: InboxStatus, limit: usize) -> Result<Vec<(InboxId, InboxOutcome)>, StoreError> {
        let inner = self.lock();
        let found = inner.outcomes.iter().rev().filter(|(_, outcome)| outcome.status == status).take(limit);
        Ok(found.map(|(id, outcome)| (InboxId(*id), outcome.clone())).collect())
    }

    fn finish_inbox(&self, inbox_id: InboxId, outcome: &InboxOutcome) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.pending.remove(&inbox_id.0);
        inner.outcomes.insert(inbox_id.0, outcome.clone());
        Ok(())
    }

    fn list_inbox(&self, after: Option<InboxId>, limit: usize) -> Result<Vec<InboxListing>, StoreError> {
        let inner = self.lock();
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.0));
        let found = inner.inbox.range((start, Bound::Unbounded)).take(limit);
        Ok(found
            .map(|(id, entry)| InboxListing {
                id: InboxId(*id),
                account_id: entry.account_id.clone(),
                received_at_ms: entry.received_at_ms,
            })
            .collect())
    }

    fn list_digests(&self, after: Option<(&str, &[u8])>, limit: usize) -> Result<Vec<DigestRecord>, StoreError> {
        let inner = self.lock();
        let mut all: Vec<DigestRecord> = inner
            .digests
            .iter()
            .map(|((account_id, digest), (seen_ms, _))| DigestRecord {
                account_id: account_id.clone(),
                digest: digest.clone(),
                seen_ms: *seen_ms,
            })
            .filter(|record| {
                after.is_none_or(|(account, digest)| (record.account_id.as_str(), record.digest.as_slice()) > (account, digest))
            })
            .collect();
        all.sort_by(|a, b| (&a.account_id, &a.digest).cmp(&(&b.account_id, &b.digest)));
        all.truncate(limit);
        Ok(all)
    }
}

impl Ledger for MemoryStore {
    fn get_state(&self, account_id: &str, kind: RecordKind, record_id: &str) -> Result<Option<(serde_json::Value, Revision)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .state
            .get(&(account_id.to_string(), kind, record_id.to_string()))
            .map(|(record, revision)| (record.clone(), Revision(*revision))))
    }

    fn commit_normalized_blocking(&self, batches: Vec<NormalizedBatch>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let mut written: HashMap<(&str, RecordKind, &str), bool> = HashMap::new();
        for write in batches.iter().flat_map(|batch| &batch.state) {
            let key = (write.account_id.as_str(), write.kind, write.record_id.as_str());
            let stored = || inner.state.get(&(write.account_id.clone(), write.kind, write.record_id.clone()));
            let holds = match (write.expected, written.get(&key)) {
                (Expected::Any, _) => true,
                (Expected::Absent, Some(present)) => !present,
                (Expected::At(_), Some(_)) => false,
                (Expected::Absent, None) => stored().is_none(),
                (Expected::At(revision), None) => stored().is_some_and(|(_, stored)| Revision(*stored) == revision),
            };
            if !holds {
                return Err(StoreError::Conflict { record: format!("{}/{}/{}", write.account_id, write.kind.as_str(), write.record_id) });
            }
            written.insert(key, write.record.is_some());
        }
        for batch in batches {
            inner.pending.remove(&batch.inbox_id.0);
            inner.outcomes.insert(batch.inbox_id.0, batch.outcome);
            for event in batch.events {
                inner.events.insert(event.id.clone(), event);
            }
            for write in batch.state {
                inner.set_state(write);
            }
            for delivery in &batch.deliveries {
                inner.enqueue(delivery);
            }
        }
        drop(inner);
        self.due_changed.notify_one();
        Ok(())
    }

    fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self.lock().events.get(event_id).cloned())
    }

    fn get_event_bytes(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let event = self.lock().events.get(event_id).cloned();
        Ok(event.map(|event| serde_json::to_vec(&event).expect("events serialize to JSON")))
    }

    fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        let start = match &filter.after {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Unbounded,
        };
        let found =
            inner.events.range((start, Bound::Unbounded)).map(|(_, event)| event).filter(|event| filter.matches(event)).take(filter.limit);
        Ok(found.cloned().collect())
    }

    fn list_state(&self, account_id: &str, after: Option<(RecordKind, &str)>, limit: usize) -> Result<Vec<StateRecord>, StoreError> {
        let inner = self.lock();
        let mut all: Vec<StateRecord> = inner
            .state
            .iter()
            .filter(|((account, _, _), _)| account == account_id)
            .filter(|((_, kind, record_id), _)| {
                after.is_none_or(|(after_kind, after_id)| (kind.as_str(), record_id.as_str()) > (after_kind.as_str(), after_id))
            })
            .map(|((_, kind, record_id), (record, _))| StateRecord { kind: *kind, record_id: record_id.clone(), record: record.clone() })
            .collect();
        all.sort_by(|a, b| (a.kind.as_str(), &a.record_id).cmp(&(b.kind.as_str(), &b.record_id)));
        all.truncate(limit);
        Ok(all)
    }

    fn put_events_blocking(&self, events: Vec<StoredEvent>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for event in events {
            inner.events.insert(event.id.clone(), event);
        }
        Ok(())
    }

    fn put_state_blocking(&self, writes: Vec<StateWrite>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for write in writes {
            inner.set_state(write);
        }
        Ok(())
    }
}

impl DeliveryQueue for MemoryStore {
    fn due_deliveries(&self, now_ms: u64, limit: usize, wanted: &mut dyn FnMut(u64) -> bool) -> (Vec<u64>, Option<u64>) {
        let inner = self.lock();
        let found = inner.due.iter().take_while(|(due_ms, _)| *due_ms <= now_ms).map(|(_, id)| *id).filter(|id| wanted(*id)).take(limit);
        let found = found.collect();
        let next_ms = inner.due.iter().map(|(due_ms, _)| *due_ms).find(|due_ms| *due_ms > now_ms);
        (found, next_ms)
    }

    fn next_work(&self, now_ms: u64, limit: usize) -> Result<(Vec<Leased>, Option<u64>), StoreError> {
        self.leases.lease_due(self, now_ms, limit)
    }

    fn due_changed(&self) -> &tokio::sync::Notify {
        &self.due_changed
    }

    fn get_delivery(&self, delivery_id: u64) -> Result<Option<Delivery>, StoreError> {
        Ok(self.lock().deliveries.get(&delivery_id).cloned())
    }

    fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.lock().deliveries.values().filter(|delivery| delivery.event_id == event_id).cloned().collect())
    }

    fn record_attempt<'a>(
        &'a self,
        leased: &'a Leased,
        next: &'a Delivery,
        attempt: Option<&'a Attempt>,
        now_ms: u64,
        hold_lane: bool,
    ) -> StoreFuture<'a, ()> {
        let previous = &leased.delivery;
        let mut inner = self.lock();
        inner.due.remove(&(previous.next_attempt_at_ms, previous.id));
        inner.deliveries.insert(next.id, next.clone());
        if let Some(attempt) = attempt {
            inner.attempts.insert((next.event_id.clone(), next.id, attempt.attempt), attempt.clone());
        }
        match next.status {
            DeliveryStatus::Pending => {
                inner.due.insert((next.next_attempt_at_ms, next.id));
            }
            DeliveryStatus::Dead => {
                inner.dead.insert(next.id);
                if !hold_lane {
                    inner.leave_lane(next, now_ms);
                }
            }
            DeliveryStatus::Delivered | DeliveryStatus::Cancelled => inner.leave_lane(next, now_ms),
        }
        drop(inner);
        self.due_changed.notify_one();
        ready(Ok(()))
    }

    fn redeliver(&self, revived: Vec<Delivery>, added: Vec<Delivery>) -> StoreFuture<'_, ()> {
        let mut inner = self.lock();
        for delivery in revived {
            inner.dead.remove(&delivery.id);
            if inner.lane_head(&delivery.subscription_id, &delivery.lane) == Some(delivery.id) {
                inner.due.insert((delivery.next_attempt_at_ms, delivery.id));
                inner.deliveries.insert(delivery.id, delivery);
            } else {
                inner.enqueue(&delivery);
            }
        }
        for delivery in &added {
            inner.enqueue(delivery);
        }
        drop(inner);
        self.due_changed.notify_one();
        ready(Ok(()))
    }

    fn discard_dead_letter(&self, discarded: Delivery, now_ms: u64) -> StoreFuture<'_, ()> {
        let mut inner = self.lock();
        inner.dead.remove(&discarded.id);
        inner.deliveries.insert(discarded.id, discarded.clone());
        inner.leave_lane(&discarded, now_ms);
        drop(inner);
        self.due_changed.notify_one();
        ready(Ok(()))
    }

    fn lane_head(&self, subscription_id: &str, lane: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().lane_head(subscription_id, lane))
    }

    fn delivery_id(&self, _event_id: &str, _subscription_id: &str) -> Result<u64, StoreError> {
        self.new_delivery_id()
    }

    fn new_delivery_id(&self) -> Result<u64, StoreError> {
        Ok(self.lock().id())
    }

    fn attempts_of_event(&self, event_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let inner = self.lock();
        Ok(inner.attempts.iter().filter(|((event, _, _), _)| event == event_id).map(|(_, attempt)| attempt.clone()).collect())
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let inner = self.lock();
        let found =
            inner.dead.iter().rev().filter_map(|id| inner.deliveries.get(id)).filter(|delivery| delivery.status == DeliveryStatus::Dead);
        Ok(found.take(limit).cloned().collect())
    }
}

impl Backend for MemoryStore {
    fn fault(&self) -> &Fault {
        &self.fault
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Inner {
    /// Delete an event with its deliveries, attempts and dead-letter marks; a dead letter at its
    /// lane's head is discarded first (its lane goes on). How many deliveries went.
    fn delete_event(&mut self, event_id: &str, now_ms: u64) -> u64 {
        let deliveries: Vec<Delivery> = self.deliveries.values().filter(|delivery| delivery.event_id == event_id).cloned().collect();
        for delivery in &deliveries {
            if delivery.status == DeliveryStatus::Dead && self.lane_head(&delivery.subscription_id, &delivery.lane) == Some(delivery.id) {
                self.leave_lane(delivery, now_ms);
            }
            self.dead.remove(&delivery.id);
            self.deliveries.remove(&delivery.id);
        }
        self.attempts.retain(|(event, _, _), _| event != event_id);
        self.events.remove(event_id);
        deliveries.len() as u64
    }

    fn deliveries_of(&self, event_id: &str) -> Vec<Delivery> {
        self.deliveries.values().filter(|delivery| delivery.event_id == event_id).cloned().collect()
    }
}

impl Retention for MemoryStore {
    fn prune_blocking(&self, cutoffs: &RetentionCutoffs, budget: usize) -> Result<PruneReport, StoreError> {
        let mut inner = self.lock();
        let mut report = PruneReport::default();
        let candidates: Vec<(String, u64)> = inner
            .events
            .keys()
            .filter_map(|id| event_time_ms(id).map(|time_ms| (id.clone(), time_ms)))
            .take_while(|(_, time_ms)| *time_ms < cutoffs.events_before_ms)
            .collect();
        for (event_id, time_ms) in candidates {
            if !event_is_prunable(time_ms, &inner.deliveries_of(&event_id), cutoffs) {
                continue;
            }
            if report.events >= budget as u64 {
                report.more = true;
                break;
            }
            report.deliveries += inner.delete_event(&event_id, cutoffs.now_ms);
            report.events += 1;
        }
        let candidates: Vec<u64> = inner
            .inbox
            .iter()
            .take_while(|(_, entry)| entry.received_at_ms < cutoffs.inbox_before_ms)
            .map(|(id, _)| *id)
            .filter(|id| !inner.pending.contains_key(id))
            .collect();
        for id in candidates {
            if report.inbox >= budget as u64 {
                report.more = true;
                break;
            }
            inner.inbox.remove(&id);
            inner.outcomes.remove(&id);
            inner.inbox_pruned_through = inner.inbox_pruned_through.max(Some(id));
            report.inbox += 1;
        }
        drop(inner);
        self.due_changed.notify_one();
        Ok(report)
    }

    fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        let inner = self.lock();
        let oldest_inbox = inner.inbox.iter().next();
        Ok(StorageStats {
            bytes_on_disk: 0,
            oldest_event_ms: inner.events.keys().find_map(|id| event_time_ms(id)),
            oldest_inbox_ms: oldest_inbox.map(|(_, entry)| entry.received_at_ms),
            oldest_inbox_id: oldest_inbox.map(|(id, _)| InboxId(*id)),
            inbox_pruned_through: inner.inbox_pruned_through.map(InboxId),
        })
    }

    fn remove_account_data_blocking(&self, account_id: &str) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let mut removed = 0;
        let entries: Vec<u64> = inner
            .inbox
            .iter()
            .filter(|(id, entry)| entry.account_id == account_id && !inner.pending.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for id in entries {
            inner.inbox.remove(&id);
            inner.outcomes.remove(&id);
            removed += 1;
        }
        let before = inner.digests.len() + inner.state.len();
        inner.digests.retain(|(account, _), _| account != account_id);
        inner.state.retain(|(account, _, _), _| account != account_id);
        removed += (before - inner.digests.len() - inner.state.len()) as u64;
        let events: Vec<String> =
            inner.events.values().filter(|event| event.integration_account_id == account_id).map(|event| event.id.clone()).collect();
        for event_id in events {
            let finished = inner.deliveries_of(&event_id).iter().all(|delivery| delivery.status != DeliveryStatus::Pending);
            if finished {
                removed += 1 + inner.delete_event(&event_id, unix_ms());
            }
        }
        drop(inner);
        self.due_changed.notify_one();
        Ok(removed)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}
