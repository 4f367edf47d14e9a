//! The embedded backend (storage format 3): bodies in segment files, small index records in sled,
//! derived indexes in memory, one writer thread for the hot path, one group commit.
//!
//! A store directory holds `index/` (one sled database) and `segments/` (see [`segments`]). What
//! is written per event, with one subscription, from accept to the first attempt recorded:
//!
//! | when | segment appends | sled writes |
//! |---|---|---|
//! | accept | the raw webhook | `inbox` record (pending), `dedup` digest |
//! | normalize | the event | `events` record, `state` (LZ4), `inbox` record (normalized, with the new deliveries) |
//! | attempt | | `deliveries` record (with its attempt) |
//!
//! A new delivery is written once, inside its inbox entry's finished record
//! ([`layout::Fate::Normalized`]), and gets a `deliveries` record of its own only when something
//! changes it (its first attempt, normally): with five subscriptions that is five writes per
//! event fewer. Until then it is *unwritten*: [`Unwritten`] maps it to its inbox entry, reads
//! find it there, and start-up finds it from the unwritten floor.
//!
//! No transactions: each job's writes are ordered so that a crash between any two leaves a state
//! that start-up repairs by replaying (an inbox entry leaves pending by its last write, after its
//! events, deliveries and state; a crash before that normalizes it again, which may repeat a
//! delivery and never loses one). What format 1 kept in trees of its own is derived: `pending`
//! (inbox records whose fate is pending), lanes and `due` (pending deliveries and the dead letters
//! holding their lane), an event's deliveries (in its record). They live in memory and are rebuilt
//! at open from the records past two floors (every inbox entry and delivery below its floor is
//! finished), so start-up reads what is still open, not the history.

mod commit;
mod import;
mod keys;
mod layout;
pub mod migrate;
mod retention;
mod segments;
mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Tree;

use super::*;

use commit::GroupCommit;
use layout::{DeliveryRecord, EventRecord, Fate, InboxRecord};
use segments::Segments;
use writer::{AttemptJob, Job, Writer};

/// Tree names: one place, so key layouts can be found from them.
mod tree {
    pub const ACCOUNTS: &str = "accounts";
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    pub const INBOX: &str = "inbox";
    pub const DEDUP: &str = "dedup";
    pub const EVENTS: &str = "events";
    pub const STATE: &str = "state";
    pub const DELIVERIES: &str = "deliveries";
    pub const DEAD: &str = "dead";
    pub const META: &str = "meta";
}

/// The sled backend.
pub struct SledStore {
    index: Arc<Index>,
    commit: GroupCommit,
    writer: Writer,
    /// Where entries to normalize go ([`Inbox::feed`]).
    feed: std::sync::OnceLock<Arc<dyn Feed>>,
    /// Deliveries leased for an attempt ([`DeliveryQueue::next_work`]).
    leases: Leases,
}

/// Everything the store's handle and its writer thread share.
pub(crate) struct Index {
    db: sled::Db,
    accounts: Tree,
    subscriptions: Tree,
    inbox: Tree,
    dedup: Tree,
    events: Tree,
    state: Tree,
    deliveries: Tree,
    dead: Tree,
    meta: Tree,
    segments: Segments,
    id_base: u64,
    /// What is open, in memory (see [`Open`]).
    open: Mutex<Open>,
    /// Lanes: (subscription, lane) to its deliveries, head first. Written by the writer thread.
    lanes: Mutex<HashMap<(String, String), VecDeque<u64>>>,
    /// `(due_ms, delivery_id)` of every lane head due for an attempt (see [`DueMirror`]).
    due: DueMirror,
    /// Deliveries whose only record is their inbox entry's (see [`Unwritten`]).
    unwritten: Mutex<Unwritten>,
    /// Held from the check of a digest to its write ([`Inbox::append_inbox`]), by the digest's
    /// first byte.
    dedup_locks: [Mutex<()>; 16],
    due_changed: Arc<tokio::sync::Notify>,
    fault: Fault,
    /// Fault injection for the tests (see [`TestFaults`]).
    test_faults: TestFaults,
}

/// Open inbox entries and deliveries, and the id generator they are allocated under (so a floor
/// computed under the same lock is never above an id handed out later).
#[derive(Default)]
pub(crate) struct Open {
    /// Pending inbox entries to the generation each runs as.
    pending: BTreeMap<u64, u32>,
    /// Deliveries allocated and not yet delivered, cancelled or dead.
    unsettled: BTreeSet<u64>,
    /// The next id the generator gives.
    next_id: u64,
    /// The floors last written to `meta`.
    written_floors: (u64, u64),
}

/// Deliveries created by a normalized run and not written on their own yet: they live in their
/// inbox entry's [`Fate::Normalized`] record. The writer thread adds them (before their entry
/// leaves `pending`, so the pruner, which checks `pending` first, always sees one or the other)
/// and removes each when its own record is written, under this lock (see
/// [`Index::put_delivery_record`]).
#[derive(Default)]
pub(crate) struct Unwritten {
    /// Delivery id to its inbox entry.
    by_delivery: HashMap<u64, u64>,
    /// Inbox entry to how many of its deliveries are unwritten.
    by_inbox: BTreeMap<u64, u32>,
    /// The floor last written to `meta` (`None`: not written by this process yet).
    written_floor: Option<u64>,
}

impl Unwritten {
    fn add(&mut self, inbox_id: u64, delivery_id: u64) {
        if self.by_delivery.insert(delivery_id, inbox_id).is_none() {
            *self.by_inbox.entry(inbox_id).or_default() += 1;
        }
    }

