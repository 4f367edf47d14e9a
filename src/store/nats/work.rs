//! Deliveries on JetStream: each delivery's record in `SH_DELIVERIES` (key: its id), each lane's
//! open deliveries in `SH_LANES` (key `<subscription>.<lane>`, the ids head first, written by
//! compare-and-set), and **only a lane's head** in `SH_WORK` (`sh.work.<subscription>`, header
//! `Sh-Delivery`, the event's JSON as the body), pulled by every node from the shared `work`
//! consumer. So any node may attempt a delivery, and the next delivery of a record is published
//! only once the one before it is delivered, cancelled or (unless dead letters hold their lane)
//! dead: per-record order holds across nodes and across a node's death (its message comes back
//! after the consumer's ack wait, to any node; a live node reports progress on what it holds
//! every third of the ack wait, so the wait is the failover time, not a bound on an attempt).
//!
//! An attempt ends with the message: delivered, cancelled or dead, it is acked after the record
//! and the lane are written; failed, it is nacked with the retry schedule's delay, so the server
//! holds it until then. The daemon's retry schedule decides when a delivery is dead (the
//! consumer's `max_deliver` is unlimited). Every step is idempotent: a message found for a
//! delivery whose record is finished (its node died before the ack) only moves the lane on.
//!
//! [`WorkQueue`] is this node's side: a puller that fetches as many messages as the scheduler
//! has free slots, reads each one's record, and holds it until the scheduler leases it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, consumer, kv};
use futures_util::StreamExt;
use sha2::Digest;

use super::engine::{EVENTS_STREAM, Engine, NatsError, WORK_CONSUMER, WORK_STREAM, classify, subject_token};
use super::ledger::event_subject;
use super::store::NatsStore;
use super::view::View;
use crate::store::*;

/// The header naming a work message's delivery.
const DELIVERY: &str = "Sh-Delivery";

/// Deliveries of a work message whose delivery has no record before it is dropped (the record
/// is written before the message is published, so only an account's deletion leaves none).
const GONE_AFTER: i64 = 5;

/// A work message read and waiting for the scheduler.
struct Ready {
    message: jetstream::Message,
    delivery: Delivery,
    event: Arc<Vec<u8>>,
}

/// This node's side of the shared work (see the module docs).
pub struct WorkQueue {
    engine: Engine,
    deliveries: kv::Store,
    lanes: kv::Store,
    view: Arc<View>,
    /// Read, not leased yet. Locked after `leased` when both are (never the other way).
    buffer: Mutex<VecDeque<Ready>>,
    /// Leased: delivery id to its message (stream sequence kept to tell a redelivery of it).
    leased: Mutex<HashMap<u64, jetstream::Message>>,
    /// Events of the messages held here, with how many hold each.
    events: Mutex<HashMap<String, HeldEvent>>,
    /// How many the scheduler can take now.
    wanted: AtomicUsize,
    wake: tokio::sync::Notify,
    due_changed: tokio::sync::Notify,
    runtime: tokio::runtime::Handle,
}

/// An event's JSON and how many messages held here carry it.
type HeldEvent = (Arc<Vec<u8>>, usize);

fn lane_key(subscription_id: &str, lane: &str) -> String {
    format!("{}.{}", subject_token(subscription_id), subject_token(lane))
}

fn stream_sequence(message: &jetstream::Message) -> Option<u64> {
    message.info().ok().map(|info| info.stream_sequence)
}

fn encode<T: serde::Serialize>(value: &T) -> bytes::Bytes {
    // Deliveries and attempts always serialize.
    bytes::Bytes::from(serde_json::to_vec(value).expect("delivery records serialize"))
}

