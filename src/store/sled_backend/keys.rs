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

pub(crate) fn decode_ids(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).filter_map(read_u64).collect()
}

pub(crate) fn read_generation(bytes: &[u8]) -> u32 {
    bytes.get(..4).and_then(|bytes| bytes.try_into().ok()).map_or(0, u32::from_be_bytes)
}
