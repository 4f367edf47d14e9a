//! The ledger on JetStream: record state in `SH_STATE` (key `<account>.<kind>.<record>`, written
//! only by compare-and-set on the key's revision), the event log in `SH_EVENTS`
//! (`sh.ev.<account>.<event id>`), and the commit of a normalized run.
//!
//! The commit, each step idempotent so a run repeated after a crash (or by the node that took
//! the partition over) adds nothing twice:
//! 1. every state write's expectation is checked against the bucket (a conflict writes nothing);
//! 2. the events are published (`Nats-Msg-Id` = the event id and a hash of its JSON: a repeat of
//!    the same event is a duplicate, an event decided anew under the same id replaces it);
//! 3. the state is written by compare-and-set: `create` when the decision read none, `update` on
//!    the revision it read. Of two nodes deciding one record, one wins; the other's write fails
//!    and its run is decided again (only a drainer that lost its pin without knowing it yet can
//!    get here past step 1; its events of step 2 then stay in the log, replaced when the new
//!    decision makes an event of the same id);
//! 4. the deliveries join their lanes ([`super::work`]);
//! 5. the outcomes are stored and the inbox messages acked.
//!
//! Step 1 covers the whole run; steps 2 to 5 go webhook by webhook within each chain of webhooks
//! that share a record or a lane (the chains at once), so a node that dies mid-commit leaves at
//! most one webhook of a chain half done. Its repeat (by the node that takes the partition over,
//! handed the entry as resumed) finds the state that webhook wrote and takes its events again;
//! were the steps run for the whole run at once, it could find the state of a later webhook of
//! the run and decide the earlier one against it (a creation announced as an update).

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{consumer, kv};
use futures_util::StreamExt;
use sha2::Digest;

use super::engine::{NatsError, STATE_BUCKET, classify, subject_token, token_id};
use super::store::NatsStore;
use crate::model::RecordKind;
use crate::store::*;

const KINDS: [RecordKind; 3] = [RecordKind::Reservation, RecordKind::Conversation, RecordKind::Calendar];

/// The state key of a record.
fn state_key(account_id: &str, kind: RecordKind, record_id: &str) -> String {
    format!("{}.{}.{}", subject_token(account_id), kind.as_str(), subject_token(record_id))
}

/// The subject of an event.
pub(super) fn event_subject(account_id: &str, event_id: &str) -> String {
    format!("sh.ev.{}.{}", subject_token(account_id), subject_token(event_id))
}

/// How long listing a prefix's keys may take.
const KEYS_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// The live keys of a bucket under `prefix` (whole tokens, ending with a dot: `<account>.`): an
/// ordered consumer filtered to the prefix's subjects, headers only, each key's last entry, so
/// the server sends only that account's keys (not the bucket's, as `kv::Store::keys` would).
pub(super) async fn keys_with_prefix(bucket: &kv::Store, prefix: &str) -> Result<Vec<String>, StoreError> {
    let what = format!("listing the keys {prefix}* of {}", bucket.name);
    let config = consumer::pull::OrderedConfig {
        filter_subject: format!("{}{prefix}>", bucket.prefix),
        headers_only: true,
        deliver_policy: consumer::DeliverPolicy::LastPerSubject,
        ..Default::default()
    };
    let consumer = bucket.stream.create_consumer(config).await.map_err(|error| classify(&what, &error))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer.messages().await.map_err(|error| classify(&what, &error))?;
    let listed = tokio::time::timeout(KEYS_BOUND, async {
        let mut found = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|error| classify(&what, &error))?;
            let removed = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("KV-Operation"))
                .is_some_and(|operation| matches!(operation.as_str(), "DEL" | "PURGE"));
            if let Some(key) = message.subject.strip_prefix(bucket.prefix.as_str())
                && !removed
            {
                found.push(key.to_string());
            }
            if message.info().map_err(|error| NatsError::Unavailable(format!("{what}: {error}")))?.pending == 0 {
                return Ok(found);
            }
        }
        Err(NatsError::Unavailable(format!("{what}: the consumer ended")))
    })
    .await;
    match listed {
        Ok(listed) => Ok(listed?),
        Err(_) => Err(StoreError::Unavailable(format!("{what}: not listed within {KEYS_BOUND:?}"))),
    }
}

fn record_name(write: &StateWrite) -> String {
    format!("{}/{}/{}", write.account_id, write.kind.as_str(), write.record_id)
}

fn lost(write: &StateWrite) -> StoreError {
    StoreError::Conflict { record: record_name(write) }
}

