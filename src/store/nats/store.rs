//! [`NatsStore`]: the storage traits on a JetStream cluster (docs/jetstream-design.md), for any
//! number of nodes at once. The catalog is [`NatsCatalog`]; the inbox is the partition feed
//! ([`PartitionFeed`]) over `SH_INBOX` with outcomes in `SH_OUTCOMES`; the ledger's commit and
//! state are in [`super::ledger`]; deliveries in [`super::work`]; listings answer from this node's
//! read model ([`View`]).
//!
//! Calls the traits make blocking (`*_blocking`, and the plain `fn`s that must ask the engine: a
//! record's state, a raw webhook not held here, a lane's head) wait on the calling thread: inside
//! the runtime through `block_in_place` (the daemon's runtime has several threads), on a worker
//! thread through the runtime's handle.
//!
//! The fault ([`Fault`]) is never set: the engine's unavailability (no quorum, an election) is
//! transient, so a call answers `Unavailable` (503 to a PMS, which retries) and the daemon goes on,
//! where the embedded store must be reopened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_nats::jetstream::kv;

use super::NatsCatalog;
use super::engine::{DELIVERIES_BUCKET, Engine, NatsConfig, NatsError, OUTCOMES_BUCKET, STATE_BUCKET, classify, subject_token};
use super::feed::{FeedAck, FeedBatch, FeedHandler, PartitionFeed};
use super::follow::{follow_bucket, follow_stream};
use super::view::View;
use super::work::WorkQueue;
use crate::store::*;

/// What a raw webhook's message keeps for its headers below the server's `max_payload`.
const HEADER_ROOM: usize = 64 * 1024;

/// The storage traits on a JetStream cluster (see the module docs).
pub struct NatsStore {
    pub(super) engine: Engine,
    catalog: NatsCatalog,
    pub(super) state: kv::Store,
    pub(super) outcomes: kv::Store,
    pub(super) view: Arc<View>,
    /// Fed entries waiting for their commit, by inbox id.
    pub(super) held: Arc<Mutex<HashMap<u64, Held>>>,
    pub(super) work: Arc<WorkQueue>,
    runtime: tokio::runtime::Handle,
    feed: OnceLock<PartitionFeed>,
    fault: Fault,
    followers: Vec<tokio::task::JoinHandle<()>>,
    /// Fault injection for the tests (see [`TestFaults`]).
    pub(super) test_faults: TestFaults,
}

/// An inbox message this node was handed and has not committed yet.
pub(super) struct Held {
    /// The entry (`None` for a requeue request, whose entry is read from the engine).
    pub entry: Option<InboxEntry>,
    /// Acked once the entry's outcome is stored.
    pub ack: FeedAck,
}

impl Drop for NatsStore {
    fn drop(&mut self) {
        for follower in &self.followers {
            follower.abort();
        }
    }
}

/// Open the NATS backend: connect, provision, load the catalog and the read model.
pub async fn open(config: NatsConfig) -> Result<Store, StoreError> {
    Ok(Arc::new(NatsStore::open(config).await?))
}

impl NatsStore {
    /// Connect to the cluster, provision what is missing, and load this node's copies.
    pub async fn open(config: NatsConfig) -> Result<NatsStore, StoreError> {
        let engine = Engine::connect(config).await?;
        let view = Arc::new(View::default());
        let forgetting = view.clone();
        let removed = Box::new(move |account_id: &str| {
            forgetting.forget_account(account_id);
        });
        let catalog = NatsCatalog::open_with(&engine, removed).await?;
        let state = engine.bucket(STATE_BUCKET).await?;
        let outcomes = engine.bucket(OUTCOMES_BUCKET).await?;
        let deliveries = engine.bucket(DELIVERIES_BUCKET).await?;
        let lanes = engine.bucket(super::engine::LANES_BUCKET).await?;
        let mut followers = Vec::new();
        let follower = view.clone();
        followers.push(follow_bucket(&outcomes, "SH_OUTCOMES", move |entry| follower.apply_outcome_entry(entry)).await?);
        let follower = view.clone();
        followers.push(follow_bucket(&deliveries, "SH_DELIVERIES", move |entry| follower.apply_delivery_entry(entry)).await?);
        let follower = view.clone();
        followers
            .push(follow_stream(&engine, super::engine::EVENTS_STREAM, false, move |message| follower.apply_event_message(message)).await?);
        let follower = view.clone();
        followers.push(
            follow_stream(&engine, super::engine::ATTEMPTS_STREAM, false, move |message| follower.apply_attempt_message(message)).await?,
        );
        let follower = view.clone();
        followers
            .push(follow_stream(&engine, super::engine::INBOX_STREAM, true, move |message| follower.apply_inbox_message(message)).await?);
        let (work, puller) = WorkQueue::start(&engine, deliveries.clone(), lanes.clone(), view.clone()).await?;
        followers.push(puller);
        Ok(NatsStore {
            engine,
            catalog,
            state,
            outcomes,
            view,
            held: Arc::default(),
            work,
            runtime: tokio::runtime::Handle::current(),
            feed: OnceLock::new(),
            fault: Fault::default(),
            followers,
            test_faults: TestFaults::from_env(),
        })
    }

