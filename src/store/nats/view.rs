//! A node's read model: what the admin API lists, held in memory and kept current by following
//! the engine ([`super::follow`]). Loaded when the store opens, so a node that starts answers with
//! everything stored; then each node's own writes apply at once (a node reads its own writes) and
//! other nodes' as their watch or consumer delivers them (milliseconds later).
//!
//! What it holds: the event log (each event's stored JSON and the fields a listing filters on),
//! the attempts, the deliveries' records, the inbox outcomes and, for each inbox entry, its
//! account and arrival time (from a headers-only consumer: bodies stay in the engine). Deletions
//! are seen too: retention's because each node's pruner forgets what it prunes
//! ([`super::retention`]), an account's because the catalog's watch tells the store of its
//! deletion, whichever node made it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, kv};

use super::engine::token_id;
use crate::model::{EventResult, EventType};
use crate::store::{Attempt, Delivery, DeliveryStatus, EventFilter, InboxId, InboxListing, InboxOutcome, InboxStatus, StoredEvent};

/// One event of the log: its stored JSON and the fields listings filter on.
struct ViewEvent {
    bytes: Arc<Vec<u8>>,
    account_id: String,
    event_type: EventType,
    record_id: String,
    result: EventResult,
    timestamp: String,
}

#[derive(Default)]
struct Deliveries {
    /// Id to (revision, record).
    by_id: HashMap<u64, (u64, Delivery)>,
    /// Event to its deliveries.
    by_event: HashMap<String, BTreeSet<u64>>,
    /// The ids of dead letters (the admin API lists them newest, highest id, first and pages by
    /// id, as the embedded store does).
    dead: BTreeSet<u64>,
}

/// An event's attempts by (delivery, attempt number).
type AttemptsOfEvent = BTreeMap<(u64, u32), Attempt>;

/// The read model (see the module docs).
#[derive(Default)]
pub struct View {
    events: RwLock<BTreeMap<String, ViewEvent>>,
    /// Event to its attempts.
    attempts: RwLock<HashMap<String, AttemptsOfEvent>>,
    deliveries: RwLock<Deliveries>,
    /// Inbox id to (revision, outcome).
    outcomes: RwLock<BTreeMap<u64, (u64, InboxOutcome)>>,
    /// Inbox id to (account, arrival in Unix ms).
    inbox: RwLock<BTreeMap<u64, (String, u64)>>,
}

const POISONED: &str = "read model lock poisoned";

impl View {
    /// Apply an event's stored JSON (own write or followed).
    pub fn apply_event(&self, bytes: Arc<Vec<u8>>) {
        let event: StoredEvent = match serde_json::from_slice(&bytes) {
            Ok(event) => event,
            Err(error) => return tracing::error!(%error, "an event in SH_EVENTS does not decode; not listed"),
        };
        let view = ViewEvent {
            bytes,
            account_id: event.integration_account_id,
            event_type: event.event_type,
            record_id: event.record_id,
            result: event.result,
            timestamp: event.timestamp,
        };
        self.events.write().expect(POISONED).insert(event.id, view);
    }

    /// Apply a message of `SH_EVENTS`.
    pub fn apply_event_message(&self, message: jetstream::Message) {
        self.apply_event(Arc::new(message.payload.to_vec()));
    }

    /// Apply an attempt of `event_id` (own write or followed).
    pub fn apply_attempt(&self, event_id: &str, attempt: Attempt) {
        let delivery_id: u64 = attempt.delivery_id.parse().unwrap_or_default();
        let mut attempts = self.attempts.write().expect(POISONED);
        attempts.entry(event_id.to_string()).or_default().insert((delivery_id, attempt.attempt), attempt);
    }

