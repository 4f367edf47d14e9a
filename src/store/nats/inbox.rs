//! The durable append of a raw webhook to `SH_INBOX`, and reading one back by its sequence.
//!
//! One message per webhook on `sh.in.<partition>.<account token>`: the body as the payload, the
//! entry's other fields in headers (`Sh-Received-At` in Unix ms, `Sh-Method`, and `Sh-Query`,
//! `Sh-Content-Type`, `Sh-Headers` as JSON, so no byte of them can break the header block), and
//! `Nats-Msg-Id` = hex(account) `:` hex(digest), so JetStream's duplicate window answers a repeat
//! with the first one's sequence. The stream sequence is the inbox id.
//!
//! The invariant: [`Engine::append`] answers only once JetStream acknowledged the publish.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;

use super::engine::{Engine, INBOX_STREAM, NatsError, classify, inbox_subject, token_id};
use crate::store::{Appended, InboxEntry, InboxId};

/// An inbox message decoded: the entry and where it is.
#[derive(Debug, Clone)]
pub struct NatsInboxEntry {
    /// The stream sequence (the inbox id).
    pub sequence: u64,
    /// The partition its subject names.
    pub partition: u32,
    /// The webhook as received (for a requeue request: only its account).
    pub entry: InboxEntry,
    /// A request to normalize an earlier entry again ([`Engine::requeue`]): its id and the
    /// generation to run as. Such a message is not an inbox entry of its own.
    pub requeue: Option<(InboxId, u32)>,
}

pub(crate) const RECEIVED_AT: &str = "Sh-Received-At";
/// On a requeue request: the inbox id to normalize again.
pub(crate) const REQUEUE: &str = "Sh-Requeue";
/// On a requeue request: the generation to run it as.
const GENERATION: &str = "Sh-Generation";
const METHOD: &str = "Sh-Method";
const QUERY: &str = "Sh-Query";
const CONTENT_TYPE: &str = "Sh-Content-Type";
const HEADERS: &str = "Sh-Headers";

/// `Nats-Msg-Id` of an account's webhook with this digest.
pub fn message_id(account_id: &str, digest: &[u8]) -> String {
    format!("{}:{}", hex::encode(account_id.as_bytes()), hex::encode(digest))
}

