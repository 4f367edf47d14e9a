//! Retention in storage format 3: small index records deleted in key order, bodies deleted with
//! their whole segment file.
//!
//! Events are keyed by UUID v7 ids whose time is the webhook's arrival, and inbox entries by
//! arrival order, so the oldest are at the start of their trees: a pass walks each tree from the
//! start to its cutoff, deletes what may go (an event with its deliveries, the event record last,
//! so a crash in between leaves it for the next pass) and skips what must stay (an event with a
//! delivery still pending or a dead letter younger than its cutoff; an inbox entry still pending).
//! A dead letter still at its lane's head is discarded through the writer first, so its lane goes
//! on and the in-memory lanes stay true.
//!
//! Segments: a body is appended at or after its record's arrival time, so a closed segment last
//! written (its mtime) before both cutoffs holds only records such a pass walks over. Once a pass
//! has walked to its cutoffs within its budget, every closed segment of that age that no kept
//! record points into is deleted whole: deleting files is what returns the disk (sled 0.34 reuses
//! little of the space freed by removed keys; BENCHMARKS.md).

use std::collections::BTreeSet;

use super::*;

/// `meta` key of the highest inbox id retention deleted (decimal).
const INBOX_PRUNED_THROUGH: &str = "retention_inbox_pruned_through";

impl Index {
    fn inbox_pruned_through(&self) -> Result<Option<InboxId>, StoreError> {
        Ok(self.meta.get(INBOX_PRUNED_THROUGH)?.and_then(|value| String::from_utf8_lossy(&value).parse().ok()).map(InboxId))
    }
}

/// An event's deliveries still stored.
fn deliveries_of(index: &Index, event: &EventRecord) -> Result<Vec<Delivery>, StoreError> {
    Ok(index.delivery_records(event)?.into_iter().map(|record| record.delivery).collect())
}

impl SledStore {
    /// Delete an event's deliveries (discarding a dead letter that holds its lane first), then
    /// the event. Returns (deliveries deleted, bytes deleted).
    fn delete_event(&self, key: &[u8], value_len: usize, deliveries: &[Delivery], now_ms: u64) -> Result<(u64, u64), StoreError> {
        let index = &self.index;
        let mut bytes = (key.len() + value_len) as u64;
        for delivery in deliveries {
            let head =
                index.lanes().get(&(delivery.subscription_id.clone(), delivery.lane.clone())).and_then(|queue| queue.front().copied());
            if delivery.status == DeliveryStatus::Dead && head == Some(delivery.id) {
                let mut discarded = delivery.clone();
                discarded.status = DeliveryStatus::Cancelled;
                self.writer.submit(Job::Discard { discarded, now_ms }).blocking_recv().unwrap_or(Err(StoreError::Stopped))?;
            }
        }
        // The event record first: start-up takes a delivery without a record of its own whose
        // event is still there for an unwritten one (see `Unwritten`).
        index.events.remove(key)?;
        for delivery in deliveries {
            let id = delivery.id.to_be_bytes();
            index.dead.remove(id)?;
            if let Some(value) = index.deliveries.remove(id)? {
                bytes += (id.len() + value.len()) as u64;
            }
        }
        Ok((deliveries.len() as u64, bytes))
    }

    /// Delete the closed segments last written before `cutoff_ms` that no kept record points
    /// into; the bytes freed.
    fn delete_segments(&self, cutoff_ms: u64, kept: &BTreeSet<u32>) -> Result<u64, StoreError> {
        let index = &self.index;
        let (numbers, active) = index.segments.numbers()?;
        let doomed: Vec<u32> = numbers
            .into_iter()
            .filter(|number| *number < active && !kept.contains(number))
            .filter(|number| index.segments.modified_ms(*number).is_some_and(|written_ms| written_ms < cutoff_ms))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        // The index records' removals reach the disk before the bodies go.
        index.segments.sync()?;
        index.db.flush()?;
        let mut freed = 0;
        for number in doomed {
            freed += index.segments.delete(number)?;
            tracing::info!(segment = number, "retention deleted a segment file");
        }
        Ok(freed)
    }
}