    /// Run `future` to its end on the calling thread (see the module docs).
    pub(super) fn block<T>(&self, future: impl Future<Output = T>) -> T {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => tokio::task::block_in_place(|| handle.block_on(future)),
            Err(_) => self.runtime.block_on(future),
        }
    }

    /// Ack the fed messages of these entries, once their outcomes are stored. A node that lost a
    /// partition's pin meanwhile cannot: the new drainer is handed them again, finds their
    /// outcomes and acks them itself.
    pub(super) async fn ack_held(&self, inbox_ids: impl IntoIterator<Item = InboxId>) {
        let acks: Vec<(u64, FeedAck)> = {
            let mut held = self.held.lock().expect("held entries lock poisoned");
            inbox_ids.into_iter().filter_map(|id| held.remove(&id.0).map(|held| (id.0, held.ack))).collect()
        };
        let acked = futures_util::future::join_all(acks.into_iter().map(|(id, ack)| async move { (id, ack.ack().await) })).await;
        for (inbox_id, result) in acked {
            if let Err(error) = result {
                tracing::warn!(inbox_id, %error, "an inbox message was committed but could not be acked; its new drainer will find it done");
            }
        }
    }

    /// Give up the fed messages of entries that could not be committed: the server hands them
    /// out again after their ack wait (resumed).
    pub(super) fn release_held(&self, inbox_ids: impl IntoIterator<Item = InboxId>) {
        let mut held = self.held.lock().expect("held entries lock poisoned");
        for id in inbox_ids {
            held.remove(&id.0);
        }
    }

    async fn put_outcome(&self, inbox_id: InboxId, outcome: &InboxOutcome) -> Result<(), StoreError> {
        let value = serde_json::to_vec(outcome).map_err(|error| StoreError::Backend(error.to_string()))?;
        let key = inbox_id.0.to_string();
        let revision = self.outcomes.put(&key, value.into()).await.map_err(|error| classify(&format!("writing outcome {key}"), &error))?;
        self.view.apply_outcome(inbox_id.0, revision, outcome.clone());
        Ok(())
    }

    /// Store the outcomes of committed entries, then ack their messages.
    pub(super) async fn finish(&self, finished: &[(InboxId, &InboxOutcome)]) -> Result<(), StoreError> {
        let written = futures_util::future::join_all(finished.iter().map(|(id, outcome)| self.put_outcome(*id, outcome))).await;
        written.into_iter().collect::<Result<Vec<()>, StoreError>>()?;
        self.ack_held(finished.iter().map(|(id, _)| *id)).await;
        Ok(())
    }

    async fn outcome_latest(&self, inbox_id: InboxId) -> Result<Option<InboxOutcome>, StoreError> {
        let key = inbox_id.0.to_string();
        let entry = self.outcomes.entry(&key).await.map_err(|error| classify(&format!("reading outcome {key}"), &error))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let outcome: InboxOutcome = serde_json::from_slice(&entry.value)
                    .map_err(|error| StoreError::Codec { tree: OUTCOMES_BUCKET, message: format!("{key}: {error}") })?;
                self.view.apply_outcome(inbox_id.0, entry.revision, outcome.clone());
                Ok(Some(outcome))
            }
            _ => Ok(None),
        }
    }
}

/// Hands the partitions this node drains to the normalizer.
struct Handler {
    outcomes: kv::Store,
    view: Arc<View>,
    held: Arc<Mutex<HashMap<u64, Held>>>,
    feed: Arc<dyn Feed>,
}

