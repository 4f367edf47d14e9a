//! Key layouts. Big-endian integers keep sled's byte order equal to numeric order; `\0` separates
//! string parts (ids never contain NUL: the model refuses them).

use crate::model::RecordKind;
use crate::store::InboxId;

impl InboxId {
    pub(crate) fn key(self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    pub(crate) fn from_key(key: &[u8]) -> Option<InboxId> {
        read_u64(key).map(InboxId)
    }
}

pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub(crate) fn account_prefix(account_id: &str) -> Vec<u8> {
    let mut key = account_id.as_bytes().to_vec();
    key.push(0);
    key
}

pub(crate) fn subscription(account_id: &str, subscription_id: &str) -> Vec<u8> {
    let mut key = account_prefix(account_id);
    key.extend_from_slice(subscription_id.as_bytes());
    key
}

pub(crate) fn dedup(account_id: &str, digest: &[u8]) -> Vec<u8> {
    let mut key = account_prefix(account_id);
    key.extend_from_slice(digest);
    key
}

pub(crate) fn state(account_id: &str, kind: RecordKind, record_id: &str) -> Vec<u8> {
    let mut key = account_prefix(account_id);
    key.extend_from_slice(kind.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(record_id.as_bytes());
    key
}

/// Event ids are UUID v7 strings, so their text sorts by time; the key is the text itself.
pub(crate) fn event(event_id: &str) -> Vec<u8> {
    let mut key = event_id.as_bytes().to_vec();
    key.push(0);
    key
}

pub(crate) fn event_delivery(event_id: &str, delivery_id: u64) -> Vec<u8> {
    let mut key = event(event_id);
    key.extend_from_slice(&delivery_id.to_be_bytes());
    key
}

pub(crate) fn attempt(event_id: &str, delivery_id: u64, attempt: u32) -> Vec<u8> {
    let mut key = event_delivery(event_id, delivery_id);
    key.extend_from_slice(&attempt.to_be_bytes());
    key
}

pub(crate) fn due(due_ms: u64, delivery_id: u64) -> Vec<u8> {
    let mut key = due_ms.to_be_bytes().to_vec();
    key.extend_from_slice(&delivery_id.to_be_bytes());
    key
}

pub(crate) fn read_due(key: &[u8]) -> Option<(u64, u64)> {
    Some((read_u64(key.get(..8)?)?, read_u64(key.get(8..16)?)?))
}

pub(crate) fn lane(subscription_id: &str, lane: &str) -> Vec<u8> {
    let mut key = account_prefix(subscription_id);
    key.extend_from_slice(lane.as_bytes());
    key
}

pub(crate) fn encode_ids(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

pub(crate) fn decode_ids(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).filter_map(read_u64).collect()
}

/// A `pending` value: the generation the entry is to be normalized as (0, the first run, is
/// empty, as every release before generations wrote it).
pub(crate) fn generation(generation: u32) -> Vec<u8> {
    if generation == 0 { Vec::new() } else { generation.to_be_bytes().to_vec() }
}

pub(crate) fn read_generation(bytes: &[u8]) -> u32 {
    bytes.get(..4).and_then(|bytes| bytes.try_into().ok()).map_or(0, u32::from_be_bytes)
}