    /// Apply a message of `SH_ATTEMPTS` (`sh.att.<account>.<event token>`).
    pub fn apply_attempt_message(&self, message: jetstream::Message) {
        let event_id = message.subject.split('.').nth(3).and_then(token_id);
        match (event_id, serde_json::from_slice::<Attempt>(&message.payload)) {
            (Some(event_id), Ok(attempt)) => self.apply_attempt(&event_id, attempt),
            _ => tracing::error!(subject = %message.subject, "an attempt in SH_ATTEMPTS does not decode; not listed"),
        }
    }

    /// Apply a delivery record at `revision`, unless a newer one is known.
    pub fn apply_delivery(&self, revision: u64, delivery: Delivery) {
        let mut deliveries = self.deliveries.write().expect(POISONED);
        if let Some((known, previous)) = deliveries.by_id.get(&delivery.id) {
            if *known > revision {
                return;
            }
            let previous = previous.id;
            deliveries.dead.remove(&previous);
        }
        if delivery.status == DeliveryStatus::Dead {
            deliveries.dead.insert(delivery.id);
        }
        deliveries.by_event.entry(delivery.event_id.clone()).or_default().insert(delivery.id);
        deliveries.by_id.insert(delivery.id, (revision, delivery));
    }

    /// Apply an entry of `SH_DELIVERIES` (key: the delivery id).
    pub fn apply_delivery_entry(&self, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        match serde_json::from_slice::<Delivery>(&entry.value) {
            Ok(delivery) => self.apply_delivery(entry.revision, delivery),
            Err(error) => tracing::error!(%error, key = %entry.key, "a delivery in SH_DELIVERIES does not decode"),
        }
    }

    /// Apply an outcome at `revision`, unless a newer one is known.
    pub fn apply_outcome(&self, inbox_id: u64, revision: u64, outcome: InboxOutcome) {
        let mut outcomes = self.outcomes.write().expect(POISONED);
        if outcomes.get(&inbox_id).is_some_and(|(known, _)| *known > revision) {
            return;
        }
        outcomes.insert(inbox_id, (revision, outcome));
    }

    /// Apply an entry of `SH_OUTCOMES` (key: the inbox id).
    pub fn apply_outcome_entry(&self, entry: kv::Entry) {
        let Ok(inbox_id) = entry.key.parse::<u64>() else { return };
        if entry.operation != kv::Operation::Put {
            self.outcomes.write().expect(POISONED).remove(&inbox_id);
            return;
        }
        match serde_json::from_slice::<InboxOutcome>(&entry.value) {
            Ok(outcome) => self.apply_outcome(inbox_id, entry.revision, outcome),
            Err(error) => tracing::error!(%error, key = %entry.key, "an outcome in SH_OUTCOMES does not decode"),
        }
    }

    /// Apply an inbox entry's place (own append or followed).
    pub fn apply_inbox(&self, inbox_id: u64, account_id: String, received_at_ms: u64) {
        self.inbox.write().expect(POISONED).insert(inbox_id, (account_id, received_at_ms));
    }

    /// Apply a message of `SH_INBOX` (headers only); requeue requests are not entries.
    pub fn apply_inbox_message(&self, message: jetstream::Message) {
        let Ok(info) = message.info() else { return };
        let sequence = info.stream_sequence;
        let Some(headers) = message.headers.as_ref() else { return };
        if headers.get(super::inbox::REQUEUE).is_some() {
            return;
        }
        let account = message.subject.split('.').nth(3).and_then(token_id);
        let received = headers.get(super::inbox::RECEIVED_AT).and_then(|value| value.as_str().parse::<u64>().ok());
        if let (Some(account), Some(received)) = (account, received) {
            self.apply_inbox(sequence, account, received);
        }
    }

    /// Forget an account's events and inbox entries (after its data was purged).
    pub fn forget_account(&self, account_id: &str) -> u64 {
        let mut removed = 0;
        let mut events = self.events.write().expect(POISONED);
        let before = events.len();
        events.retain(|_, event| event.account_id != account_id);
        removed += before - events.len();
        drop(events);
        let mut inbox = self.inbox.write().expect(POISONED);
        let gone: Vec<u64> = inbox.iter().filter(|(_, (account, _))| account == account_id).map(|(id, _)| *id).collect();
        for id in &gone {
            inbox.remove(id);
        }
        drop(inbox);
        let mut outcomes = self.outcomes.write().expect(POISONED);
        for id in &gone {
            outcomes.remove(id);
        }
        (removed + gone.len()) as u64
    }