    fn forget(&mut self, delivery_id: u64) {
        if let Some(inbox_id) = self.by_delivery.remove(&delivery_id)
            && let Some(count) = self.by_inbox.get_mut(&inbox_id)
        {
            *count -= 1;
            if *count == 0 {
                self.by_inbox.remove(&inbox_id);
            }
        }
    }

    /// Whether an inbox entry holds unwritten deliveries (its record must stay).
    pub(crate) fn holds(&self, inbox_id: u64) -> bool {
        self.by_inbox.contains_key(&inbox_id)
    }
}

impl Open {
    fn floors(&self) -> (u64, u64) {
        let inbox = self.pending.keys().next().copied().unwrap_or(self.next_id);
        let deliveries = self.unsettled.iter().next().copied().unwrap_or(self.next_id);
        (inbox, deliveries)
    }
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(_) | sled::Error::Corruption { .. } => StoreError::Unavailable(error.to_string()),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Due lane heads, `(due_ms, delivery_id)`, in memory.
///
/// The scheduler asks "what is due now?" after every finished attempt; the answer comes from
/// here. Changes reach it only after the group commit's flush that made them durable (so no event
/// is delivered before the commit that created it is on disk), and a key leaves it only through
/// the attempt the scheduler started, so applying two rounds' changes out of order never loses one.
#[derive(Clone, Default)]
struct DueMirror(Arc<Mutex<BTreeSet<(u64, u64)>>>);

/// Keys a round added to and removed from the due set.
#[derive(Default)]
pub(crate) struct DueChanges {
    added: Vec<(u64, u64)>,
    removed: Vec<(u64, u64)>,
}

impl DueMirror {
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
}

impl Index {
    fn open_state(&self) -> MutexGuard<'_, Open> {
        self.open.lock().expect("open-set lock poisoned")
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<(String, String), VecDeque<u64>>> {
        self.lanes.lock().expect("lanes lock poisoned")
    }

    fn unwritten(&self) -> MutexGuard<'_, Unwritten> {
        self.unwritten.lock().expect("unwritten-deliveries lock poisoned")
    }

    /// Pass `outcome` through, recording an I/O error as the store's fault.
    fn noting<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &outcome {
            self.fault.note(error);
        }
        outcome
    }

    /// A fresh id, under the open-set lock the caller holds.
    fn next_id(&self, open: &mut Open) -> Result<u64, StoreError> {
        let id = self.id_base + self.db.generate_id()?;
        open.next_id = open.next_id.max(id + 1);
        Ok(id)
    }

    /// Write the floors if they moved (the writer calls this after each round; ordered after the
    /// writes that finished what lies below them).
    fn write_floors(&self) -> Result<(), StoreError> {
        let (floors, next_id) = {
            let open = self.open_state();
            (open.floors(), open.next_id)
        };
        // Only this thread adds unwritten deliveries, so none is added below `next_id` from here.
        let unwritten_floor = {
            let unwritten = self.unwritten();
            let floor = unwritten.by_inbox.keys().next().copied().unwrap_or(next_id);
            (unwritten.written_floor != Some(floor)).then_some(floor)
        };
        if let Some(floor) = unwritten_floor {
            self.meta.insert(layout::UNWRITTEN_FLOOR_KEY, &floor.to_be_bytes())?;
            self.unwritten().written_floor = Some(floor);
        }
        if floors == self.open_state().written_floors {
            return Ok(());
        }
        self.meta.insert(layout::INBOX_FLOOR_KEY, &floors.0.to_be_bytes())?;
        self.meta.insert(layout::DELIVERY_FLOOR_KEY, &floors.1.to_be_bytes())?;
        self.open_state().written_floors = floors;
        Ok(())
    }

    /// Lower a written floor at once (before a write that reopens something below it).
    fn lower_floor(&self, key: &str, id: u64) -> Result<(), StoreError> {
        let current = self.meta.get(key)?.and_then(|value| keys::read_u64(&value)).unwrap_or(0);
        if id < current {
            self.meta.insert(key, &id.to_be_bytes())?;
            let mut open = self.open_state();
            if key == layout::INBOX_FLOOR_KEY {
                open.written_floors.0 = id;
            } else {
                open.written_floors.1 = id;
            }
        }
        Ok(())
    }

    fn inbox_record(&self, inbox_id: InboxId) -> Result<Option<InboxRecord>, StoreError> {
        self.inbox.get(inbox_id.key())?.map(|value| decode_record(tree::INBOX, &value)).transpose()
    }

    fn event_record(&self, event_id: &str) -> Result<Option<EventRecord>, StoreError> {
        self.events.get(keys::event(event_id))?.map(|value| decode_record(tree::EVENTS, &value)).transpose()
    }

    /// A delivery's record: its own, or, while it is unwritten, the one its inbox entry holds.
    fn delivery_record(&self, delivery_id: u64) -> Result<Option<DeliveryRecord>, StoreError> {
        // The map first: a delivery leaves it only after its own record is written, so one of
        // the two reads finds it.
        let inbox_id = self.unwritten().by_delivery.get(&delivery_id).copied();
        if let Some(value) = self.deliveries.get(delivery_id.to_be_bytes())? {
            return decode_record(tree::DELIVERIES, &value).map(Some);
        }
        let Some(inbox_id) = inbox_id else { return Ok(None) };
        Ok(self.inbox_record(InboxId(inbox_id))?.and_then(|record| match record.fate {
            Fate::Normalized { deliveries, .. } => {
                deliveries.into_iter().find(|delivery| delivery.id == delivery_id).map(DeliveryRecord::new)
            }
            _ => None,
        }))
    }

    /// An event's delivery records still stored, by delivery id.
    fn delivery_records(&self, event: &EventRecord) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut ids = event.deliveries.clone();
        ids.sort_unstable();
        ids.dedup();
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.delivery_record(id)? {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// An event's delivery records, by delivery id (none for an unknown event).
    fn delivery_records_of_event(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        match self.event_record(event_id)? {
            Some(event) => self.delivery_records(&event),
            None => Ok(Vec::new()),
        }
    }

    /// Write a delivery's own record (it is no longer unwritten). Under the unwritten lock, so
    /// [`Index::write_unwritten`] never writes an older version over this one.
    fn put_delivery_record(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        let mut unwritten = self.unwritten();
        self.deliveries.insert(record.delivery.id.to_be_bytes(), encode_record(record))?;
        unwritten.forget(record.delivery.id);
        Ok(())
    }

    /// Give an inbox entry's unwritten deliveries records of their own (before its record
    /// stops holding them: a requeue rewrites its fate).
    fn write_unwritten(&self, inbox_id: InboxId, record: &InboxRecord) -> Result<(), StoreError> {
        let Fate::Normalized { deliveries, .. } = &record.fate else { return Ok(()) };
        let mut unwritten = self.unwritten();
        if !unwritten.holds(inbox_id.0) {
            return Ok(());
        }
        for delivery in deliveries {
            if unwritten.by_delivery.contains_key(&delivery.id) {
                self.deliveries.insert(delivery.id.to_be_bytes(), encode_record(&DeliveryRecord::new(delivery.clone())))?;
                unwritten.forget(delivery.id);
            }
        }
        Ok(())
    }
}

