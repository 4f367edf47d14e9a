//! What export and import (`crate::backup`) need beyond the daemon's own paths: walking the
//! inbox, the digests and an account's state page by page, and writing state outside a
//! normalization. Plain reads of the index records, and plain writes made durable by the group
//! commit, like every other write of this backend.

use std::ops::Bound;

use super::*;

impl SledStore {
    /// [`Inbox::list_inbox`]: the small records in key (id) order, no body read.
    pub(super) fn list_inbox_records(&self, after: Option<InboxId>, limit: usize) -> Result<Vec<InboxListing>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.key()));
        let mut found = Vec::new();
        for entry in self.index.inbox.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let record: InboxRecord = decode_record(tree::INBOX, &value)?;
            let id = InboxId::from_key(&key).ok_or_else(|| StoreError::Codec { tree: tree::INBOX, message: "short key".into() })?;
            found.push(InboxListing { id, account_id: record.account_id, received_at_ms: record.received_at_ms });
        }
        Ok(found)
    }

    /// [`Inbox::list_digests`]: `dedup` keys are `account \0 digest`, so key order is the order
    /// promised.
    pub(super) fn list_digest_records(&self, after: Option<(&str, &[u8])>, limit: usize) -> Result<Vec<DigestRecord>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |(account, digest)| Bound::Excluded(keys::dedup(account, digest)));
        let mut found = Vec::new();
        for entry in self.index.dedup.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let split = key
                .iter()
                .position(|byte| *byte == 0)
                .ok_or_else(|| StoreError::Codec { tree: tree::DEDUP, message: "key without account".into() })?;
            let account_id = String::from_utf8(key[..split].to_vec())
                .map_err(|error| StoreError::Codec { tree: tree::DEDUP, message: error.to_string() })?;
            let seen_ms = keys::read_u64(&value).unwrap_or(0);
            found.push(DigestRecord { account_id, digest: key[split + 1..].to_vec(), seen_ms });
        }
        Ok(found)
    }

    /// [`Ledger::list_state`]: `state` keys are `account \0 kind \0 record`, so an account's
    /// records are one key range in the order promised.
    pub(super) fn list_state_records(
        &self,
        account_id: &str,
        after: Option<(RecordKind, &str)>,
        limit: usize,
    ) -> Result<Vec<StateRecord>, StoreError> {
        let prefix = keys::account_prefix(account_id);
        let start = match after {
            Some((kind, record_id)) => Bound::Excluded(keys::state(account_id, kind, record_id)),
            None => Bound::Included(prefix.clone()),
        };
        let mut found = Vec::new();
        for entry in self.index.state.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let rest = &key[prefix.len()..];
            let bad = |message: &str| StoreError::Codec { tree: tree::STATE, message: message.into() };
            let split = rest.iter().position(|byte| *byte == 0).ok_or_else(|| bad("key without kind"))?;
            let kind = kind_named(&rest[..split]).ok_or_else(|| bad("unknown record kind"))?;
            let record_id = String::from_utf8(rest[split + 1..].to_vec()).map_err(|error| bad(&error.to_string()))?;
            found.push(StateRecord { kind, record_id, record: decode_state(&value)? });
        }
        Ok(found)
    }

    /// [`Ledger::put_state_blocking`]: plain writes, then a round of the group commit.
    pub(super) fn put_state_records(&self, writes: Vec<StateWrite>) -> Result<(), StoreError> {
        let index = &self.index;
        index.noting((|| {
            for write in &writes {
                let key = keys::state(&write.account_id, write.kind, &write.record_id);
                match &write.record {
                    Some(record) => index.state.insert(key, encode_state(record))?,
                    None => index.state.remove(key)?,
                };
            }
            Ok(())
        })())?;
        self.flushed()
    }

    /// [`Ledger::put_events_blocking`]: each body to a segment, then its index record (without
    /// deliveries; the inbox id its body names, 0 when that is not a number), then a round of the
    /// group commit.
    pub(super) fn put_event_records(&self, events: Vec<StoredEvent>) -> Result<(), StoreError> {
        let index = &self.index;
        index.noting((|| {
            for event in &events {
                let loc = index.segments.append(&encode_json(event))?;
                let record = EventRecord {
                    loc,
                    inbox_id: event.inbox_id.parse().unwrap_or(0),
                    account_id: event.integration_account_id.clone(),
                    event_type: event.event_type,
                    record_id: event.record_id.clone(),
                    result: event.result,
                    timestamp: event.timestamp.clone(),
                    deliveries: Vec::new(),
                };
                index.events.insert(keys::event(&event.id), encode_record(&record))?;
            }
            Ok(())
        })())?;
        self.flushed()
    }

    /// Wait on this thread for the next round of the group commit.
    fn flushed(&self) -> Result<(), StoreError> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.commit.after_flush(move |outcome| {
            let _ = sender.send(outcome);
        });
        receiver.recv().unwrap_or(Err(StoreError::Stopped))
    }
}

fn kind_named(name: &[u8]) -> Option<RecordKind> {
    [RecordKind::Reservation, RecordKind::Conversation, RecordKind::Calendar].into_iter().find(|kind| kind.as_str().as_bytes() == name)
}