impl Handler {
    /// The outcome stored for `inbox_id`, read from the bucket (a message handed out again may
    /// have been committed by a drainer that died before its ack).
    async fn outcome(&self, inbox_id: InboxId) -> Option<InboxOutcome> {
        match self.outcomes.get(inbox_id.0.to_string()).await {
            Ok(value) => value.and_then(|value| serde_json::from_slice(&value).ok()),
            Err(error) => {
                tracing::warn!(%error, %inbox_id, "reading an outcome failed; normalizing the entry (again)");
                None
            }
        }
    }
}

impl FeedHandler for Handler {
    async fn handle(&self, batch: FeedBatch) {
        for item in batch.items {
            let fed = match item.entry {
                Ok(fed) => fed,
                Err(error) => {
                    tracing::error!(%error, sequence = item.sequence, "an inbox message does not decode; acking it so its partition goes on");
                    if let Err(error) = item.ack.ack().await {
                        tracing::warn!(%error, "acking an undecodable inbox message");
                    }
                    continue;
                }
            };
            let resumed = item.delivered > 1;
            let account_id = fed.entry.account_id.clone();
            let (inbox_id, generation, entry) = match fed.requeue {
                Some((target, generation)) => (target, generation, None),
                None => (InboxId(item.sequence), 0, Some(fed.entry)),
            };
            // A message handed out again may have been committed by a drainer that died before
            // its ack; one imported finished (`stayhook import`, `migrate`) has its outcome
            // already; a requeue may be of a generation run already.
            let done = match &entry {
                Some(_) => self.view.outcome(inbox_id.0).is_some() || (resumed && self.outcome(inbox_id).await.is_some()),
                None => self.outcome(inbox_id).await.is_some_and(|outcome| outcome.generation >= generation),
            };
            if done {
                if let Err(error) = item.ack.ack().await {
                    tracing::warn!(%error, %inbox_id, "acking an inbox message committed before");
                }
                continue;
            }
            self.held.lock().expect("held entries lock poisoned").insert(inbox_id.0, Held { entry, ack: item.ack });
            self.feed.dispatch(&account_id, inbox_id, generation, resumed);
        }
    }
}

impl Catalog for NatsStore {
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.catalog.get_meta(key)
    }
    fn insert_meta<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        self.catalog.insert_meta(key, value)
    }
    fn remove_meta<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.catalog.remove_meta(key)
    }
    fn get_meta_latest<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        self.catalog.get_meta_latest(key)
    }
    fn swap_meta<'a>(&'a self, key: &'a str, expected: Option<&'a str>, value: Option<&'a str>) -> StoreFuture<'a, bool> {
        self.catalog.swap_meta(key, expected, value)
    }
    fn insert_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, Inserted> {
        self.catalog.insert_account(account)
    }
    fn put_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, ()> {
        self.catalog.put_account(account)
    }
    fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError> {
        self.catalog.get_account(account_id)
    }
    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.catalog.list_accounts()
    }
    fn remove_account<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, bool> {
        self.catalog.remove_account(account_id)
    }
    fn put_subscription<'a>(&'a self, subscription: &'a Subscription) -> StoreFuture<'a, ()> {
        self.catalog.put_subscription(subscription)
    }
    fn get_subscription(&self, account_id: &str, subscription_id: &str) -> Result<Option<Subscription>, StoreError> {
        self.catalog.get_subscription(account_id, subscription_id)
    }
    fn list_subscriptions(&self, account_id: &str) -> Result<Vec<Subscription>, StoreError> {
        self.catalog.list_subscriptions(account_id)
    }
    fn remove_subscription<'a>(&'a self, account_id: &'a str, subscription_id: &'a str) -> StoreFuture<'a, bool> {
        self.catalog.remove_subscription(account_id, subscription_id)
    }
}

impl Inbox for NatsStore {
    /// Starts the partition feed: this node drains the partitions the server pins it for, and
    /// hands each webhook over once (again, as resumed, when another drainer died holding it).
    fn feed(&self, feed: Arc<dyn Feed>) -> Result<(), StoreError> {
        let handler = Arc::new(Handler { outcomes: self.outcomes.clone(), view: self.view.clone(), held: self.held.clone(), feed });
        let started = self.block(PartitionFeed::start(&self.engine, handler))?;
        self.feed.set(started).map_err(|_| StoreError::Backend("the store's feed is set already".into()))
    }