impl SledStore {
    /// Open (or create) a format-2 store in `dir` (`index/` and `segments/` inside), with at most
    /// `cache_bytes` of sled's page cache. A data dir of format 1 is migrated first by
    /// [`open_data_dir`]; this refuses a database of another format.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, cache_bytes, segments::MAX_SEGMENT_BYTES)
    }

    /// [`SledStore::open`] with segments of `segment_bytes`.
    pub fn open_with(dir: &Path, cache_bytes: u64, segment_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("index"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            // Flushes are the group commit's, after the segments are synced (see `commit`).
            .flush_every_ms(None)
            .open()?;
        let meta = db.open_tree(tree::META)?;
        match meta.get(layout::FORMAT_KEY)? {
            Some(format) if format.as_ref() == layout::FORMAT.as_bytes() => {}
            Some(format) if format.as_ref() == layout::FORMAT_OPENED_IN_PLACE.as_bytes() => {
                tracing::info!(
                    from = layout::FORMAT_OPENED_IN_PLACE,
                    to = layout::FORMAT,
                    "marking the store with the new storage format (no record changes)"
                );
                meta.insert(layout::FORMAT_KEY, layout::FORMAT.as_bytes())?;
                meta.flush()?;
            }
            Some(format) => {
                return Err(StoreError::Backend(format!(
                    "{} holds storage format {}; this release reads format {}",
                    dir.display(),
                    String::from_utf8_lossy(&format),
                    layout::FORMAT
                )));
            }
            None => {
                meta.insert(layout::FORMAT_KEY, layout::FORMAT.as_bytes())?;
            }
        }
        let id_base = meta.get(layout::ID_BASE_KEY)?.and_then(|value| keys::read_u64(&value)).unwrap_or(0);
        let (segments, recovery) = Segments::open(&dir.join("segments"), segment_bytes)?;
        let fault = Fault::default();
        let index = Index {
            accounts: db.open_tree(tree::ACCOUNTS)?,
            subscriptions: db.open_tree(tree::SUBSCRIPTIONS)?,
            inbox: db.open_tree(tree::INBOX)?,
            dedup: db.open_tree(tree::DEDUP)?,
            events: db.open_tree(tree::EVENTS)?,
            state: db.open_tree(tree::STATE)?,
            deliveries: db.open_tree(tree::DELIVERIES)?,
            dead: db.open_tree(tree::DEAD)?,
            meta,
            db,
            segments,
            id_base,
            open: Mutex::default(),
            lanes: Mutex::default(),
            due: DueMirror::default(),
            unwritten: Mutex::default(),
            dedup_locks: Default::default(),
            due_changed: Arc::new(tokio::sync::Notify::new()),
            fault,
            test_faults: TestFaults::from_env(),
        };
        recover(&index, &recovery)?;
        let index = Arc::new(index);
        let commit = GroupCommit::start(index.db.clone(), index.segments.clone(), index.fault.clone())
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let writer = Writer::start(index.clone(), commit.clone()).map_err(|error| StoreError::Unavailable(error.to_string()))?;
        Ok(Self { index, commit, writer, feed: std::sync::OnceLock::new(), leases: Leases::default() })
    }
}

