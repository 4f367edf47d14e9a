//! The model test: random sequences of storage operations run against the sled backend and the
//! in-memory reference must agree on everything the interfaces answer, across restarts of the
//! sled store.
//!
//! Ids are the backends' own (sled's jump forward after a restart), so the test names every inbox
//! entry and delivery by a handle (its creation order) and translates each backend's ids to
//! handles before comparing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::memory::MemoryStore;
use super::sled_backend::SledStore;
use super::*;
use crate::model::{EventResult, EventType};

const ACCOUNTS: [&str; 2] = ["a1", "a2"];
const SUBSCRIPTIONS: [&str; 2] = ["s1", "s2"];
const RECORDS: [&str; 3] = ["r1", "r2", "r3"];

/// Which backend a value belongs to.
#[derive(Clone, Copy)]
enum Side {
    Sled = 0,
    Memory = 1,
}

struct Model {
    dir: tempfile::TempDir,
    sled: Option<SledStore>,
    memory: MemoryStore,
    /// Inbox handle to each backend's id.
    inbox: Vec<[u64; 2]>,
    /// Delivery handle to each backend's id.
    deliveries: Vec<[u64; 2]>,
    /// Event ids written so far, with their account and record.
    events: Vec<(String, &'static str, &'static str)>,
    now_ms: u64,
    rng: StdRng,
}