impl WorkQueue {
    /// Start pulling `work` for this node; the puller's task is returned to be aborted with the store.
    pub async fn start(
        engine: &Engine,
        deliveries: kv::Store,
        lanes: kv::Store,
        view: Arc<View>,
    ) -> Result<(Arc<WorkQueue>, tokio::task::JoinHandle<()>), NatsError> {
        let stream = engine.jetstream().get_stream(WORK_STREAM).await.map_err(|error| classify("opening SH_WORK", &error))?;
        let consumer: consumer::PullConsumer = stream
            .get_consumer(WORK_CONSUMER)
            .await
            .map_err(|error| NatsError::Unavailable(format!("opening the work consumer: {error}")))?;
        let queue = Arc::new(WorkQueue {
            engine: engine.clone(),
            deliveries,
            lanes,
            view,
            buffer: Mutex::default(),
            leased: Mutex::default(),
            events: Mutex::default(),
            wanted: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
            due_changed: tokio::sync::Notify::new(),
            runtime: tokio::runtime::Handle::current(),
        });
        let every = (engine.config().work_ack_wait / 3).max(Duration::from_millis(100));
        let (weak, weak_too) = (Arc::downgrade(&queue), Arc::downgrade(&queue));
        let puller = tokio::spawn(async move {
            tokio::join!(pull(weak, consumer), keep_in_progress(weak_too, every));
        });
        Ok((queue, puller))
    }

    /// A delivery's record, from the bucket.
    async fn record(&self, delivery_id: u64) -> Result<Option<(Delivery, u64)>, StoreError> {
        let key = delivery_id.to_string();
        let entry = self.deliveries.entry(&key).await.map_err(|error| classify(&format!("reading delivery {key}"), &error))?;
        let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else { return Ok(None) };
        let delivery = serde_json::from_slice(&entry.value)
            .map_err(|error| StoreError::Codec { tree: super::engine::DELIVERIES_BUCKET, message: format!("{key}: {error}") })?;
        Ok(Some((delivery, entry.revision)))
    }

    pub(super) async fn put_record(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let key = delivery.id.to_string();
        let revision =
            self.deliveries.put(&key, encode(delivery)).await.map_err(|error| classify(&format!("writing delivery {key}"), &error))?;
        self.view.apply_delivery(revision, delivery.clone());
        Ok(())
    }

    /// Retention: delete deliveries' records, a dead letter still at its lane's head discarded
    /// first (cancelled, it leaves the lane, whose next goes out). Another node pruning the same
    /// event finds them gone. The bytes deleted.
    pub(super) async fn prune(&self, deliveries: &[Delivery]) -> Result<u64, StoreError> {
        let mut bytes = 0;
        for delivery in deliveries {
            if delivery.status == DeliveryStatus::Dead {
                let (ids, _) = self.lane(&lane_key(&delivery.subscription_id, &delivery.lane)).await?;
                if ids.first() == Some(&delivery.id) {
                    let discarded = Delivery { status: DeliveryStatus::Cancelled, ..delivery.clone() };
                    self.put_record(&discarded).await?;
                    self.leave_lane(&discarded).await?;
                }
            }
            let key = delivery.id.to_string();
            self.deliveries.purge(&key).await.map_err(|error| classify(&format!("deleting delivery {key}"), &error))?;
            bytes += (key.len() + encode(delivery).len()) as u64;
        }
        Ok(bytes)
    }

