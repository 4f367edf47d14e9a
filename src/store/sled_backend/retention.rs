//! Retention on the sled trees: delete, in key order, what the cutoffs no longer keep.
//!
//! Events are keyed by their UUID v7 id, so the `events` tree is in time order and a pass walks it
//! from the start until the first event at or after the cutoff. Each event goes with its
//! deliveries (`event_deliveries`, `deliveries`, `dead`) and attempts (`attempts`, same prefix),
//! the event itself last: a crash in between leaves the event, and the next pass finishes it.
//! Inbox entries are keyed by arrival order; a pass walks them until the first received at or after
//! the cutoff, skipping those still pending.
//!
//! These are plain removals, not transactions: nothing the writer thread writes is touched (a
//! finished delivery is never written again; a dead letter still at its lane's head is first
//! discarded through the writer, as `DELETE /v1/dead-letters/{id}` does), so a pass never holds the
//! lock the hot path's transactions take. sled reclaims the space as its segments are rewritten;
//! the files do not shrink at once.

use super::*;

/// `meta` key of the highest inbox id retention deleted (decimal).
const INBOX_PRUNED_THROUGH: &str = "retention_inbox_pruned_through";

impl SledStore {
    /// The deliveries of an event, with the keys they are listed under.
    fn event_deliveries_of(&self, event_id: &str) -> Result<Vec<(sled::IVec, Option<Delivery>)>, StoreError> {
        let mut found = Vec::new();
        for key in self.event_deliveries.scan_prefix(keys::event(event_id)).keys() {
            let key = key?;
            let delivery = match key.len().checked_sub(8).and_then(|at| keys::read_u64(&key[at..])) {
                Some(delivery_id) => self.get_delivery(delivery_id)?,
                None => None,
            };
            found.push((key, delivery));
        }
        Ok(found)
    }

    /// Delete an event with its deliveries, attempts and dead-letter marks (the event last).
    /// Returns (deliveries deleted, bytes deleted).
    fn delete_event(&self, event_id: &str, deliveries: &[(sled::IVec, Option<Delivery>)], now_ms: u64) -> Result<(u64, u64), StoreError> {
        let mut bytes = 0;
        let mut n_deliveries = 0;
        for (_, delivery) in deliveries {
            if let Some(delivery) = delivery
                && delivery.status == DeliveryStatus::Dead
                && self.lane_head(&delivery.subscription_id, &delivery.lane)? == Some(delivery.id)
            {
                let mut discarded = delivery.clone();
                discarded.status = DeliveryStatus::Cancelled;
                self.writer.submit(Job::Discard { discarded, now_ms }).blocking_recv().unwrap_or(Err(StoreError::Stopped))?;
            }
        }
        for entry in self.attempts.scan_prefix(keys::event(event_id)) {
            let (key, value) = entry?;
            bytes += (key.len() + value.len()) as u64;
            self.attempts.remove(key)?;
        }
        for (key, delivery) in deliveries {
            if let Some(delivery) = delivery {
                let id = delivery.id.to_be_bytes();
                self.dead.remove(id)?;
                if let Some(value) = self.deliveries.remove(id)? {
                    bytes += (id.len() + value.len()) as u64;
                    n_deliveries += 1;
                }
            }
            self.event_deliveries.remove(key)?;
            bytes += key.len() as u64;
        }
        let key = keys::event(event_id);
        if let Some(value) = self.events.remove(&key)? {
            bytes += (key.len() + value.len()) as u64;
        }
        Ok((n_deliveries, bytes))
    }

    fn inbox_pruned_through(&self) -> Result<Option<InboxId>, StoreError> {
        Ok(self.meta.get(INBOX_PRUNED_THROUGH)?.and_then(|value| String::from_utf8_lossy(&value).parse().ok()).map(InboxId))
    }

    fn decode_inbox(value: &[u8]) -> Result<InboxEntry, StoreError> {
        postcard::from_bytes(value).map_err(|error| StoreError::Codec { tree: tree::INBOX, message: error.to_string() })
    }

    /// Delete an inbox entry and its outcome; the bytes deleted.
    fn delete_inbox(&self, key: &[u8], entry_bytes: usize) -> Result<u64, StoreError> {
        let outcome = self.outcomes.remove(key)?.map_or(0, |value| key.len() + value.len());
        self.inbox.remove(key)?;
        Ok((key.len() + entry_bytes + outcome) as u64)
    }
}