impl Model {
    fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path(), 1 << 20).unwrap();
        Model {
            dir,
            sled: Some(sled),
            memory: MemoryStore::new(),
            inbox: Vec::new(),
            deliveries: Vec::new(),
            events: Vec::new(),
            now_ms: 1_000_000,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn sled(&self) -> &SledStore {
        self.sled.as_ref().expect("the sled store is open")
    }

    fn both(&self) -> [(&dyn Backend, Side); 2] {
        [(self.sled(), Side::Sled), (&self.memory, Side::Memory)]
    }

    fn inbox_handle(&self, side: Side, id: InboxId) -> usize {
        self.inbox.iter().position(|ids| ids[side as usize] == id.0).unwrap_or_else(|| panic!("unknown inbox id {id}"))
    }

    fn delivery_handle(&self, side: Side, id: u64) -> usize {
        self.deliveries.iter().position(|ids| ids[side as usize] == id).unwrap_or_else(|| panic!("unknown delivery id {id}"))
    }

    /// A delivery as JSON with its ids replaced by handles.
    fn delivery_json(&self, side: Side, delivery: &Delivery) -> Value {
        let mut value = serde_json::to_value(delivery).unwrap();
        value["id"] = json!(self.delivery_handle(side, delivery.id));
        value
    }

    fn restart(&mut self) {
        self.sled().flush_blocking().unwrap();
        self.sled = None;
        // The store's threads end once their queues close; sled's lock goes with the last of them.
        for _ in 0..250 {
            match SledStore::open(self.dir.path(), 1 << 20) {
                Ok(store) => {
                    self.sled = Some(store);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        panic!("the sled store did not reopen");
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.random_range(0..from.len())]
    }

    fn step(&mut self, runtime: &tokio::runtime::Runtime) -> String {
        self.now_ms += self.rng.random_range(0..50);
        match self.rng.random_range(0..106) {
            0..=14 => self.append(runtime),
            15..=34 => self.commit(),
            35..=39 => self.finish(),
            40..=42 => self.requeue(),
            43..=64 => self.attempt(runtime),
            65..=69 => self.redeliver(runtime),
            70..=72 => self.discard(runtime),
            73..=86 => self.catalog(runtime),
            87..=91 => self.digests(),
            92..=93 => self.prune(),
            94 => self.remove_account_data(),
            95..=97 => self.put_state(),
            98..=99 => self.export_pages(),
            100 => self.put_event(),
            _ => {
                self.restart();
                "restart".into()
            }
        }
    }

    fn append(&mut self, runtime: &tokio::runtime::Runtime) -> String {
        let account = self.pick(&ACCOUNTS);
        let entry = InboxEntry {
            account_id: account.into(),
            received_at_ms: self.now_ms,
            method: "POST".into(),
            query: String::new(),
            content_type: Some("application/json".into()),
            headers: vec![("x-n".into(), self.inbox.len().to_string())],
            body: format!("{{\"n\": {}}}", self.inbox.len()).into_bytes(),
        };
        let digest = (self.rng.random_range(0..3) > 0).then(|| [self.rng.random_range(0..4u8)]);
        let dedup = digest.as_ref().map(|digest| Dedup { digest, window_ms: 200 });
        let [sled, memory] = self.both().map(|(store, _)| runtime.block_on(store.append_inbox(&entry, dedup)).unwrap());
        match (sled, memory) {
            (Appended::New(sled), Appended::New(memory)) => {
                self.inbox.push([sled.0, memory.0]);
                format!("append {account} {digest:?}: new")
            }
            (Appended::Duplicate(sled), Appended::Duplicate(memory)) => {
                let sled = sled.map(|id| self.inbox_handle(Side::Sled, id));
                let memory = memory.map(|id| self.inbox_handle(Side::Memory, id));
                assert_eq!(sled, memory, "the original of a duplicate");
                format!("append {account} {digest:?}: duplicate of {memory:?}")
            }
            (sled, memory) => panic!("append {account} {digest:?}: the sled backend answered {sled:?}, the reference {memory:?}"),
        }
    }

    fn pending_handles(&self) -> Vec<(usize, u32)> {
        self.memory.pending_inbox().unwrap().into_iter().map(|(id, generation)| (self.inbox_handle(Side::Memory, id), generation)).collect()
    }

    fn commit(&mut self) -> String {
        let pending = self.pending_handles();
        if pending.is_empty() {
            return "commit: nothing pending".into();
        }
        let n_entries = self.rng.random_range(1..=pending.len().min(2));
        let mut plans = Vec::new();
        for &(handle, generation) in &pending[..n_entries] {
            let account = self.memory.get_inbox(InboxId(self.inbox[handle][Side::Memory as usize])).unwrap().unwrap().account_id;
            let account: &'static str = if account == "a1" { "a1" } else { "a2" };
            let mut events = Vec::new();
            for position in 0..self.rng.random_range(0..=2) {
                let record = self.pick(&RECORDS);
                // A real event id (UUID v7 of the arrival time): retention reads the time from it.
                let id = crate::normalize::event_id(InboxId(handle as u64), self.now_ms, generation, position);
                self.events.push((id.clone(), account, record));
                let subscriptions: Vec<&str> = SUBSCRIPTIONS.iter().copied().filter(|_| self.rng.random_bool(0.6)).collect();
                let delete = self.rng.random_bool(0.15);
                events.push((id, record, delete, subscriptions, self.rng.random_range(0..3u64)));
            }
            plans.push((handle, generation, account, events));
        }
        // Delivery ids come from each backend; handles are shared.
        let mut batches: [Vec<NormalizedBatch>; 2] = [Vec::new(), Vec::new()];
        // Records written earlier in this commit, per side: whether each is there after it.
        let mut written: [HashMap<(&str, &str), bool>; 2] = [HashMap::new(), HashMap::new()];
        for (handle, generation, account, events) in &plans {
            let mut per_side: [NormalizedBatch; 2] = [0, 1].map(|side| NormalizedBatch {
                inbox_id: InboxId(self.inbox[*handle][side]),
                outcome: InboxOutcome {
                    status: InboxStatus::Done,
                    plugin: Some("model".into()),
                    plugin_version: Some("1".into()),
                    error_kind: None,
                    error: None,
                    event_ids: events.iter().map(|event| event.0.clone()).collect(),
                    n_unchanged: 0,
                    generation: *generation,
                    at: "2026-12-06T00:00:00Z".into(),
                },
                events: Vec::new(),
                state: Vec::new(),
                deliveries: Vec::new(),
            });
            for (event_id, record, delete, subscriptions, delay) in events {
                let stored = StoredEvent {
                    id: event_id.clone(),
                    event_type: if *delete { EventType::ReservationDeleted } else { EventType::ReservationUpdated },
                    timestamp: "2026-12-06T00:00:00.000Z".into(),
                    integration_account_id: account.to_string(),
                    workspace_id: "ws".into(),
                    record_id: record.to_string(),
                    record: json!({"id": record, "event": event_id}),
                    result: EventResult::Success,
                    failure_reason: None,
                    inbox_id: handle.to_string(),
                    origin: if *delete { Origin::Reconciliation } else { Origin::Webhook },
                };
                let write = StateWrite {
                    account_id: account.to_string(),
                    kind: RecordKind::Reservation,
                    record_id: record.to_string(),
                    record: (!delete).then(|| std::sync::Arc::new(json!({"id": record, "event": event_id}))),
                    expected: Expected::Any,
                };
                let mode = self.rng.random_range(0..10);
                for subscription in subscriptions {
                    let ids = self.both().map(|(store, _)| store.delivery_id(event_id, subscription).unwrap());
                    self.deliveries.push(ids);
                    for side in [0, 1] {
                        per_side[side].deliveries.push(Delivery {
                            id: ids[side],
                            event_id: event_id.clone(),
                            subscription_id: subscription.to_string(),
                            account_id: account.to_string(),
                            lane: record.to_string(),
                            attempts: 0,
                            retry_base: 0,
                            status: DeliveryStatus::Pending,
                            next_attempt_at_ms: self.now_ms + delay,
                            last_error: None,
                            created_at_ms: self.now_ms,
                            updated_at_ms: self.now_ms,
                        });
                    }
                }
                for (side, batch) in per_side.iter_mut().enumerate() {
                    let current = self.both()[side].0.get_state(account, RecordKind::Reservation, record).unwrap();
                    let earlier = written[side].insert((*account, *record), !delete);
                    let mut write = write.clone();
                    write.expected = expectation(mode, current.map(|(_, revision)| revision), earlier);
                    batch.events.push(stored.clone());
                    batch.state.push(write);
                }
            }
            let [sled_batch, memory_batch] = per_side;
            batches[0].push(sled_batch);
            batches[1].push(memory_batch);
        }
        let [sled_batches, memory_batches] = batches;
        let sled = self.sled().commit_normalized_blocking(sled_batches);
        let memory = self.memory.commit_normalized_blocking(memory_batches);
        match (sled, memory) {
            (Ok(()), Ok(())) => format!("commit {n_entries}"),
            (Err(StoreError::Conflict { record: sled }), Err(StoreError::Conflict { record: memory })) => {
                assert_eq!(sled, memory, "the record in conflict");
                format!("commit {n_entries}: conflict on {memory}")
            }
            (sled, memory) => panic!("commit {n_entries}: the sled backend answered {sled:?}, the reference {memory:?}"),
        }
    }

    fn finish(&mut self) -> String {
        let pending = self.pending_handles();
        let Some(&(handle, generation)) = pending.first() else { return "finish: nothing pending".into() };
        let status = if self.rng.random_bool(0.5) { InboxStatus::Skipped } else { InboxStatus::Failed };
        let outcome = InboxOutcome {
            status,
            plugin: Some("model".into()),
            plugin_version: None,
            error_kind: Some("bad_payload".into()),
            error: Some("no".into()),
            event_ids: Vec::new(),
            n_unchanged: 0,
            generation,
            at: "2026-12-06T00:00:00Z".into(),
        };
        for (store, side) in self.both() {
            store.finish_inbox(InboxId(self.inbox[handle][side as usize]), &outcome).unwrap();
        }
        format!("finish {handle} {status:?}")
    }

    fn requeue(&mut self) -> String {
        if self.inbox.is_empty() {
            return "requeue: empty inbox".into();
        }
        let handle = self.rng.random_range(0..self.inbox.len());
        // Renormalization requeues entries it found in the inbox, never pruned ones.
        if self.memory.get_inbox(InboxId(self.inbox[handle][Side::Memory as usize])).unwrap().is_none() {
            return format!("requeue {handle}: pruned");
        }
        let answers = self.both().map(|(store, side)| store.requeue_inbox(InboxId(self.inbox[handle][side as usize])).unwrap());
        assert_eq!(answers[0], answers[1], "requeue {handle}");
        format!("requeue {handle}")
    }

    /// Due deliveries as (due time, handle), sorted.
    fn due(&self, store: &dyn Backend, side: Side) -> Vec<(u64, usize)> {
        let (ids, _) = store.due_deliveries(u64::MAX / 2, usize::MAX, &mut |_| true);
        let mut due: Vec<(u64, usize)> = ids
            .into_iter()
            .map(|id| (store.get_delivery(id).unwrap().unwrap().next_attempt_at_ms, self.delivery_handle(side, id)))
            .collect();
        due.sort();
        due
    }

    fn attempt(&mut self, runtime: &tokio::runtime::Runtime) -> String {
        let due = self.due(&self.memory, Side::Memory);
        if due.is_empty() {
            return "attempt: nothing due".into();
        }
        let (_, handle) = due[self.rng.random_range(0..due.len())];
        let outcome = self.rng.random_range(0..4);
        let hold_lane = self.rng.random_bool(0.5);
        let retry_at = self.now_ms + self.rng.random_range(1..40);
        for (store, side) in self.both() {
            let id = self.deliveries[handle][side as usize];
            // Every due delivery is leased; the one attempted is recorded, the others given back.
            let (leases, _) = store.next_work(u64::MAX / 2, usize::MAX).unwrap();
            let leased = leases.iter().find(|leased| leased.delivery.id == id).expect("the chosen delivery is leased");
            assert!(store.next_work(u64::MAX / 2, usize::MAX).unwrap().0.is_empty(), "a leased delivery is leased once");
            let previous = &leased.delivery;
            let mut next = previous.clone();
            next.attempts += 1;
            next.updated_at_ms = self.now_ms;
            next.status = match outcome {
                0 => DeliveryStatus::Delivered,
                1 => DeliveryStatus::Dead,
                _ => DeliveryStatus::Pending,
            };
            next.next_attempt_at_ms = retry_at;
            let attempt = Attempt {
                delivery_id: handle.to_string(),
                subscription_id: next.subscription_id.clone(),
                attempt: next.attempts,
                at: "2026-12-06T00:00:00Z".into(),
                url: "http://receiver.test/".into(),
                status_code: Some(if outcome == 0 { 200 } else { 500 }),
                latency_ms: 3,
                error: None,
                response: None,
                success: outcome == 0,
            };
            runtime.block_on(store.record_attempt(leased, &next, Some(&attempt), self.now_ms, hold_lane)).unwrap();
        }
        format!("attempt {handle} outcome {outcome} hold {hold_lane}")
    }

    fn dead_handles(&self) -> Vec<usize> {
        self.memory.dead_letters(usize::MAX).unwrap().iter().map(|delivery| self.delivery_handle(Side::Memory, delivery.id)).collect()
    }

    fn redeliver(&mut self, runtime: &tokio::runtime::Runtime) -> String {
        let dead = self.dead_handles();
        if let Some(&handle) = dead.first() {
            for (store, side) in self.both() {
                let mut delivery = store.get_delivery(self.deliveries[handle][side as usize]).unwrap().unwrap();
                delivery.status = DeliveryStatus::Pending;
                delivery.retry_base = delivery.attempts;
                delivery.next_attempt_at_ms = self.now_ms;
                runtime.block_on(store.redeliver(vec![delivery], Vec::new())).unwrap();
            }
            return format!("revive {handle}");
        }
        // Nothing dead: deliver an event again to a subscription, at its lane's tail.
        let Some((event_id, account, record)) = self.events.last().cloned() else { return "redeliver: no events".into() };
        // The API redelivers only events it has (an unknown one answers 404).
        if self.memory.get_event(&event_id).unwrap().is_none() {
            return format!("redeliver {event_id}: gone");
        }
        let ids = self.both().map(|(store, _)| store.new_delivery_id().unwrap());
        self.deliveries.push(ids);
        for (store, side) in self.both() {
            let delivery = Delivery {
                id: ids[side as usize],
                event_id: event_id.clone(),
                subscription_id: "s1".into(),
                account_id: account.into(),
                lane: record.into(),
                attempts: 0,
                retry_base: 0,
                status: DeliveryStatus::Pending,
                next_attempt_at_ms: self.now_ms,
                last_error: None,
                created_at_ms: self.now_ms,
                updated_at_ms: self.now_ms,
            };
            runtime.block_on(store.redeliver(Vec::new(), vec![delivery])).unwrap();
        }
        format!("redeliver {event_id} again")
    }

    fn discard(&mut self, runtime: &tokio::runtime::Runtime) -> String {
        let dead = self.dead_handles();
        let Some(&handle) = dead.last() else { return "discard: no dead letters".into() };
        for (store, side) in self.both() {
            let mut delivery = store.get_delivery(self.deliveries[handle][side as usize]).unwrap().unwrap();
            delivery.status = DeliveryStatus::Cancelled;
            runtime.block_on(store.discard_dead_letter(delivery, self.now_ms)).unwrap();
        }
        format!("discard {handle}")
    }

    fn catalog(&mut self, runtime: &tokio::runtime::Runtime) -> String {
        let account_id = self.pick(&ACCOUNTS);
        let subscription_id = self.pick(&SUBSCRIPTIONS);
        let choice = self.rng.random_range(0..9);
        let account = Account {
            id: account_id.into(),
            workspace_id: "ws".into(),
            pms: "hostaway".into(),
            name: Some(format!("n{}", self.now_ms)),
            credentials: BTreeMap::new(),
            verification: BTreeMap::new(),
            settings: BTreeMap::new(),
            api_base_url: None,
            rate_limit_per_second: None,
            registration: BTreeMap::new(),
            reconcile_interval_secs: (choice == 1).then_some(self.now_ms % 3),
            created_at: "2026-12-06T00:00:00Z".into(),
            updated_at: "2026-12-06T00:00:00Z".into(),
        };
        let subscription = Subscription {
            id: subscription_id.into(),
            account_id: account_id.into(),
            name: format!("n{}", self.now_ms),
            url: "http://receiver.test/".into(),
            enabled: true,
            event_types: vec![EventType::ReservationCreated],
            secret: "whsec_x".into(),
            failing_since_ms: None,
            disabled_reason: None,
            created_at: "2026-12-06T00:00:00Z".into(),
            updated_at: "2026-12-06T00:00:00Z".into(),
        };
        let sync_state = SyncState {
            watermark: Some(format!("w{}", self.now_ms)),
            running: self.now_ms.is_multiple_of(2).then(|| SyncPass {
                kind: PassKind::Reconciliation,
                mode: "modified-since".into(),
                deliver: true,
                cursor: Some(format!("c{}", self.now_ms)),
                since: None,
                started_at: "2026-12-06T00:00:00Z".into(),
                started_at_ms: self.now_ms,
                finished_at: None,
                pages_done: self.now_ms % 7,
                records_seen: self.now_ms,
                recovered: 1,
                errors: 0,
                last_error: None,
                modes_left: vec![("stay-date-window".into(), Some("2026-11-06".into()))],
            }),
            last_pass: None,
            last_error: None,
            last_ended_at_ms: Some(self.now_ms),
        };
        // A sync state write expects what is stored (it wins) or nothing (it loses when a state exists).
        let swap_fresh = self.rng.random_bool(0.7);
        let answers: Vec<String> = self
            .both()
            .into_iter()
            .map(|(store, _)| {
                runtime.block_on(async {
                    match choice {
                        0 => format!("{:?}", store.insert_account(&account).await.unwrap()),
                        1 => format!("{:?}", store.put_account(&account).await.unwrap()),
                        2 => format!("{:?}", store.remove_account(account_id).await.unwrap()),
                        3 => format!("{:?}", store.put_subscription(&subscription).await.unwrap()),
                        4 => format!("{:?}", store.remove_subscription(account_id, subscription_id).await.unwrap()),
                        5 => format!("{:?}", store.insert_meta(account_id, subscription_id).await.unwrap()),
                        6 => format!("{:?}", store.remove_meta(account_id).await.unwrap()),
                        7 => {
                            let previous = if swap_fresh { store.get_sync_state(account_id).unwrap() } else { None };
                            format!("{:?}", store.put_sync_state(account_id, previous.as_ref(), &sync_state).await.unwrap())
                        }
                        _ => format!("{:?}", store.remove_sync_state(account_id).await.unwrap()),
                    }
                })
            })
            .collect();
        assert_eq!(answers[0], answers[1], "catalog operation {choice}");
        format!("catalog {choice} {account_id} {subscription_id}")
    }

    fn digests(&mut self) -> String {
        let account = self.pick(&ACCOUNTS);
        let digest = [self.rng.random_range(0..4u8)];
        let choice = self.rng.random_range(0..2);
        let now_ms = self.now_ms;
        let answers: Vec<String> = self
            .both()
            .into_iter()
            .map(|(store, _)| match choice {
                0 => {
                    let record = DigestRecord { account_id: account.into(), digest: digest.to_vec(), seen_ms: now_ms };
                    format!("{:?}", store.import_digest(&record).unwrap())
                }
                _ => format!("{:?}", store.expire_digests_blocking(now_ms, 200).unwrap()),
            })
            .collect();
        assert_eq!(answers[0], answers[1], "digest operation {choice}");
        format!("digest {choice} {account} {digest:?}")
    }

    /// A pruning pass with cutoffs among recent times and a small budget; both report the same.
    fn prune(&mut self) -> String {
        let recent = |rng: &mut StdRng| if rng.random_bool(0.1) { 0 } else { self.now_ms.saturating_sub(rng.random_range(0..400)) };
        let cutoffs = RetentionCutoffs {
            events_before_ms: recent(&mut self.rng),
            inbox_before_ms: recent(&mut self.rng),
            dead_letters_before_ms: recent(&mut self.rng),
            now_ms: self.now_ms,
        };
        let budget = self.rng.random_range(1..6);
        let reports: Vec<String> = self
            .both()
            .into_iter()
            .map(|(store, _)| {
                let report = store.prune_blocking(&cutoffs, budget).unwrap();
                format!("events {} deliveries {} inbox {} more {}", report.events, report.deliveries, report.inbox, report.more)
            })
            .collect();
        assert_eq!(reports[0], reports[1], "prune {cutoffs:?} budget {budget}");
        format!("prune {cutoffs:?} budget {budget}: {}", reports[0])
    }

    /// An account's data deleted (its catalog entry may or may not be gone).
    fn remove_account_data(&mut self) -> String {
        let account = self.pick(&ACCOUNTS);
        let answers = self.both().map(|(store, _)| store.remove_account_data_blocking(account).unwrap());
        assert_eq!(answers[0], answers[1], "remove data of {account}");
        format!("remove data of {account}: {}", answers[0])
    }

    /// State set or removed outside a normalization (an import).
    fn put_state(&mut self) -> String {
        let account = self.pick(&ACCOUNTS);
        let record_id = self.pick(&RECORDS);
        let kind = self.pick(&[RecordKind::Reservation, RecordKind::Conversation, RecordKind::Calendar]);
        let record = self.rng.random_bool(0.8).then(|| std::sync::Arc::new(json!({"id": record_id, "imported": self.now_ms})));
        let write = StateWrite { account_id: account.into(), kind, record_id: record_id.into(), record, expected: Expected::Any };
        for (store, _) in self.both() {
            store.put_state_blocking(vec![write.clone()]).unwrap();
        }
        format!("put state {account} {kind:?} {record_id} {}", write.record.is_some())
    }

    /// An event added to the log outside a normalization (an import), without deliveries.
    fn put_event(&mut self) -> String {
        let account = self.pick(&ACCOUNTS);
        let record_id = self.pick(&RECORDS);
        // Of the model's time, so retention prunes it like the others.
        let id = crate::normalize::event_id(InboxId((1 << 40) + self.events.len() as u64), self.now_ms, 0, 0);
        let event = StoredEvent {
            id: id.clone(),
            event_type: EventType::ReservationUpdated,
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            integration_account_id: account.into(),
            workspace_id: "w".into(),
            record_id: record_id.into(),
            record: json!({"id": record_id}),
            result: EventResult::Success,
            failure_reason: None,
            inbox_id: String::new(),
            origin: Origin::Webhook,
        };
        for (store, _) in self.both() {
            store.put_events_blocking(vec![event.clone()]).unwrap();
        }
        self.events.push((id.clone(), account, record_id));
        format!("put event {id} {account} {record_id}")
    }

    /// Pages of the inbox, the digests and an account's state from a random place: both backends
    /// answer the same page.
    fn export_pages(&mut self) -> String {
        let limit = self.rng.random_range(1..5);
        let handle = (!self.inbox.is_empty() && self.rng.random_bool(0.7)).then(|| self.rng.random_range(0..self.inbox.len()));
        let pages: Vec<Vec<(usize, String, u64)>> = self
            .both()
            .into_iter()
            .map(|(store, side)| {
                let after = handle.map(|handle| InboxId(self.inbox[handle][side as usize]));
                let page = store.list_inbox(after, limit).unwrap();
                page.into_iter().map(|listing| (self.inbox_handle(side, listing.id), listing.account_id, listing.received_at_ms)).collect()
            })
            .collect();
        assert_eq!(pages[0], pages[1], "inbox page after {handle:?}");
        let account = self.pick(&ACCOUNTS);
        let digest = [self.rng.random_range(0..4u8)];
        let after = self.rng.random_bool(0.7).then_some((account, &digest[..]));
        let digests = self.both().map(|(store, _)| store.list_digests(after, limit).unwrap());
        assert_eq!(digests[0], digests[1], "digest page after {after:?}");
        let record_id = self.pick(&RECORDS);
        let kind = self.pick(&[RecordKind::Reservation, RecordKind::Conversation, RecordKind::Calendar]);
        let after = self.rng.random_bool(0.7).then_some((kind, record_id));
        let states = self.both().map(|(store, _)| store.list_state(account, after, limit).unwrap());
        assert_eq!(states[0], states[1], "state page of {account} after {after:?}");
        format!(
            "export pages of {limit} after {handle:?}: {} entries, {} digests, {} states",
            pages[0].len(),
            digests[0].len(),
            states[0].len()
        )
    }

    /// Everything the interfaces answer, from one backend, with ids as handles.
    fn observe(&self, store: &dyn Backend, side: Side) -> Value {
        let accounts: Vec<Value> = store.list_accounts().unwrap().iter().map(|account| serde_json::to_value(account).unwrap()).collect();
        let subscriptions: Vec<Value> = ACCOUNTS
            .iter()
            .flat_map(|account| store.list_subscriptions(account).unwrap())
            .map(|subscription| serde_json::to_value(subscription).unwrap())
            .collect();
        let meta: Vec<Option<String>> = ACCOUNTS.iter().map(|key| store.get_meta(key).unwrap()).collect();
        let sync_states: Vec<Option<SyncState>> = ACCOUNTS.iter().map(|account| store.get_sync_state(account).unwrap()).collect();
        let pending: Vec<(usize, u32)> =
            store.pending_inbox().unwrap().into_iter().map(|(id, generation)| (self.inbox_handle(side, id), generation)).collect();
        let inbox: Vec<Value> = self
            .inbox
            .iter()
            .map(|ids| {
                let id = InboxId(ids[side as usize]);
                json!({
                    "entry": serde_json::to_value(store.get_inbox(id).unwrap()).unwrap(),
                    "outcome": serde_json::to_value(store.inbox_outcome(id).unwrap()).unwrap(),
                })
            })
            .collect();
        let outcomes: Vec<Vec<usize>> = [InboxStatus::Done, InboxStatus::Skipped, InboxStatus::Failed]
            .into_iter()
            .map(|status| store.list_outcomes(status, 5).unwrap().into_iter().map(|(id, _)| self.inbox_handle(side, id)).collect())
            .collect();
        let by_account: Vec<Vec<usize>> = ACCOUNTS
            .iter()
            .map(|account| {
                let ids = store.inbox_of_account(account, 1_000_100, u64::MAX).unwrap();
                ids.into_iter().map(|id| self.inbox_handle(side, id)).collect()
            })
            .collect();
        let events =
            serde_json::to_value(store.list_events(&EventFilter { limit: usize::MAX, ..EventFilter::default() }).unwrap()).unwrap();
        let middle = self.events.get(self.events.len() / 2).map(|(id, _, _)| id.clone());
        let filtered: Vec<String> = store
            .list_events(&EventFilter {
                account_id: Some("a2".into()),
                event_type: Some(EventType::ReservationUpdated),
                record_id: Some("r2".into()),
                after: middle,
                limit: 3,
                ..EventFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|event| event.id)
            .collect();
        let state: Vec<Option<Value>> = ACCOUNTS
            .iter()
            .flat_map(|account| RECORDS.iter().map(move |record| (account, record)))
            .map(|(account, record)| store.get_state(account, RecordKind::Reservation, record).unwrap().map(|(record, _)| record))
            .collect();
        let per_event: Vec<Value> = self
            .events
            .iter()
            .map(|(event_id, _, _)| {
                let deliveries: Vec<Value> =
                    store.deliveries_of_event(event_id).unwrap().iter().map(|delivery| self.delivery_json(side, delivery)).collect();
                let bytes = store.get_event_bytes(event_id).unwrap().map(|bytes| serde_json::from_slice::<Value>(&bytes).unwrap());
                let attempts = serde_json::to_value(store.attempts_of_event(event_id).unwrap()).unwrap();
                json!({"deliveries": deliveries, "bytes": bytes, "attempts": attempts, "event": serde_json::to_value(store.get_event(event_id).unwrap()).unwrap()})
            })
            .collect();
        let deliveries: Vec<Value> = self
            .deliveries
            .iter()
            .map(|ids| store.get_delivery(ids[side as usize]).unwrap().map_or(Value::Null, |delivery| self.delivery_json(side, &delivery)))
            .collect();
        let lanes: Vec<Option<usize>> = SUBSCRIPTIONS
            .iter()
            .flat_map(|subscription| RECORDS.iter().map(move |record| (subscription, record)))
            .map(|(subscription, record)| store.lane_head(subscription, record).unwrap().map(|id| self.delivery_handle(side, id)))
            .collect();
        let dead: Vec<usize> =
            store.dead_letters(usize::MAX).unwrap().iter().map(|delivery| self.delivery_handle(side, delivery.id)).collect();
        let (soon, next_ms) = store.due_deliveries(self.now_ms, usize::MAX, &mut |_| true);
        let mut soon: Vec<usize> = soon.into_iter().map(|id| self.delivery_handle(side, id)).collect();
        soon.sort();
        let listed: Vec<(usize, String, u64)> = store
            .list_inbox(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|listing| (self.inbox_handle(side, listing.id), listing.account_id, listing.received_at_ms))
            .collect();
        let digests: Vec<(String, Vec<u8>, u64)> = store
            .list_digests(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|digest| (digest.account_id, digest.digest, digest.seen_ms))
            .collect();
        let all_state: Vec<(String, &str, String, Value)> = ACCOUNTS
            .iter()
            .flat_map(|account| {
                store
                    .list_state(account, None, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(move |state| (account.to_string(), state.kind.as_str(), state.record_id, state.record))
            })
            .collect();
        let stats = store.storage_stats().unwrap();
        let stats = json!({
            "oldestEvent": stats.oldest_event_ms,
            "oldestInbox": stats.oldest_inbox_ms,
            "oldestInboxId": stats.oldest_inbox_id.map(|id| self.inbox_handle(side, id)),
            "inboxPrunedThrough": stats.inbox_pruned_through.map(|id| self.inbox_handle(side, id)),
        });
        json!({
            "stats": stats, "accounts": accounts, "subscriptions": subscriptions, "meta": meta, "sync": serde_json::to_value(&sync_states).unwrap(), "pending": pending, "inbox": inbox,
            "outcomes": outcomes, "byAccount": by_account, "events": events, "filtered": filtered, "state": state,
            "perEvent": per_event, "deliveries": deliveries, "lanes": lanes, "dead": dead,
            "due": self.due(store, side), "dueNow": soon, "nextDue": next_ms,
            "listed": listed, "digests": digests, "allState": all_state,
        })
    }
}

/// Where two observations first differ.
fn first_difference(left: &Value, right: &Value, path: &str) -> String {
    match (left, right) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                if x != y {
                    return first_difference(x, y, &format!("{path}.{key}"));
                }
            }
            path.into()
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    return first_difference(x, y, &format!("{path}[{index}]"));
                }
            }
            path.into()
        }
        _ => format!("{path}: sled {left} vs memory {right}"),
    }
}