    /// The stream's duplicate window (`Nats-Msg-Id`) suppresses duplicates, capped at
    /// `NatsConfig::duplicate_window`; `dedup.window_ms` is not used. Without `dedup` a fresh id
    /// is used, so nothing is suppressed.
    fn append_inbox<'a>(&'a self, entry: &'a InboxEntry, dedup: Option<Dedup<'a>>) -> StoreFuture<'a, Appended> {
        Box::pin(async move {
            let fresh;
            let digest = match dedup {
                Some(dedup) => dedup.digest,
                None => {
                    fresh = uuid::Uuid::new_v4();
                    fresh.as_bytes().as_slice()
                }
            };
            let appended = self.engine.append(entry, digest).await?;
            if let Appended::New(id) = appended {
                self.view.apply_inbox(id.0, entry.account_id.clone(), entry.received_at_ms);
            }
            Ok(appended)
        })
    }

    /// The stream's window expires its ids.
    fn expire_digests_blocking(&self, _now_ms: u64, _window_ms: u64) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Every append is acknowledged by a quorum before it answers.
    fn durable(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn import_inbox(&self, entry: &InboxEntry) -> Result<InboxId, StoreError> {
        match self.block(self.append_inbox(entry, None))? {
            Appended::New(id) | Appended::Duplicate(Some(id)) => Ok(id),
            Appended::Duplicate(None) => Err(StoreError::Backend("an import was taken for a duplicate".into())),
        }
    }

    /// The stream's duplicate window cannot be given ids from outside: an imported digest is
    /// not remembered (a replay of it is dropped later as an unchanged update).
    fn import_digest(&self, _digest: &DigestRecord) -> Result<(), StoreError> {
        Ok(())
    }

    fn get_inbox(&self, inbox_id: InboxId) -> Result<Option<InboxEntry>, StoreError> {
        if let Some(held) = self.held.lock().expect("held entries lock poisoned").get(&inbox_id.0)
            && let Some(entry) = &held.entry
        {
            return Ok(Some(entry.clone()));
        }
        let found = self.block(self.engine.get_inbox(inbox_id.0))?;
        Ok(found.filter(|fed| fed.requeue.is_none()).map(|fed| fed.entry))
    }

    fn inbox_of_account(&self, account_id: &str, from_ms: u64, to_ms: u64) -> Result<Vec<InboxId>, StoreError> {
        Ok(self.view.inbox_of_account(account_id, from_ms, to_ms))
    }

    /// A requeue request on the account's subject (ordered with its webhooks), as the outcome's
    /// generation + 1; `None` while the entry has no outcome (pending).
    fn requeue_inbox(&self, inbox_id: InboxId) -> Result<Option<u32>, StoreError> {
        self.block(async {
            let Some(outcome) = self.outcome_latest(inbox_id).await? else { return Ok(None) };
            let account_id = match self.view.inbox_account(inbox_id.0) {
                Some(account_id) => account_id,
                None => match self.engine.get_inbox(inbox_id.0).await? {
                    Some(fed) => fed.entry.account_id,
                    None => return Ok(None),
                },
            };
            let generation = outcome.generation.saturating_add(1);
            self.engine.requeue(&account_id, inbox_id, generation).await?;
            Ok(Some(generation))
        })
    }

    /// Entries without an outcome in this node's read model.
    fn pending_inbox(&self) -> Result<Vec<(InboxId, u32)>, StoreError> {
        Ok(self.view.pending().into_iter().map(|id| (id, 0)).collect())
    }

    fn inbox_outcome(&self, inbox_id: InboxId) -> Result<Option<InboxOutcome>, StoreError> {
        match self.view.outcome(inbox_id.0) {
            Some(outcome) => Ok(Some(outcome)),
            None => self.block(self.outcome_latest(inbox_id)),
        }
    }

    fn list_outcomes(&self, status: InboxStatus, limit: usize) -> Result<Vec<(InboxId, InboxOutcome)>, StoreError> {
        Ok(self.view.list_outcomes(status, limit))
    }

    fn finish_inbox(&self, inbox_id: InboxId, outcome: &InboxOutcome) -> Result<(), StoreError> {
        self.block(self.finish(&[(inbox_id, outcome)]))
    }

    fn list_inbox(&self, after: Option<InboxId>, limit: usize) -> Result<Vec<InboxListing>, StoreError> {
        Ok(self.view.list_inbox(after, limit))
    }

    /// Digests live in the stream's duplicate window only: none to list.
    fn list_digests(&self, _after: Option<(&str, &[u8])>, _limit: usize) -> Result<Vec<DigestRecord>, StoreError> {
        Ok(Vec::new())
    }
}