impl Retention for SledStore {
    fn prune_blocking(&self, cutoffs: &RetentionCutoffs, budget: usize) -> Result<PruneReport, StoreError> {
        self.noting((|| {
            let mut report = PruneReport::default();
            for key in self.events.iter().keys() {
                let key = key?;
                let event_id = String::from_utf8_lossy(key.strip_suffix(&[0]).unwrap_or(&key)).into_owned();
                let Some(time_ms) = event_time_ms(&event_id) else { continue };
                if time_ms >= cutoffs.events_before_ms {
                    break;
                }
                let deliveries = self.event_deliveries_of(&event_id)?;
                let known: Vec<Delivery> = deliveries.iter().filter_map(|(_, delivery)| delivery.clone()).collect();
                if !event_is_prunable(time_ms, &known, cutoffs) {
                    continue;
                }
                if report.events >= budget as u64 {
                    report.more = true;
                    break;
                }
                let (n_deliveries, bytes) = self.delete_event(&event_id, &deliveries, cutoffs.now_ms)?;
                report.events += 1;
                report.deliveries += n_deliveries;
                report.bytes_freed += bytes;
            }
            let mut pruned_through = None;
            for entry in self.inbox.iter() {
                let (key, value) = entry?;
                if Self::decode_inbox(&value)?.received_at_ms >= cutoffs.inbox_before_ms {
                    break;
                }
                if self.pending.contains_key(&key)? {
                    continue;
                }
                if report.inbox >= budget as u64 {
                    report.more = true;
                    break;
                }
                report.bytes_freed += self.delete_inbox(&key, value.len())?;
                report.inbox += 1;
                pruned_through = InboxId::from_key(&key);
            }
            if let Some(InboxId(id)) = pruned_through
                && self.inbox_pruned_through()?.is_none_or(|InboxId(known)| known < id)
            {
                self.meta.insert(INBOX_PRUNED_THROUGH, id.to_string().as_bytes())?;
            }
            Ok(report)
        })())
    }

    fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        let mut stats = StorageStats { bytes_on_disk: self.db.size_on_disk()?, ..StorageStats::default() };
        for key in self.events.iter().keys() {
            let key = key?;
            if let Some(time_ms) = event_time_ms(&String::from_utf8_lossy(key.strip_suffix(&[0]).unwrap_or(&key))) {
                stats.oldest_event_ms = Some(time_ms);
                break;
            }
        }
        stats.inbox_pruned_through = self.inbox_pruned_through()?;
        if let Some((key, value)) = self.inbox.first()? {
            stats.oldest_inbox_ms = Some(Self::decode_inbox(&value)?.received_at_ms);
            stats.oldest_inbox_id = InboxId::from_key(&key);
        }
        Ok(stats)
    }

    fn remove_account_data_blocking(&self, account_id: &str) -> Result<u64, StoreError> {
        self.noting((|| {
            let mut removed = 0;
            for entry in self.inbox.iter() {
                let (key, value) = entry?;
                if Self::decode_inbox(&value)?.account_id == account_id && !self.pending.contains_key(&key)? {
                    self.delete_inbox(&key, value.len())?;
                    removed += 1;
                }
            }
            for tree in [&self.dedup, &self.state] {
                for key in tree.scan_prefix(keys::account_prefix(account_id)).keys() {
                    tree.remove(key?)?;
                    removed += 1;
                }
            }
            // Events carry their account inside: a walk of the log (an operator's rare action).
            let mut events = Vec::new();
            for value in self.events.iter().values() {
                let event: StoredEvent = decode_json(tree::EVENTS, &value?)?;
                if event.integration_account_id == account_id {
                    events.push(event.id);
                }
            }
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64);
            for event_id in events {
                let deliveries = self.event_deliveries_of(&event_id)?;
                if deliveries
                    .iter()
                    .any(|(_, delivery)| delivery.as_ref().is_some_and(|delivery| delivery.status == DeliveryStatus::Pending))
                {
                    continue;
                }
                let (n_deliveries, _) = self.delete_event(&event_id, &deliveries, now_ms)?;
                removed += 1 + n_deliveries;
            }
            Ok(removed)
        })())
    }
}