/// Rebuild what lives in memory from what is open past the floors, after cutting records whose
/// bodies a crash tore (only a crash of the machine, not of the process, can leave an index
/// record pointing at a body that did not survive: the body is written first).
fn recover(index: &Index, recovery: &segments::Recovery) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let floor = |key: &str| -> Result<u64, StoreError> { Ok(index.meta.get(key)?.and_then(|value| keys::read_u64(&value)).unwrap_or(0)) };
    let (inbox_floor, delivery_floor) = (floor(layout::INBOX_FLOOR_KEY)?, floor(layout::DELIVERY_FLOOR_KEY)?);
    let mut open = Open::default();

    // Events whose bodies were lost: their inbox entries are normalized again. Event keys are
    // nearly in write order, so the scan from the newest stops after a run of older segments.
    let mut renormalize = BTreeSet::new();
    let mut n_older = 0;
    for entry in index.events.iter().rev() {
        let (key, value) = entry?;
        let record: EventRecord = decode_record(tree::EVENTS, &value)?;
        if record.loc.segment < recovery.segment {
            n_older += 1;
            if n_older > 10_000 {
                break;
            }
            continue;
        }
        n_older = 0;
        if recovery.lost(&record.loc) {
            tracing::warn!(event = %String::from_utf8_lossy(&key), "an event's body did not survive a crash; normalizing its webhook again");
            for id in &record.deliveries {
                index.deliveries.remove(id.to_be_bytes())?;
            }
            index.events.remove(key)?;
            renormalize.insert(record.inbox_id);
        }
    }
    for inbox_id in &renormalize {
        if let Some(mut record) = index.inbox_record(InboxId(*inbox_id))?
            && let Some(outcome) = record.fate.outcome().filter(|_| !matches!(record.fate, Fate::Pending { .. }))
        {
            // Its unwritten deliveries go with the fate: the new run creates them again.
            let generation = outcome.generation.saturating_add(1);
            record.fate = Fate::Pending { generation, previous: Some(outcome.clone()) };
            index.inbox.insert(InboxId(*inbox_id).key(), encode_record(&record))?;
            index.meta.insert(layout::INBOX_FLOOR_KEY, &inbox_floor.min(*inbox_id).to_be_bytes())?;
        }
    }
    let inbox_floor = renormalize.iter().next().map_or(inbox_floor, |first| inbox_floor.min(*first));
    let unwritten_floor = index.meta.get(layout::UNWRITTEN_FLOOR_KEY)?.and_then(|value| keys::read_u64(&value)).unwrap_or(u64::MAX);

    let mut digests_since: Option<u64> = None;
    // Deliveries an inbox entry holds that may still be unwritten: checked below.
    let mut maybe_unwritten = Vec::new();
    for entry in index.inbox.range(inbox_floor.min(unwritten_floor).to_be_bytes()..) {
        let (key, value) = entry?;
        let Some(inbox_id) = InboxId::from_key(&key) else { continue };
        let record: InboxRecord = decode_record(tree::INBOX, &value)?;
        if recovery.lost(&record.loc) {
            // Never acknowledged (the listener answers after the segment is synced): drop it, and
            // the duplicate digests from then on, so the PMS's retry is stored anew.
            tracing::warn!(%inbox_id, "a raw webhook's body did not survive a crash before it was acknowledged; dropping it");
            index.inbox.remove(key)?;
            digests_since = Some(digests_since.map_or(record.received_at_ms, |since| since.min(record.received_at_ms)));
            continue;
        }
        match &record.fate {
            Fate::Pending { generation, .. } => {
                open.pending.insert(inbox_id.0, *generation);
            }
            Fate::Finished(_) => {}
            Fate::Normalized { deliveries, .. } => {
                maybe_unwritten.extend(
                    deliveries.iter().filter(|delivery| delivery.id >= delivery_floor).map(|delivery| (inbox_id.0, delivery.clone())),
                );
            }
        }
    }
    if let Some(since) = digests_since {
        for entry in index.dedup.iter() {
            let (key, seen) = entry?;
            if keys::read_u64(&seen).is_some_and(|seen_ms| seen_ms + 1_000 >= since) {
                index.dedup.remove(key)?;
            }
        }
    }

    // Deliveries still open, and the dead letters holding their lanes, in lane order.
    let mut lanes: HashMap<(String, String), Vec<(u64, u64)>> = HashMap::new();
    let mut statuses = HashMap::new();
    let mut add = |record: &DeliveryRecord| {
        let delivery = &record.delivery;
        lanes.entry((delivery.subscription_id.clone(), delivery.lane.clone())).or_default().push((record.seq, delivery.id));
        statuses.insert(delivery.id, (delivery.status, delivery.next_attempt_at_ms));
    };
    for value in index.deliveries.range(delivery_floor.to_be_bytes()..).values() {
        let record: DeliveryRecord = decode_record(tree::DELIVERIES, &value?)?;
        if record.delivery.status == DeliveryStatus::Pending {
            open.unsettled.insert(record.delivery.id);
            add(&record);
        }
    }
    // Unwritten: no record of its own, and its event is still there (retention deletes an event
    // record before its deliveries' records, so a delivered delivery never looks unwritten).
    let mut unwritten = Unwritten::default();
    for (inbox_id, delivery) in maybe_unwritten {
        if index.deliveries.contains_key(delivery.id.to_be_bytes())? || !index.events.contains_key(keys::event(&delivery.event_id))? {
            continue;
        }
        open.unsettled.insert(delivery.id);
        unwritten.add(inbox_id, delivery.id);
        add(&DeliveryRecord::new(delivery));
    }
    for entry in index.dead.iter() {
        let (key, holds) = entry?;
        let Some(delivery_id) = keys::read_u64(&key) else { continue };
        if holds.first() != Some(&1) {
            continue;
        }
        if let Some(record) = index.delivery_record(delivery_id)?
            && record.delivery.status == DeliveryStatus::Dead
        {
            add(&record);
        }
    }
    let mut due = BTreeSet::new();
    let mut memory_lanes = HashMap::with_capacity(lanes.len());
    for (lane, mut members) in lanes {
        members.sort_unstable();
        let queue: VecDeque<u64> = members.into_iter().map(|(_, id)| id).collect();
        if let Some(head) = queue.front()
            && let Some((DeliveryStatus::Pending, due_ms)) = statuses.get(head)
        {
            due.insert((*due_ms, *head));
        }
        memory_lanes.insert(lane, queue);
    }
    open.next_id = index.id_base + index.db.generate_id()?;
    open.written_floors = (inbox_floor, delivery_floor);
    tracing::info!(
        n_pending = open.pending.len(),
        n_open_deliveries = open.unsettled.len(),
        n_unwritten = unwritten.by_delivery.len(),
        n_lanes = memory_lanes.len(),
        n_renormalized = renormalize.len(),
        cut_bytes = recovery.cut_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store opened"
    );
    *index.open.lock().expect("open-set lock poisoned") = open;
    *index.lanes.lock().expect("lanes lock poisoned") = memory_lanes;
    *index.due.0.lock().expect("due mirror lock poisoned") = due;
    unwritten.written_floor = Some(unwritten_floor);
    *index.unwritten.lock().expect("unwritten-deliveries lock poisoned") = unwritten;
    if !renormalize.is_empty() || digests_since.is_some() {
        index.db.flush()?;
    }
    Ok(())
}