/// What a state write of the model's commits expects: mostly nothing or the truth (the revision the
/// side holds, or what an earlier write of the same commit left), one time in ten a stale revision
/// or a record that is not there, which must fail the whole commit on both sides alike.
/// `earlier`: whether the record was there after an earlier write of this commit, if any.
fn expectation(mode: u32, current: Option<Revision>, earlier: Option<bool>) -> Expected {
    match (mode, earlier) {
        (0..=4, _) => Expected::Any,
        (5..=8, Some(true)) => Expected::Any,
        (5..=8, Some(false)) => Expected::Absent,
        (5..=8, None) => current.map_or(Expected::Absent, Expected::At),
        (_, Some(_)) => Expected::At(Revision(u64::MAX)),
        (_, None) => current.map_or(Expected::At(Revision(u64::MAX)), |_| Expected::Absent),
    }
}

#[test]
fn the_sled_backend_agrees_with_the_in_memory_reference() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let seeds: Vec<u64> = match std::env::var("STAYHOOK_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("STAYHOOK_MODEL_SEED is a number")],
        Err(_) => (1..=6).collect(),
    };
    for seed in seeds {
        let mut model = Model::new(seed);
        let mut history: Vec<String> = Vec::new();
        let mut restarts = 0;
        for _ in 0..400 {
            let step = model.step(&runtime);
            restarts += usize::from(step == "restart");
            history.push(step);
            // A normalized run's deliveries become due once the commit is durable.
            runtime.block_on(model.sled().durable()).unwrap();
            let sled = model.observe(model.sled(), Side::Sled);
            let memory = model.observe(&model.memory, Side::Memory);
            if sled != memory {
                let recent = &history[history.len().saturating_sub(8)..];
                panic!("seed {seed}: the backends disagree at {} after {recent:?}", first_difference(&sled, &memory, ""));
            }
        }
        assert!(restarts > 0, "seed {seed} never restarted the sled store");
        let attempts = history.iter().filter(|step| step.starts_with("attempt ")).count();
        assert!(attempts > 20 && model.events.len() > 20, "seed {seed} exercised too little: {history:?}");
        let pruned =
            history.iter().filter(|step| step.starts_with("prune ") && !step.ends_with("events 0 deliveries 0 inbox 0 more false")).count();
        assert!(pruned > 0, "seed {seed} never pruned anything: {history:?}");
        let conflicts = history.iter().filter(|step| step.starts_with("commit ") && step.contains(": conflict on ")).count();
        assert!(conflicts > 0, "seed {seed} never failed a commit on a stale expectation: {history:?}");
    }
}