impl Retention for NatsStore {
    /// See [`super::retention`].
    fn prune_blocking(&self, cutoffs: &RetentionCutoffs, budget: usize) -> Result<PruneReport, StoreError> {
        self.block(self.prune(cutoffs, budget))
    }

    fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        self.block(async {
            let mut stats = StorageStats { oldest_event_ms: self.view.oldest_event_ms(), ..Default::default() };
            for name in [
                super::engine::INBOX_STREAM,
                super::engine::EVENTS_STREAM,
                super::engine::WORK_STREAM,
                super::engine::ATTEMPTS_STREAM,
                "KV_SH_STATE",
                "KV_SH_OUTCOMES",
                "KV_SH_DELIVERIES",
                "KV_SH_LANES",
                "KV_SH_CATALOG",
            ] {
                let mut stream =
                    self.engine.jetstream().get_stream(name).await.map_err(|error| classify(&format!("reading {name}"), &error))?;
                let info = stream.info().await.map_err(|error| classify(&format!("reading {name}"), &error))?;
                stats.bytes_on_disk += info.state.bytes;
                if name == super::engine::INBOX_STREAM {
                    // Retention deletes from the start (an empty stream's first sequence is the
                    // next one): everything below the first was deleted.
                    let first = info.state.first_sequence;
                    stats.inbox_pruned_through = first.checked_sub(1).filter(|through| *through > 0).map(InboxId);
                    if info.state.messages > 0 {
                        stats.oldest_inbox_id = Some(InboxId(first));
                        stats.oldest_inbox_ms = u64::try_from(info.state.first_timestamp.unix_timestamp_nanos() / 1_000_000).ok();
                    }
                }
            }
            Ok(stats)
        })
    }

    /// Purges the account's subjects from the inbox, the event log and the attempts, and deletes
    /// its state. Unlike the embedded store it does not keep pending entries or events with a
    /// pending delivery: a pending delivery's work message carries its event.
    fn remove_account_data_blocking(&self, account_id: &str) -> Result<u64, StoreError> {
        let token = subject_token(account_id);
        self.block(async {
            let mut removed = 0;
            for (name, filter) in [
                (super::engine::INBOX_STREAM, format!("sh.in.*.{token}")),
                (super::engine::EVENTS_STREAM, format!("sh.ev.{token}.>")),
                (super::engine::ATTEMPTS_STREAM, format!("sh.att.{token}.>")),
            ] {
                let stream =
                    self.engine.jetstream().get_stream(name).await.map_err(|error| classify(&format!("purging {name}"), &error))?;
                let purged = stream.purge().filter(filter).await.map_err(|error| classify(&format!("purging {name}"), &error))?;
                removed += purged.purged;
            }
            let prefix = format!("{token}.");
            for key in super::ledger::keys_with_prefix(&self.state, &prefix).await? {
                self.state.purge(&key).await.map_err(|error| classify(&format!("deleting state {key}"), &error))?;
                removed += 1;
            }
            self.view.forget_account(account_id);
            Ok(removed)
        })
    }
}

impl Backend for NatsStore {
    fn fault(&self) -> &Fault {
        &self.fault
    }

    /// Every write is acknowledged by the cluster before it returns: nothing to flush.
    fn flush_blocking(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Hand this node's partitions and the deliveries it read over to the other nodes (see
    /// [`PartitionFeed::leave`] and `WorkQueue::leave`).
    fn leave_blocking(&self) {
        let n_deliveries = self.block(self.work.leave());
        let partitions = match self.feed.get() {
            Some(feed) => self.block(feed.leave(&self.engine)),
            None => Vec::new(),
        };
        tracing::info!(?partitions, n_deliveries, "left the cluster: partitions unpinned, deliveries given back");
    }

    /// A raw webhook is one message: the server's `max_payload` (1 MB by default) less room for
    /// the entry's headers (`Sh-Headers` holds the request's).
    fn largest_body(&self) -> Option<usize> {
        let max_payload = self.engine.client().server_info().max_payload;
        Some(max_payload.saturating_sub(HEADER_ROOM))
    }
}

impl From<NatsError> for StoreError {
    fn from(error: NatsError) -> Self {
        match error {
            NatsError::Unavailable(message) => StoreError::Unavailable(message),
            NatsError::Conflict(message) => StoreError::Conflict { record: message },
            other => StoreError::Backend(other.to_string()),
        }
    }
}