/// Open the store of a data dir: `<data_dir>/store`, migrating a format-1 database
/// (`<data_dir>/db`) into it first (see [`migrate`]).
pub fn open_data_dir(data_dir: &Path, cache_bytes: u64, segment_bytes: u64) -> Result<SledStore, StoreError> {
    let store_dir = data_dir.join("store");
    if !store_dir.exists() && migrate::format1_dir(data_dir).is_some() {
        migrate::migrate_data_dir(data_dir, cache_bytes)?;
    }
    SledStore::open_with(&store_dir, cache_bytes, segment_bytes)
}

impl Backend for SledStore {
    fn fault(&self) -> &Fault {
        &self.index.fault
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        let index = &self.index;
        index.noting(index.segments.sync().and_then(|()| index.db.flush().map(|_| ()).map_err(StoreError::from)))
    }
}

impl Catalog for SledStore {
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.index.meta.get(key)?.map(|value| String::from_utf8_lossy(&value).into_owned()))
    }

    fn insert_meta<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.index.noting(self.index.meta.insert(key, value.as_bytes()).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    fn remove_meta<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.index.noting(self.index.meta.remove(key).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    fn swap_meta<'a>(&'a self, key: &'a str, expected: Option<&'a str>, value: Option<&'a str>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let swapped = self.index.meta.compare_and_swap(key, expected.map(str::as_bytes), value.map(str::as_bytes));
            let swapped = self.index.noting(swapped.map_err(StoreError::from))?.is_ok();
            self.commit.durable().await?;
            Ok(swapped)
        })
    }

    fn insert_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, Inserted> {
        Box::pin(async move {
            let value = encode_json(account);
            let swapped = self.index.noting(
                self.index.accounts.compare_and_swap(account.id.as_bytes(), None as Option<&[u8]>, Some(value)).map_err(StoreError::from),
            )?;
            self.commit.durable().await?;
            Ok(if swapped.is_ok() { Inserted::Created } else { Inserted::AlreadyExists })
        })
    }

    fn put_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.index.noting(self.index.accounts.insert(account.id.as_bytes(), encode_json(account)).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError> {
        self.index.accounts.get(account_id)?.map(|value| decode_json(tree::ACCOUNTS, &value)).transpose()
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.index.accounts.iter().values().map(|value| decode_json(tree::ACCOUNTS, &value?)).collect()
    }

    fn remove_account<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let index = &self.index;
            let existed = index.noting((|| {
                let existed = index.accounts.remove(account_id)?.is_some();
                for key in index.subscriptions.scan_prefix(keys::account_prefix(account_id)).keys() {
                    index.subscriptions.remove(key?)?;
                }
                Ok(existed)
            })())?;
            self.commit.durable().await?;
            Ok(existed)
        })
    }

    fn put_subscription<'a>(&'a self, subscription: &'a Subscription) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = keys::subscription(&subscription.account_id, &subscription.id);
            self.index.noting(self.index.subscriptions.insert(key, encode_json(subscription)).map_err(StoreError::from))?;
            self.commit.durable().await
        })
    }

    fn get_subscription(&self, account_id: &str, subscription_id: &str) -> Result<Option<Subscription>, StoreError> {
        let key = keys::subscription(account_id, subscription_id);
        self.index.subscriptions.get(key)?.map(|value| decode_json(tree::SUBSCRIPTIONS, &value)).transpose()
    }

    fn list_subscriptions(&self, account_id: &str) -> Result<Vec<Subscription>, StoreError> {
        self.index
            .subscriptions
            .scan_prefix(keys::account_prefix(account_id))
            .values()
            .map(|value| decode_json(tree::SUBSCRIPTIONS, &value?))
            .collect()
    }

    fn remove_subscription<'a>(&'a self, account_id: &'a str, subscription_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let removed = self.index.subscriptions.remove(keys::subscription(account_id, subscription_id)).map_err(StoreError::from);
            let existed = self.index.noting(removed)?.is_some();
            self.commit.durable().await?;
            Ok(existed)
        })
    }
}