    /// A lane's ids and revision (0: no such key yet).
    async fn lane(&self, key: &str) -> Result<(Vec<u64>, u64), StoreError> {
        let entry = self.lanes.entry(key).await.map_err(|error| classify(&format!("reading lane {key}"), &error))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let ids = serde_json::from_slice(&entry.value)
                    .map_err(|error| StoreError::Codec { tree: super::engine::LANES_BUCKET, message: format!("{key}: {error}") })?;
                Ok((ids, entry.revision))
            }
            Some(entry) => Ok((Vec::new(), entry.revision)),
            None => Ok((Vec::new(), 0)),
        }
    }

    /// Write a lane on the revision it was read at; `false` when another writer came first.
    async fn swap_lane(&self, key: &str, ids: &[u64], revision: u64) -> Result<bool, StoreError> {
        let value = encode(&ids);
        let written = if revision == 0 {
            match self.lanes.create(key, value).await {
                Ok(_) => return Ok(true),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
                Err(error) => Err(classify(&format!("creating lane {key}"), &error)),
            }
        } else {
            self.lanes.update(key, value, revision).await.map(|_| ()).map_err(|error| classify(&format!("writing lane {key}"), &error))
        };
        match written {
            Ok(()) => Ok(true),
            Err(NatsError::Conflict(_)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Put a delivery at its lane's tail (unless it is in it); whether it is the lane's head.
    async fn join_lane(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let key = lane_key(&delivery.subscription_id, &delivery.lane);
        loop {
            let (mut ids, revision) = self.lane(&key).await?;
            if ids.contains(&delivery.id) {
                return Ok(ids.first() == Some(&delivery.id));
            }
            ids.push(delivery.id);
            if self.swap_lane(&key, &ids, revision).await? {
                return Ok(ids.len() == 1);
            }
        }
    }

    /// Take a finished delivery out of its lane and publish the lane's next head (also when the
    /// delivery had left already: the node that took it out may have died before publishing).
    async fn leave_lane(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let key = lane_key(&delivery.subscription_id, &delivery.lane);
        let head = loop {
            let (mut ids, revision) = self.lane(&key).await?;
            let was_head = ids.first() == Some(&delivery.id);
            if !ids.contains(&delivery.id) {
                break ids.first().copied();
            }
            ids.retain(|id| *id != delivery.id);
            if self.swap_lane(&key, &ids, revision).await? {
                break if was_head { ids.first().copied() } else { None };
            }
        };
        if let Some(head) = head
            && let Some((next, _)) = self.record(head).await?
            && next.status == DeliveryStatus::Pending
        {
            self.publish(&next, None, "h").await?;
        }
        Ok(())
    }

    /// The stored JSON of a delivery's event: this node's read model, else the log itself.
    async fn event_of(&self, delivery: &Delivery) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.view.event_bytes(&delivery.event_id) {
            return Ok(bytes);
        }
        let stream =
            self.engine.jetstream().get_stream_no_info(EVENTS_STREAM).await.map_err(|error| classify("opening SH_EVENTS", &error))?;
        match stream.direct_get_last_for_subject(event_subject(&delivery.account_id, &delivery.event_id)).await {
            Ok(message) => Ok(Arc::new(message.payload.to_vec())),
            Err(error) => {
                Err(StoreError::Backend(format!("the event {} of delivery {} is not in the log: {error}", delivery.event_id, delivery.id)))
            }
        }
    }

    /// Publish a lane head's work message (`nonce` tells a revival from the first publication;
    /// a repeat of the same is a duplicate the stream drops).
    async fn publish(&self, delivery: &Delivery, event: Option<&Arc<Vec<u8>>>, nonce: &str) -> Result<(), StoreError> {
        let event = match event {
            Some(event) => event.clone(),
            None => self.event_of(delivery).await?,
        };
        let mut headers = HeaderMap::new();
        headers.insert(DELIVERY, delivery.id.to_string());
        let publish = PublishMessage::build()
            .headers(headers)
            .message_id(format!("{}.{nonce}", delivery.id))
            .payload(bytes::Bytes::from(event.as_ref().clone()));
        let subject = format!("sh.work.{}", subject_token(&delivery.subscription_id));
        let ack = self.engine.jetstream().send_publish(subject, publish).await.map_err(|error| classify("publishing work", &error))?;
        ack.await.map_err(|error| classify("awaiting work's ack", &error))?;
        Ok(())
    }

    /// A new delivery of a commit (or its repeat): the record unless it exists, the lane, and the
    /// work message when it is the lane's head.
    pub async fn add(&self, delivery: &Delivery, event: &Arc<Vec<u8>>) -> Result<(), StoreError> {
        let key = delivery.id.to_string();
        match self.deliveries.create(&key, encode(delivery)).await {
            Ok(revision) => self.view.apply_delivery(revision, delivery.clone()),
            Err(error) => {
                let exists = error.kind() == kv::CreateErrorKind::AlreadyExists
                    || matches!(classify(&format!("creating delivery {key}"), &error), NatsError::Conflict(_));
                if !exists {
                    return Err(classify(&format!("creating delivery {key}"), &error).into());
                }
                // A repeated commit: a delivery that went on since is left alone.
                if self.record(delivery.id).await?.is_none_or(|(stored, _)| stored.status != DeliveryStatus::Pending) {
                    return Ok(());
                }
            }
        }
        let head = self.join_lane(delivery).await?;
        if head {
            self.publish(delivery, Some(event), "h").await?;
        }
        Ok(())
    }

    /// Take a fetched message: hold it for the scheduler when its delivery is pending; otherwise
    /// finish what its node left undone and ack it.
    async fn accept(&self, message: jetstream::Message) {
        let Some(delivery_id) =
            message.headers.as_ref().and_then(|headers| headers.get(DELIVERY)).and_then(|id| id.as_str().parse::<u64>().ok())
        else {
            tracing::error!(subject = %message.subject, "a work message names no delivery; dropping it");
            return ack(message, AckKind::Term).await;
        };
        let sequence = stream_sequence(&message);
        let held_here = {
            let leased = self.leased.lock().expect("work lock poisoned");
            let buffer = self.buffer.lock().expect("work lock poisoned");
            leased
                .get(&delivery_id)
                .map(stream_sequence)
                .or_else(|| buffer.iter().find(|ready| ready.delivery.id == delivery_id).map(|ready| stream_sequence(&ready.message)))
        };
        match held_here {
            // The same message again (its ack wait ran out here): the holder acks or naks it.
            Some(held) if held == sequence => return,
            // Another message of a delivery held here: one is enough.
            Some(_) => return ack(message, AckKind::Ack).await,
            None => {}
        }
        let record = match self.record(delivery_id).await {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, delivery_id, "reading a delivery failed; its work comes back");
                return ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        };
        match record {
            Some((delivery, _)) if delivery.status == DeliveryStatus::Pending => {
                let event = Arc::new(message.payload.to_vec());
                let mut events = self.events.lock().expect("work lock poisoned");
                events.entry(delivery.event_id.clone()).or_insert_with(|| (event.clone(), 0)).1 += 1;
                drop(events);
                self.buffer.lock().expect("work lock poisoned").push_back(Ready { message, delivery, event });
            }
            Some((delivery, _)) => {
                let hold = delivery.status == DeliveryStatus::Dead;
                if !hold && let Err(error) = self.leave_lane(&delivery).await {
                    tracing::warn!(%error, delivery_id, "moving a lane on failed; its work comes back");
                    return ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
                ack(message, AckKind::Ack).await;
            }
            // No record: its account's data was deleted, or (defensively: reads go to the
            // leader) the record is not visible yet. A few tries before it is taken for gone.
            None => {
                let delivered = message.info().map(|info| info.delivered).unwrap_or(i64::MAX);
                if delivered < GONE_AFTER {
                    return ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
                tracing::warn!(delivery_id, delivered, "a work message of a delivery without a record; dropping it");
                ack(message, AckKind::Ack).await
            }
        }
    }

    fn forget_event(&self, event_id: &str) {
        let mut events = self.events.lock().expect("work lock poisoned");
        if let Some((_, holders)) = events.get_mut(event_id) {
            *holders -= 1;
            if *holders == 0 {
                events.remove(event_id);
            }
        }
    }

    /// The stored JSON of an event whose work message this node holds.
    pub fn event_bytes(&self, event_id: &str) -> Option<Arc<Vec<u8>>> {
        self.events.lock().expect("work lock poisoned").get(event_id).map(|(bytes, _)| bytes.clone())
    }

    /// Leave (the daemon stops, its scheduler stopped): fetch nothing more, and give the messages
    /// read and not leased back at once, so another node attempts them now rather than after
    /// the ack wait. How many were given back.
    pub(super) async fn leave(&self) -> usize {
        self.wanted.store(0, Ordering::Release);
        let ready: Vec<Ready> = self.buffer.lock().expect("work lock poisoned").drain(..).collect();
        let n_ready = ready.len();
        for ready in ready {
            ack(ready.message, AckKind::Nak(None)).await;
        }
        n_ready
    }

    /// Lease what was read, at most `limit`; tells the puller how many to fetch.
    fn lease(self: &Arc<Self>, limit: usize) -> Vec<Leased> {
        self.wanted.store(limit, Ordering::Release);
        self.wake.notify_one();
        // Lock order: `leased`, then `buffer` (as `accept` and `keep_in_progress` take them).
        let mut held = self.leased.lock().expect("work lock poisoned");
        let mut buffer = self.buffer.lock().expect("work lock poisoned");
        let mut leased = Vec::new();
        while leased.len() < limit {
            let Some(ready) = buffer.pop_front() else { break };
            let (id, event_id) = (ready.delivery.id, ready.delivery.event_id.clone());
            held.insert(id, ready.message);
            let queue = self.clone();
            leased.push(Leased::new(ready.delivery, move || queue.release(id, &event_id)));
            drop(ready.event);
        }
        leased
    }

    /// A lease dropped: a message not moved on by an attempt goes back at once.
    fn release(&self, delivery_id: u64, event_id: &str) {
        self.forget_event(event_id);
        if let Some(message) = self.leased.lock().expect("work lock poisoned").remove(&delivery_id) {
            self.runtime.spawn(ack(message, AckKind::Nak(None)));
        }
    }

    /// Record an attempt of a leased delivery and end its message (see the module docs).
    async fn record_attempt(&self, next: &Delivery, attempt: Option<&Attempt>, now_ms: u64, hold_lane: bool) -> Result<(), StoreError> {
        let message = self
            .leased
            .lock()
            .expect("work lock poisoned")
            .remove(&next.id)
            .ok_or_else(|| StoreError::Backend(format!("delivery {} is not leased by this node", next.id)))?;
        if let Some(attempt) = attempt {
            let subject = format!("sh.att.{}.{}", subject_token(&next.account_id), subject_token(&next.event_id));
            let publish = PublishMessage::build().message_id(format!("{}.{}", next.id, attempt.attempt)).payload(encode(attempt));
            let ack =
                self.engine.jetstream().send_publish(subject, publish).await.map_err(|error| classify("publishing an attempt", &error))?;
            ack.await.map_err(|error| classify("awaiting an attempt's ack", &error))?;
            self.view.apply_attempt(&next.event_id, attempt.clone());
        }
        self.put_record(next).await?;
        let end = match next.status {
            DeliveryStatus::Pending => AckKind::Nak(Some(Duration::from_millis(next.next_attempt_at_ms.saturating_sub(now_ms)))),
            DeliveryStatus::Dead if hold_lane => AckKind::Ack,
            _ => {
                self.leave_lane(next).await?;
                AckKind::Ack
            }
        };
        let what = format!("ending the work of delivery {}", next.id);
        match end {
            AckKind::Ack => message.double_ack().await.map_err(|error| classify(&what, &*error))?,
            other => message.ack_with(other).await.map_err(|error| classify(&what, &*error))?,
        }
        Ok(())
    }
}

async fn ack(message: jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, "answering a work message");
    }
}