fn encode_record(record: &serde_json::Value) -> bytes::Bytes {
    // A JSON value always serializes.
    bytes::Bytes::from(serde_json::to_vec(record).expect("a JSON value serializes"))
}

/// What a key's write expects while a commit writes it (the caller's expectation for its first
/// write, the commit's own result for later ones).
#[derive(Clone, Copy)]
enum Holds {
    Any,
    Absent,
    At(u64),
}

/// The run's webhooks (by index) grouped into chains: two webhooks that write one record's state
/// or add to one lane are in the same chain, in run order; chains share nothing.
fn chains(batches: &[NormalizedBatch]) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut index: usize) -> usize {
        while parent[index] != index {
            parent[index] = parent[parent[index]];
            index = parent[index];
        }
        index
    }
    let mut parent: Vec<usize> = (0..batches.len()).collect();
    let mut last_of_key: HashMap<String, usize> = HashMap::new();
    for (index, batch) in batches.iter().enumerate() {
        let state = batch.state.iter().map(|write| state_key(&write.account_id, write.kind, &write.record_id));
        let lanes = batch.deliveries.iter().map(|delivery| format!("lane\0{}\0{}", delivery.subscription_id, delivery.lane));
        for key in state.chain(lanes) {
            if let Some(earlier) = last_of_key.insert(key, index) {
                let (a, b) = (root(&mut parent, earlier), root(&mut parent, index));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut chains: HashMap<usize, Vec<usize>> = HashMap::new();
    for index in 0..batches.len() {
        let chain = root(&mut parent, index);
        chains.entry(chain).or_default().push(index);
    }
    chains.into_values().collect()
}

impl NatsStore {
    /// A record's live state and its revision, from the bucket.
    async fn state_entry(&self, key: &str) -> Result<Option<(bytes::Bytes, u64)>, StoreError> {
        let entry = self.state.entry(key).await.map_err(|error| classify(&format!("reading state {key}"), &error))?;
        Ok(entry.filter(|entry| entry.operation == kv::Operation::Put).map(|entry| (entry.value, entry.revision)))
    }

    /// Publish events (awaiting every ack) and apply them to this node's read model; the stored
    /// JSON of each, by id.
    pub(super) async fn publish_events(&self, events: &[&StoredEvent]) -> Result<HashMap<String, Arc<Vec<u8>>>, StoreError> {
        let mut stored = HashMap::with_capacity(events.len());
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let bytes = serde_json::to_vec(event).map_err(|error| StoreError::Backend(format!("encoding event {}: {error}", event.id)))?;
            let hash = sha2::Sha256::digest(&bytes);
            let message_id = format!("{}:{}", event.id, hex::encode(&hash[..8]));
            let publish = PublishMessage::build().message_id(message_id).payload(bytes::Bytes::from(bytes.clone()));
            let ack = self
                .engine
                .jetstream()
                .send_publish(event_subject(&event.integration_account_id, &event.id), publish)
                .await
                .map_err(|error| classify("publishing an event", &error))?;
            acks.push(ack);
            stored.insert(event.id.clone(), Arc::new(bytes));
        }
        for ack in acks {
            ack.await.map_err(|error| classify("awaiting an event's ack", &error))?;
        }
        for bytes in stored.values() {
            self.view.apply_event(bytes.clone());
        }
        Ok(stored)
    }

    /// An event read from `SH_EVENTS` by its id (any account: the subject's account token is a
    /// wildcard), applied to the read model.
    async fn event_from_log(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let what = format!("reading event {event_id}");
        let stream =
            self.engine.jetstream().get_stream_no_info(super::engine::EVENTS_STREAM).await.map_err(|error| classify(&what, &error))?;
        match stream.direct_get_last_for_subject(format!("sh.ev.*.{}", subject_token(event_id))).await {
            Ok(message) => {
                let bytes = Arc::new(message.payload.to_vec());
                self.view.apply_event(bytes.clone());
                Ok(Some(bytes.as_ref().clone()))
            }
            Err(error) if error.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(error) => Err(classify(&what, &error).into()),
        }
    }

    /// Write one record's state as `holds` expects; its new revision (`None` once removed).
    async fn write_state(&self, write: &StateWrite, holds: Holds) -> Result<Option<u64>, StoreError> {
        let key = state_key(&write.account_id, write.kind, &write.record_id);
        let what = format!("writing state {key}");
        let conflict = |error: NatsError| match error {
            NatsError::Conflict(_) => lost(write),
            other => other.into(),
        };
        match (&write.record, holds) {
            (Some(record), Holds::Any) => {
                self.state.put(&key, encode_record(record)).await.map(Some).map_err(|error| classify(&what, &error).into())
            }
            (Some(record), Holds::Absent) => match self.state.create(&key, encode_record(record)).await {
                Ok(revision) => Ok(Some(revision)),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Err(lost(write)),
                Err(error) => Err(conflict(classify(&what, &error))),
            },
            (Some(record), Holds::At(revision)) => {
                self.state.update(&key, encode_record(record), revision).await.map(Some).map_err(|error| conflict(classify(&what, &error)))
            }
            (None, Holds::Any) => self.state.delete(&key).await.map(|()| None).map_err(|error| classify(&what, &error).into()),
            (None, Holds::Absent) => Ok(None),
            (None, Holds::At(revision)) => self
                .state
                .delete_expect_revision(&key, Some(revision))
                .await
                .map(|()| None)
                .map_err(|error| conflict(classify(&what, &error))),
        }
    }

    /// The commit of normalized runs (see the module docs).
    async fn commit(&self, batches: Vec<NormalizedBatch>) -> Result<(), StoreError> {
        if self.test_faults.conflict_pending() {
            self.write_as_another_writer(&batches).await?;
        }
        // 1. Expectations, against the bucket with the commit's earlier writes applied.
        let mut present: HashMap<String, bool> = HashMap::new();
        for write in batches.iter().flat_map(|batch| &batch.state) {
            let key = state_key(&write.account_id, write.kind, &write.record_id);
            let holds = match write.expected {
                Expected::Any => true,
                Expected::Absent => match present.get(&key) {
                    Some(present) => !present,
                    None => self.state_entry(&key).await?.is_none(),
                },
                Expected::At(revision) => {
                    !present.contains_key(&key) && self.state_entry(&key).await?.is_some_and(|(_, stored)| stored == revision.0)
                }
            };
            if !holds {
                return Err(lost(write));
            }
            present.insert(key, write.record.is_some());
        }
        // 2-5, webhook by webhook within each chain of webhooks that share a record (or a
        // lane), the chains at once: a run stopped midway (its node died) leaves at most one
        // webhook per chain half committed, whose repeat finds only its own state of its records
        // (and takes its events again), never the state a later webhook of the run wrote.
        let chains = chains(&batches);
        let committed = futures_util::future::join_all(chains.into_iter().map(|chain| {
            let batches = &batches;
            async move {
                let mut written: HashMap<String, Option<u64>> = HashMap::new();
                for index in chain {
                    self.commit_one(&batches[index], &mut written).await?;
                }
                Ok::<(), StoreError>(())
            }
        }))
        .await;
        // A conflict first, so the normalizer decides the run again.
        let mut failed = None;
        for result in committed {
            match result {
                Ok(()) => {}
                Err(error @ StoreError::Conflict { .. }) => return Err(error),
                Err(error) => failed = failed.or(Some(error)),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// `STAYHOOK_TEST_CONFLICT_ONCE`: the first record the commit checks is written by another
    /// writer first ([`TestFaults::another_writer`]).
    async fn write_as_another_writer(&self, batches: &[NormalizedBatch]) -> Result<(), StoreError> {
        let checked = batches.iter().flat_map(|batch| &batch.state).find(|write| write.expected != Expected::Any && write.record.is_some());
        let Some((write, Some(ours))) = checked.map(|write| (write, write.record.as_ref())) else { return Ok(()) };
        let theirs = self.test_faults.another_writer(&record_name(write), ours);
        self.write_state(&StateWrite { record: Some(Arc::new(theirs)), ..write.clone() }, Holds::Any).await.map(|_| ())
    }

    /// Steps 2 to 5 of one webhook's batch; `written` holds the revisions the commit wrote so far.
    async fn commit_one(&self, batch: &NormalizedBatch, written: &mut HashMap<String, Option<u64>>) -> Result<(), StoreError> {
        // 2. Events.
        let events: Vec<&StoredEvent> = batch.events.iter().collect();
        let stored = self.publish_events(&events).await?;
        // 3. State, by compare-and-set.
        for write in &batch.state {
            let key = state_key(&write.account_id, write.kind, &write.record_id);
            let holds = match (written.get(&key), write.expected) {
                (Some(Some(revision)), _) => Holds::At(*revision),
                (Some(None), _) => Holds::Absent,
                (None, Expected::Any) => Holds::Any,
                (None, Expected::Absent) => Holds::Absent,
                (None, Expected::At(revision)) => Holds::At(revision.0),
            };
            let revision = self.write_state(write, holds).await?;
            written.insert(key, revision);
        }
        if self.test_faults.abort_after_state {
            // Every write above was acknowledged by the cluster: stored.
            self.test_faults.abort_after_state(batch.inbox_id);
        }
        // 4. Deliveries.
        for delivery in &batch.deliveries {
            let event = match stored.get(&delivery.event_id) {
                Some(event) => event.clone(),
                None => self
                    .view
                    .event_bytes(&delivery.event_id)
                    .ok_or_else(|| StoreError::Backend(format!("delivery {} of an event not in its commit", delivery.id)))?,
            };
            self.work.add(delivery, &event).await?;
        }
        // 5. The outcome, then the ack.
        self.finish(&[(batch.inbox_id, &batch.outcome)]).await
    }
}

impl Ledger for NatsStore {
    fn get_state(&self, account_id: &str, kind: RecordKind, record_id: &str) -> Result<Option<(serde_json::Value, Revision)>, StoreError> {
        let key = state_key(account_id, kind, record_id);
        let Some((value, revision)) = self.block(self.state_entry(&key))? else { return Ok(None) };
        let record =
            serde_json::from_slice(&value).map_err(|error| StoreError::Codec { tree: STATE_BUCKET, message: format!("{key}: {error}") })?;
        Ok(Some((record, Revision(revision))))
    }

    /// A conflict answers [`StoreError::Conflict`] and the entries stay held (decided again); any
    /// other failure gives their messages up, so the server hands them out again (resumed).
    fn commit_normalized_blocking(&self, batches: Vec<NormalizedBatch>) -> Result<(), StoreError> {
        let inbox_ids: Vec<InboxId> = batches.iter().map(|batch| batch.inbox_id).collect();
        let committed = self.block(self.commit(batches));
        if let Err(error) = &committed
            && !matches!(error, StoreError::Conflict { .. })
        {
            self.release_held(inbox_ids);
        }
        committed
    }

    fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let Some(bytes) = self.get_event_bytes(event_id)? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| StoreError::Codec { tree: "SH_EVENTS", message: format!("{event_id}: {error}") })
    }

    /// From the read model, or from a work message this node holds (it carries its event), else
    /// from the log itself: the read model may not have followed yet an event another node wrote
    /// (a node taking over a run whose events its dead drainer published takes them again).
    fn get_event_bytes(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.view.event_bytes(event_id).or_else(|| self.work.event_bytes(event_id)) {
            return Ok(Some(bytes.as_ref().clone()));
        }
        self.block(self.event_from_log(event_id))
    }

    fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let found = self.view.list_events(filter);
        found
            .into_iter()
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|error| StoreError::Codec { tree: "SH_EVENTS", message: error.to_string() })
            })
            .collect()
    }

    fn list_state(&self, account_id: &str, after: Option<(RecordKind, &str)>, limit: usize) -> Result<Vec<StateRecord>, StoreError> {
        self.block(async {
            let prefix = format!("{}.", subject_token(account_id));
            let mut records: Vec<(RecordKind, String, String)> = Vec::new();
            for key in keys_with_prefix(&self.state, &prefix).await? {
                let mut parts = key[prefix.len()..].splitn(2, '.');
                let (Some(kind), Some(token)) = (parts.next(), parts.next()) else { continue };
                let (Some(kind), Some(record_id)) = (KINDS.into_iter().find(|known| known.as_str() == kind), token_id(token)) else {
                    continue;
                };
                if after.is_none_or(|(after_kind, after_id)| (kind.as_str(), record_id.as_str()) > (after_kind.as_str(), after_id)) {
                    records.push((kind, record_id, key));
                }
            }
            records.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
            let mut found = Vec::new();
            for (kind, record_id, key) in records {
                if found.len() >= limit {
                    break;
                }
                if let Some((value, _)) = self.state_entry(&key).await? {
                    let record = serde_json::from_slice(&value)
                        .map_err(|error| StoreError::Codec { tree: STATE_BUCKET, message: format!("{key}: {error}") })?;
                    found.push(StateRecord { kind, record_id, record });
                }
            }
            Ok(found)
        })
    }

    fn put_state_blocking(&self, writes: Vec<StateWrite>) -> Result<(), StoreError> {
        self.block(async {
            for write in &writes {
                self.write_state(write, Holds::Any).await?;
            }
            Ok(())
        })
    }

    fn put_events_blocking(&self, events: Vec<StoredEvent>) -> Result<(), StoreError> {
        let events: Vec<&StoredEvent> = events.iter().collect();
        self.block(self.publish_events(&events)).map(|_| ())
    }
}