impl SledStore {
    /// Append a raw webhook, pending. The body goes to a segment first, then its index record;
    /// durable with the next group commit. A crash between the two leaves an unreferenced body,
    /// never an index record without one. Also whether the feed was set when the entry became
    /// pending (then the append hands it over; else [`Inbox::feed`]'s listing does).
    fn append_entry(&self, entry: &InboxEntry) -> Result<(InboxId, bool), StoreError> {
        let index = &self.index;
        let body = postcard::to_stdvec(entry).map_err(|error| StoreError::Codec { tree: tree::INBOX, message: error.to_string() })?;
        index.noting((|| {
            let loc = index.segments.append(&body)?;
            let mut record = InboxRecord {
                account_id: entry.account_id.clone(),
                received_at_ms: entry.received_at_ms,
                loc,
                fate: Fate::Pending { generation: 0, previous: None },
            };
            let (inbox_id, fed) = {
                let mut open = index.open_state();
                let inbox_id = InboxId(index.next_id(&mut open)?);
                open.pending.insert(inbox_id.0, 0);
                (inbox_id, self.feed.get().is_some())
            };
            record.account_id.shrink_to_fit();
            if let Err(error) = index.inbox.insert(inbox_id.key(), encode_record(&record)) {
                index.open_state().pending.remove(&inbox_id.0);
                return Err(error.into());
            }
            Ok((inbox_id, fed))
        })())
    }
}

impl Inbox for SledStore {
    /// The pending set is taken under its lock and the feed set before it is let go, so an entry
    /// appended meanwhile is handed over once: by this listing or by its append.
    fn feed(&self, feed: Arc<dyn Feed>) -> Result<(), StoreError> {
        let pending: Vec<(u64, u32)> = {
            let open = self.index.open_state();
            if self.feed.set(feed.clone()).is_err() {
                return Err(StoreError::Backend("the store's feed is set already".into()));
            }
            open.pending.iter().map(|(id, generation)| (*id, *generation)).collect()
        };
        if !pending.is_empty() {
            tracing::info!(n_pending = pending.len(), "resuming normalization of stored webhooks");
        }
        for (id, generation) in pending {
            // An append marks its entry pending just before it writes the entry's record: one
            // caught in between is waited for (or dropped, if its write failed).
            let mut record = self.index.inbox_record(InboxId(id))?;
            for _ in 0..1_000 {
                if record.is_some() || !self.index.open_state().pending.contains_key(&id) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                record = self.index.inbox_record(InboxId(id))?;
            }
            match record {
                Some(record) => feed.dispatch(&record.account_id, InboxId(id), generation, true),
                None => tracing::warn!(inbox_id = id, "pending entry without inbox data"),
            }
        }
        Ok(())
    }