    /// Events whose id's time is before `cutoff_ms`, oldest first: (id, account, stored size).
    pub fn events_before(&self, cutoff_ms: u64) -> Vec<(String, String, usize)> {
        let events = self.events.read().expect(POISONED);
        let old = events.iter().take_while(|(id, _)| crate::store::event_time_ms(id).is_none_or(|time_ms| time_ms < cutoff_ms));
        old.map(|(id, event)| (id.clone(), event.account_id.clone(), event.bytes.len())).collect()
    }

    /// Forget an event with its attempts and deliveries (retention deleted them).
    pub fn forget_event(&self, event_id: &str) {
        self.events.write().expect(POISONED).remove(event_id);
        self.attempts.write().expect(POISONED).remove(event_id);
        let mut deliveries = self.deliveries.write().expect(POISONED);
        for id in deliveries.by_event.remove(event_id).unwrap_or_default() {
            deliveries.by_id.remove(&id);
            deliveries.dead.remove(&id);
        }
    }

    /// Inbox entries received before `cutoff_ms`, oldest first.
    pub fn inbox_before(&self, cutoff_ms: u64) -> Vec<u64> {
        let inbox = self.inbox.read().expect(POISONED);
        inbox.iter().filter(|(_, (_, received_ms))| *received_ms < cutoff_ms).map(|(id, _)| *id).collect()
    }

    /// Forget an inbox entry and its outcome (retention deleted them).
    pub fn forget_inbox(&self, inbox_id: u64) {
        self.inbox.write().expect(POISONED).remove(&inbox_id);
        self.outcomes.write().expect(POISONED).remove(&inbox_id);
    }

    /// An event's stored JSON.
    pub fn event_bytes(&self, event_id: &str) -> Option<Arc<Vec<u8>>> {
        self.events.read().expect(POISONED).get(event_id).map(|event| event.bytes.clone())
    }

    /// The time (Unix ms) of the oldest event held.
    pub fn oldest_event_ms(&self) -> Option<u64> {
        self.events.read().expect(POISONED).keys().find_map(|id| crate::store::event_time_ms(id))
    }

    /// Events in log order, filtered (see [`EventFilter`]).
    pub fn list_events(&self, filter: &EventFilter) -> Vec<Arc<Vec<u8>>> {
        let events = self.events.read().expect(POISONED);
        let start = filter.after.clone().map_or(Bound::Unbounded, Bound::Excluded);
        events
            .range((start, Bound::Unbounded))
            .map(|(_, event)| event)
            .filter(|event| filter.matches_fields(&event.account_id, event.event_type, &event.record_id, event.result, &event.timestamp))
            .take(filter.limit)
            .map(|event| event.bytes.clone())
            .collect()
    }

    /// The attempts of an event's deliveries, by delivery and attempt number.
    pub fn attempts_of_event(&self, event_id: &str) -> Vec<Attempt> {
        let attempts = self.attempts.read().expect(POISONED);
        attempts.get(event_id).map(|attempts| attempts.values().cloned().collect()).unwrap_or_default()
    }

    /// A delivery's record.
    pub fn delivery(&self, delivery_id: u64) -> Option<Delivery> {
        self.deliveries.read().expect(POISONED).by_id.get(&delivery_id).map(|(_, delivery)| delivery.clone())
    }

    /// An event's deliveries.
    pub fn deliveries_of_event(&self, event_id: &str) -> Vec<Delivery> {
        let deliveries = self.deliveries.read().expect(POISONED);
        let ids = deliveries.by_event.get(event_id);
        ids.into_iter().flatten().filter_map(|id| deliveries.by_id.get(id).map(|(_, delivery)| delivery.clone())).collect()
    }

