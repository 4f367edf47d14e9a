//! The outgoing envelope and its Standard Webhooks signature.
//!
//! The envelope is exactly the seed's: `{"hook": {"id", "eventType", "timestamp", "source"},
//! "data": {"integrationAccountId", "workspaceId", "record", "result"}}`. `hook.id` is the
//! subscription's id (the seed: "the ID of the webhook that was triggered"); the event's own id
//! travels in the `webhook-id` header, which is also what receivers deduplicate on.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::{EventResult, EventType};
use crate::signature::{decode_whsec, hmac_sha256};

/// The `hook.source` of every event the daemon sends.
pub const SOURCE: &str = "PMS_WEBHOOK";

/// The parts of a stored event the envelope needs, borrowed from the event's stored bytes.
///
/// The record is kept as the raw JSON text it was stored as and copied into the body as it is:
/// a delivery never parses a record into a tree and never rebuilds one (BENCHMARKS.md measures
/// what that saves). Decode it from [`crate::store::Ledger::get_event_bytes`] with
/// [`EventView::parse`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView<'a> {
    /// The event id (the `webhook-id` header).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// `hook.eventType`.
    pub event_type: EventType,
    /// `hook.timestamp`.
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    /// `data.integrationAccountId`.
    #[serde(borrow)]
    pub integration_account_id: Cow<'a, str>,
    /// `data.workspaceId`.
    #[serde(borrow)]
    pub workspace_id: Cow<'a, str>,
    /// `data.record`, as stored.
    #[serde(borrow)]
    pub record: &'a RawValue,
    /// `data.result`.
    pub result: EventResult,
    /// What produced the event (the `stayhook-origin` header); absent: a webhook.
    #[serde(default)]
    pub origin: crate::store::Origin,
}

impl<'a> EventView<'a> {
    /// Borrow the envelope's parts from a stored event's JSON bytes.
    pub fn parse(stored: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(stored)
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    hook: Hook<'a>,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Hook<'a> {
    id: &'a str,
    event_type: &'static str,
    timestamp: &'a str,
    source: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    integration_account_id: &'a str,
    workspace_id: &'a str,
    record: &'a RawValue,
    result: EventResult,
}

/// The JSON body sent to the subscription `subscription_id` for `event`.
pub fn render(event: &EventView<'_>, subscription_id: &str) -> Vec<u8> {
    let envelope = Envelope {
        hook: Hook { id: subscription_id, event_type: event.event_type.as_str(), timestamp: &event.timestamp, source: SOURCE },
        data: Data {
            integration_account_id: &event.integration_account_id,
            workspace_id: &event.workspace_id,
            record: event.record,
            result: event.result,
        },
    };
    let mut body = Vec::with_capacity(event.record.get().len() + 256);
    // Strings, a raw JSON value that was valid when stored, and enums: always serializes.
    serde_json::to_writer(&mut body, &envelope).expect("envelope serializes");
    body
}

/// The `webhook-signature` header value: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`
/// with the key inside the `whsec_` secret.
pub fn sign(secret: &str, webhook_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let key = decode_whsec(secret).unwrap_or_else(|| secret.as_bytes().to_vec());
    let timestamp = timestamp_secs.to_string();
    let mac = hmac_sha256(&key, &[webhook_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    format!("v1,{}", BASE64.encode(mac))
}

/// A new signing secret: `whsec_` + base64 of 24 random bytes, as Standard Webhooks suggests.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", BASE64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::store::StoredEvent;

    #[test]
    fn renders_the_seed_envelope_from_stored_bytes() {
        let record = json!({"id": "r1", "guest": {"name": "Zoë \"Z\" Ng"}, "totalPrice": 1250.5, "tags": []});
        let event = StoredEvent {
            id: "0193a0f2-7b1e-7c3d-9a51-3f0c2d1e4b5a".into(),
            event_type: EventType::ReservationUpdated,
            timestamp: "2026-11-23T10:00:00.000Z".into(),
            integration_account_id: "acct-1".into(),
            workspace_id: "ws-1".into(),
            record_id: "r1".into(),
            record: record.clone(),
            result: EventResult::Success,
            failure_reason: None,
            inbox_id: "7".into(),
            origin: crate::store::Origin::Reconciliation,
        };
        let stored = serde_json::to_vec(&event).unwrap();
        let view = EventView::parse(&stored).unwrap();
        let body = render(&view, "sub-1");
        let text = String::from_utf8(body.clone()).unwrap();
        // Key order is the seed's, and the record is byte-for-byte what was stored.
        assert!(text.starts_with(r#"{"hook":{"id":"sub-1","eventType":"reservation.updated","timestamp":"2026-11-23T10:00:00.000Z","source":"PMS_WEBHOOK"},"data":{"integrationAccountId":"acct-1","workspaceId":"ws-1","record":{"#), "{text}");
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["data"]["record"], record);
        assert_eq!(parsed["data"]["result"], "SUCCESS");
        assert_eq!(parsed["hook"].as_object().unwrap().len(), 4);
    }

    #[test]
    fn signs_like_standard_webhooks() {
        // The Standard Webhooks reference vector (standard-webhooks spec, "Signature scheme").
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