    /// The check and the write of a digest happen under one of [`Index::dedup_locks`] (by the
    /// digest's first byte), so two appends of one digest at once cannot both find it new. The
    /// digest is written after its entry, so a digest that survives a crash has its entry (sled
    /// recovers a prefix of the writes); its value is the time seen and the entry's id.
    fn append_inbox<'a>(&'a self, entry: &'a InboxEntry, dedup: Option<Dedup<'a>>) -> StoreFuture<'a, Appended> {
        Box::pin(async move {
            let index = &self.index;
            let mut fed = false;
            let appended = match dedup {
                None => {
                    let (inbox_id, was_fed) = self.append_entry(entry)?;
                    fed = was_fed;
                    Appended::New(inbox_id)
                }
                Some(dedup) => {
                    let key = keys::dedup(&entry.account_id, dedup.digest);
                    let stripe = dedup.digest.first().map_or(0, |byte| usize::from(*byte) % index.dedup_locks.len());
                    let _check = index.dedup_locks[stripe].lock().expect("dedup lock poisoned");
                    let seen = index.dedup.get(&key)?.and_then(|value| {
                        let seen_ms = keys::read_u64(&value)?;
                        (entry.received_at_ms.saturating_sub(seen_ms) < dedup.window_ms).then(|| value.get(8..).and_then(keys::read_u64))
                    });
                    match seen {
                        Some(original) => Appended::Duplicate(original.map(InboxId)),
                        None => {
                            let (inbox_id, was_fed) = self.append_entry(entry)?;
                            fed = was_fed;
                            let mut value = entry.received_at_ms.to_be_bytes().to_vec();
                            value.extend_from_slice(&inbox_id.0.to_be_bytes());
                            index.noting(index.dedup.insert(key, value).map_err(StoreError::from))?;
                            Appended::New(inbox_id)
                        }
                    }
                }
            };
            let durable = self.commit.durable().await;
            if let (Ok(()), Appended::New(inbox_id), true, Some(feed)) = (&durable, appended, fed, self.feed.get()) {
                feed.dispatch(&entry.account_id, inbox_id, 0, false);
            }
            if let Err(error) = durable {
                // sled refuses every write after its first I/O error, so this process cannot
                // store the retry anyway; the next one (restarted) finds the digest only if its
                // entry was recovered with it.
                if let (Appended::New(_), Some(dedup)) = (appended, dedup)
                    && let Err(forget_error) = index.dedup.remove(keys::dedup(&entry.account_id, dedup.digest))
                {
                    tracing::warn!(error = %forget_error, "could not forget the digest of a webhook that was not stored");
                }
                return Err(error);
            }
            Ok(appended)
        })
    }

    fn expire_digests_blocking(&self, now_ms: u64, window_ms: u64) -> Result<usize, StoreError> {
        let mut n_removed = 0;
        for entry in self.index.dedup.iter() {
            let (key, seen) = entry?;
            if keys::read_u64(&seen).is_none_or(|seen_ms| now_ms.saturating_sub(seen_ms) >= window_ms) {
                self.index.dedup.remove(key)?;
                n_removed += 1;
            }
        }
        Ok(n_removed)
    }

    fn import_inbox(&self, entry: &InboxEntry) -> Result<InboxId, StoreError> {
        self.append_entry(entry).map(|(inbox_id, _)| inbox_id)
    }

    fn durable(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.commit.durable())
    }

    fn import_digest(&self, digest: &DigestRecord) -> Result<(), StoreError> {
        let inserted = self.index.dedup.insert(keys::dedup(&digest.account_id, &digest.digest), &digest.seen_ms.to_be_bytes());
        self.index.noting(inserted.map_err(StoreError::from))?;
        Ok(())
    }

    fn get_inbox(&self, inbox_id: InboxId) -> Result<Option<InboxEntry>, StoreError> {
        let Some(record) = self.index.inbox_record(inbox_id)? else { return Ok(None) };
        let body = self.index.segments.read(record.loc)?;
        postcard::from_bytes(&body).map(Some).map_err(|error| StoreError::Codec { tree: tree::INBOX, message: error.to_string() })
    }

    /// Scans the inbox's small records (keys are in arrival order); renormalization is an
    /// operator's action, rare next to ingest, so it carries no index of its own.
    fn inbox_of_account(&self, account_id: &str, from_ms: u64, to_ms: u64) -> Result<Vec<InboxId>, StoreError> {
        let mut found = Vec::new();
        for entry in self.index.inbox.iter() {
            let (key, value) = entry?;
            let record: InboxRecord = decode_record(tree::INBOX, &value)?;
            if record.account_id == account_id && record.received_at_ms >= from_ms && record.received_at_ms < to_ms {
                found.push(InboxId::from_key(&key).unwrap_or_default());
            }
        }
        Ok(found)
    }

    fn requeue_inbox(&self, inbox_id: InboxId) -> Result<Option<u32>, StoreError> {
        let index = &self.index;
        let Some(mut record) = index.inbox_record(inbox_id)? else { return Ok(None) };
        let (generation, fed) = {
            let mut open = index.open_state();
            if open.pending.contains_key(&inbox_id.0) {
                return Ok(None);
            }
            let generation = record.fate.outcome().map_or(0, |outcome| outcome.generation.saturating_add(1));
            open.pending.insert(inbox_id.0, generation);
            (generation, self.feed.get().is_some())
        };
        let previous = record.fate.outcome().cloned();
        index.noting((|| {
            index.write_unwritten(inbox_id, &record)?;
            record.fate = Fate::Pending { generation, previous };
            index.lower_floor(layout::INBOX_FLOOR_KEY, inbox_id.0)?;
            index.inbox.insert(inbox_id.key(), encode_record(&record))?;
            Ok(())
        })())?;
        if let (true, Some(feed)) = (fed, self.feed.get()) {
            feed.dispatch(&record.account_id, inbox_id, generation, false);
        }
        Ok(Some(generation))
    }

    fn pending_inbox(&self) -> Result<Vec<(InboxId, u32)>, StoreError> {
        Ok(self.index.open_state().pending.iter().map(|(id, generation)| (InboxId(*id), *generation)).collect())
    }

    fn inbox_outcome(&self, inbox_id: InboxId) -> Result<Option<InboxOutcome>, StoreError> {
        Ok(self.index.inbox_record(inbox_id)?.and_then(|record| record.fate.outcome().cloned()))
    }

    fn list_outcomes(&self, status: InboxStatus, limit: usize) -> Result<Vec<(InboxId, InboxOutcome)>, StoreError> {
        let mut found = Vec::new();
        for entry in self.index.inbox.iter().rev() {
            let (key, value) = entry?;
            let record: InboxRecord = decode_record(tree::INBOX, &value)?;
            if let Some(outcome) = record.fate.outcome()
                && outcome.status == status
            {
                found.push((InboxId::from_key(&key).unwrap_or_default(), outcome.clone()));
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn finish_inbox(&self, inbox_id: InboxId, outcome: &InboxOutcome) -> Result<(), StoreError> {
        let index = &self.index;
        let Some(mut record) = index.inbox_record(inbox_id)? else {
            return Err(StoreError::Backend(format!("inbox entry {inbox_id} does not exist")));
        };
        record.fate = Fate::Finished(outcome.clone());
        index.noting(index.inbox.insert(inbox_id.key(), encode_record(&record)).map_err(StoreError::from))?;
        index.open_state().pending.remove(&inbox_id.0);
        Ok(())
    }

    fn list_inbox(&self, after: Option<InboxId>, limit: usize) -> Result<Vec<InboxListing>, StoreError> {
        self.list_inbox_records(after, limit)
    }

    fn list_digests(&self, after: Option<(&str, &[u8])>, limit: usize) -> Result<Vec<DigestRecord>, StoreError> {
        self.list_digest_records(after, limit)
    }
}

impl Ledger for SledStore {
    fn get_state(&self, account_id: &str, kind: RecordKind, record_id: &str) -> Result<Option<(serde_json::Value, Revision)>, StoreError> {
        let Some(stored) = self.index.state.get(keys::state(account_id, kind, record_id))? else { return Ok(None) };
        Ok(Some((decode_state(&stored)?, state_revision(&stored))))
    }

    /// Event bodies are encoded and appended to a segment here, on the caller's thread; the
    /// writer thread then writes the small records in order.
    fn commit_normalized_blocking(&self, batches: Vec<NormalizedBatch>) -> Result<(), StoreError> {
        let job = writer::prepare_normalized(&self.index, batches)?;
        self.writer.submit(job).blocking_recv().unwrap_or(Err(StoreError::Stopped))
    }

    fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.get_event_bytes(event_id)?.map(|bytes| decode_json(tree::EVENTS, &bytes)).transpose()
    }

    fn get_event_bytes(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(record) = self.index.event_record(event_id)? else { return Ok(None) };
        self.index.segments.read(record.loc).map(Some)
    }

    /// Filters on the small records; reads the bodies of the events it returns.
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
        for value in self.index.events.range(start..).values() {
            let record: EventRecord = decode_record(tree::EVENTS, &value?)?;
            if !filter.matches_fields(&record.account_id, record.event_type, &record.record_id, record.result, &record.timestamp) {
                continue;
            }
            found.push(decode_json(tree::EVENTS, &self.index.segments.read(record.loc)?)?);
            if found.len() >= filter.limit {
                break;
            }
        }
        Ok(found)
    }

    fn list_state(&self, account_id: &str, after: Option<(RecordKind, &str)>, limit: usize) -> Result<Vec<StateRecord>, StoreError> {
        self.list_state_records(account_id, after, limit)
    }

    fn put_state_blocking(&self, writes: Vec<StateWrite>) -> Result<(), StoreError> {
        self.put_state_records(writes)
    }

    fn put_events_blocking(&self, events: Vec<StoredEvent>) -> Result<(), StoreError> {
        self.put_event_records(events)
    }
}

