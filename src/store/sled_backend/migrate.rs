//! Migration of a data dir from storage format 1 to the current format (3; a store of format 2
//! opens in place, see `layout::FORMAT`).
//!
//! Format 1 (every release before this one) is one sled database in `<data_dir>/db` with fifteen
//! trees and every value inside sled. Format 2 is `<data_dir>/store` (see the backend's header).
//! The migration reads every tree of format 1 and writes the current format into `<data_dir>/store.migrating`,
//! flushes it, renames it to `<data_dir>/store`, and only then renames the old database to
//! `<data_dir>/db.format1` (kept as the backup: the operator deletes it once satisfied). A crash at
//! any point leaves the old database untouched and the migration starts again at the next start.
//! `stayhook serve` migrates at start (logging its progress); `stayhook migrate` does the same
//! without starting the daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::layout::{self, DeliveryRecord, EventRecord, Fate, InboxRecord};
use super::segments::Segments;
use super::*;

/// Log progress every this many items.
const PROGRESS_EVERY: u64 = 50_000;

/// What a migration moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Accounts, subscriptions, digests, state and meta values.
    pub catalog: u64,
    /// Inbox entries.
    pub inbox: u64,
    /// Inbox entries that were never acknowledged (written, then a crash before they were
    /// pending): format 1 never normalized them either; left out.
    pub never_acknowledged: u64,
    /// Events.
    pub events: u64,
    /// Deliveries (with their attempts).
    pub deliveries: u64,
    /// Where the format-1 database was moved (the backup).
    pub backup: PathBuf,
}

/// The format-1 database of a data dir, if there is one.
pub fn format1_dir(data_dir: &Path) -> Option<PathBuf> {
    let db = data_dir.join("db");
    db.join("conf").is_file().then_some(db)
}

fn failed(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("migrating from storage format 1: {what}: {error}"))
}

/// Migrate `<data_dir>/db` (format 1) to `<data_dir>/store` (the current format).
pub fn migrate_data_dir(data_dir: &Path, cache_bytes: u64) -> Result<Migrated, StoreError> {
    let old_dir = format1_dir(data_dir)
        .ok_or_else(|| failed("looking for the old store", format!("no database in {}", data_dir.join("db").display())))?;
    let store_dir = data_dir.join("store");
    if store_dir.exists() {
        return Err(failed("preparing", format!("{} exists already", store_dir.display())));
    }
    let partial = data_dir.join("store.migrating");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|error| failed("removing an interrupted migration", error))?;
    }
    tracing::warn!(from = %old_dir.display(), to = %store_dir.display(), "migrating the store from format 1 to format 3 (once); the old database is kept as db.format1");
    let started = std::time::Instant::now();
    let old = sled::Config::new().path(&old_dir).cache_capacity(cache_bytes).open()?;
    let new = sled::Config::new().path(partial.join("index")).cache_capacity(cache_bytes).flush_every_ms(None).open()?;
    let (segments, _) = Segments::open(&partial.join("segments"), super::segments::MAX_SEGMENT_BYTES)?;
    let mut migrated = copy(&old, &new, &segments)?;
    segments.sync()?;
    new.flush()?;
    drop(new);
    old.flush()?;
    drop(old);
    std::fs::rename(&partial, &store_dir).map_err(|error| failed("moving the new store in place", error))?;
    let backup = data_dir.join("db.format1");
    std::fs::rename(&old_dir, &backup).map_err(|error| failed("keeping the old database as the backup", error))?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    migrated.backup = backup;
    tracing::warn!(
        inbox = migrated.inbox,
        events = migrated.events,
        deliveries = migrated.deliveries,
        never_acknowledged = migrated.never_acknowledged,
        elapsed_ms = started.elapsed().as_millis() as u64,
        backup = %migrated.backup.display(),
        "migrated to storage format 3; delete the backup once the daemon runs as expected"
    );
    Ok(migrated)
}

fn tree_of(db: &sled::Db, name: &str) -> Result<Tree, StoreError> {
    Ok(db.open_tree(name)?)
}

fn progress(what: &str, n: u64) {
    if n > 0 && n.is_multiple_of(PROGRESS_EVERY) {
        tracing::info!(what, n, "migrating");
    }
}