/// Every third of the ack wait, tell the server the messages held here (read or leased) are
/// still being worked on, so the ack wait bounds how long a dead node's deliveries wait for
/// another node, not how long an attempt may take.
async fn keep_in_progress(queue: Weak<WorkQueue>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(work) = queue.upgrade() else { return };
        let replies: Vec<async_nats::Subject> = {
            let leased = work.leased.lock().expect("work lock poisoned");
            let buffer = work.buffer.lock().expect("work lock poisoned");
            leased.values().chain(buffer.iter().map(|ready| &ready.message)).filter_map(|message| message.reply.clone()).collect()
        };
        for reply in replies {
            if let Err(error) = work.engine.client().publish(reply, "+WPI".into()).await {
                tracing::debug!(%error, "work: a progress ack");
            }
        }
    }
}

/// Fetch as many messages as the scheduler can take, read each, wake the scheduler.
async fn pull(queue: Weak<WorkQueue>, consumer: consumer::PullConsumer) {
    loop {
        let Some(work) = queue.upgrade() else { return };
        let held = work.buffer.lock().expect("work lock poisoned").len();
        let want = work.wanted.load(Ordering::Acquire).saturating_sub(held).min(256);
        if want == 0 {
            let _ = tokio::time::timeout(Duration::from_secs(1), work.wake.notified()).await;
            continue;
        }
        let batch = consumer.fetch().max_messages(want).expires(Duration::from_secs(1)).messages().await;
        let mut messages = match batch {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "pulling deliveries");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut n_ready = 0;
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => {
                    let before = work.buffer.lock().expect("work lock poisoned").len();
                    work.accept(message).await;
                    n_ready += work.buffer.lock().expect("work lock poisoned").len().saturating_sub(before);
                }
                Err(error) => {
                    tracing::warn!(%error, "pulling deliveries");
                    break;
                }
            }
        }
        if n_ready > 0 {
            work.due_changed.notify_one();
        }
    }
}