    /// Dead letters, newest (highest id) first.
    pub fn dead_letters(&self, limit: usize) -> Vec<Delivery> {
        let deliveries = self.deliveries.read().expect(POISONED);
        let found = deliveries.dead.iter().rev().filter_map(|id| deliveries.by_id.get(id)).map(|(_, delivery)| delivery);
        found.filter(|delivery| delivery.status == DeliveryStatus::Dead).take(limit).cloned().collect()
    }

    /// Pending deliveries due at or before `now_ms` for which `wanted` holds (earliest first, at
    /// most `limit`), and the earliest due later. Lanes are the engine's: a delivery waiting
    /// behind its lane's head is listed too.
    pub fn due(&self, now_ms: u64, limit: usize, wanted: &mut dyn FnMut(u64) -> bool) -> (Vec<u64>, Option<u64>) {
        let deliveries = self.deliveries.read().expect(POISONED);
        let mut pending: Vec<(u64, u64)> = deliveries
            .by_id
            .values()
            .filter(|(_, delivery)| delivery.status == DeliveryStatus::Pending)
            .map(|(_, delivery)| (delivery.next_attempt_at_ms, delivery.id))
            .collect();
        pending.sort_unstable();
        let next = pending.iter().map(|(due_ms, _)| *due_ms).find(|due_ms| *due_ms > now_ms);
        let due = pending.into_iter().take_while(|(due_ms, _)| *due_ms <= now_ms).map(|(_, id)| id).filter(|id| wanted(*id));
        (due.take(limit).collect(), next)
    }

    /// An entry's outcome.
    pub fn outcome(&self, inbox_id: u64) -> Option<InboxOutcome> {
        self.outcomes.read().expect(POISONED).get(&inbox_id).map(|(_, outcome)| outcome.clone())
    }

    /// Outcomes with `status`, newest first.
    pub fn list_outcomes(&self, status: InboxStatus, limit: usize) -> Vec<(InboxId, InboxOutcome)> {
        let outcomes = self.outcomes.read().expect(POISONED);
        let found = outcomes.iter().rev().filter(|(_, (_, outcome))| outcome.status == status).take(limit);
        found.map(|(id, (_, outcome))| (InboxId(*id), outcome.clone())).collect()
    }

    /// An entry's account.
    pub fn inbox_account(&self, inbox_id: u64) -> Option<String> {
        self.inbox.read().expect(POISONED).get(&inbox_id).map(|(account, _)| account.clone())
    }

    /// Entries after `after`, in id order, at most `limit`.
    pub fn list_inbox(&self, after: Option<InboxId>, limit: usize) -> Vec<InboxListing> {
        let inbox = self.inbox.read().expect(POISONED);
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.0));
        let found = inbox.range((start, Bound::Unbounded)).take(limit);
        found
            .map(|(id, (account_id, received_at_ms))| InboxListing {
                id: InboxId(*id),
                account_id: account_id.clone(),
                received_at_ms: *received_at_ms,
            })
            .collect()
    }

    /// An account's entries received in `[from_ms, to_ms)`.
    pub fn inbox_of_account(&self, account_id: &str, from_ms: u64, to_ms: u64) -> Vec<InboxId> {
        let inbox = self.inbox.read().expect(POISONED);
        let wanted = |(account, received): &(String, u64)| account == account_id && (from_ms..to_ms).contains(received);
        inbox.iter().filter(|(_, entry)| wanted(entry)).map(|(id, _)| InboxId(*id)).collect()
    }

    /// Entries without an outcome (not yet normalized, as far as this node knows), oldest first.
    pub fn pending(&self) -> Vec<InboxId> {
        let inbox = self.inbox.read().expect(POISONED);
        let outcomes = self.outcomes.read().expect(POISONED);
        inbox.keys().filter(|id| !outcomes.contains_key(id)).map(|id| InboxId(*id)).collect()
    }
}