impl Engine {
    /// Append a webhook (see the module docs): [`Appended::New`] with the stream sequence as the
    /// inbox id, or [`Appended::Duplicate`] naming the original's when the same account and digest
    /// were appended inside the duplicate window (nothing stored). A publish that fails transiently (no ack in time,
    /// no leader while the stream elects one) is sent again with the same `Nats-Msg-Id` until
    /// `publish_retry_bound` has passed, then [`NatsError::Unavailable`]: nothing was acknowledged.
    pub async fn append(&self, entry: &InboxEntry, digest: &[u8]) -> Result<Appended, NatsError> {
        let subject = inbox_subject(self.partition(&entry.account_id), &entry.account_id);
        let id = message_id(&entry.account_id, digest);
        let headers = encode_headers(entry)?;
        let deadline = Instant::now() + self.config().publish_retry_bound;
        loop {
            let publish = PublishMessage::build().headers(headers.clone()).message_id(&id).payload(entry.body.clone().into());
            let result = match self.jetstream().send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await.map_err(|error| classify("awaiting the inbox publish's ack", &error)),
                Err(error) => Err(classify("publishing to the inbox", &error)),
            };
            match result {
                Ok(ack) if ack.duplicate => return Ok(Appended::Duplicate(Some(InboxId(ack.sequence)))),
                Ok(ack) => return Ok(Appended::New(InboxId(ack.sequence))),
                Err(NatsError::Unavailable(reason)) if Instant::now() < deadline => {
                    tracing::debug!(%reason, "inbox publish: again with the same id");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(NatsError::Unavailable(reason)) => {
                    return Err(NatsError::Unavailable(format!("{reason} (retried for {:?})", self.config().publish_retry_bound)));
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Ask the partition's drainer to normalize `inbox_id` of `account_id` again as `generation`:
    /// a message on the account's subject, so it is ordered with the account's webhooks.
    pub async fn requeue(&self, account_id: &str, inbox_id: InboxId, generation: u32) -> Result<(), NatsError> {
        let subject = inbox_subject(self.partition(account_id), account_id);
        let mut headers = HeaderMap::new();
        headers.insert(REQUEUE, inbox_id.0.to_string());
        headers.insert(GENERATION, generation.to_string());
        let publish = PublishMessage::build().headers(headers).payload(bytes::Bytes::new());
        let ack = self.jetstream().send_publish(subject, publish).await.map_err(|error| classify("publishing a requeue", &error))?;
        ack.await.map_err(|error| classify("awaiting a requeue's ack", &error))?;
        Ok(())
    }

    /// The inbox entry stored under `sequence` (a direct get, answered by any replica); `None`
    /// when there is none (never stored, or deleted by `max_age`).
    pub async fn get_inbox(&self, sequence: u64) -> Result<Option<NatsInboxEntry>, NatsError> {
        let stream = self.jetstream().get_stream_no_info(INBOX_STREAM).await.map_err(|error| classify("opening SH_INBOX", &error))?;
        match stream.direct_get(sequence).await {
            Ok(message) => decode(message.sequence, message.subject.as_str(), Some(&message.headers), &message.payload).map(Some),
            Err(error) if error.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(error) => Err(classify(&format!("reading inbox entry {sequence}"), &error)),
        }
    }
}

fn encode_headers(entry: &InboxEntry) -> Result<HeaderMap, NatsError> {
    if entry.method.is_empty() || !entry.method.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(NatsError::Other(format!("an HTTP method must be a token, not {:?}", entry.method)));
    }
    let mut headers = HeaderMap::new();
    headers.insert(RECEIVED_AT, entry.received_at_ms.to_string());
    headers.insert(METHOD, entry.method.as_str());
    headers.insert(QUERY, json(&entry.query));
    headers.insert(CONTENT_TYPE, json(&entry.content_type));
    headers.insert(HEADERS, json(&entry.headers));
    Ok(headers)
}

/// A field as a header value: JSON escapes every control character, so the value cannot end the
/// header line.
fn json<T: serde::Serialize>(value: &T) -> String {
    // Strings, options of strings and lists of string pairs always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

/// Decode an inbox message (from a direct get or a consumer's delivery).
pub(crate) fn decode(sequence: u64, subject: &str, headers: Option<&HeaderMap>, body: &[u8]) -> Result<NatsInboxEntry, NatsError> {
    let bad = |what: String| NatsError::Other(format!("inbox message {sequence} ({subject}): {what}"));
    let mut tokens = subject.split('.');
    let (Some("sh"), Some("in"), Some(partition), Some(account), None) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return Err(bad("not an inbox subject".to_string()));
    };
    let partition: u32 = partition.parse().map_err(|_| bad("no partition in the subject".to_string()))?;
    let account_id = token_id(account).ok_or_else(|| bad("the account token does not decode".to_string()))?;
    let headers = headers.ok_or_else(|| bad("no headers".to_string()))?;
    if let Some(target) = headers.get(REQUEUE) {
        let target: u64 = target.as_str().parse().map_err(|_| bad(format!("{REQUEUE} is not an inbox id")))?;
        let generation = headers.get(GENERATION).and_then(|value| value.as_str().parse::<u32>().ok());
        let generation = generation.ok_or_else(|| bad(format!("{GENERATION} missing or not a number")))?;
        let entry = InboxEntry {
            account_id,
            received_at_ms: 0,
            method: String::new(),
            query: String::new(),
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        };
        return Ok(NatsInboxEntry { sequence, partition, entry, requeue: Some((InboxId(target), generation)) });
    }
    let text = |name: &str| headers.get(name).map(|value| value.as_str().to_string()).ok_or_else(|| bad(format!("no {name}")));
    let received_at_ms: u64 = text(RECEIVED_AT)?.parse().map_err(|_| bad(format!("{RECEIVED_AT} is not a number")))?;
    let method = text(METHOD)?;
    let query: String = serde_json::from_str(&text(QUERY)?).map_err(|error| bad(format!("{QUERY}: {error}")))?;
    let content_type: Option<String> =
        serde_json::from_str(&text(CONTENT_TYPE)?).map_err(|error| bad(format!("{CONTENT_TYPE}: {error}")))?;
    let entry_headers: Vec<(String, String)> = serde_json::from_str(&text(HEADERS)?).map_err(|error| bad(format!("{HEADERS}: {error}")))?;
    Ok(NatsInboxEntry {
        sequence,
        partition,
        entry: InboxEntry { account_id, received_at_ms, method, query, content_type, headers: entry_headers, body: body.to_vec() },
        requeue: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(account_id: &str) -> InboxEntry {
        InboxEntry {
            account_id: account_id.to_string(),
            received_at_ms: 1_765_000_000_123,
            method: "POST".to_string(),
            query: "a=1&b=%20\r\n".to_string(),
            content_type: Some("application/json; charset=\"utf-8\"".to_string()),
            headers: vec![("x-odd".to_string(), "line\r\nbreak: é".to_string())],
            body: b"{\"id\":1}\n".to_vec(),
        }
    }

    #[test]
    fn an_entry_round_trips_through_headers_and_subject() {
        for account_id in ["acct-1", "odd.account id"] {
            let entry = entry(account_id);
            let headers = encode_headers(&entry).unwrap();
            for (_, values) in headers.iter() {
                assert!(values.iter().all(|value| !value.as_str().contains(['\r', '\n'])), "{values:?}");
            }
            let subject = inbox_subject(3, account_id);
            let decoded = decode(42, &subject, Some(&headers), &entry.body).unwrap();
            assert_eq!((decoded.sequence, decoded.partition), (42, 3));
            assert_eq!(format!("{:?}", decoded.entry), format!("{entry:?}"));
        }
    }

    #[test]
    fn a_bad_method_or_message_is_an_error_not_a_panic() {
        let mut bad = entry("a");
        bad.method = "PO ST".to_string();
        assert!(matches!(encode_headers(&bad), Err(NatsError::Other(_))));
        assert!(decode(1, "sh.in.x.a", None, b"").is_err());
        assert!(decode(1, "sh.ev.1.a", None, b"").is_err());
        assert!(decode(1, "sh.in.1.a", Some(&HeaderMap::new()), b"").is_err());
    }

    #[test]
    fn message_ids_separate_account_and_digest() {
        assert_eq!(message_id("ab", &[1, 2]), "6162:0102");
        assert_ne!(message_id("a", &[0x62]), message_id("ab", &[]));
    }
}