impl DeliveryQueue for NatsStore {
    /// From this node's read model: pending deliveries (a lane's waiting ones included).
    fn due_deliveries(&self, now_ms: u64, limit: usize, wanted: &mut dyn FnMut(u64) -> bool) -> (Vec<u64>, Option<u64>) {
        self.view.due(now_ms, limit, wanted)
    }

    /// Leases the work messages this node fetched; the server holds retries until they are due,
    /// so there is no next due time to tell (the puller wakes the scheduler).
    fn next_work(&self, _now_ms: u64, limit: usize) -> Result<(Vec<Leased>, Option<u64>), StoreError> {
        Ok((self.work.lease(limit), None))
    }

    fn due_changed(&self) -> &tokio::sync::Notify {
        &self.work.due_changed
    }

    fn get_delivery(&self, delivery_id: u64) -> Result<Option<Delivery>, StoreError> {
        match self.view.delivery(delivery_id) {
            Some(delivery) => Ok(Some(delivery)),
            None => Ok(self.block(self.work.record(delivery_id))?.map(|(delivery, _)| delivery)),
        }
    }

    fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.view.deliveries_of_event(event_id))
    }

    fn record_attempt<'a>(
        &'a self,
        _leased: &'a Leased,
        next: &'a Delivery,
        attempt: Option<&'a Attempt>,
        now_ms: u64,
        hold_lane: bool,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.work.record_attempt(next, attempt, now_ms, hold_lane))
    }

    fn redeliver(&self, revived: Vec<Delivery>, added: Vec<Delivery>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            for delivery in &revived {
                self.work.put_record(delivery).await?;
                let (ids, _) = self.work.lane(&lane_key(&delivery.subscription_id, &delivery.lane)).await?;
                // A dead letter holding its lane is its head already; else it joins at the tail.
                let head = ids.first() == Some(&delivery.id) || self.work.join_lane(delivery).await?;
                if head {
                    self.work.publish(delivery, None, &format!("r{}", delivery.updated_at_ms)).await?;
                }
            }
            for delivery in &added {
                let event = self.work.event_of(delivery).await?;
                self.work.add(delivery, &event).await?;
            }
            Ok(())
        })
    }

    fn discard_dead_letter(&self, discarded: Delivery, _now_ms: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.work.put_record(&discarded).await?;
            self.work.leave_lane(&discarded).await
        })
    }

    fn lane_head(&self, subscription_id: &str, lane: &str) -> Result<Option<u64>, StoreError> {
        let (ids, _) = self.block(self.work.lane(&lane_key(subscription_id, lane)))?;
        Ok(ids.first().copied())
    }

    /// 63 bits of SHA-256 of the pair: a commit repeated by another node makes the same ids.
    fn delivery_id(&self, event_id: &str, subscription_id: &str) -> Result<u64, StoreError> {
        let mut hasher = sha2::Sha256::new();
        hasher.update(event_id.as_bytes());
        hasher.update([0]);
        hasher.update(subscription_id.as_bytes());
        let hash = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        Ok(u64::from_be_bytes(first) >> 1)
    }

    fn new_delivery_id(&self) -> Result<u64, StoreError> {
        Ok(uuid::Uuid::new_v4().as_u64_pair().0 >> 1)
    }

    fn attempts_of_event(&self, event_id: &str) -> Result<Vec<Attempt>, StoreError> {
        Ok(self.view.attempts_of_event(event_id))
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.view.dead_letters(limit))
    }
}