fn copy(old: &sled::Db, new: &sled::Db, segments: &Segments) -> Result<Migrated, StoreError> {
    let mut migrated = Migrated::default();
    for name in [tree::ACCOUNTS, tree::SUBSCRIPTIONS, tree::DEDUP, tree::META] {
        let (from, to) = (tree_of(old, name)?, tree_of(new, name)?);
        for entry in from.iter() {
            let (key, value) = entry?;
            to.insert(key, value)?;
            migrated.catalog += 1;
        }
    }
    let state = tree_of(new, tree::STATE)?;
    for entry in tree_of(old, tree::STATE)?.iter() {
        let (key, value) = entry?;
        state.insert(key, encode_state(&decode_json(tree::STATE, &value)?))?;
        migrated.catalog += 1;
    }
    let meta = tree_of(new, tree::META)?;
    // Every id format 1 gave is below what its generator gives next.
    meta.insert(layout::ID_BASE_KEY, &(old.generate_id()? + 1).to_be_bytes())?;
    meta.insert(layout::FORMAT_KEY, layout::FORMAT.as_bytes())?;

    // Inbox: bodies to a segment, fate from `pending` and `outcomes`.
    let (pending, outcomes) = (tree_of(old, "pending")?, tree_of(old, "outcomes")?);
    let inbox = tree_of(new, tree::INBOX)?;
    for entry in tree_of(old, tree::INBOX)?.iter() {
        let (key, body) = entry?;
        let parsed: InboxEntry = postcard::from_bytes(&body).map_err(|error| failed("an inbox entry", error))?;
        let outcome: Option<InboxOutcome> = outcomes.get(&key)?.map(|value| decode_json("outcomes", &value)).transpose()?;
        let fate = match (pending.get(&key)?, outcome) {
            (Some(generation), previous) => Fate::Pending { generation: keys::read_generation(&generation), previous },
            (None, Some(outcome)) => Fate::Finished(outcome),
            (None, None) => {
                migrated.never_acknowledged += 1;
                continue;
            }
        };
        let loc = segments.append(&body)?;
        let record = InboxRecord { account_id: parsed.account_id, received_at_ms: parsed.received_at_ms, loc, fate };
        inbox.insert(key, encode_record(&record))?;
        migrated.inbox += 1;
        progress("inbox", migrated.inbox);
    }

    // Lane order, and which dead letters hold their lane.
    let mut order: HashMap<u64, u64> = HashMap::new();
    let mut heads = std::collections::HashSet::new();
    for value in tree_of(old, "lanes")?.iter().values() {
        let ids = keys::decode_ids(&value?);
        let mut seq = 0;
        for (position, id) in ids.iter().enumerate() {
            seq = if position == 0 { *id } else { (seq + 1).max(*id) };
            order.insert(*id, seq);
        }
        heads.extend(ids.first().copied());
    }

    // Deliveries with their attempts; events with their deliveries.
    let attempts = tree_of(old, "attempts")?;
    let event_deliveries = tree_of(old, "event_deliveries")?;
    let deliveries = tree_of(new, tree::DELIVERIES)?;
    for value in tree_of(old, tree::DELIVERIES)?.iter().values() {
        let delivery: Delivery = decode_json("deliveries", &value?)?;
        let mut prefix = keys::event(&delivery.event_id);
        prefix.extend_from_slice(&delivery.id.to_be_bytes());
        let attempts =
            attempts.scan_prefix(prefix).values().map(|value| decode_json("attempts", &value?)).collect::<Result<Vec<Attempt>, _>>()?;
        let seq = order.get(&delivery.id).copied().unwrap_or(delivery.id);
        deliveries.insert(delivery.id.to_be_bytes(), encode_record(&DeliveryRecord { delivery, attempts, seq }))?;
        migrated.deliveries += 1;
        progress("deliveries", migrated.deliveries);
    }
    let dead = tree_of(new, tree::DEAD)?;
    for key in tree_of(old, tree::DEAD)?.iter().keys() {
        let key = key?;
        let holds = keys::read_u64(&key).is_some_and(|id| heads.contains(&id));
        dead.insert(key, &layout::dead_value(holds))?;
    }
    let events = tree_of(new, tree::EVENTS)?;
    for entry in tree_of(old, tree::EVENTS)?.iter() {
        let (key, body) = entry?;
        let event: StoredEvent = decode_json("events", &body)?;
        let ids = event_deliveries
            .scan_prefix(&key)
            .keys()
            .filter_map(|key| key.ok().and_then(|key| keys::read_u64(&key[key.len() - 8..])))
            .collect();
        let loc = segments.append(&body)?;
        let record = EventRecord {
            loc,
            inbox_id: event.inbox_id.parse().unwrap_or_default(),
            account_id: event.integration_account_id,
            event_type: event.event_type,
            record_id: event.record_id,
            result: event.result,
            timestamp: event.timestamp,
            deliveries: ids,
        };
        events.insert(key, encode_record(&record))?;
        migrated.events += 1;
        progress("events", migrated.events);
    }
    Ok(migrated)
}