impl Retention for SledStore {
    fn prune_blocking(&self, cutoffs: &RetentionCutoffs, budget: usize) -> Result<PruneReport, StoreError> {
        let index = &self.index;
        index.noting((|| {
            let mut report = PruneReport::default();
            let mut kept = BTreeSet::new();
            for entry in index.events.iter() {
                let (key, value) = entry?;
                let event_id = String::from_utf8_lossy(key.strip_suffix(&[0]).unwrap_or(&key)).into_owned();
                let Some(time_ms) = event_time_ms(&event_id) else { continue };
                if time_ms >= cutoffs.events_before_ms {
                    break;
                }
                let record: EventRecord = decode_record(tree::EVENTS, &value)?;
                let deliveries = deliveries_of(index, &record)?;
                if !event_is_prunable(time_ms, &deliveries, cutoffs) {
                    kept.insert(record.loc.segment);
                    continue;
                }
                if report.events >= budget as u64 {
                    report.more = true;
                    break;
                }
                let (n_deliveries, bytes) = self.delete_event(&key, value.len(), &deliveries, cutoffs.now_ms)?;
                report.events += 1;
                report.deliveries += n_deliveries;
                report.bytes_freed += bytes;
            }
            let mut pruned_through = None;
            for entry in index.inbox.iter() {
                let (key, value) = entry?;
                let record: InboxRecord = decode_record(tree::INBOX, &value)?;
                if record.received_at_ms >= cutoffs.inbox_before_ms {
                    break;
                }
                let Some(inbox_id) = InboxId::from_key(&key) else { continue };
                if index.open_state().pending.contains_key(&inbox_id.0) {
                    kept.insert(record.loc.segment);
                    continue;
                }
                if report.inbox >= budget as u64 {
                    report.more = true;
                    break;
                }
                // Not pending, so no run adds unwritten deliveries to it any more.
                index.write_unwritten(inbox_id, &record)?;
                index.inbox.remove(&key)?;
                report.bytes_freed += (key.len() + value.len()) as u64;
                report.inbox += 1;
                pruned_through = Some(inbox_id);
            }
            if let Some(InboxId(id)) = pruned_through
                && index.inbox_pruned_through()?.is_none_or(|InboxId(known)| known < id)
            {
                index.meta.insert(INBOX_PRUNED_THROUGH, id.to_string().as_bytes())?;
            }
            if !report.more {
                report.bytes_freed += self.delete_segments(cutoffs.events_before_ms.min(cutoffs.inbox_before_ms), &kept)?;
            }
            Ok(report)
        })())
    }

    fn storage_stats(&self) -> Result<StorageStats, StoreError> {
        let index = &self.index;
        let mut stats = StorageStats { bytes_on_disk: index.db.size_on_disk()? + index.segments.bytes(), ..StorageStats::default() };
        for key in index.events.iter().keys() {
            let key = key?;
            if let Some(time_ms) = event_time_ms(&String::from_utf8_lossy(key.strip_suffix(&[0]).unwrap_or(&key))) {
                stats.oldest_event_ms = Some(time_ms);
                break;
            }
        }
        stats.inbox_pruned_through = index.inbox_pruned_through()?;
        if let Some((key, value)) = index.inbox.first()? {
            stats.oldest_inbox_ms = Some(decode_record::<InboxRecord>(tree::INBOX, &value)?.received_at_ms);
            stats.oldest_inbox_id = InboxId::from_key(&key);
        }
        Ok(stats)
    }

    /// Records only: the bodies go with their segments, by retention.
    fn remove_account_data_blocking(&self, account_id: &str) -> Result<u64, StoreError> {
        let index = &self.index;
        index.noting((|| {
            let mut removed = 0;
            for entry in index.inbox.iter() {
                let (key, value) = entry?;
                let record: InboxRecord = decode_record(tree::INBOX, &value)?;
                let Some(inbox_id) = InboxId::from_key(&key) else { continue };
                let pending = index.open_state().pending.contains_key(&inbox_id.0);
                if record.account_id == account_id && !pending {
                    index.write_unwritten(inbox_id, &record)?;
                    index.inbox.remove(key)?;
                    removed += 1;
                }
            }
            for tree in [&index.dedup, &index.state] {
                for key in tree.scan_prefix(keys::account_prefix(account_id)).keys() {
                    tree.remove(key?)?;
                    removed += 1;
                }
            }
            // The event records carry their account: a walk of the small records (an operator's
            // rare action).
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64);
            for entry in index.events.iter() {
                let (key, value) = entry?;
                let record: EventRecord = decode_record(tree::EVENTS, &value)?;
                if record.account_id != account_id {
                    continue;
                }
                let deliveries = deliveries_of(index, &record)?;
                if deliveries.iter().any(|delivery| delivery.status == DeliveryStatus::Pending) {
                    continue;
                }
                let (n_deliveries, _) = self.delete_event(&key, value.len(), &deliveries, now_ms)?;
                removed += 1 + n_deliveries;
            }
            Ok(removed)
        })())
    }
}