impl DeliveryQueue for SledStore {
    fn due_deliveries(&self, now_ms: u64, limit: usize, wanted: &mut dyn FnMut(u64) -> bool) -> (Vec<u64>, Option<u64>) {
        let keys = self.index.due.0.lock().expect("due mirror lock poisoned");
        let found = keys.range(..=(now_ms, u64::MAX)).map(|&(_, delivery_id)| delivery_id).filter(|&id| wanted(id)).take(limit).collect();
        let next_ms = keys.range((now_ms.saturating_add(1), 0)..).next().map(|&(due_ms, _)| due_ms);
        (found, next_ms)
    }

    fn next_work(&self, now_ms: u64, limit: usize) -> Result<(Vec<Leased>, Option<u64>), StoreError> {
        self.leases.lease_due(self, now_ms, limit)
    }

    fn due_changed(&self) -> &tokio::sync::Notify {
        &self.index.due_changed
    }

    fn get_delivery(&self, delivery_id: u64) -> Result<Option<Delivery>, StoreError> {
        Ok(self.index.delivery_record(delivery_id)?.map(|record| record.delivery))
    }

    fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.index.delivery_records_of_event(event_id)?.into_iter().map(|record| record.delivery).collect())
    }

    /// Merged with other writes by the store's writer thread; resolves once on disk.
    fn record_attempt<'a>(
        &'a self,
        leased: &'a Leased,
        next: &'a Delivery,
        attempt: Option<&'a Attempt>,
        now_ms: u64,
        hold_lane: bool,
    ) -> StoreFuture<'a, ()> {
        let previous = &leased.delivery;
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

    fn redeliver(&self, revived: Vec<Delivery>, added: Vec<Delivery>) -> StoreFuture<'_, ()> {
        let answer = self.writer.submit(Job::Redeliver { revived, added });
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Stopped)) })
    }

    fn discard_dead_letter(&self, discarded: Delivery, now_ms: u64) -> StoreFuture<'_, ()> {
        let answer = self.writer.submit(Job::Discard { discarded, now_ms });
        Box::pin(async move { answer.await.unwrap_or(Err(StoreError::Stopped)) })
    }

    fn lane_head(&self, subscription_id: &str, lane: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.index.lanes().get(&(subscription_id.to_string(), lane.to_string())).and_then(|queue| queue.front().copied()))
    }

    /// Open until it is delivered, cancelled or dead: a delivery allocated and never committed
    /// holds the delivery floor down until the next start (costing start-up a longer read).
    /// Fresh: a commit is written by this store's one writer, never repeated elsewhere, and the
    /// floors need ids that grow.
    fn delivery_id(&self, _event_id: &str, _subscription_id: &str) -> Result<u64, StoreError> {
        self.new_delivery_id()
    }

    fn new_delivery_id(&self) -> Result<u64, StoreError> {
        let mut open = self.index.open_state();
        let id = self.index.next_id(&mut open)?;
        open.unsettled.insert(id);
        Ok(id)
    }

    fn attempts_of_event(&self, event_id: &str) -> Result<Vec<Attempt>, StoreError> {
        Ok(self.index.delivery_records_of_event(event_id)?.into_iter().flat_map(|record| record.attempts).collect())
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut found = Vec::new();
        for entry in self.index.dead.iter().rev() {
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
}

/// A `state` value: the record's JSON, LZ4-compressed (records are a few KB of JSON, and sled
/// writes and keeps far fewer bytes for a small value).
fn encode_state(record: &serde_json::Value) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(&encode_json(record))
}

/// A stored state's revision: a hash of its stored bytes. A record changed and changed back has its
/// old revision again, which is right for a decision: it was made on the same state.
fn state_revision(stored: &[u8]) -> Revision {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut hasher, stored);
    Revision(std::hash::Hasher::finish(&hasher))
}

fn decode_state(bytes: &[u8]) -> Result<serde_json::Value, StoreError> {
    let json = lz4_flex::block::decompress_size_prepended(bytes)
        .map_err(|error| StoreError::Codec { tree: tree::STATE, message: error.to_string() })?;
    decode_json(tree::STATE, &json)
}

/// An index record (`inbox`, `events`, `deliveries`): postcard, about half the bytes of JSON and
/// cheaper to write and read; the types are this format's own (`layout.rs`), so a field added
/// later needs a format number.
fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records cannot fail.
    postcard::to_stdvec(value).expect("index records serialize")
}

fn decode_record<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|error| StoreError::Codec { tree, message: error.to_string() })
}

fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records (strings, numbers, maps with string keys) cannot fail.
    serde_json::to_vec(value).expect("records serialize to JSON")
}

fn decode_json<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Codec { tree, message: error.to_string() })
}
